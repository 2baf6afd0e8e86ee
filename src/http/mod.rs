//! The HTTP edge: the server, routing of OCI Distribution API paths to typed endpoints,
//! handlers, and the mapping of every error to an OCI error response.
//!
//! A request goes one way, each decision made once:
//! `listener` (connections) → `app` (identity, metrics, the request log; drops a HEAD's body) →
//! `router` (path → `Endpoint`, or a 4xx) → `handlers::handle` (routes the repository to an
//! upstream and checks access, then one handler per endpoint; blobs in `blob`, and their
//! answers to peer nodes in `peer`) → `core`.
//! Handlers build the GET answer from `body`; what the answer was (`outcome`: cache hit or
//! miss, upstream) labels the metrics and the log line; `error` turns every failure into
//! the OCI error JSON with its status.

pub mod access;
mod app;
mod blob;
mod body;
mod error;
mod handlers;
mod idle;
mod listener;
mod outcome;
mod peer;
pub mod range;
mod request_log;
pub mod router;
pub mod tls;
mod tracked;

pub use app::App;
pub use body::Body;
pub use error::ApiError;
pub use listener::{serve, Listeners};
