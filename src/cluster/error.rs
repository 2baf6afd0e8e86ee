//! Why a peer did not serve. Every one of them sends the request on to the next peer or the
//! upstream; none fails a pull by itself.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("peer {peer}: cannot connect: {message}")]
    Connect { peer: String, message: String },
    #[error("peer {peer}: no response headers within {after:?}")]
    Timeout { peer: String, after: Duration },
    #[error("peer {peer}: answered {status}")]
    Status { peer: String, status: http::StatusCode },
    #[error("peer {peer}: does not have it (and neither does its upstream)")]
    NotFound { peer: String },
    #[error("peer {peer}: refused a referred request (it is not receiving the blob, or is at max_peer_streams)")]
    Refused { peer: String },
    #[error("peer {peer}: transfer failed: {message}")]
    Transfer { peer: String, message: String },
}
