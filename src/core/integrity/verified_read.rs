//! Verify on read (`[cache] verify_on_read = true`): a cached blob is hashed while it is
//! served, and its last chunk is held back until the whole blob verifies, as on a fill. On
//! a mismatch the response ends with an error instead of its last chunk (the client sees a
//! broken transfer, never a complete 200 of corrupt bytes), the file is quarantined, and
//! the next request fills the blob afresh.
//!
//! Only whole-blob reads of committed files are verified. A range cannot be checked without
//! reading the whole blob, which would turn every small range read into a full one; ranges
//! are served as they are, and the background scrub covers them. A blob still being filled
//! is verified by its fill already.
//!
//! The hashing runs on the blocking pool, one chunk behind the stream: chunk N is hashed
//! while hyper writes it to the socket, and chunk N+1 waits only for that hash (the same
//! speed as the disk's read-ahead). The cost on warm throughput is measured in
//! benches/RESULTS.md ("verify on read").

use super::{take_out, Detector};
use crate::core::fill::Progress;
use crate::core::{follow, PullThrough};
use crate::oci::{Digest, Hasher};
use crate::store::{FileId, Store};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

impl PullThrough {
    /// The whole blob behind `progress`, for a response: verified as it is read when it is
    /// a cache hit (`hit`, with its `size`) and `verify_on_read` is on, as is otherwise.
    pub fn whole_blob(
        &self,
        progress: watch::Receiver<Progress>,
        digest: &Digest,
        hit: bool,
        size: Option<u64>,
    ) -> BoxStream<'static, io::Result<Bytes>> {
        let file = progress.borrow().file.clone();
        match (self.integrity.verify_on_read && hit, size, file) {
            (true, Some(total), Some(file)) => {
                let check = Check { store: self.store.clone(), digest: digest.clone(), file };
                verified(follow::stream(progress, 0, Some(total)).boxed(), total, check).boxed()
            }
            _ => follow::stream(progress, 0, size).boxed(),
        }
    }
}

/// What a failed verification needs to take the file out.
struct Check {
    store: Arc<Store>,
    digest: Digest,
    /// The file served: the one quarantined, if the name still holds it.
    file: Arc<File>,
}

enum Hashing {
    /// The hasher, idle.
    Ready(Hasher),
    /// Hashing the chunk before the current one.
    Busy(JoinHandle<Hasher>),
    /// The blob verified, or the stream failed: nothing more to send.
    Done,
}

struct Verify<S> {
    inner: S,
    total: u64,
    pos: u64,
    hashing: Hashing,
    check: Check,
}

/// `inner` (the whole blob, `total` bytes) with each chunk hashed and the last one released
/// only once the hash matches.
fn verified(
    inner: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    total: u64,
    check: Check,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let hashing = Hashing::Ready(Hasher::for_digest(&check.digest));
    futures_util::stream::unfold(Verify { inner, total, pos: 0, hashing, check }, Verify::next)
}

impl<S: futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static> Verify<S> {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Self)> {
        if matches!(self.hashing, Hashing::Done) {
            return None;
        }
        let chunk = match self.inner.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return self.fail(e),
            None => None,
        };
        let hasher = match std::mem::replace(&mut self.hashing, Hashing::Done) {
            Hashing::Ready(h) => h,
            Hashing::Busy(job) => match job.await {
                Ok(h) => h,
                Err(e) => return self.fail(io::Error::other(e)),
            },
            Hashing::Done => return None,
        };
        let len = chunk.as_ref().map_or(0, |c| c.len() as u64);
        self.pos += len;
        if let Some(c) = chunk.clone().filter(|_| self.pos < self.total) {
            // Not the last chunk: send it while it is hashed.
            self.hashing = Hashing::Busy(tokio::task::spawn_blocking(move || {
                let mut h = hasher;
                h.update(&c);
                h
            }));
            return Some((Ok(chunk.expect("a chunk")), self));
        }
        if self.pos != self.total {
            return self.fail(io::Error::other("cached blob ended early"));
        }
        // The last chunk (or an empty blob): released only if the whole blob verifies.
        let last = chunk.clone().unwrap_or_default();
        let actual = match tokio::task::spawn_blocking(move || {
            let mut h = hasher;
            h.update(&last);
            h.finish()
        })
        .await
        {
            Ok(d) => d,
            Err(e) => return self.fail(io::Error::other(e)),
        };
        if actual == self.check.digest {
            return chunk.map(|c| (Ok(c), self));
        }
        let (store, digest, file) = (self.check.store.clone(), self.check.digest.clone(), self.check.file.clone());
        let total = self.total;
        let expected = digest.clone();
        let moved = tokio::task::spawn_blocking(move || {
            take_out(&store, &digest, &actual, total, FileId::of(&file)?, Detector::Read)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = moved.map_err(io::Error::other) {
            tracing::warn!(digest = %expected, error = %e, "cannot quarantine a cached blob that failed verification");
        }
        self.fail(io::Error::other(format!("cached blob {expected} failed verification; the transfer is aborted")))
    }

    fn fail(mut self, e: io::Error) -> Option<(io::Result<Bytes>, Self)> {
        if let Hashing::Busy(job) = std::mem::replace(&mut self.hashing, Hashing::Done) {
            job.abort();
        }
        Some((Err(e), self))
    }
}
