//! Reading a blob for one client: from a committed file, or following a fill as it grows.
//!
//! The last byte of a response is held back until the fill is verified. A client therefore
//! never receives a complete response whose bytes failed verification: if the hash does not
//! match, the stream ends with an error and the client sees a broken transfer.

use super::fill::{FillState, Progress};
use bytes::Bytes;
use futures_util::Stream;
use std::io;
use std::os::unix::fs::FileExt;
use tokio::sync::watch;

/// Bytes read from disk per chunk: large enough to amortise the blocking-pool hop.
const CHUNK: u64 = 512 * 1024;

/// The bytes `[start, end)` of the blob behind `progress`; `end = None` means "to the end,
/// whatever its size turns out to be" (an upstream that sent no Content-Length).
pub fn stream(
    progress: watch::Receiver<Progress>,
    start: u64,
    end: Option<u64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold((progress, start, false), move |(mut rx, pos, finished)| async move {
        if finished {
            return None;
        }
        loop {
            let p = rx.borrow_and_update().clone();
            let verified = match &p.state {
                FillState::Failed(e) => return Some((Err(io::Error::other(e.to_string())), (rx, pos, true))),
                FillState::Verified => true,
                FillState::Connecting | FillState::Streaming => false,
            };
            let end = end.or(if verified { p.total } else { None });
            if verified && end.is_some_and(|e| pos >= e) {
                return None;
            }
            // Hold back the final byte of the response until the whole blob is verified.
            let limit = match end {
                Some(e) if verified => e,
                Some(e) => p.written.min(e.saturating_sub(1)),
                None => p.written,
            };
            if pos < limit {
                let Some(file) = p.file.clone() else {
                    return Some((Err(io::Error::other("blob file missing")), (rx, pos, true)));
                };
                let len = (limit - pos).min(CHUNK) as usize;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    let mut filled = 0;
                    while filled < len {
                        match file.read_at(&mut buf[filled..], pos + filled as u64)? {
                            0 => {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "blob file shorter than expected",
                                ))
                            }
                            n => filled += n,
                        }
                    }
                    Ok(Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                return match read {
                    Ok(b) => {
                        let next = pos + b.len() as u64;
                        Some((Ok(b), (rx, next, false)))
                    }
                    Err(e) => Some((Err(e), (rx, pos, true))),
                };
            }
            if rx.changed().await.is_err() {
                // The filler is gone. A final state is handled at the top of the loop (where
                // a verified or failed fill never waits again); any other state means it
                // vanished without finishing.
                if !matches!(rx.borrow().state, FillState::Verified | FillState::Failed(_)) {
                    return Some((Err(io::Error::other("blob fill ended unexpectedly")), (rx, pos, true)));
                }
            }
        }
    })
}
