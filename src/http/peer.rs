//! The blob endpoint's answers to peer nodes (requests carrying the cluster token): the
//! terms a peer asks on, a referral to another node, and a body that leaves as one of the
//! node's peer streams (paced, counted). Clients never reach any of this.

use super::body::{self, Body};
use super::error::ApiError;
use crate::cluster::{Cluster, Peer, PeerAsk, StreamGuard, ASK_HEADER, FROM_HEADER, REFERRAL_HEADER};
use crate::core::{Blob, PeerBlob, PullThrough, Via};
use crate::oci::Digest;
use crate::upstream::Route;
use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, Response, StatusCode};
use std::sync::Arc;

/// The blob for a client, or for a peer: then with the stream slot it holds; or the answer
/// that replaces it (a referral).
pub enum Answer {
    Blob(Blob, Egress),
    Done(Response<Body>),
}

pub async fn blob(
    pull: &PullThrough,
    route: &Route,
    digest: &Digest,
    headers: &HeaderMap,
    via: Via,
) -> Result<Answer, ApiError> {
    let (Via::Peer, Some(cluster)) = (via, pull.cluster()) else {
        return Ok(Answer::Blob(pull.blob_via(route, digest, via).await?, Egress(None)));
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ask = PeerAsk::parse(text(FROM_HEADER), text(ASK_HEADER));
    match pull.peer_blob(route, digest, &ask).await? {
        PeerBlob::Serve(blob, guard) => Ok(Answer::Blob(*blob, Egress(Some((cluster.clone(), guard))))),
        PeerBlob::Refer(to) => Ok(Answer::Done(referral(&to)?)),
        PeerBlob::Refuse(why) => Err(ApiError::peer_refused(why)),
    }
}

/// `307` naming the node to ask instead.
fn referral(to: &Peer) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(REFERRAL_HEADER, to.as_str())
        .header(http::header::CONTENT_LENGTH, 0)
        .body(body::empty())
        .map_err(|e| ApiError::internal(format!("cannot refer to {to}: {e}")))
}

/// How blob bytes leave: to a client as they are; to a peer paced by `peer_upload_rate`,
/// counted, and holding one of the blob's peer streams until the body ends.
pub struct Egress(Option<(Arc<Cluster>, StreamGuard)>);

impl Egress {
    pub fn body(self, s: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
        match self.0 {
            Some((cluster, guard)) => body::stream(cluster.sending(s, guard)),
            None => body::stream(s),
        }
    }
}
