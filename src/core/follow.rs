//! Reading a blob for one client: from a committed file, or following a fill as it grows.
//!
//! The last byte of a response is held back until the fill is verified. A client therefore
//! never receives a complete response whose bytes failed verification: if the hash does not
//! match, the stream ends with an error and the client sees a broken transfer.
//!
//! Reads run on the blocking pool, one chunk ahead of the socket: while hyper writes chunk
//! N, chunk N+1 is already being read, so disk and network overlap.

use super::fill::{FillState, Progress};
use bytes::Bytes;
use futures_util::Stream;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes read from disk per chunk: large enough to amortise the blocking-pool hop.
const CHUNK: u64 = 1024 * 1024;

struct Follow {
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: Option<u64>,
    done: bool,
    /// A read already under way: (offset, handle).
    ahead: Option<(u64, JoinHandle<io::Result<Bytes>>)>,
}

fn read_chunk(file: Arc<File>, pos: u64, len: usize) -> JoinHandle<io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], pos + filled as u64)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shorter than expected")),
                n => filled += n,
            }
        }
        Ok(Bytes::from(buf))
    })
}

impl Follow {
    fn fail(mut self, e: io::Error) -> Option<(io::Result<Bytes>, Follow)> {
        self.done = true;
        if let Some((_, h)) = self.ahead.take() {
            h.abort();
        }
        Some((Err(e), self))
    }

    async fn next(mut self) -> Option<(io::Result<Bytes>, Follow)> {
        if self.done {
            return None;
        }
        loop {
            let p = self.rx.borrow_and_update().clone();
            let verified = match &p.state {
                FillState::Failed(e) => return self.fail(io::Error::other(e.to_string())),
                FillState::Verified => true,
                FillState::Connecting | FillState::Streaming => false,
            };
            let end = self.end.or(if verified { p.total } else { None });
            if verified && end.is_some_and(|e| self.pos >= e) {
                return None;
            }
            // Hold back the final byte of the response until the whole blob is verified.
            let limit = match end {
                Some(e) if verified => e,
                Some(e) => p.written.min(e.saturating_sub(1)),
                None => p.written,
            };
            if self.pos < limit {
                let Some(file) = p.file.clone() else {
                    return self.fail(io::Error::other("blob file missing"));
                };
                let handle = match self.ahead.take() {
                    Some((at, h)) if at == self.pos => h,
                    other => {
                        if let Some((_, h)) = other {
                            h.abort();
                        }
                        read_chunk(file.clone(), self.pos, (limit - self.pos).min(CHUNK) as usize)
                    }
                };
                let chunk = match handle.await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return self.fail(e),
                    Err(e) => return self.fail(io::Error::other(e)),
                };
                self.pos += chunk.len() as u64;
                if self.pos < limit {
                    let len = (limit - self.pos).min(CHUNK) as usize;
                    self.ahead = Some((self.pos, read_chunk(file, self.pos, len)));
                }
                return Some((Ok(chunk), self));
            }
            if self.rx.changed().await.is_err() {
                // The filler is gone. A final state is handled at the top of the loop (where
                // a verified or failed fill never waits again); any other state means it
                // vanished without finishing.
                if !matches!(self.rx.borrow().state, FillState::Verified | FillState::Failed(_)) {
                    return self.fail(io::Error::other("blob fill ended unexpectedly"));
                }
            }
        }
    }
}

/// The bytes `[start, end)` of the blob behind `progress`; `end = None` means "to the end,
/// whatever its size turns out to be" (an upstream that sent no Content-Length).
pub fn stream(
    progress: watch::Receiver<Progress>,
    start: u64,
    end: Option<u64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let init = Follow { rx: progress, pos: start, end, done: false, ahead: None };
    futures_util::stream::unfold(init, Follow::next)
}
