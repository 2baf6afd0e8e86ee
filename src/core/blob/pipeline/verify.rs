//! The one reader of a blob body: per-chunk timeout (from the `SourceBody`), every chunk fed
//! to the hashing thread, and the last chunk held back until the whole body hashed to the
//! digest it was asked by and had the size its source announced. A reader of a
//! `VerifiedBody` therefore never receives the end of a body that failed verification.

use super::hash::{HashGone, HashStage};
use crate::core::blob::fill::FillError;
use crate::core::blob::source::{SourceBody, Tier};
use crate::oci::Digest;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Where a body's receive time went: what `debug` logs show per fill, and what
/// benches/RESULTS.md explains.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Waiting for the source's next chunk (the network, or the tier behind it).
    pub source_wait: Duration,
    /// Waiting for room in the hashing thread's queue (the hash is the bottleneck).
    pub hash_wait: Duration,
    /// The hashing thread's busy time.
    pub hash_busy: Duration,
    /// Chunks received (their size is the source's: hyper's reads, the SDK's parts).
    pub chunks: u64,
}

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
    timings: Timings,
}

impl VerifiedBody {
    /// Read `body` as the content of `digest`, hashing with the digest's own algorithm.
    pub fn new(body: SourceBody, digest: &Digest) -> Result<VerifiedBody, FillError> {
        let hash =
            HashStage::spawn(digest.algorithm()).map_err(|source| FillError::Io { digest: digest.clone(), source })?;
        Ok(VerifiedBody {
            body,
            digest: digest.clone(),
            hash: Some(hash),
            held: None,
            received: 0,
            timings: Timings::default(),
        })
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

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The next chunk, `None` after the last; the last one only once the body verified. An
    /// error when the source fails or stalls, or the content does not verify.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            let Some(hash) = self.hash.as_ref() else { return Ok(self.held.take()) };
            let t = Instant::now();
            let next = self.body.next_chunk().await?;
            self.timings.source_wait += t.elapsed();
            let Some(data) = next else {
                let hash = self.hash.take().expect("checked above");
                let (actual, busy) = hash.finish().await.map_err(|e| self.hash_gone(e))?;
                self.timings.hash_busy = busy;
                self.check(actual)?;
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.received += data.len() as u64;
            self.timings.chunks += 1;
            if let Some(announced) = self.body.total.filter(|t| self.received > *t) {
                return Err(self.mismatch(Mismatch::TooLong { announced }));
            }
            let t = Instant::now();
            hash.feed(data.clone()).await.map_err(|e| self.hash_gone(e))?;
            self.timings.hash_wait += t.elapsed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamError;
    use std::time::Duration;

    fn chunks() -> Vec<Bytes> {
        (0..5u8).map(|i| Bytes::from(vec![i; 1000 + i as usize])).collect()
    }

    fn digest_of(chunks: &[Bytes]) -> Digest {
        Digest::of_bytes(&chunks.concat())
    }

    /// Every chunk the reader released before it failed (or all of them).
    async fn read(body: SourceBody, digest: &Digest) -> (Vec<Bytes>, Result<(), FillError>) {
        let mut v = VerifiedBody::new(body, digest).unwrap();
        let mut got = Vec::new();
        loop {
            match v.next().await {
                Ok(Some(c)) => got.push(c),
                Ok(None) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    fn body(chunks: Vec<Bytes>, total: Option<u64>, stall: bool) -> SourceBody {
        SourceBody::from_chunks(chunks, total, stall, Duration::from_millis(200))
    }

    #[tokio::test]
    async fn a_good_body_comes_through_whole_and_unchanged() {
        let c = chunks();
        let len = c.iter().map(|b| b.len() as u64).sum();
        let (got, end) = read(body(c.clone(), Some(len), false), &digest_of(&c)).await;
        end.unwrap();
        assert_eq!(got, c);
        // Without an announced size too.
        let (got, end) = read(body(c.clone(), None, false), &digest_of(&c)).await;
        end.unwrap();
        assert_eq!(got, c);
    }

    #[tokio::test]
    async fn bad_bytes_never_release_the_last_chunk() {
        let c = chunks();
        let mut bad = c.clone();
        bad[2] = Bytes::from(vec![9u8; bad[2].len()]);
        let (got, end) = read(body(bad.clone(), None, false), &digest_of(&c)).await;
        assert!(matches!(end, Err(FillError::Verification { mismatch: Mismatch::Digest { .. }, .. })), "{end:?}");
        assert_eq!(got, bad[..4], "the held-back last chunk was released");
    }

    #[tokio::test]
    async fn sizes_other_than_announced_fail() {
        let c = chunks();
        let len: u64 = c.iter().map(|b| b.len() as u64).sum();
        let (_, end) = read(body(c.clone(), Some(len + 1), false), &digest_of(&c)).await;
        assert!(matches!(end, Err(FillError::Verification { mismatch: Mismatch::Size { .. }, .. })), "{end:?}");
        let (got, end) = read(body(c.clone(), Some(len - 1), false), &digest_of(&c)).await;
        assert!(matches!(end, Err(FillError::Verification { mismatch: Mismatch::TooLong { .. }, .. })), "{end:?}");
        // Found when the fifth chunk arrives: the fourth is still held back.
        assert_eq!(got, c[..3]);
    }

    #[tokio::test]
    async fn a_stalled_source_times_out_holding_back_the_last_chunk() {
        let c = chunks();
        let (got, end) = read(body(c.clone(), None, true), &digest_of(&c)).await;
        assert!(matches!(end, Err(FillError::Upstream(UpstreamError::Timeout { .. }))), "{end:?}");
        assert_eq!(got, c[..4]);
    }
}
