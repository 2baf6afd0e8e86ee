//! Response bodies: buffered (manifests, errors, JSON) or streamed (blobs), and the one place
//! that decides what a HEAD request gets (the GET's headers, no body).

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

/// Every response body: buffered (manifests, errors) or streamed (blobs).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A streamed body; an error item aborts the transfer (the client sees it broken, never
/// complete).
pub fn stream(s: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    StreamBody::new(futures_util::StreamExt::map(s, |r| r.map(hyper::body::Frame::data))).boxed_unsync()
}

/// HEAD is GET without the body: the same status and headers (`Content-Length` included),
/// and the body dropped unread. Bodies are lazy, so dropping one costs no transfer.
pub fn without_body(resp: Response<Body>) -> Response<Body> {
    resp.map(|_| empty())
}
