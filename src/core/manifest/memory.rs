//! Manifests and tag answers from memory: the hot path of a pull that hits the cache.
//!
//! One moka cache, weighted by bytes (`[cache] memory`, 64 MiB by default; `0` turns it
//! off), holds two kinds of entries, so one bound covers both whatever the mix:
//! - **verified manifests by digest**: a manifest GET by digest that hits here does no file
//!   IO at all (no read, no re-hash). An entry is keyed by the digest its bytes hash to and
//!   holds its media type; it enters memory only from a verified source: a read from the
//!   disk (which checks the hash), or a manifest from a tier or the upstream that was
//!   verified before it was stored.
//! - **tag answers** (tag → digest, media type, checked-at): the record last written or read
//!   for the tag, so that a tag within its TTL is answered without reading its record file.
//!
//! What memory does not change:
//! - vouching (tenant isolation): a manifest from memory is `cached`, and is vouched for in
//!   the route's repository exactly like one read from disk;
//! - freshness: a tag answer from memory is used only while it is fresh by the same rule as
//!   the record on disk (the upstream's `tag_ttl`, or an immutable tag); otherwise the record
//!   is read and revalidated as before, so stale serving and TTLs are unchanged;
//! - removal: an entry may outlive its file on disk (LRU eviction, or a file removed behind
//!   the daemon's back). That is intended: the entry is verified content, and serving it is
//!   cheaper than fetching it again. A lifecycle pass forgets what it expires.
//!
//! Within a tag's TTL the daemon trusts its own answer: a newer record another process wrote
//! for that tag meanwhile (an `import`, a `prefetch`) is read once the answer goes stale.

use super::TagKey;
use crate::core::answers::Manifest;
use crate::oci::{Digest, RepoName, Tag};
use crate::store::TagRecord;
use bytes::Bytes;
use std::sync::Arc;

/// Bytes an entry costs beyond its payload: moka's bookkeeping, the key, the `Arc`s.
const ENTRY_OVERHEAD: usize = 160;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Manifest(Digest),
    Tag(Arc<TagKey>),
}

#[derive(Clone)]
enum Entry {
    Manifest { media_type: Arc<str>, bytes: Bytes },
    Tag(Arc<TagRecord>),
}

/// The in-memory cache of manifests and tag answers.
pub(super) struct Memory {
    /// `None` when `[cache] memory = 0`.
    cache: Option<moka::sync::Cache<Key, Entry>>,
    /// The bound, in the weights below.
    capacity: u64,
}

