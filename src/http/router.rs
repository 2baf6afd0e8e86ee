//! Request paths to typed endpoints. Parsing is where untrusted strings become `RepoName`,
//! `Reference` and `Digest`; nothing past this point sees a raw path.

use super::error::ApiError;
use crate::oci::{Digest, Reference, RepoName};
use http::Method;

#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`: the API version check.
    Base,
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    Blob {
        name: RepoName,
        digest: Digest,
    },
    Tags {
        name: RepoName,
    },
    /// `/v2/<name>/referrers/<digest>`: the manifests whose `subject` is `digest`.
    Referrers {
        name: RepoName,
        digest: Digest,
    },
}

/// What kind of endpoint a request was for, without its arguments: what the metrics and
/// the request log are labelled by, and what decides which metrics a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    Base,
    Manifest,
    Blob,
    Tags,
    Referrers,
    /// The path did not route (not the API, a bad name or digest, a write method).
    Invalid,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Base => "base",
            EndpointKind::Manifest => "manifest",
            EndpointKind::Blob => "blob",
            EndpointKind::Tags => "tags",
            EndpointKind::Referrers => "referrers",
            EndpointKind::Invalid => "invalid",
        }
    }
}

impl Endpoint {
    /// The repository the request is about; `None` for `/v2/`.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base => None,
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// The digest the request names, if it names one (a manifest by digest, a blob, a
    /// referrers subject).
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Endpoint::Manifest { reference: Reference::Digest(d), .. }
            | Endpoint::Blob { digest: d, .. }
            | Endpoint::Referrers { digest: d, .. } => Some(d),
            Endpoint::Base | Endpoint::Manifest { .. } | Endpoint::Tags { .. } => None,
        }
    }

    pub fn kind(&self) -> EndpointKind {
        match self {
            Endpoint::Base => EndpointKind::Base,
            Endpoint::Manifest { .. } => EndpointKind::Manifest,
            Endpoint::Blob { .. } => EndpointKind::Blob,
            Endpoint::Tags { .. } => EndpointKind::Tags,
            Endpoint::Referrers { .. } => EndpointKind::Referrers,
        }
    }
}

pub fn route(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let not_found = || ApiError::not_found("not an OCI distribution API path");
    let rest = match path {
        "/v2" | "/v2/" => {
            return read_only(method).map(|_| Endpoint::Base);
        }
        p => p.strip_prefix("/v2/").ok_or_else(not_found)?,
    };
    if rest == "_catalog" {
        return Err(ApiError::not_offered("the catalog is not available through a pull-through cache"));
    }
    let parse_name = |n: &str| n.parse::<RepoName>().map_err(ApiError::name_invalid);
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let name = parse_name(name)?;
        read_only(method)?;
        return Ok(Endpoint::Tags { name });
    }
    // A digest or reference never holds a `/`: `/v2/x/referrers/manifests/v1` is a manifest of
    // repository `x/referrers`, and `/v2/x/manifests/referrers/<digest>` the referrers of one in
    // `x/manifests`.
    if let Some((name, digest)) = rest.rsplit_once("/referrers/").filter(|(_, d)| !d.contains('/')) {
        let name = parse_name(name)?;
        read_only(method)?;
        let digest = digest.parse::<Digest>().map_err(ApiError::digest_invalid)?;
        return Ok(Endpoint::Referrers { name, digest });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let name = parse_name(name)?;
        // A malformed digest is a bad request whatever the method (the conformance suite's
        // "400 response body" check PUTs one); then the method; then the tag.
        let reference = match reference.parse::<Reference>() {
            Err(crate::oci::ReferenceError::Digest(d)) => return Err(ApiError::digest_invalid(d)),
            parsed => parsed,
        };
        read_only(method)?;
        // The spec's tag grammar decides what a tag is; anything else names no manifest, so it
        // is unknown (404), as the distribution spec's pull tests expect, not a bad request.
        // Nothing is looked up for it: the request ends here.
        let reference = reference.map_err(|e| ApiError::manifest_unknown(e.to_string()))?;
        return Ok(Endpoint::Manifest { name, reference });
    }
    if let Some((name, _)) = rest.split_once("/blobs/uploads") {
        parse_name(name)?;
        return Err(ApiError::unsupported_method());
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        let name = parse_name(name)?;
        read_only(method)?;
        let digest = digest.parse::<Digest>().map_err(ApiError::digest_invalid)?;
        return Ok(Endpoint::Blob { name, digest });
    }
    Err(not_found())
}

