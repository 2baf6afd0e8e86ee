//! `[cluster] peer_upload_rate`: one token bucket shared by every blob stream this node
//! sends to peers, so a rollout cannot take the whole uplink from the node's own
//! workloads. Chunks are cut to at most a tenth of a second's worth, so the rate holds
//! at that granularity rather than one big chunk at a time.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A bucket may hold this much unused time: a stream that was idle may send a burst that
/// long at once, no more.
const BURST: Duration = Duration::from_millis(100);
/// Chunk size floor, so a very low rate does not turn into tiny writes.
const MIN_PIECE: usize = 1024;

pub struct UploadRate {
    bytes_per_sec: u64,
    /// When the bytes granted so far have been paid for (a virtual clock: GCRA).
    paid_until: Mutex<Instant>,
}

impl UploadRate {
    pub fn new(bytes_per_sec: u64) -> Arc<UploadRate> {
        Arc::new(UploadRate { bytes_per_sec: bytes_per_sec.max(1), paid_until: Mutex::new(Instant::now()) })
    }

    /// The most bytes sent in one piece.
    fn piece(&self) -> usize {
        ((self.bytes_per_sec / 10) as usize).max(MIN_PIECE)
    }

    /// When `n` more bytes asked for at `now` may go; books them.
    fn schedule(&self, n: usize, now: Instant) -> Instant {
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        let mut paid = self.paid_until.lock().expect("upload rate lock");
        let start = (*paid).max(now.checked_sub(BURST).unwrap_or(now));
        *paid = start + cost;
        start
    }

    /// Wait until `n` more bytes may go.
    async fn take(&self, n: usize) {
        let at = self.schedule(n, Instant::now());
        tokio::time::sleep_until(at).await;
    }

    /// `body`, cut into pieces, each sent only when the bucket allows.
    pub fn limit(
        self: Arc<Self>,
        body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let piece = self.piece();
        body.flat_map(move |r| {
            let pieces: Vec<io::Result<Bytes>> = match r {
                Ok(mut b) => {
                    let mut v = Vec::with_capacity(b.len() / piece + 1);
                    while b.len() > piece {
                        v.push(Ok(b.split_to(piece)));
                    }
                    v.push(Ok(b));
                    v
                }
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(pieces)
        })
        .then(move |r| {
            let rate = self.clone();
            async move {
                if let Ok(b) = &r {
                    rate.take(b.len()).await;
                }
                r
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_share_one_rate_and_idle_time_buys_only_a_short_burst() {
        let r = UploadRate::new(1_000_000);
        let t0 = Instant::now() + Duration::from_secs(10);
        // Idle before t0: the first 100 ms' worth may go at once (burst), then the clock runs.
        assert_eq!(r.schedule(100_000, t0), t0 - BURST);
        assert_eq!(r.schedule(100_000, t0), t0);
        // A second stream asking at the same moment queues behind the first.
        assert_eq!(r.schedule(500_000, t0), t0 + Duration::from_millis(100));
        assert_eq!(r.schedule(1, t0), t0 + Duration::from_millis(600));
        assert_eq!(r.piece(), 100_000);
        assert_eq!(UploadRate::new(10).piece(), MIN_PIECE);
    }
}
