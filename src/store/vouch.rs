//! What each upstream vouched for in each repository: the blobs and manifests a cached
//! blob may be served for under that (upstream, repository).
//!
//! Blobs are stored once per digest, whoever fetched them; serving one under another
//! upstream or repository without asking would let anyone allowed any repository read a
//! private image's layers by digest. An (upstream, repository) vouches for a digest when
//! - a manifest recorded for that repository (an image or tag record: the upstream served
//!   it there, or it was imported under that name) is that digest or references it,
//!   directly or through the cached manifests it references (an index's children); or
//! - the upstream answered a `HEAD` for it in that repository (a `_blobs` record).
//!
//! The answers live in memory, one set per repository, built lazily from the records the
//! first time a repository is asked about and extended when its record directories change
//! (another request, or another process such as `import`, added records): a lookup that
//! hits costs a hash-set probe; a miss costs a `stat` of three directories, and reads only
//! records and manifests not seen before. Each manifest is parsed once.

use super::records::Stamps;
use super::Store;
use crate::oci::{manifest, media, Digest, RepoName};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A directory change this recent may be followed by another within the filesystem's
/// timestamp granularity, unseen: such a stamp is not trusted to mean "nothing new".
const SETTLE: Duration = Duration::from_secs(2);

type RepoKey = (String, RepoName);

#[derive(Default)]
struct RepoVouches {
    /// Digests this repository's upstream vouched for.
    digests: HashSet<Digest>,
    /// Record roots (manifests) already followed.
    followed: HashSet<Digest>,
    /// Record roots whose manifest was not cached when read: followed once it is.
    pending: HashSet<Digest>,
    /// The record directories' stamps at the last read, if they had settled by then.
    read_at: Option<Stamps>,
}

#[derive(Default)]
pub struct Vouches {
    repos: Mutex<HashMap<RepoKey, RepoVouches>>,
}

impl Vouches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RepoKey, RepoVouches>> {
        self.repos.lock().expect("vouches lock")
    }

    /// From memory only (no IO): whether `digest` is known to be vouched for here.
    pub fn known(&self, upstream: &str, name: &RepoName, digest: &Digest) -> bool {
        self.lock().get(&(upstream.to_string(), name.clone())).is_some_and(|r| r.digests.contains(digest))
    }

    fn add(&self, upstream: &str, name: &RepoName, digest: &Digest) {
        self.lock().entry((upstream.to_string(), name.clone())).or_default().digests.insert(digest.clone());
    }
}

impl Store {
    /// From memory only (no IO, for the request path): whether `upstream` is known to have
    /// vouched for `digest` in `name`. A miss says nothing: ask `vouched`.
    pub fn vouches_known(&self, upstream: &str, name: &RepoName, digest: &Digest) -> bool {
        self.vouches.known(upstream, name, digest)
    }

    /// Whether `upstream` vouched for `digest` in repository `name`, from memory, else from
    /// the records on disk (read again only if they changed). Blocking on a memory miss.
    pub fn vouched(&self, upstream: &str, name: &RepoName, digest: &Digest) -> io::Result<bool> {
        if self.vouches.known(upstream, name, digest) {
            return Ok(true);
        }
        self.refresh_vouches(upstream, name)?;
        Ok(self.vouches.known(upstream, name, digest))
    }

    /// Remember in memory that `upstream` just served `digest` for `name` (a record of it
    /// follows). No IO.
    pub fn remember_vouch(&self, upstream: &str, name: &RepoName, digest: &Digest) {
        self.vouches.add(upstream, name, digest);
    }

    /// Remember that `upstream` confirmed `digest` in `name` (it answered a `HEAD`), in
    /// memory and as a record. Blocking.
    pub fn confirm(&self, upstream: &str, name: &RepoName, digest: &Digest) -> io::Result<()> {
        self.vouches.add(upstream, name, digest);
        self.records.put_confirmed(upstream, name, digest)
    }

    /// Read what changed in a repository's records since the last read, and follow the
    /// manifests not followed yet.
    fn refresh_vouches(&self, upstream: &str, name: &RepoName) -> io::Result<()> {
        let key = (upstream.to_string(), name.clone());
        let stamps = self.records.stamps(upstream, name)?;
        let (unchanged, pending) = {
            let repos = self.vouches.lock();
            let r = repos.get(&key);
            (r.is_some_and(|r| r.read_at == Some(stamps)), r.map(|r| r.pending.clone()).unwrap_or_default())
        };
        // Records unchanged: only manifests that were missing may have arrived since.
        let mut roots: Vec<Digest> = pending.into_iter().filter(|d| self.cas.is_manifest(d)).collect();
        if !unchanged {
            roots.extend(self.records.images(upstream, name)?.into_iter().map(|(d, _)| d));
            roots.extend(self.records.tags(upstream, name)?.into_iter().map(|(_, r)| r.digest));
        }
        let confirmed = if unchanged { Vec::new() } else { self.records.confirmed(upstream, name)? };
        let followed = self.vouches.lock().get(&key).map(|r| r.followed.clone()).unwrap_or_default();

        // Follow new roots through the cached manifests they reference, outside the lock.
        let mut found = Vec::new();
        let mut newly_followed = Vec::new();
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<Digest> = roots.into_iter().filter(|d| !followed.contains(d)).collect();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            found.push(d.clone());
            match self.cas.read_manifest(&d, media::MAX_MANIFEST_BYTES)? {
                Some((bytes, _)) => {
                    for r in manifest::references(&bytes) {
                        if !followed.contains(&r) && self.cas.is_manifest(&r) {
                            stack.push(r.clone());
                        }
                        found.push(r);
                    }
                    newly_followed.push(d);
                }
                // A recorded manifest evicted from the cache: follow it once it is back.
                None => missing.push(d),
            }
        }

