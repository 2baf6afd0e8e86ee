//! The HTTP edge: the server, routing of OCI Distribution API paths to typed endpoints,
//! handlers, and the mapping of every error to an OCI error response.

pub mod access;
mod error;
mod handlers;
mod idle;
mod outcome;
pub mod range;
mod request_log;
pub mod router;
mod server;
pub mod tls;
mod tracked;

pub use error::ApiError;
pub use server::{serve, App, Listeners};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Every response body: buffered (manifests, errors) or streamed (blobs).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}
