//! A cooldown: how long a credential source that just failed is left alone.
//!
//! A registry that refuses freshly refreshed credentials, or a token endpoint that fails,
//! will do the same on the next request: asking again at the rate requests arrive turns one
//! bad credential into a storm of `GetAuthorizationToken` or token calls (ECR throttles
//! them per account and region, for every other user too). So a failure starts a cooldown
//! of `base`, doubling with each failure that follows (up to [`MAX`]), with jitter so that
//! many nodes do not retry in lockstep; one success ends it and the next failure starts
//! again at `base`. While it runs, callers fail fast instead of asking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
// tokio's clock (std's outside a runtime): unit tests run it paused.
use tokio::time::Instant;

/// The longest cooldown (unless `base` itself is longer).
pub const MAX: Duration = Duration::from_secs(600);

pub struct Cooldown {
    base: Duration,
    state: Mutex<State>,
    /// Whether any failure is remembered: lets `reset`, called on every success, skip the lock.
    failed: AtomicBool,
}

#[derive(Default)]
struct State {
    until: Option<Instant>,
    /// Length of the last cooldown; zero after a success.
    last: Duration,
    /// What went wrong, for the error callers get while the cooldown runs.
    reason: String,
}

/// A running cooldown: time left and the failure that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub left: Duration,
    pub reason: String,
}

/// What [`Cooldown::trip`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// Time left in the running cooldown.
    pub left: Duration,
    /// Whether this failure started it (false: it was running already).
    pub started: bool,
}

impl Cooldown {
    pub fn new(base: Duration) -> Cooldown {
        Cooldown { base: base.max(Duration::from_millis(1)), state: Mutex::new(State::default()), failed: false.into() }
    }

    /// The running cooldown, if any.
    pub fn running(&self) -> Option<Running> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let s = self.state.lock().expect("cooldown lock");
        let left = s.until?.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        Some(Running { left, reason: s.reason.clone() })
    }

    /// Record a failure: start a cooldown unless one is running (concurrent failures of one
    /// attempt count once).
    pub fn trip(&self, reason: impl Into<String>) -> Trip {
        let mut s = self.state.lock().expect("cooldown lock");
        let now = Instant::now();
        if let Some(left) = s.until.and_then(|u| u.checked_duration_since(now)).filter(|d| !d.is_zero()) {
            return Trip { left, started: false };
        }
        let next = if s.last.is_zero() { self.base } else { (s.last * 2).min(MAX.max(self.base)) };
        s.last = next;
        // ±20%, so that nodes that failed together do not come back together.
        let len = next.mul_f64(0.8 + 0.4 * jitter());
        s.until = Some(now + len);
        s.reason = reason.into();
        self.failed.store(true, Ordering::Release);
        Trip { left: len, started: true }
    }

    /// The source works: end any cooldown, and start the next one at `base`.
    pub fn reset(&self) {
        if self.failed.swap(false, Ordering::AcqRel) {
            *self.state.lock().expect("cooldown lock") = State::default();
        }
    }
}

/// A pseudo-random fraction in [0, 1) for jitter; no cryptographic use. `RandomState` is
/// seeded per process and advanced per call, which is all jitter needs.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_cap_and_resets_on_success() {
        let c = Cooldown::new(Duration::from_secs(30));
        assert_eq!(c.running(), None);
        let first = c.trip("refused").left;
        assert!(first >= Duration::from_secs(24) && first <= Duration::from_secs(36), "{first:?}");
        // A second failure while it runs does not lengthen it.
        assert!(!c.trip("again").started && c.trip("again").left <= first);
        assert_eq!(c.running().map(|r| r.reason), Some("refused".to_string()));
        // Later failures double it, up to ten minutes.
        for want in [60, 120, 240, 480, 600, 600] {
            c.state.lock().unwrap().until = Some(Instant::now());
            let got = c.trip("refused").left;
            let want = Duration::from_secs(want);
            assert!(got >= want.mul_f64(0.8) && got <= want.mul_f64(1.2), "{got:?} for {want:?}");
        }
        c.reset();
        assert_eq!(c.running(), None);
        let again = c.trip("refused").left;
        assert!(again <= Duration::from_secs(36), "a success must restart at base: {again:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_out_after_its_length_and_not_before() {
        let c = Cooldown::new(Duration::from_millis(20));
        let len = c.trip("x").left;
        assert!(len >= Duration::from_millis(16) && len <= Duration::from_millis(24), "{len:?}");
        tokio::time::advance(len - Duration::from_millis(1)).await;
        assert_eq!(c.running().map(|r| r.left), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(c.running(), None);
        // The next failure doubles it (a success in between would not).
        let next = c.trip("y").left;
        assert!(next >= Duration::from_millis(32) && next <= Duration::from_millis(48), "{next:?}");
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let v: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| (x - v[0]).abs() > 1e-9));
    }
}
