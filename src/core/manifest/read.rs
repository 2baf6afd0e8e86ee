//! Reading a manifest response from an upstream: its body (bounded), verified against the
//! digests asked for and announced, and its media type.

use super::Manifests;
use crate::core::answers::Manifest;
use crate::core::error::{CoreError, ManifestMismatch};
use crate::oci::media;
use crate::oci::Digest;
use crate::upstream::{Route, UpstreamError};
use bytes::Bytes;
use http::{header, HeaderMap};
use hyper::body::Incoming;

impl Manifests {
    /// Read and verify a manifest response: its digest must equal the one requested, and
    /// the one upstream announced in `Docker-Content-Digest`.
    pub(super) async fn read_manifest(
        &self,
        route: &Route,
        resp: http::Response<Incoming>,
        expected: Option<&Digest>,
    ) -> Result<Manifest, CoreError> {
        let announced = header_digest(resp.headers());
        let (content_type, body) = read_verified_manifest(route, resp, expected.into_iter().chain(&announced)).await?;
        let digest = expected.cloned().unwrap_or_else(|| Digest::of_bytes(&body));
        let media_type = media::known_manifest_type(content_type.as_deref(), &body).ok_or_else(|| {
            CoreError::Upstream(UpstreamError::BadResponse {
                host: route.upstream.registry.host().to_string(),
                message: "response is not a manifest".into(),
            })
        })?;
        Ok(Manifest { digest, media_type, bytes: body, cached: false })
    }
}

/// The digest an upstream announced for a response (`Docker-Content-Digest`).
pub(crate) fn header_digest(h: &HeaderMap) -> Option<Digest> {
    h.get("docker-content-digest")?.to_str().ok()?.trim().parse().ok()
}

/// Read a manifest response from `route`'s upstream: its Content-Type without parameters,
/// and its body (at most `media::MAX_MANIFEST_BYTES`), verified against each of `wants`.
/// Each digest is checked with its own algorithm: an upstream may announce sha256 for a
/// manifest asked for by sha512 (Debian's docker-registry does). Which media type to
/// record is the caller's to decide.
pub(crate) async fn read_verified_manifest<'a>(
    route: &Route,
    resp: http::Response<Incoming>,
    wants: impl IntoIterator<Item = &'a Digest>,
) -> Result<(Option<String>, Bytes), CoreError> {
    let registry = &route.upstream.registry;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let body = registry.read_body(resp, media::MAX_MANIFEST_BYTES, "manifest").await.map_err(CoreError::Upstream)?;
    for want in wants {
        if !want.verifies(&body) {
            let got = Digest::of_bytes_with(want.algorithm(), &body);
            return Err(CoreError::ManifestMismatch(ManifestMismatch {
                host: registry.host().to_string(),
                name: route.name.clone(),
                got,
                want: want.clone(),
            }));
        }
    }
    Ok((content_type, body))
}