        // Trust the stamps only once they are older than the timestamp granularity.
        let settled = stamps.latest().is_none_or(|t| SystemTime::now().duration_since(t).is_ok_and(|a| a > SETTLE));
        let mut repos = self.vouches.lock();
        // A repository with no records at all is not remembered: requests for made-up names
        // must not grow memory (asking again costs three `stat`s).
        if stamps == Stamps::default() && found.is_empty() && !repos.contains_key(&key) {
            return Ok(());
        }
        let r = repos.entry(key).or_default();
        r.digests.extend(found.into_iter().chain(confirmed));
        for d in newly_followed {
            r.pending.remove(&d);
            r.followed.insert(d);
        }
        r.pending.extend(missing);
        r.read_at = settled.then_some(stamps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ImageRecord, SpaceBudget};

    fn put(store: &Store, json: &str) -> Digest {
        let d = Digest::of_bytes(json.as_bytes());
        store.cas.put_manifest(&d, media::OCI_MANIFEST, json.as_bytes()).unwrap();
        d
    }

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn vouched_by_records_and_confirmations_per_repository() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), SpaceBudget::unlimited()).unwrap();
        let (a, b): (RepoName, RepoName) = ("team/private".parse().unwrap(), "other/public".parse().unwrap());
        let child =
            put(&store, &format!(r#"{{"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}]}}"#, d('c'), d('e')));
        let index = put(&store, &format!(r#"{{"manifests":[{{"digest":"{child}"}}]}}"#));
        let now = SystemTime::now();
        let rec = ImageRecord { media_type: media::OCI_INDEX.into(), cached_at: now, pulled_at: now };
        store.records.put_image("a.test", &a, &index, &rec).unwrap();

        // The index, its child and the child's blobs, under a.test/team/private only.
        for x in [&index, &child, &d('c'), &d('e')] {
            assert!(store.vouched("a.test", &a, x).unwrap(), "{x}");
            assert!(!store.vouched("b.test", &a, x).unwrap(), "{x} under another upstream");
            assert!(!store.vouched("a.test", &b, x).unwrap(), "{x} under another repository");
        }
        assert!(!store.vouched("a.test", &a, &d('9')).unwrap());
        // Asking about repositories nobody recorded leaves nothing behind.
        for i in 0..100 {
            let made_up: RepoName = format!("made/up{i}").parse().unwrap();
            assert!(!store.vouched("b.test", &made_up, &d('9')).unwrap());
        }
        assert_eq!(store.vouches.lock().len(), 1);

        // A confirmation is remembered, and read back by a store that starts afresh.
        store.confirm("b.test", &b, &d('e')).unwrap();
        assert!(store.vouches.known("b.test", &b, &d('e')));
        drop(store);
        let store = Store::open(root.path(), SpaceBudget::unlimited()).unwrap();
        assert!(store.vouched("b.test", &b, &d('e')).unwrap());
        assert!(!store.vouched("b.test", &b, &d('c')).unwrap());
        assert!(store.vouched("a.test", &a, &d('e')).unwrap());
    }

    #[test]
    fn records_written_by_another_process_are_picked_up() {
        let root = tempfile::tempdir().unwrap();
        let daemon = Store::open(root.path(), SpaceBudget::unlimited()).unwrap();
        let name: RepoName = "r".parse().unwrap();
        assert!(!daemon.vouched("a.test", &name, &d('e')).unwrap());
        // An import, through its own store, after the daemon read the (empty) records.
        let import = Store::open(root.path(), SpaceBudget::unlimited()).unwrap();
        let m = put(&import, &format!(r#"{{"layers":[{{"digest":"{}"}}]}}"#, d('e')));
        let now = SystemTime::now();
        let rec = ImageRecord { media_type: media::OCI_MANIFEST.into(), cached_at: now, pulled_at: now };
        import.records.put_image("a.test", &name, &m, &rec).unwrap();
        assert!(daemon.vouched("a.test", &name, &d('e')).unwrap());
    }
}
