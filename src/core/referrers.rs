//! The referrers of a manifest through the cache (distribution-spec 1.1, "Listing
//! Referrers"): which signatures, SBOMs and attestations name it as their `subject`.
//!
//! Sources, merged in this order (the first to list a digest wins):
//! 1. the upstream's referrers API, when it has one (a 200 with an image index);
//! 2. otherwise the fallback tag `<alg>-<hex>`: an index that pushing clients keep on
//!    registries without the API (Debian's docker-registry 2.8.2 is one);
//! 3. the manifests with that `subject` this proxy cached for the repository (pulled through
//!    it, or imported), found from the repository's image records, so another tenant's
//!    repository never shows here.
//!
//! What the upstream said (1 or 2, or that it has neither) is remembered per repository and
//! subject for the upstream's `tag_ttl` (`referrers/<upstream>/<repo>/<alg>-<hex>.json`), and
//! served stale when the upstream is unavailable. An upstream without either answers an empty
//! list, never an error: the spec forbids a 404 from a registry that has the API.

use super::error::CoreError;
use super::manifest::header_digest;
use super::pull::PullThrough;
use crate::oci::media::{self, MAX_MANIFEST_BYTES};
use crate::oci::referrers::{self, Referrer, Referrers};
use crate::oci::{Digest, Reference, RepoName};
use crate::store::Store;
use crate::upstream::{Route, UpstreamError};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A referrers list ready to serve.
#[derive(Debug, Clone)]
pub struct ReferrersAnswer {
    pub referrers: Referrers,
    /// Answered from what the cache remembered (fresh or stale), without asking upstream.
    pub cached: bool,
}

/// Where the upstream's part of a list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    /// The upstream's referrers API.
    Api,
    /// The fallback tag's index.
    FallbackTag,
    /// Neither: the upstream knows no referrers of this subject.
    Nothing,
}

/// What the upstream said about a subject's referrers, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    checked_at_ms: u64,
    source: Source,
    manifests: Vec<Referrer>,
    /// The fallback tag's digest when it was read: unchanged, it need not be fetched again.
    #[serde(default)]
    fallback_digest: Option<String>,
}

impl Record {
    fn age(&self) -> Duration {
        let at = UNIX_EPOCH + Duration::from_millis(self.checked_at_ms);
        SystemTime::now().duration_since(at).unwrap_or_default()
    }
}

impl PullThrough {
    /// The referrers of `subject` in the route's repository, of `artifact_type` when given.
    pub async fn referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersAnswer, CoreError> {
        let (upstream, cached) = self.upstream_referrers(route, subject).await?;
        let mut list: Referrers = upstream.into_iter().collect();
        list.merge(self.cached_referrers(route, subject).await?);
        if let Some(t) = artifact_type {
            list.filter_artifact_type(t);
        }
        Ok(ReferrersAnswer { referrers: list, cached })
    }

    /// The upstream's referrers of `subject`: remembered within the tag TTL, else asked for
    /// (and remembered); the last answer when the upstream is unavailable. `true` when the
    /// answer came from memory.
    async fn upstream_referrers(&self, route: &Route, subject: &Digest) -> Result<(Vec<Referrer>, bool), CoreError> {
        let path = record_path(route.upstream.host(), &route.name, subject);
        let known = read_record(self.store(), &path).await?;
        if let Some(rec) = &known {
            if rec.age() < self.manifests().tag_ttl(route) {
                return Ok((rec.manifests.clone(), true));
            }
        }
        match ask_upstream(route, subject, known.as_ref()).await {
            Ok(rec) => {
                write_record(self.store(), path, &rec).await?;
                tracing::debug!(repo = %route.name, %subject, source = ?rec.source, referrers = rec.manifests.len(), "referrers from the upstream");
                Ok((rec.manifests, false))
            }
            Err(e) if e.is_unavailable() => {
                match known {
                    Some(rec) => {
                        crate::metrics::METRICS.stale_serves.with_label_values(&[route.upstream.host()]).inc();
                        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %subject, error = %e,
                            "upstream unavailable; serving the referrers it listed last (stale)");
                        Ok((rec.manifests, true))
                    }
                    // An air-gapped site asks nothing: what the cache holds is the answer.
                    None if matches!(e, UpstreamError::Offline { .. }) => Ok((Vec::new(), true)),
                    None => {
                        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %subject, error = %e,
                            "upstream unavailable and its referrers never asked; listing only the cached ones");
                        Ok((Vec::new(), true))
                    }
                }
            }
            Err(e) => Err(CoreError::Upstream(e)),
        }
    }

    /// The manifests cached for the route's repository whose `subject` is `subject`.
    async fn cached_referrers(&self, route: &Route, subject: &Digest) -> Result<Vec<Referrer>, CoreError> {
        let (host, name, subject) = (route.upstream.host().to_string(), route.name.clone(), subject.clone());
        let found = self.store().run(move |store| local_referrers(store, &host, &name, &subject)).await?;
        Ok(found.into_iter().map(|(_, r)| r).collect())
    }
}

