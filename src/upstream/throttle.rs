//! An upstream's WAN budget (`max_rate`): the bytes per second all of its fills together may
//! fetch, for sites on a thin link. One token bucket per upstream, paid per body chunk as the
//! fill reads it (reading stops while a chunk waits, so TCP's flow control slows the sender);
//! live pulls go first: a prefetch job's fill waits while any live fill of the upstream reads.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Who a fill is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A client (or a peer for its client) waits for it.
    Live,
    /// A prefetch job: yields the budget to live fills.
    Prefetch,
}

/// One upstream's byte budget.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second.
    rate: u64,
    /// When the bytes granted so far will have been paid for.
    paid_until: Mutex<Instant>,
    /// Live fills reading now.
    live: AtomicUsize,
    /// Told when the last live fill ends.
    live_ended: Notify,
}

/// A live fill, counted while its body is read.
struct LiveFill(Arc<Throttle>);

impl Drop for LiveFill {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.live_ended.notify_waiters();
        }
    }
}

impl Throttle {
    /// A budget of `rate` bytes per second (more than 0).
    pub fn new(rate: u64) -> Arc<Throttle> {
        Arc::new(Throttle {
            rate: rate.max(1),
            paid_until: Mutex::new(Instant::now()),
            live: AtomicUsize::new(0),
            live_ended: Notify::new(),
        })
    }

    /// `body`, its chunks released no faster than the budget allows.
    pub fn limit<S, E>(self: &Arc<Self>, body: S, class: Class) -> impl Stream<Item = Result<Bytes, E>> + use<S, E>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let live = (class == Class::Live).then(|| {
            self.live.fetch_add(1, Ordering::SeqCst);
            LiveFill(self.clone())
        });
        let throttle = self.clone();
        body.then(move |chunk| {
            let throttle = throttle.clone();
            // The guard lives as long as the stream (moved into this closure).
            let _live = &live;
            async move {
                if let Ok(bytes) = &chunk {
                    throttle.take(bytes.len() as u64, class).await;
                }
                chunk
            }
        })
    }

    /// Wait until `n` bytes are paid for.
    async fn take(&self, n: u64, class: Class) {
        if class == Class::Prefetch {
            self.yield_to_live().await;
        }
        let until = self.reserve(n, Instant::now());
        tokio::time::sleep_until(until).await;
    }

    /// Book `n` bytes after those already booked (never earlier than now: an idle budget is
    /// not saved up into a burst); when they are paid for.
    fn reserve(&self, n: u64, now: Instant) -> Instant {
        let mut paid = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
        let until = (*paid).max(now) + Duration::from_secs_f64(n as f64 / self.rate as f64);
        *paid = until;
        until
    }

    /// Wait while a live fill reads.
    async fn yield_to_live(&self) {
        loop {
            // Registered before the check: an end between the two is not missed.
            let ended = self.live_ended.notified();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    const CHUNK: usize = 64 << 10;

    /// Read `chunks` chunks through the throttle; when (virtual time) it ended, and when each
    /// chunk came out (as the bytes read so far, both fills' together, at that point).
    async fn fill(t: Arc<Throttle>, chunks: usize, class: Class, read: Arc<AtomicUsize>) -> (Duration, Vec<usize>) {
        let start = Instant::now();
        let body = stream::iter((0..chunks).map(|_| Ok::<_, ()>(Bytes::from(vec![0u8; CHUNK]))));
        let mut body = std::pin::pin!(t.limit(body, class));
        let mut seen = Vec::new();
        while let Some(c) = body.next().await {
            seen.push(read.fetch_add(c.unwrap().len(), Ordering::SeqCst) + CHUNK);
        }
        (start.elapsed(), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn two_fills_share_the_budget() {
        // 1 MiB/s; two fills of 1 MiB each: together 2 s, each about half the rate.
        let t = Throttle::new(1 << 20);
        let read = Arc::new(AtomicUsize::new(0));
        let (a, b) = tokio::join!(
            fill(t.clone(), 16, Class::Live, read.clone()),
            fill(t.clone(), 16, Class::Live, read.clone())
        );
        assert_eq!(read.load(Ordering::SeqCst), 2 << 20);
        // Virtual time: exact to the booking, whatever the machine's speed.
        let chunk_time = Duration::from_secs_f64(CHUNK as f64 / (1 << 20) as f64);
        // (Timers fire on whole milliseconds: up to 1 ms of slack per chunk.)
        assert!((2000..=2032).contains(&a.0.max(b.0).as_millis()), "{a:?} {b:?}");
        assert!(a.0.min(b.0) >= Duration::from_secs(2) - chunk_time, "{a:?} {b:?}");
        // Interleaved: each of A's chunks came out after about twice its bytes had been read.
        for (i, total) in a.1.iter().enumerate() {
            assert!(*total >= 2 * (i + 1) * CHUNK - CHUNK && *total <= 2 * (i + 1) * CHUNK, "{i}: {total}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn live_fills_go_before_prefetch() {
        let t = Throttle::new(1 << 20);
        let read = Arc::new(AtomicUsize::new(0));
        let ((live, _), (prefetch, seen)) = tokio::join!(
            fill(t.clone(), 16, Class::Live, read.clone()),
            fill(t.clone(), 16, Class::Prefetch, read.clone())
        );
        // The live fill had the whole budget: 1 MiB in 1 s; the prefetch only after it.
        assert!((1000..=1016).contains(&live.as_millis()), "{live:?}");
        assert!((2000..=2032).contains(&prefetch.as_millis()), "{prefetch:?}");
        assert_eq!(seen[0], (1 << 20) + CHUNK, "a prefetch chunk came out while the live fill read");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_budget_is_not_saved_up() {
        let t = Throttle::new(1 << 20);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (took, _) = fill(t, 16, Class::Live, Arc::new(AtomicUsize::new(0))).await;
        assert!((1000..=1016).contains(&took.as_millis()), "{took:?}");
    }
}
