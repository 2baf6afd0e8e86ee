//! One function per endpoint: turn a parsed request into a call on `PullThrough` and its
//! answer into response headers and a body. No caching policy lives here.

use super::access::{Access, Identity};
use super::error::ApiError;
use super::outcome::{CacheOutcome, Outcome};
use super::range::{RangeError, RangeRequest};
use super::router::Endpoint;
use super::Body;
use crate::core::{follow, BlobBody, PullThrough, Via};
use crate::oci::media::AcceptList;
use crate::oci::{query_pairs, Digest, Reference, RepoName, TagsQuery};
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;

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
    fn via(&self) -> Via {
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
    match ep {
        Endpoint::Base => {
            call.access.check_base(call.who)?;
            Ok(base(call.head))
        }
        Endpoint::Manifest { name, reference } => manifest(pull, &name, &reference, call, out).await,
        Endpoint::Blob { name, digest } => blob(pull, &name, &digest, call, out).await,
        Endpoint::Tags { name } => tags(pull, &name, call, out).await,
        Endpoint::Referrers { name, digest } => referrers(pull, &name, &digest, call, out).await,
    }
}

fn base(head: bool) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 2)
        .body(if head { super::empty() } else { super::full("{}") })
        .expect("valid response")
}

fn ns(query: &str) -> Option<String> {
    query_pairs(query).into_iter().find(|(k, _)| k == "ns").map(|(_, v)| v)
}

async fn manifest(
    pull: &PullThrough,
    name: &RepoName,
    reference: &Reference,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let route = pull.route(ns(call.query).as_deref(), name)?;
    out.routed(route.upstream.host());
    let accept =
        AcceptList::from_header_values(call.headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
    call.access.check_repo(call.who, route.upstream.host(), &route.name)?;
    if let Reference::Digest(d) = reference {
        call.access.check_digest(d)?;
    }
    let m = pull.manifest_via(&route, reference, &accept, call.via()).await?;
    call.access.check_digest(&m.digest)?;
    out.cache(CacheOutcome::hit_if(m.cached));
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.bytes.len())
        .header("docker-content-digest", m.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .body(if call.head { super::empty() } else { super::full(m.bytes) })
        .map_err(|e| ApiError::bad_gateway(format!("upstream media type is not a valid header: {e}")))?;
    Ok(resp)
}

async fn blob(
    pull: &PullThrough,
    name: &RepoName,
    digest: &Digest,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let route = pull.route(ns(call.query).as_deref(), name)?;
    let host = route.upstream.host();
    out.routed(host);
    call.access.check_repo(call.who, host, &route.name)?;
    call.access.check_digest(digest)?;
    // Several ranges or another unit: the whole blob (see range.rs).
    let range = match call.headers.get(header::RANGE).map(|v| v.to_str().map_err(|_| RangeError::Malformed)) {
        None => None,
        Some(v) => match v.and_then(RangeRequest::parse) {
            Ok(RangeRequest::Single(r)) => Some(r),
            Ok(RangeRequest::Whole(_)) => None,
            Err(e) => return Err(ApiError::range_malformed(e.to_string())),
        },
    };
    let resp = Response::builder()
        .header("docker-content-digest", digest.to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""));

    if call.head && range.is_none() {
        let size = pull.blob_size(&route, digest).await?;
        let mut resp = resp.header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(s) = size {
            resp = resp.header(header::CONTENT_LENGTH, s);
        }
        return Ok(resp.body(super::empty()).expect("valid response"));
    }

    let blob = pull.blob_via(&route, digest, call.via()).await?;
    out.cache(CacheOutcome::hit_if(blob.hit));
    let mut progress = match blob.body {
        BlobBody::Cached(rx) => rx,
        // Uncached relays cannot seek: the whole blob, as HTTP allows for a Range request.
        BlobBody::Uncached(relay) => {
            let mut resp = resp.header(header::CONTENT_TYPE, "application/octet-stream");
            if let Some(s) = blob.size {
                resp = resp.header(header::CONTENT_LENGTH, s);
            }
            let body = if call.head { super::empty() } else { frames(relay.stream()) };
            out.cache(CacheOutcome::Uncached);
            return Ok(resp.body(body).expect("valid response"));
        }
    };
    let Some(range) = range else {
        let mut resp = resp.header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(s) = blob.size {
            resp = resp.header(header::CONTENT_LENGTH, s);
        }
        let body = if call.head { super::empty() } else { frames(pull.whole_blob(progress, digest, blob.hit, blob.size)) };
        return Ok(resp.body(body).expect("valid response"));
    };
    // A range needs the total size; an upstream that did not announce it makes us wait for
    // the whole fill.
    let total = match blob.size {
        Some(s) => s,
        None => pull.wait_verified(&mut progress).await?,
    };
    let Some((start, end)) = range.resolve(total) else {
        let mut e = ApiError::range_not_satisfiable(total).into_response(call.head);
        e.headers_mut().insert(header::CONTENT_RANGE, format!("bytes */{total}").parse().expect("valid header"));
        return Ok(e);
    };
    let resp = resp
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{total}", end - 1));
    let body = if call.head { super::empty() } else { frames(follow::stream(progress, start, Some(end))) };
    Ok(resp.body(body).expect("valid response"))
}

fn frames(s: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static) -> Body {
    http_body_util::StreamBody::new(futures_util::StreamExt::map(s, |r| r.map(hyper::body::Frame::data))).boxed_unsync()
}

async fn tags(
    pull: &PullThrough,
    name: &RepoName,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let route = pull.route(ns(call.query).as_deref(), name)?;
    out.routed(route.upstream.host());
    call.access.check_repo(call.who, route.upstream.host(), &route.name)?;
    let q = TagsQuery::parse(call.query).map_err(|e| ApiError::pagination_invalid(e.to_string()))?;
    let page = pull.tags(&route, name, &q).await?;
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
    Ok(resp.body(if call.head { super::empty() } else { super::full(page.body) }).expect("valid response"))
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: an image index, never a 404.
async fn referrers(
    pull: &PullThrough,
    name: &RepoName,
    subject: &Digest,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let route = pull.route(ns(call.query).as_deref(), name)?;
    out.routed(route.upstream.host());
    call.access.check_repo(call.who, route.upstream.host(), &route.name)?;
    call.access.check_digest(subject)?;
    let artifact_type = query_pairs(call.query)
        .into_iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    let mut answer = pull.referrers(&route, subject, artifact_type.as_deref()).await?;
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
    Ok(resp.body(if call.head { super::empty() } else { super::full(body) }).expect("valid response"))
}
