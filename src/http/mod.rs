//! The HTTP edge: the server, routing of OCI Distribution API paths to typed endpoints,
//! handlers, and the mapping of every error to an OCI error response.

pub mod access;
mod blob;
mod body;
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

pub use body::Body;
pub use error::ApiError;
pub use server::{serve, App, Listeners};