fn read_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::unsupported_method())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn get(p: &str) -> Result<Endpoint, (StatusCode, &'static str)> {
        route(&Method::GET, p).map_err(|e| (e.status, e.code.as_str()))
    }

    #[test]
    fn routes_endpoints() {
        assert_eq!(get("/v2/"), Ok(Endpoint::Base));
        assert!(
            matches!(get("/v2/org/team/app/manifests/v1"), Ok(Endpoint::Manifest { name, .. }) if name.as_str() == "org/team/app")
        );
        assert!(matches!(
            get(&format!("/v2/library/nginx/manifests/{D}")),
            Ok(Endpoint::Manifest { reference: Reference::Digest(_), .. })
        ));
        assert!(matches!(get(&format!("/v2/a/blobs/{D}")), Ok(Endpoint::Blob { .. })));
        assert!(matches!(get("/v2/a/b/tags/list"), Ok(Endpoint::Tags { name }) if name.as_str() == "a/b"));
        assert!(matches!(
            get(&format!("/v2/a/b/referrers/{D}")),
            Ok(Endpoint::Referrers { name, digest }) if name.as_str() == "a/b" && digest.to_string() == D
        ));
        assert!(
            matches!(get(&format!("/v2/x/manifests/referrers/{D}")), Ok(Endpoint::Referrers { name, .. }) if name.as_str() == "x/manifests")
        );
        assert!(
            matches!(get("/v2/x/referrers/manifests/v1"), Ok(Endpoint::Manifest { name, .. }) if name.as_str() == "x/referrers")
        );
        // A repository may itself be called "manifests" or "blobs".
        assert!(
            matches!(get("/v2/manifests/manifests/latest"), Ok(Endpoint::Manifest { name, .. }) if name.as_str() == "manifests")
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(get("/v2/../etc/manifests/x").unwrap_err(), (StatusCode::BAD_REQUEST, "NAME_INVALID"));
        assert_eq!(get("/v2/a%2F..%2Fb/manifests/x").unwrap_err(), (StatusCode::BAD_REQUEST, "NAME_INVALID"));
        assert_eq!(get("/v2/a/blobs/sha256:abc").unwrap_err(), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
        assert_eq!(get("/v2/a/manifests/sha256:abc").unwrap_err(), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
        // A syntactically invalid tag names no manifest: 404, as the distribution spec's pull
        // tests expect (`.INVALID_MANIFEST_NAME`).
        assert_eq!(get("/v2/a/manifests/..").unwrap_err(), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
        assert_eq!(
            get("/v2/a/manifests/.INVALID_MANIFEST_NAME").unwrap_err(),
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        );
        assert_eq!(get("/v2/a/manifests/a%2Fb").unwrap_err(), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
        assert_eq!(get("/v2/a/referrers/sha256:abc").unwrap_err(), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
        assert_eq!(get("/v2/../x/referrers/sha256:abc").unwrap_err(), (StatusCode::BAD_REQUEST, "NAME_INVALID"));
        assert_eq!(get("/etc/passwd").unwrap_err().0, StatusCode::NOT_FOUND);
        let put = |p: &str| route(&Method::PUT, p).map_err(|e| (e.status, e.code.as_str()));
        assert_eq!(put("/v2/a/manifests/x").unwrap_err(), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
        assert_eq!(put("/v2/a/manifests/.x").unwrap_err(), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
        assert_eq!(
            put("/v2/a/manifests/sha256:totallywrong").unwrap_err(),
            (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
        );
        assert_eq!(put(&format!("/v2/a/referrers/{D}")).unwrap_err(), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
        assert_eq!(
            route(&Method::POST, "/v2/a/blobs/uploads/").map_err(|e| (e.status, e.code.as_str())).unwrap_err(),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
        );
    }
}
