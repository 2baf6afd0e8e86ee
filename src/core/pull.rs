//! The pull-through service: answers manifest, blob and tag-list requests from the cache,
//! filling it from the upstream a request was routed to. A façade: the manifest side is
//! `manifest::Manifests`; blobs are filled once per digest (see `fill`), verified before
//! they enter the cache; the upkeep (`upkeep`) works on the service from above.

use super::answers::{Manifest, TagsPage};
use super::blob::fill::Fills;
use super::blob::source::Via;
use super::error::CoreError;
use super::manifest::{Manifests, Owner};
use super::policy::{IntegritySettings, TagPolicies};
use super::vouch::{self, Content};
use crate::cluster::Cluster;
use crate::oci::media::AcceptList;
use crate::oci::{Digest, ImageRef, Reference, RepoName, TagsQuery};
use crate::shared::SharedTier;
use crate::store::Store;
use crate::upstream::{Route, RouteError, Upstreams};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Weak};

pub struct PullThrough {
    store: Arc<Store>,
    fills: Arc<Fills>,
    upstreams: Upstreams,
    /// Images never evicted or expired.
    pins: Vec<ImageRef>,
    /// The tier shared by every node (an S3 bucket), when configured.
    shared: Option<Arc<SharedTier>>,
    /// The peers that share single flight with this node, when configured.
    cluster: Option<Arc<Cluster>>,
    /// Manifests, tags and their state (see `manifest`).
    manifests: Manifests,
    /// Verify on read, background scrub (see `upkeep::integrity`).
    integrity: IntegritySettings,
}

impl PullThrough {
    pub fn new(
        store: Arc<Store>,
        upstreams: Upstreams,
        pins: Vec<ImageRef>,
        max_fills: usize,
        shared: Option<Arc<SharedTier>>,
        cluster: Option<Arc<Cluster>>,
    ) -> PullThrough {
        PullThrough {
            manifests: Manifests::new(store.clone(), shared.clone(), cluster.clone()),
            store,
            fills: Arc::new(Fills::new(max_fills, shared.clone(), cluster.clone())),
            upstreams,
            pins,
            shared,
            cluster,
            integrity: Default::default(),
        }
    }

    /// Use at most `bytes` of memory for manifests and tag answers (`0`: none).
    pub fn with_memory(mut self, bytes: u64) -> PullThrough {
        self.manifests.set_memory(bytes);
        self
    }

    pub fn with_tag_policies(mut self, policies: TagPolicies) -> PullThrough {
        self.manifests.set_policies(policies);
        self
    }

    /// Use these integrity settings (default: no verify on read, no background scrub).
    pub fn with_integrity(mut self, settings: IntegritySettings) -> PullThrough {
        self.integrity = settings;
        self
    }

    /// The service in an `Arc`, able to work in the background (stale-while-revalidate's
    /// refreshes hold it); without, tags past their TTL are revalidated in the foreground.
    pub fn into_shared(self) -> Arc<PullThrough> {
        Arc::new_cyclic(|me: &Weak<PullThrough>| {
            let mut pt = self;
            let owner: Weak<dyn Owner> = me.clone();
            pt.manifests.set_owner(owner);
            pt
        })
    }

    pub fn integrity(&self) -> IntegritySettings {
        self.integrity
    }

    /// Write the image records' pull times gathered in memory since the last flush (see
    /// `pull_times`); the daemon does so every housekeeping tick and at shutdown. Blocking.
    pub fn flush_pulls(&self) -> usize {
        self.manifests.flush_pulls()
    }

    /// Start background work: ECR token refresh, and a check that the shared tier takes
    /// reads and writes (a warning that says what to fix when it does not). Inside the
    /// runtime, once.
    pub fn start_background(&self) {
        for u in self.upstreams.iter() {
            u.registry.start_background();
        }
        if let Some(c) = &self.cluster {
            c.start_background();
        }
        if let Some(s) = self.shared.clone() {
            tokio::spawn(async move {
                match s.probe().await {
                    Ok(()) => tracing::info!(tier = %s.describe(), "shared tier reachable: reads and writes work"),
                    Err(e) => tracing::warn!(tier = %s.describe(), error = %e,
                        "shared tier cannot be read or written: check [shared.s3] (bucket, endpoint_url, region, path_style) and the AWS credentials (environment, profile, IRSA); pulls go to the upstream meanwhile"),
                }
            });
        }
    }

    /// The shared tier's location and state, when one is configured.
    pub fn shared_tier(&self) -> Option<(String, crate::shared::TierHealth)> {
        self.shared.as_ref().map(|s| (s.describe(), s.health()))
    }

    /// Each upstream's host and what is known about reaching it.
    pub fn upstream_reachability(&self) -> Vec<(String, crate::upstream::Reachability)> {
        self.upstreams.iter().map(|u| (u.host().to_string(), u.registry.reachability())).collect()
    }

    /// Each upstream's rate-limit budget as far as its answers told (for `/readyz`).
    pub fn upstream_budgets(&self) -> serde_json::Map<String, serde_json::Value> {
        self.upstreams.iter().map(|u| (u.host().to_string(), u.registry.budget().describe())).collect()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The blob fills, for the upkeep (which they ask for room).
    pub(super) fn fills(&self) -> &Arc<Fills> {
        &self.fills
    }

    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    pub fn route(&self, ns: Option<&str>, name: &RepoName) -> Result<Route, RouteError> {
        self.upstreams.resolve(ns, name)
    }

    /// The cluster's peer set, when configured (for `/readyz`).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<Manifest, CoreError> {
        self.manifest_via(route, reference, accept, Via::Client).await
    }

    /// A manifest for a client, or for a peer node (`Via::Peer`: never asked of other peers).
    pub async fn manifest_via(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
        via: Via,
    ) -> Result<Manifest, CoreError> {
        self.manifests.manifest(route, reference, accept, via).await
    }

    /// One page of a repository's tag list (see `manifest::tag_list`). `listed_as` is the
    /// repository's name as the client asked for it (with any prefix).
    pub async fn tags(&self, route: &Route, listed_as: &RepoName, query: &TagsQuery) -> Result<TagsPage, CoreError> {
        self.manifests.tags(route, listed_as, query).await
    }

    /// The manifest side, for the upkeep and the referrers API.
    pub(super) fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    /// The images configured as pinned.
    pub(super) fn pins(&self) -> &[ImageRef] {
        &self.pins
    }

    pub(super) fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub(super) fn shared(&self) -> Option<&Arc<SharedTier>> {
        self.shared.as_ref()
    }

    /// `Ok` once `route`'s upstream vouched for `digest` there (see `vouch`).
    pub(super) async fn vouch(&self, route: &Route, digest: &Digest, content: Content) -> Result<(), CoreError> {
        vouch::vouch(&self.store, route, digest, content).await
    }
}

impl Owner for PullThrough {
    fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    fn warm_blob<'a>(&'a self, route: &'a Route, digest: &'a Digest) -> BoxFuture<'a, Result<(), CoreError>> {
        Box::pin(async move { self.blob(route, digest).await.map(drop) })
    }
}
