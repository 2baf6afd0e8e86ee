//! Serving a blob to a peer node of the cluster: the owner's choice between streaming it
//! (one of at most `max_peer_streams` streams of that blob) and referring the asker to a
//! node that is receiving it, and a referred node's rule: serve only from a fill already
//! in flight or a blob on disk, else refuse (see `cluster`'s module doc).

use super::fill::{self, FillState};
use super::handle::Blob;
use super::source::Via;
use crate::cluster::{Admission, Ask, Peer, PeerAsk, StreamGuard};
use crate::core::error::CoreError;
use crate::core::PullThrough;
use crate::oci::Digest;
use crate::upstream::Route;

/// A serving node's answer to a peer's blob request.
pub enum PeerBlob {
    /// The blob, and the stream slot it holds until its body ends.
    Serve(Box<Blob>, StreamGuard),
    /// Ask this node instead.
    Refer(Peer),
    /// A referred ask this node cannot take, and why.
    Refuse(&'static str),
}

impl PullThrough {
    /// A blob for a peer node asking on the terms of `ask`.
    pub async fn peer_blob(&self, route: &Route, digest: &Digest, ask: &PeerAsk) -> Result<PeerBlob, CoreError> {
        let Some(cluster) = self.cluster() else { return Ok(PeerBlob::Refuse("this node is not in a cluster")) };
        let answer = match cluster.admit(digest, ask) {
            Admission::Refer(to) => return Ok(PeerBlob::Refer(to)),
            Admission::Refuse(why) => Err(why),
            Admission::Serve(guard) if ask.ask == Ask::Referred => match self.receiving(digest).await? {
                Some(blob) => Ok(PeerBlob::Serve(Box::new(blob), guard)),
                None => Err("not receiving this blob"),
            },
            Admission::Serve(guard) => {
                Ok(PeerBlob::Serve(Box::new(self.blob_via(route, digest, Via::Peer).await?), guard))
            }
        };
        answer.or_else(|why| {
            cluster.refused(digest, why);
            Ok(PeerBlob::Refuse(why))
        })
    }

    /// The blob from this node's disk or its fill in flight; `None` when it has neither (or
    /// the fill failed), without starting anything.
    async fn receiving(&self, digest: &Digest) -> Result<Option<Blob>, CoreError> {
        // The fill first: one that ends meanwhile has committed before it leaves the map.
        let Some(mut rx) = self.fills().join(digest) else {
            let Some((f, len)) = self.store().open_blob_async(digest).await? else { return Ok(None) };
            return Ok(Some(Blob::committed(f, len, digest)));
        };
        let Ok(p) = fill::settle(&mut rx, |p| !matches!(p.state, FillState::Connecting)).await else {
            return Ok(None);
        };
        Ok(match p.state {
            FillState::Failed(_) => None,
            _ => Some(Blob::following(rx, p.total, digest)),
        })
    }
}
