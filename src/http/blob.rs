//! `GET`/`HEAD /v2/<name>/blobs/<digest>`, in named steps: the `Range` header, a `HEAD` that
//! needs no fill, the blob from the cache (a fill, or a hit), then the whole blob, a range
//! of it, or an uncached relay; for a peer node, possibly a referral instead (see `peer`).
//! The request was routed and admitted before this runs.

use super::body::{self, Body};
use super::error::ApiError;
use super::handlers::Call;
use super::outcome::{CacheOutcome, Outcome};
use super::peer::{Answer, Egress};
use super::range::{ByteRange, RangeError, RangeRequest};
use crate::core::{Blob, PullThrough};
use crate::oci::Digest;
use crate::upstream::Route;
use http::response::Builder;
use http::{header, HeaderMap, Response, StatusCode};

pub async fn blob(
    pull: &PullThrough,
    route: &Route,
    digest: &Digest,
    call: &Call<'_>,
    out: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let range = range(call.headers)?;
    let resp = Response::builder()
        .header("docker-content-digest", digest.to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""));
    if call.head && range.is_none() {
        // The size is all a HEAD needs: from disk, else a HEAD upstream; no fill starts.
        let size = pull.blob_size(route, digest).await?;
        return Ok(octet_stream(resp, size).body(body::empty()).expect("valid response"));
    }
    let (blob, egress) = match super::peer::blob(pull, route, digest, call.headers, call.via()).await? {
        Answer::Blob(blob, egress) => (blob, egress),
        Answer::Done(resp) => return Ok(resp),
    };
    out.cache(CacheOutcome::hit_if(blob.hit()));
    match range {
        // Uncached relays cannot seek: the whole blob, as HTTP allows for a Range request.
        Some(range) if blob.seekable() => ranged(resp, blob, range, egress).await,
        _ => {
            if !blob.seekable() {
                out.cache(CacheOutcome::Uncached);
            }
            let resp = octet_stream(resp, blob.size());
            Ok(resp.body(egress.body(blob.whole(pull))).expect("valid response"))
        }
    }
}

/// The `Range` header: one range, or `None` for the whole blob (no header, several ranges
/// or another unit: see range.rs); a malformed one is a bad request.
fn range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    let Some(v) = headers.get(header::RANGE) else { return Ok(None) };
    match v.to_str().map_err(|_| RangeError::Malformed).and_then(RangeRequest::parse) {
        Ok(RangeRequest::Single(r)) => Ok(Some(r)),
        Ok(RangeRequest::Whole(_)) => Ok(None),
        Err(e) => Err(ApiError::range_malformed(e.to_string())),
    }
}

/// 206 with the range, or 416 with the blob's size when the range is outside it.
async fn ranged(resp: Builder, mut blob: Blob, range: ByteRange, egress: Egress) -> Result<Response<Body>, ApiError> {
    // A range needs the total size; an upstream that did not announce it makes us wait for
    // the whole fill.
    let total = blob.total().await?;
    let Some((start, end)) = range.resolve(total) else {
        let mut e = ApiError::range_not_satisfiable(total).into_response();
        e.headers_mut().insert(header::CONTENT_RANGE, format!("bytes */{total}").parse().expect("valid header"));
        return Ok(e);
    };
    let resp = octet_stream(resp.status(StatusCode::PARTIAL_CONTENT), Some(end - start))
        .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{total}", end - 1));
    Ok(resp.body(egress.body(blob.range(start, end))).expect("valid response"))
}

/// Blob bytes: `application/octet-stream`, and their length when it is known.
fn octet_stream(resp: Builder, len: Option<u64>) -> Builder {
    let resp = resp.header(header::CONTENT_TYPE, "application/octet-stream");
    match len {
        Some(n) => resp.header(header::CONTENT_LENGTH, n),
        None => resp,
    }
}
