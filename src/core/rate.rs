//! Pacing re-hashing to a byte rate, so a scrub beside a running daemon takes a bounded
//! share of the disk and the CPU.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// A speed in bytes per second; never zero ("off" is the absence of a rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(NonZeroU64);

impl Rate {
    /// `None` for 0.
    pub fn bytes_per_second(n: u64) -> Option<Rate> {
        NonZeroU64::new(n).map(Rate)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// Keeps a run of reads at or under a rate (or unpaced), on the calling thread.
#[derive(Debug)]
pub struct Pace {
    rate: Option<Rate>,
    since: Instant,
    bytes: u64,
}

/// The longest single sleep: a pace never holds its thread longer than this at once, so a
/// stop request is seen soon.
const MAX_SLEEP: Duration = Duration::from_millis(250);

impl Pace {
    pub fn new(rate: Option<Rate>) -> Pace {
        Pace { rate, since: Instant::now(), bytes: 0 }
    }

    /// Count `n` bytes read and sleep until they fit the rate. Blocking (sleeps).
    pub fn take(&mut self, n: u64) {
        self.bytes += n;
        while let Some(wait) = self.due() {
            std::thread::sleep(wait.min(MAX_SLEEP));
        }
    }

    /// How long the bytes counted so far are ahead of the rate, if they are.
    fn due(&self) -> Option<Duration> {
        let rate = self.rate?;
        let at = Duration::from_secs_f64(self.bytes as f64 / rate.get() as f64);
        at.checked_sub(self.since.elapsed()).filter(|d| !d.is_zero())
    }

    /// Start counting afresh (after an idle time, so it does not allow a burst).
    pub fn restart(&mut self) {
        self.since = Instant::now();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_reads_to_the_rate() {
        assert_eq!(Rate::bytes_per_second(0), None);
        let mut p = Pace::new(Rate::bytes_per_second(10 << 20));
        let start = Instant::now();
        for _ in 0..4 {
            p.take(1 << 20); // 4 MiB at 10 MiB/s: at least 0.4 s
        }
        assert!(start.elapsed() >= Duration::from_millis(380), "{:?}", start.elapsed());
        let mut free = Pace::new(None);
        let start = Instant::now();
        free.take(u64::MAX / 2);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