fn weight(key: &Key, entry: &Entry) -> u32 {
    let key = match key {
        Key::Manifest(d) => d.hex().len(),
        Key::Tag(k) => k.upstream.len() + k.name.as_str().len() + k.tag.as_str().len(),
    };
    let value = match entry {
        Entry::Manifest { media_type, bytes } => media_type.len() + bytes.len(),
        Entry::Tag(rec) => rec.digest.hex().len() + rec.media_type.len(),
    };
    u32::try_from(key + value + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

impl Memory {
    /// A cache of at most `bytes` (by the weights above); `0`: none.
    pub(super) fn new(bytes: u64) -> Memory {
        let cache = (bytes > 0).then(|| moka::sync::Cache::builder().max_capacity(bytes).weigher(weight).build());
        Memory { cache, capacity: bytes }
    }

    /// A verified manifest by digest, from memory only.
    pub(super) fn manifest(&self, digest: &Digest) -> Option<Manifest> {
        match self.cache.as_ref()?.get(&Key::Manifest(digest.clone()))? {
            Entry::Manifest { media_type, bytes } => {
                Some(Manifest { digest: digest.clone(), media_type: media_type.to_string(), bytes, cached: true })
            }
            Entry::Tag(_) => None,
        }
    }

    /// Keep a manifest whose bytes hash to `m.digest` (the caller verified them).
    pub(super) fn put_manifest(&self, m: &Manifest) {
        if let Some(c) = &self.cache {
            debug_assert!(m.digest.verifies(&m.bytes));
            let key = Key::Manifest(m.digest.clone());
            let entry = Entry::Manifest { media_type: Arc::from(m.media_type.as_str()), bytes: m.bytes.clone() };
            self.insert(c, key, entry);
        }
    }

    /// moka evicts after an insert, not before: an entry that can never fit would be
    /// served until then, and push out everything else. It stays out.
    fn insert(&self, c: &moka::sync::Cache<Key, Entry>, key: Key, entry: Entry) {
        if u64::from(weight(&key, &entry)) <= self.capacity {
            c.insert(key, entry);
        }
    }

    pub(super) fn forget_manifest(&self, digest: &Digest) {
        if let Some(c) = &self.cache {
            c.invalidate(&Key::Manifest(digest.clone()));
        }
    }

    /// The last known record of a tag, from memory only; the caller decides whether it is
    /// still fresh.
    pub(super) fn tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> Option<Arc<TagRecord>> {
        match self.cache.as_ref()?.get(&tag_key(upstream, name, tag))? {
            Entry::Tag(rec) => Some(rec),
            Entry::Manifest { .. } => None,
        }
    }

    /// Remember a tag's record as written to (or read from) disk.
    pub(super) fn put_tag(&self, upstream: &str, name: &RepoName, tag: &Tag, rec: TagRecord) {
        if let Some(c) = &self.cache {
            self.insert(c, tag_key(upstream, name, tag), Entry::Tag(Arc::new(rec)));
        }
    }

    pub(super) fn forget_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) {
        if let Some(c) = &self.cache {
            c.invalidate(&tag_key(upstream, name, tag));
        }
    }
}

fn tag_key(upstream: &str, name: &RepoName, tag: &Tag) -> Key {
    Key::Tag(Arc::new(TagKey::new(upstream, name, tag)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn manifest(n: usize) -> Manifest {
        let bytes = Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(1000)));
        Manifest {
            digest: Digest::of_bytes(&bytes),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes,
            cached: false,
        }
    }

    #[test]
    fn serves_what_it_was_given_as_cached_and_keeps_tags_apart() {
        let mem = Memory::new(1 << 20);
        let m = manifest(1);
        assert!(mem.manifest(&m.digest).is_none());
        mem.put_manifest(&m);
        let got = mem.manifest(&m.digest).unwrap();
        assert_eq!((got.bytes, got.media_type.as_str(), got.cached), (m.bytes.clone(), m.media_type.as_str(), true));

        let (name, tag): (RepoName, Tag) = ("a/b".parse().unwrap(), "v1".parse().unwrap());
        let rec =
            TagRecord { digest: m.digest.clone(), media_type: m.media_type.clone(), checked_at: SystemTime::now() };
        mem.put_tag("up.test", &name, &tag, rec.clone());
        assert_eq!(mem.tag("up.test", &name, &tag).as_deref(), Some(&rec));
        assert!(mem.tag("other.test", &name, &tag).is_none());
        assert!(mem.tag("up.test", &"a/c".parse().unwrap(), &tag).is_none());
        mem.forget_tag("up.test", &name, &tag);
        assert!(mem.tag("up.test", &name, &tag).is_none());
        mem.forget_manifest(&m.digest);
        assert!(mem.manifest(&m.digest).is_none());
    }

    #[test]
    fn stays_within_its_budget_and_can_be_off() {
        let mem = Memory::new(64 * 1024);
        for n in 0..1000 {
            mem.put_manifest(&manifest(n));
        }
        let c = mem.cache.as_ref().unwrap();
        c.run_pending_tasks();
        assert!(c.weighted_size() <= 64 * 1024, "{}", c.weighted_size());
        assert!(c.entry_count() > 0);

        // An entry bigger than the whole budget is never kept, not even for a moment.
        let small = Memory::new(1024);
        let m = manifest(2);
        small.put_manifest(&m);
        assert!(small.manifest(&m.digest).is_none());

        let off = Memory::new(0);
        let m = manifest(1);
        off.put_manifest(&m);
        assert!(off.manifest(&m.digest).is_none());
    }
}
