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
//! The blob is read through the same `VerifiedBody` as a fill (hashing on its own thread
//! while the chunks go out, the last chunk held back): one implementation of the rule that
//! no client receives the end of bytes that failed verification. The cost on warm
//! throughput is measured in benches/RESULTS.md ("verify on read").

use super::{take_out, Detector};
use crate::core::blob::pipeline::{Mismatch, VerifiedBody};
use crate::core::blob::source::SourceBody;
use crate::core::fill::{FillError, Progress};
use crate::core::{follow, PullThrough};
use crate::oci::Digest;
use crate::store::{FileId, Store};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::watch;

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
        match (self.integrity().verify_on_read && hit, size, file) {
            (true, Some(total), Some(file)) => {
                let check = Check { store: self.store().clone(), digest: digest.clone(), file, total };
                verified(follow::stream(progress, 0, Some(total)).boxed(), check)
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
    /// Its size.
    total: u64,
}

/// `inner` (the whole blob, `check.total` bytes) with each chunk hashed and the last one
/// released only once the hash matches; on a mismatch the file is taken out and the stream
/// ends with an error.
fn verified(inner: BoxStream<'static, io::Result<Bytes>>, check: Check) -> BoxStream<'static, io::Result<Bytes>> {
    let body = match VerifiedBody::new(SourceBody::local(inner, check.total, &check.digest), &check.digest) {
        Ok(body) => body,
        Err(e) => return futures_util::stream::once(async move { Err(io::Error::other(e)) }).boxed(),
    };
    futures_util::stream::unfold(Some((body, check)), |state| async move {
        let (mut body, check) = state?;
        match body.next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((body, check)))),
            Ok(None) => None,
            Err(e) => Some((Err(failed(e, &check).await), None)),
        }
    })
    .boxed()
}

/// The error that ends a verified read; a blob whose bytes hash to another digest is taken
/// out of the cache first, so the next request fills it afresh.
async fn failed(e: FillError, check: &Check) -> io::Error {
    match e {
        FillError::Verification { mismatch: Mismatch::Digest { actual }, .. } => {
            let (store, digest, file, total) =
                (check.store.clone(), check.digest.clone(), check.file.clone(), check.total);
            let moved = tokio::task::spawn_blocking(move || {
                take_out(&store, &digest, &actual, total, FileId::of(&file)?, Detector::Read)
            })
            .await;
            if let Ok(Err(e)) | Err(e) = moved.map_err(io::Error::other) {
                tracing::warn!(digest = %check.digest, error = %e, "cannot quarantine a cached blob that failed verification");
            }
            io::Error::other(format!("cached blob {} failed verification; the transfer is aborted", check.digest))
        }
        FillError::Io { source, .. } => source,
        other => io::Error::other(other),
    }
}
