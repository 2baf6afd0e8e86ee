//! Manifests and tags: the tier walk for a manifest (memory, disk, shared tier, peers, the
//! upstream), tag answers and their revalidation, the in-memory manifest cache, the image
//! records' pull times, and tag-list paging. [`Manifests`] owns their state; the service
//! (`pull`) delegates to it.
//!
//! Policy:
//! - by digest: immutable; served from the cache without contacting upstream (once the
//!   route's upstream vouched for it, see `vouch`).
//! - by tag: trusted for the upstream's `tag_ttl`, then revalidated with a HEAD (cheap, and
//!   not counted against Docker Hub's pull limit); if upstream is unreachable or failing,
//!   the last known digest is served stale and that is logged. Within the
//!   `stale_while_revalidate` window after the TTL, the cached answer is given at once and
//!   the revalidation runs in the background (see `revalidate`). While the upstream's
//!   rate-limit budget is low or spent, a tag that moved is followed only when its new
//!   manifest is cached; the GET it would cost is kept for content the cache does not have
//!   (see `upstream::budget`).

mod by_digest;
mod by_tag;
pub(super) mod memory;
pub(super) mod pull_times;
mod read;
pub(super) mod revalidate;
mod tag_list;

pub(crate) use read::{header_digest, read_verified_manifest};
pub(super) use revalidate::Owner;

use super::answers::Manifest;
use super::blob::source::Via;
use super::error::CoreError;
use super::flight::Flight;
use super::policy::TagPolicies;
use super::vouch::{self, Content};
use crate::cluster::Cluster;
use crate::oci::media::AcceptList;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::shared::SharedTier;
use crate::store::Store;
use crate::upstream::Route;
use memory::Memory;
use pull_times::Pulls;
use std::sync::{Arc, Weak};

/// Memory for manifests and tag answers unless `with_memory` says otherwise.
const DEFAULT_MEMORY: u64 = 64 << 20;

/// One tag of one repository of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TagKey {
    pub upstream: String,
    pub name: RepoName,
    pub tag: Tag,
}

impl TagKey {
    pub(super) fn new(upstream: &str, name: &RepoName, tag: &Tag) -> TagKey {
        TagKey { upstream: upstream.to_string(), name: name.clone(), tag: tag.clone() }
    }

    fn of(route: &Route, tag: &Tag) -> TagKey {
        TagKey::new(route.upstream.host(), &route.name, tag)
    }
}

/// What concurrent manifest requests take turns on.
#[derive(Clone, PartialEq, Eq, Hash)]
enum TurnKey {
    Tag(TagKey),
    Digest(Digest),
}

/// The manifest side of the service: the tiers it reads and the state it keeps.
pub(super) struct Manifests {
    store: Arc<Store>,
    /// The tier shared by every node (an S3 bucket), when configured.
    shared: Option<Arc<SharedTier>>,
    /// The peers that share single flight with this node, when configured.
    cluster: Option<Arc<Cluster>>,
    /// One turn at a time per manifest fetch (a tag of a repository, or a digest).
    turns: Flight<TurnKey>,
    /// Verified manifests and fresh tag answers, served without file IO (see `memory`).
    memory: Memory,
    /// Image records' pull times, written in batches (see `pull_times`).
    pulls: Pulls,
    /// The tags being refreshed in the background (see `revalidate`).
    refreshes: Flight<TagKey>,
    /// Each upstream's tag TTL, immutable tags and lifecycle policies (see `policy`).
    policies: TagPolicies,
    /// The service that owns this, for background refreshes (see `revalidate`); `None`
    /// unless the service was shared (`PullThrough::into_shared`).
    owner: Option<Weak<dyn Owner>>,
}

impl Manifests {
    pub(super) fn new(store: Arc<Store>, shared: Option<Arc<SharedTier>>, cluster: Option<Arc<Cluster>>) -> Manifests {
        Manifests {
            store,
            shared,
            cluster,
            turns: Flight::default(),
            memory: Memory::new(DEFAULT_MEMORY),
            pulls: Pulls::default(),
            refreshes: Flight::default(),
            policies: TagPolicies::default(),
            owner: None,
        }
    }

    /// Use at most `bytes` of memory for manifests and tag answers (`0`: none).
    pub(super) fn set_memory(&mut self, bytes: u64) {
        self.memory = Memory::new(bytes);
    }

    pub(super) fn set_policies(&mut self, policies: TagPolicies) {
        self.policies = policies;
    }

    pub(super) fn set_owner(&mut self, owner: Weak<dyn Owner>) {
        self.owner = Some(owner);
    }

    pub(super) fn policies(&self) -> &TagPolicies {
        &self.policies
    }

    /// Write the image records' pull times gathered in memory (see `pull_times`). Blocking.
    pub(super) fn flush_pulls(&self) -> usize {
        self.pulls.flush(&self.store)
    }

    /// Forget an image's pull time (its record was removed).
    pub(super) fn forget_pull(&self, upstream: &str, name: &RepoName, digest: &Digest) {
        self.pulls.forget(upstream, name, digest);
    }

    /// Forget what memory holds of a removed tag or manifest.
    pub(super) fn forget_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) {
        self.memory.forget_tag(upstream, name, tag);
    }

    pub(super) fn forget_manifest(&self, digest: &Digest) {
        self.memory.forget_manifest(digest);
    }

    /// A manifest for a client, or for a peer node (`Via::Peer`: never asked of other peers).
    pub(super) async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
        via: Via,
    ) -> Result<Manifest, CoreError> {
        let m = match reference {
            Reference::Digest(d) => self.by_digest(route, d, via).await?,
            Reference::Tag(t) => self.by_tag(route, t).await?,
        };
        if !accept.accepts(&m.media_type) {
            return Err(CoreError::NotAcceptable { media_type: m.media_type });
        }
        // The repository's image record: lifecycle policies and `ls` work from these. On
        // disk at the first pull, then batched in memory (see `pull_times`).
        self.pulls.note(&self.store, route.upstream.host(), &route.name, &m.digest, &m.media_type).await?;
        Ok(m)
    }

    /// A manifest by digest; one that was not fetched from this route's upstream just now
    /// is served only once that upstream vouched for it in this repository (see `vouch`).
    async fn by_digest(&self, route: &Route, digest: &Digest, via: Via) -> Result<Manifest, CoreError> {
        let m = self.by_digest_anywhere(route, digest, via).await?;
        // A peer asking has vouched for its route already (it asks only after its own check).
        if m.cached && via == Via::Client {
            vouch::vouch(&self.store, route, digest, Content::Manifest).await?;
        }
        Ok(m)
    }
}
