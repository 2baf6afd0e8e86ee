//! The one reader of a blob body: per-chunk timeout (from the `SourceBody`), every chunk fed
//! to the hashing thread, and the last chunk held back until the whole body hashed to the
//! digest it was asked by and had the size its source announced. A reader of a
//! `VerifiedBody` therefore never receives the end of a body that failed verification.

use super::hash::{HashGone, HashStage};
use crate::core::fill::FillError;
use crate::core::source::{SourceBody, Tier};
use crate::oci::Digest;
use bytes::Bytes;

/// How a body failed verification.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Mismatch {
    #[error("content hashes to {actual}")]
    Digest { actual: Digest },
    #[error("size mismatch: announced {announced} bytes, got {received}")]
    Size { announced: u64, received: u64 },
    #[error("the source sent more than the {announced} bytes it announced")]
    TooLong { announced: u64 },
}

pub struct VerifiedBody {
    body: SourceBody,
    digest: Digest,
    /// `None` once the body has ended and verified.
    hash: Option<HashStage>,
    /// The latest chunk, released when the next one arrives or the body verifies.
    held: Option<Bytes>,
    received: u64,
}

impl VerifiedBody {
    /// Read `body` as the content of `digest`, hashing with the digest's own algorithm.
    pub fn new(body: SourceBody, digest: &Digest) -> Result<VerifiedBody, FillError> {
        let hash =
            HashStage::spawn(digest.algorithm()).map_err(|source| FillError::Io { digest: digest.clone(), source })?;
        Ok(VerifiedBody { body, digest: digest.clone(), hash: Some(hash), held: None, received: 0 })
    }

    pub fn tier(&self) -> Tier {
        self.body.tier
    }

    /// The size the source announced, when it did.
    pub fn total(&self) -> Option<u64> {
        self.body.total
    }

    /// The peer this body comes from, when it does.
    pub fn peer(&self) -> Option<crate::cluster::Peer> {
        self.body.peer()
    }

    /// Bytes received from the source so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk, `None` after the last; the last one only once the body verified. An
    /// error when the source fails or stalls, or the content does not verify.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            let Some(hash) = self.hash.as_ref() else { return Ok(self.held.take()) };
            let Some(data) = self.body.next_chunk().await? else {
                let hash = self.hash.take().expect("checked above");
                let actual = hash.finish().await.map_err(|e| self.hash_gone(e))?;
                self.check(actual)?;
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.received += data.len() as u64;
            if let Some(announced) = self.body.total.filter(|t| self.received > *t) {
                return Err(self.mismatch(Mismatch::TooLong { announced }));
            }
            hash.feed(data.clone()).await.map_err(|e| self.hash_gone(e))?;
            if let Some(prev) = self.held.replace(data) {
                return Ok(Some(prev));
            }
        }
    }

    fn check(&self, actual: Digest) -> Result<(), FillError> {
        if actual != self.digest {
            return Err(self.mismatch(Mismatch::Digest { actual }));
        }
        match self.body.total {
            Some(announced) if announced != self.received => {
                Err(self.mismatch(Mismatch::Size { announced, received: self.received }))
            }
            _ => Ok(()),
        }
    }

    fn mismatch(&self, mismatch: Mismatch) -> FillError {
        FillError::Verification { digest: self.digest.clone(), tier: self.body.tier, mismatch }
    }

    fn hash_gone(&self, e: HashGone) -> FillError {
        FillError::Io { digest: self.digest.clone(), source: std::io::Error::other(e) }
    }
}
