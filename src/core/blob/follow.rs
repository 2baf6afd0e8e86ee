//! Reading a blob for one client: from a committed file, or following a fill as it grows.
//!
//! The last byte of a response is held back until the fill is verified. A client therefore
//! never receives a complete response whose bytes failed verification: if the hash does not
//! match, the stream ends with an error and the client sees a broken transfer.
//!
//! While a fill runs, a follower that keeps up takes the fill's chunks from its in-memory
//! window (`pipeline::Window`: the network's own `Bytes`, sliced, not copied); a follower
//! that fell further behind than the window reads the temp file (page cache) until it
//! catches up. Which path served how many bytes is counted by
//! `pullthrough_follow_bytes_total{from}`.
//!
//! Reads run on the blocking pool, one chunk ahead of the socket: while hyper writes chunk
//! N, chunk N+1 is already being read, so disk and network overlap.
//!
//! A verified, committed blob is served from a memory map without copying: each chunk is a
//! slice of the map, prefaulted on the blocking pool (so the async thread that writes it to
//! the socket never waits for the disk). Blobs are immutable and eviction only unlinks, so a
//! map never sees its file shrink. A follower behind a running fill's window maps the range
//! of the temp file it needs (populated at once: no copy, no zeroed buffer), in batches of
//! at least `MIN_BATCH` bytes so a fast fill does not turn into tiny reads.

use super::fill::{FillState, Progress};
use bytes::Bytes;
use futures_util::Stream;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Chunks of a mapped blob: slices, so size costs no memory.
const MAP_CHUNK: u64 = 4 * 1024 * 1024;
/// While a fill is running, wait for at least this much new data before reading.
const MIN_BATCH: u64 = 256 * 1024;

/// Where a follower's bytes came from: a metric label.
#[derive(Clone, Copy)]
enum Served {
    /// The fill's window of recent chunks.
    Memory,
    /// The temp file of a fill still running (a follower behind the window).
    FillFile,
    /// The verified blob's file (a cache hit, or the end of a fill).
    Blob,
}

impl Served {
    fn count(self, bytes: usize) {
        let label = match self {
            Served::Memory => "memory",
            Served::FillFile => "fill_file",
            Served::Blob => "blob",
        };
        crate::metrics::METRICS.follow_bytes.with_label_values(&[label]).inc_by(bytes as u64);
    }
}

/// A slice of a memory-mapped blob, owned by the `Bytes` handed to hyper.
struct MapSlice {
    map: Arc<memmap2::Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// Fault a mapped range in (reading one byte per page), so writing it later does not
/// block on the disk. Blocking.
fn prefault(map: &memmap2::Mmap, start: usize, end: usize) -> u8 {
    let _ = map.advise_range(memmap2::Advice::WillNeed, start, end - start);
    let mut x = 0u8;
    let mut i = start;
    while i < end {
        x ^= map[i];
        i += 4096;
    }
    x
}

/// One mapping per blob file, shared by every response serving it: the mapped pages are
/// counted once in the process's RSS, not once per client.
#[allow(unsafe_code)] // a memory map of a committed blob (SAFETY below)
fn shared_map(file: &File) -> io::Result<Arc<memmap2::Mmap>> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Mutex, Weak};
    type Maps = HashMap<(u64, u64), Weak<memmap2::Mmap>>;
    static MAPS: Mutex<Option<Maps>> = Mutex::new(None);
    let meta = file.metadata()?;
    let key = (meta.dev(), meta.ino());
    let mut maps = MAPS.lock().expect("map cache lock");
    let maps = maps.get_or_insert_with(HashMap::new);
    if let Some(m) = maps.get(&key).and_then(Weak::upgrade) {
        if m.len() as u64 == meta.len() {
            return Ok(m);
        }
    }
    // SAFETY: committed blobs are never written or truncated; eviction and pruning unlink,
    // which leaves an existing mapping intact.
    let m = Arc::new(unsafe { memmap2::Mmap::map(file)? });
    if maps.len() > 4096 {
        maps.retain(|_, w| w.strong_count() > 0);
    }
    maps.insert(key, Arc::downgrade(&m));
    Ok(m)
}

fn map_chunk(map: Arc<memmap2::Mmap>, pos: u64, len: usize) -> JoinHandle<io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || {
        let (start, end) = (pos as usize, pos as usize + len);
        if end > map.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shorter than expected"));
        }
        std::hint::black_box(prefault(&map, start, end));
        Ok(Bytes::from_owner(MapSlice { map, start, end }))
    })
}