/// The manifests cached for a repository (its image records) whose `subject` is `subject`,
/// with their digests. Blocking.
pub(super) fn local_referrers(
    store: &Store,
    host: &str,
    name: &RepoName,
    subject: &Digest,
) -> io::Result<Vec<(Digest, Referrer)>> {
    let want = subject.to_string();
    let mut out = Vec::new();
    for (digest, rec) in store.images(host, name)? {
        // Only OCI manifests and indexes carry a `subject`.
        if rec.media_type != media::OCI_MANIFEST && rec.media_type != media::OCI_INDEX {
            continue;
        }
        let Some((bytes, _)) = store.read_manifest(&digest, MAX_MANIFEST_BYTES)? else {
            continue;
        };
        match referrers::referrer_of(&bytes, &rec.media_type, &digest) {
            Some((s, r)) if s == want => out.push((digest, r)),
            _ => {}
        }
    }
    Ok(out)
}

/// Ask the upstream: its referrers API, else the fallback tag. The tag is checked with a
/// `HEAD` first (Docker Hub does not count those against its pull limit) and fetched only
/// when it exists and moved since `known` was recorded.
async fn ask_upstream(route: &Route, subject: &Digest, known: Option<&Record>) -> Result<Record, UpstreamError> {
    let registry = &route.upstream.registry;
    let record =
        |source, manifests, fallback_digest| Record { checked_at_ms: now_ms(), source, manifests, fallback_digest };
    match registry.referrers(&route.name, subject).await {
        Ok(resp) => {
            let body = registry.read_body(resp, MAX_MANIFEST_BYTES, "referrers").await?;
            // A 200 that is not an index (a web page, say) means no referrers API.
            if let Some(list) = referrers::parse_index(&body) {
                return Ok(record(Source::Api, list, None));
            }
        }
        Err(e) if no_such_api(&e) => {}
        Err(e) => return Err(e),
    }
    let tag = Reference::Tag(referrers::fallback_tag(subject));
    let head = match registry.manifest(&route.name, &tag, Method::HEAD).await {
        Ok(resp) => header_digest(resp.headers()).map(|d| d.to_string()),
        Err(e) if no_such_api(&e) => return Ok(record(Source::Nothing, Vec::new(), None)),
        Err(e) => return Err(e),
    };
    if let Some(rec) = known.filter(|rec| head.is_some() && rec.fallback_digest == head) {
        return Ok(record(rec.source, rec.manifests.clone(), head));
    }
    let resp = match registry.manifest(&route.name, &tag, Method::GET).await {
        Ok(resp) => resp,
        Err(e) if no_such_api(&e) => return Ok(record(Source::Nothing, Vec::new(), None)),
        Err(e) => return Err(e),
    };
    let announced = header_digest(resp.headers());
    let body = registry.read_body(resp, MAX_MANIFEST_BYTES, "referrers index").await?;
    let got = Digest::of_bytes(&body);
    if let Some(want) = announced.filter(|w| *w != got) {
        return Err(UpstreamError::BadResponse {
            host: registry.host().to_string(),
            message: format!("referrers tag {tag} of {} hashes to {got}, announced as {want}", route.name),
        });
    }
    Ok(match referrers::parse_index(&body) {
        Some(list) => record(Source::FallbackTag, list, Some(got.to_string())),
        // The spec: a fallback tag that is not an index means no referrers.
        None => record(Source::Nothing, Vec::new(), Some(got.to_string())),
    })
}

/// Whether an answer means "not here" (a 404, or a client error from a registry that does not
/// route the path at all), as opposed to a failure worth reporting.
fn no_such_api(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::NotFound { .. } => true,
        UpstreamError::Status { status, .. } => {
            matches!(*status, StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED)
        }
        _ => false,
    }
}

/// Relative to the cache directory. `host` is a validated config host and `name` a validated
/// repository name (no `..`, no leading dots), so the path stays under `referrers/`.
fn record_path(host: &str, name: &RepoName, subject: &Digest) -> String {
    format!("referrers/{host}/{name}/{}-{}.json", subject.algorithm().as_str(), subject.hex())
}

async fn read_record(store: &Arc<Store>, relative: &str) -> Result<Option<Record>, CoreError> {
    let bytes = store.read_file_async(relative).await?;
    // A damaged record is as good as none: the upstream is asked again.
    Ok(bytes.and_then(|b| serde_json::from_slice::<Record>(&b).ok()))
}

async fn write_record(store: &Arc<Store>, relative: String, rec: &Record) -> Result<(), CoreError> {
    let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
    store.write_file_async(relative, bytes).await?;
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_live_under_their_repository() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let n: RepoName = "team/app".parse().unwrap();
        assert_eq!(
            record_path("lab.test:5000", &n, &d),
            format!("referrers/lab.test:5000/team/app/sha256-{}.json", "ab".repeat(32))
        );
    }

    #[test]
    fn only_missing_apis_count_as_none() {
        let h = || "up".to_string();
        assert!(no_such_api(&UpstreamError::NotFound { host: h() }));
        assert!(no_such_api(&UpstreamError::Status { host: h(), status: StatusCode::METHOD_NOT_ALLOWED }));
        assert!(!no_such_api(&UpstreamError::Status { host: h(), status: StatusCode::BAD_GATEWAY }));
        assert!(!no_such_api(&UpstreamError::Connect { host: h(), message: "refused".into() }));
    }
}
