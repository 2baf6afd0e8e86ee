//! The most recent chunks of a fill, in memory, for the clients that follow it: a follower
//! that keeps up takes its bytes from here (the same `Bytes` the network produced, sliced,
//! never copied); one that fell further behind than the window reads the temp file, which
//! the page cache still holds, as before.
//!
//! A chunk enters the window only once the disk writer has appended it to the temp file, so
//! every byte that leaves the window is readable from the file. The window holds at most
//! `capacity` bytes (plus the chunk just pushed), whatever the number of followers.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;

pub struct Window {
    ring: Mutex<Ring>,
    capacity: usize,
}

#[derive(Default)]
struct Ring {
    /// Contiguous chunks by offset, oldest first.
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window { ring: Mutex::default(), capacity }
    }

    /// Add the chunk at `offset` (the end of the previous one), dropping the oldest chunks
    /// beyond the capacity.
    pub fn push(&self, offset: u64, chunk: Bytes) {
        let mut r = self.ring.lock().expect("window lock");
        r.bytes += chunk.len();
        r.chunks.push_back((offset, chunk));
        while r.bytes > self.capacity && r.chunks.len() > 1 {
            if let Some((_, old)) = r.chunks.pop_front() {
                r.bytes -= old.len();
            }
        }
    }

    /// The bytes from `pos` to the end of the chunk holding it, at most up to `limit`;
    /// `None` when `pos` is no longer (or not yet) in memory.
    pub fn get(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let r = self.ring.lock().expect("window lock");
        let i = r.chunks.partition_point(|(off, c)| off + c.len() as u64 <= pos);
        let (off, chunk) = r.chunks.get(i)?;
        if *off > pos || pos >= limit {
            return None;
        }
        let end = (off + chunk.len() as u64).min(limit);
        Some(chunk.slice((pos - off) as usize..(end - off) as usize))
    }

    /// Release every chunk: the fill is over, followers read the file from here on.
    pub fn clear(&self) {
        let mut r = self.ring.lock().expect("window lock");
        r.chunks.clear();
        r.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_it_holds_and_forgets_the_oldest() {
        let w = Window::new(8);
        w.push(0, Bytes::from_static(b"abcd"));
        w.push(4, Bytes::from_static(b"efgh"));
        assert_eq!(w.get(2, 100).as_deref(), Some(&b"cd"[..]));
        assert_eq!(w.get(5, 7).as_deref(), Some(&b"fg"[..]));
        assert_eq!(w.get(8, 100), None, "not yet written");
        w.push(8, Bytes::from_static(b"ij"));
        assert_eq!(w.get(0, 100), None, "the oldest chunk left the window");
        assert_eq!(w.get(9, 100).as_deref(), Some(&b"j"[..]));
        w.clear();
        assert_eq!(w.get(9, 100), None);
    }
}