struct Follow {
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: Option<u64>,
    done: bool,
    /// A read already under way: (offset, handle).
    ahead: Option<(u64, JoinHandle<io::Result<Bytes>>)>,
    /// The blob mapped into memory, once it is verified and complete.
    map: Option<Arc<memmap2::Mmap>>,
}

/// `len` bytes at `pos` of a file still being filled (a follower behind the fill's window):
/// a mapping of just that range, populated in one call, so the bytes go from the page cache
/// to the socket without a copy into a fresh buffer (and without zeroing one). A `pread`
/// if the range cannot be mapped.
#[allow(unsafe_code)] // a memory map of a range being filled (SAFETY below)
fn read_chunk(file: Arc<File>, pos: u64, len: usize) -> JoinHandle<io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || {
        // SAFETY: the range is below what the fill has written, and a temp file is only ever
        // appended to, then renamed or unlinked, which leaves a mapping intact.
        match unsafe { memmap2::MmapOptions::new().offset(pos).len(len).populate().map(&*file) } {
            Ok(m) => return Ok(Bytes::from_owner(MapSlice { map: Arc::new(m), start: 0, end: len })),
            Err(e) => tracing::debug!(error = %e, "cannot map a range of a fill; reading it instead"),
        }
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

    /// A follower that keeps up takes the chunk from the fill's window, as it arrived.
    fn take_from_memory(&mut self, p: &Progress, limit: u64) -> Option<Bytes> {
        let chunk = p.window.as_ref()?.get(self.pos, limit)?;
        if let Some((_, h)) = self.ahead.take() {
            h.abort();
        }
        self.pos += chunk.len() as u64;
        Served::Memory.count(chunk.len());
        Some(chunk)
    }

    /// Serve the rest of a verified blob from its (shared) memory map.
    fn map_blob(&mut self, file: &File) {
        match shared_map(file) {
            Ok(m) => {
                if let Some((_, h)) = self.ahead.take() {
                    h.abort();
                }
                self.map = Some(m);
            }
            Err(e) => tracing::debug!(error = %e, "cannot map blob; reading it instead"),
        }
    }

    async fn next(mut self) -> Option<(io::Result<Bytes>, Follow)> {
        if self.done {
            return None;
        }
        loop {
            let p = self.rx.borrow_and_update().clone();
            let verified = match &p.state {
                FillState::Failed(e) => return self.fail(io::Error::other(e.clone())),
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
            if let Some(chunk) = self.take_from_memory(&p, limit) {
                return Some((Ok(chunk), self));
            }
            // While filling, read only once a batch has accumulated (or at the hold-back
            // boundary, which the next progress will move).
            let batch_ready = verified || limit - self.pos.min(limit) >= MIN_BATCH;
            if self.pos < limit && batch_ready {
                let Some(file) = p.file.clone() else {
                    return self.fail(io::Error::other("blob file missing"));
                };
                if verified && self.map.is_none() && p.written > 0 {
                    self.map_blob(&file);
                }
                let chunk_len = |pos: u64| (limit - pos).min(MAP_CHUNK) as usize;
                let start_read = |pos: u64, map: &Option<Arc<memmap2::Mmap>>| match map {
                    Some(m) => map_chunk(m.clone(), pos, chunk_len(pos)),
                    None => read_chunk(file.clone(), pos, chunk_len(pos)),
                };
                let handle = match self.ahead.take() {
                    Some((at, h)) if at == self.pos => h,
                    other => {
                        if let Some((_, h)) = other {
                            h.abort();
                        }
                        start_read(self.pos, &self.map)
                    }
                };
                let chunk = match handle.await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return self.fail(e),
                    Err(e) => return self.fail(io::Error::other(e)),
                };
                self.pos += chunk.len() as u64;
                (if verified { Served::Blob } else { Served::FillFile }).count(chunk.len());
                // Read ahead only what is already final; a follower at the tail of a fill
                // would otherwise hold two buffers per client.
                if self.pos < limit && verified {
                    self.ahead = Some((self.pos, start_read(self.pos, &self.map)));
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
    let init = Follow { rx: progress, pos: start, end, done: false, ahead: None, map: None };
    futures_util::stream::unfold(init, Follow::next)
}
