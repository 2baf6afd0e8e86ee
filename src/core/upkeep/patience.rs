//! Patience with an upstream's rate limit, for work that is not a client waiting: prefetch
//! waits (bounded) for the budget to come back instead of failing on the first 429 — for its
//! manifests, and for its blobs (while a `Retry-After` runs, nothing is sent to the upstream,
//! blobs included; see `upstream::budget`).
//!
//! A client's pull never waits here: it gets 429 `TOOMANYREQUESTS` with `Retry-After` at once,
//! which containerd and the rest retry on their own.

use crate::core::answers::Manifest;
use crate::core::error::CoreError;
use crate::core::pull::PullThrough;
use crate::oci::media::AcceptList;
use crate::oci::Reference;
use crate::upstream::{Route, UpstreamError};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// Longest one step (a manifest, a blob) waits in all for the budget before it fails.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// The wait when a 429 did not say how long.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

impl PullThrough {
    /// A manifest, waiting out the upstream's rate limit (up to `MAX_WAIT`).
    pub(super) async fn manifest_within_budget(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<Manifest, CoreError> {
        within_budget(route, reference, || self.manifest(route, reference, accept)).await
    }
}

/// Run `step` until it is not held back by the upstream's rate limit, sleeping for the
/// `Retry-After` each time (up to `MAX_WAIT` in all); `what` names it in the log.
pub(super) async fn within_budget<T, F, Fut>(
    route: &Route,
    what: &(dyn Display + Sync),
    mut step: F,
) -> Result<T, CoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CoreError>>,
{
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        match step().await {
            Err(CoreError::Upstream(UpstreamError::TooManyRequests { host, retry_after })) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CoreError::Upstream(UpstreamError::TooManyRequests { host, retry_after }));
                }
                let wait = retry_after.unwrap_or(DEFAULT_WAIT).clamp(Duration::from_secs(1), left);
                tracing::info!(upstream = %host, repo = %route.name, %what, wait_s = wait.as_secs(),
                    "prefetch waits for the upstream's rate-limit budget");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
