//! One function per endpoint: turn a parsed request into a call on `PullThrough` and its
//! answer into response headers and a body. No caching policy lives here.
//!
//! `handle` routes the request to an upstream and checks access once, before any handler
//! runs; handlers build the GET answer, and the server strips the body of a HEAD (see
//! `body::without_body`). The blob endpoint lives in `blob.rs`.

use super::access::{Access, Identity};
use super::body::{self, Body};
use super::error::ApiError;
use super::outcome::{CacheOutcome, Outcome};
use super::router::Endpoint;
use crate::core::{PullThrough, Via};
use crate::oci::media::AcceptList;
use crate::oci::{query_param, Digest, Reference, RepoName, TagsQuery};
use crate::upstream::Route;
use http::{header, HeaderMap, Response};

/// What a handler needs from the request, already parsed.
pub struct Call<'a> {
    pub head: bool,
    pub headers: &'a HeaderMap,
    pub query: &'a str,
    pub who: &'a Identity,
    pub access: &'a Access,
}

impl Call<'_> {
    /// Whether a peer node asks (its requests are never forwarded to other peers).
    pub fn via(&self) -> Via {
        if *self.who == Identity::Peer {
            Via::Peer
        } else {
            Via::Client
        }
    }
}

pub async fn handle(
    pull: &PullThrough,
    ep: Endpoint,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let Some(route) = admit(pull, &ep, call, out)? else {
        return Ok(base());
    };
    match ep {
        Endpoint::Base => Ok(base()),
        Endpoint::Manifest { reference, .. } => manifest(pull, &route, &reference, call, out).await,
        Endpoint::Blob { digest, .. } => super::blob::blob(pull, &route, &digest, call, out).await,
        Endpoint::Tags { name } => tags(pull, &route, &name, call).await,
        Endpoint::Referrers { digest, .. } => referrers(pull, &route, &digest, call, out).await,
    }
}

/// The way in: route the request's repository to an upstream (`None` for `/v2/`, which has
/// none), and check that the caller may pull from it and that the digest it names is not
/// deny-listed. What an answer names (a tag's digest, referrers) is checked by its handler.
fn admit(pull: &PullThrough, ep: &Endpoint, call: &Call<'_>, out: &mut Outcome) -> Result<Option<Route>, ApiError> {
    let Some(name) = ep.name() else {
        call.access.check_base(call.who)?;
        return Ok(None);
    };
    let route = pull.route(ns(call.query).as_deref(), name)?;
    out.routed(route.upstream.host());
    call.access.check_repo(call.who, route.upstream.host(), &route.name)?;
    if let Some(d) = ep.digest() {
        call.access.check_digest(d)?;
    }
    Ok(Some(route))
}

fn base() -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 2)
        .body(body::full("{}"))
        .expect("valid response")
}

fn ns(query: &str) -> Option<String> {
    query_param(query, "ns")
}

async fn manifest(
    pull: &PullThrough,
    route: &Route,
    reference: &Reference,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let accept =
        AcceptList::from_header_values(call.headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
    let m = pull.manifest_via(route, reference, &accept, call.via()).await?;
    // A tag may resolve to a deny-listed digest.
    call.access.check_digest(&m.digest)?;
    out.cache(CacheOutcome::hit_if(m.cached));
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.bytes.len())
        .header("docker-content-digest", m.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .body(body::full(m.bytes))
        .map_err(|e| ApiError::bad_gateway(format!("upstream media type is not a valid header: {e}")))?;
    Ok(resp)
}

/// `GET /v2/<name>/tags/list`; `name` is the client's own spelling, for the `Link` header.
async fn tags(pull: &PullThrough, route: &Route, name: &RepoName, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = TagsQuery::parse(call.query).map_err(|e| ApiError::pagination_invalid(e.to_string()))?;
    let page = pull.tags(route, name, &q).await?;
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, page.body.len());
    if let Some(next) = page.next {
        // The client's own name and ns, so the link works through the proxy.
        let mut query = next.to_query();
        if let Some(ns) = ns(call.query) {
            query.push_str("&ns=");
            query.push_str(&percent_encoding::utf8_percent_encode(&ns, percent_encoding::NON_ALPHANUMERIC).to_string());
        }
        resp = resp.header(header::LINK, format!("</v2/{name}/tags/list?{query}>; rel=\"next\""));
    }
    Ok(resp.body(body::full(page.body)).expect("valid response"))
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: an image index, never a 404.
async fn referrers(
    pull: &PullThrough,
    route: &Route,
    subject: &Digest,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let artifact_type = query_param(call.query, "artifactType").filter(|v| !v.is_empty());
    let mut answer = pull.referrers(route, subject, artifact_type.as_deref()).await?;
    // What the deny-list refuses is not advertised either.
    answer.referrers.retain(|r| r.digest.parse::<Digest>().map_or(true, |d| call.access.check_digest(&d).is_ok()));
    out.cache(CacheOutcome::hit_if(answer.cached));
    let body = answer.referrers.to_index();
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, crate::oci::media::OCI_INDEX)
        .header(header::CONTENT_LENGTH, body.len());
    if artifact_type.is_some() {
        resp = resp.header("oci-filters-applied", "artifactType");
    }
    Ok(resp.body(body::full(body)).expect("valid response"))
}
