//! Whether the bucket is answering, and a short back-off after it fails: a dead or slow
//! bucket then costs one timeout per back-off period instead of one per request.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reads are skipped for this long after a failure.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum TierHealth {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

#[derive(Default)]
pub struct Health {
    state: AtomicU8,
    skip_until: Mutex<Option<Instant>>,
}

impl Health {
    pub fn state(&self) -> TierHealth {
        match self.state.load(Ordering::Relaxed) {
            1 => TierHealth::Up,
            2 => TierHealth::Down,
            _ => TierHealth::Unknown,
        }
    }

    /// Note how a request went.
    pub fn record<T, E: std::fmt::Display>(&self, r: &Result<T, E>) {
        match r {
            Ok(_) => {
                self.state.store(TierHealth::Up as u8, Ordering::Relaxed);
                *self.skip_until.lock().expect("health lock") = None;
            }
            Err(e) => {
                if self.state.swap(TierHealth::Down as u8, Ordering::Relaxed) != TierHealth::Down as u8 {
                    tracing::warn!(error = %e, skip_for = ?SKIP_AFTER_FAILURE, "shared tier failed; reading from the upstream instead");
                }
                *self.skip_until.lock().expect("health lock") = Some(Instant::now() + SKIP_AFTER_FAILURE);
            }
        }
        crate::metrics::METRICS.shared_up.set(i64::from(r.is_ok()));
    }

    /// Whether reads should skip the tier now (it failed moments ago).
    pub fn skipping(&self) -> bool {
        self.skip_until.lock().expect("health lock").is_some_and(|t| Instant::now() < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_skips_reads_until_a_success() {
        let h = Health::default();
        assert_eq!(h.state(), TierHealth::Unknown);
        assert!(!h.skipping());
        h.record::<(), _>(&Err("down"));
        assert_eq!(h.state(), TierHealth::Down);
        assert!(h.skipping());
        h.record::<_, String>(&Ok(()));
        assert_eq!(h.state(), TierHealth::Up);
        assert!(!h.skipping());
    }
}
