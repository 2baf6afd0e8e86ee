//! Core's tag policy, per upstream: how long a tag's answer is trusted (`tag_ttl`), for how
//! long more it is answered while revalidated in the background (`stale_while_revalidate`),
//! which tags never change once cached (`immutable_tags`), and which lifecycle policy prunes
//! a repository. Built by `crate::settings` from `[[upstream]]` and its
//! `[[upstream.repository]]` rules; core reads it by the route's upstream host. And the
//! service's integrity settings (`[cache] verify_on_read`, `scrub_rate`).

use super::lifecycle::Policy;
use super::rate::Rate;
use crate::oci::RepoName;
use crate::pattern::Pattern;
use std::collections::HashMap;
use std::time::Duration;

/// Every upstream's tag policy, by host.
#[derive(Debug, Clone, Default)]
pub struct TagPolicies {
    by_upstream: HashMap<String, TagPolicy>,
}

/// One upstream's tag policy.
#[derive(Debug, Clone)]
pub struct TagPolicy {
    /// How long a tag→digest answer is trusted before it is revalidated upstream.
    pub tag_ttl: Duration,
    /// After `tag_ttl`, how long a cached answer is still given at once while the tag is
    /// revalidated in the background (zero: off; see `revalidate`).
    pub stale_while_revalidate: Duration,
    /// Per-repository settings, in configuration order: the first whose pattern matches applies.
    pub repositories: Vec<RepositoryPolicy>,
}

/// The settings of one upstream's repositories whose names match a glob.
#[derive(Debug, Clone)]
pub struct RepositoryPolicy {
    pub pattern: Pattern,
    /// Tags that, once cached, are never revalidated upstream.
    pub immutable_tags: Vec<Pattern>,
    /// Overrides the upstream's `stale_while_revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    pub lifecycle: Option<Policy>,
}

impl TagPolicies {
    pub fn new(by_upstream: impl IntoIterator<Item = (String, TagPolicy)>) -> TagPolicies {
        TagPolicies { by_upstream: by_upstream.into_iter().collect() }
    }

    /// The upstream's `tag_ttl`; zero (always revalidate) for an upstream without a policy.
    pub fn tag_ttl(&self, upstream: &str) -> Duration {
        self.by_upstream.get(upstream).map_or(Duration::ZERO, |p| p.tag_ttl)
    }

    fn repository(&self, upstream: &str, name: &str) -> Option<&RepositoryPolicy> {
        self.by_upstream.get(upstream)?.repositories.iter().find(|r| r.pattern.matches(name))
    }

    /// The stale-while-revalidate window of repository `name`: its rule's, else the
    /// upstream's; zero (off) for an upstream without a policy.
    pub fn stale_while_revalidate(&self, upstream: &str, name: &RepoName) -> Duration {
        match self.repository(upstream, name.as_str()).and_then(|r| r.stale_while_revalidate) {
            Some(w) => w,
            None => self.by_upstream.get(upstream).map_or(Duration::ZERO, |p| p.stale_while_revalidate),
        }
    }

    /// Whether `tag` of repository `name` never changes once cached.
    pub fn immutable(&self, upstream: &str, name: &RepoName, tag: &str) -> bool {
        self.repository(upstream, name.as_str()).is_some_and(|r| r.immutable_tags.iter().any(|p| p.matches(tag)))
    }

    /// The lifecycle policy of repository `name`, if its rule has one.
    pub fn lifecycle(&self, upstream: &str, name: &RepoName) -> Option<&Policy> {
        self.repository(upstream, name.as_str())?.lifecycle.as_ref()
    }
}

/// The integrity settings of the pull-through service (`[cache] verify_on_read`,
/// `[cache] scrub_rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntegritySettings {
    /// Hash cached blobs as they are served (whole-blob reads).
    pub verify_on_read: bool,
    /// The daemon's background scrub speed; `None`: no background scrub.
    pub scrub_rate: Option<Rate>,
}
