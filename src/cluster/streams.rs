//! The blob streams this node is sending to peers right now, per digest: what bounds a
//! node to `max_peer_streams` peers per blob. A stream is counted from the moment it is
//! admitted until its response body is dropped (finished, failed or abandoned).

use crate::oci::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Streams {
    live: Mutex<HashMap<Digest, usize>>,
}

/// One admitted stream; dropping it ends the count.
pub struct StreamGuard {
    streams: Arc<Streams>,
    digest: Digest,
}

impl Streams {
    /// Count one more stream of `digest` if fewer than `limit` are live (any number with
    /// `None`), atomically, so two askers at once cannot both take the last slot.
    pub fn open(self: &Arc<Self>, digest: &Digest, limit: Option<usize>) -> Option<StreamGuard> {
        let mut live = self.live.lock().expect("streams lock");
        let n = live.entry(digest.clone()).or_insert(0);
        if limit.is_some_and(|l| *n >= l) {
            return None;
        }
        *n += 1;
        let m = &crate::metrics::METRICS;
        m.peer_streams.inc();
        if *n as i64 > m.peer_streams_peak.get() {
            m.peer_streams_peak.set(*n as i64);
        }
        Some(StreamGuard { streams: self.clone(), digest: digest.clone() })
    }

    /// How many streams of `digest` are live.
    #[cfg(test)]
    pub fn live(&self, digest: &Digest) -> usize {
        self.live.lock().expect("streams lock").get(digest).copied().unwrap_or(0)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut live = self.streams.live.lock().expect("streams lock");
        if let Some(n) = live.get_mut(&self.digest) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.digest);
            }
        }
        crate::metrics::METRICS.peer_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_digest_and_released_on_drop() {
        let s = Arc::new(Streams::default());
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let first = s.open(&a, Some(1)).expect("a slot");
        assert!(s.open(&a, Some(1)).is_none(), "the limit holds");
        let other = s.open(&b, Some(1)).expect("another digest has its own slots");
        let over = s.open(&a, None).expect("unbounded when asked to serve directly");
        assert_eq!(s.live(&a), 2);
        drop((first, over));
        assert_eq!(s.live(&a), 0);
        assert!(s.open(&a, Some(1)).is_some());
        drop(other);
    }
}
