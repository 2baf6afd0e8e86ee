//! What is remembered about refused credentials for one key (an upstream's Basic or ECR
//! credentials, or one Bearer scope), to decide whether a refusal is worth new credentials.
//!
//! Credentials carry ids that grow with each new one (ECR token generations, Bearer token
//! ids). A refusal of credentials believed valid is worth one refresh; the credentials that
//! replace them are then on probation until the registry accepts them. A refusal of
//! credentials on probation (or of a retry) means new ones do not help: a [`Cooldown`]
//! starts, and until it ends every refusal fails at once. Because probation is by id, a
//! request that happened to use the replacement on its first attempt counts as a refusal
//! of the replacement, not as a reason for yet another refresh.

use super::cooldown::{Cooldown, Trip};
use std::sync::Mutex;
use std::time::Duration;

pub struct Refusals {
    cooldown: Cooldown,
    /// Credentials with an id from this one on replaced refused ones and are not yet
    /// accepted.
    probation_from: Mutex<Option<u64>>,
}

/// What to do about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Get new credentials (single-flight is the caller's business) and retry once.
    Refresh,
    /// New credentials would not help: fail at once.
    CoolingDown(Trip),
}

impl Refusals {
    pub fn new(cooldown: Duration) -> Refusals {
        Refusals { cooldown: Cooldown::new(cooldown), probation_from: Mutex::new(None) }
    }

    /// Credentials with id `id` were refused. `retried`: the request had already retried
    /// with new credentials. `next_id`: the id the next new credentials will get.
    pub fn refused(&self, id: u64, retried: bool, next_id: u64) -> Decision {
        if let Some(r) = self.cooldown.running() {
            return Decision::CoolingDown(Trip { left: r.left, started: false });
        }
        let mut probation = self.probation_from.lock().expect("refusals lock");
        if retried || probation.is_some_and(|from| id >= from) {
            // Served by this cooldown: once it ends, a refusal may refresh again.
            *probation = None;
            return Decision::CoolingDown(self.cooldown.trip("freshly obtained credentials were refused"));
        }
        probation.get_or_insert(next_id);
        Decision::Refresh
    }

    /// The first credentials are about to be obtained (after a challenge): they are on
    /// probation like a replacement.
    pub fn learning(&self, next_id: u64) {
        self.probation_from.lock().expect("refusals lock").get_or_insert(next_id);
    }

    /// The registry accepted credentials: no cooldown, nothing on probation.
    pub fn accepted(&self) {
        self.cooldown.reset();
        let mut probation = self.probation_from.lock().expect("refusals lock");
        if probation.is_some() {
            *probation = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(30);

    fn cooling(d: Decision) -> bool {
        matches!(d, Decision::CoolingDown(_))
    }

    #[test]
    fn one_refresh_then_the_replacement_is_on_probation() {
        let r = Refusals::new(BASE);
        // Token 4 refused: refresh; its replacement will be 5.
        assert_eq!(r.refused(4, false, 5), Decision::Refresh);
        // A late refusal of 4 (concurrent with the refresh) may retry, with 5.
        assert_eq!(r.refused(4, false, 5), Decision::Refresh);
        // 5 refused, on a first attempt or a retry: cooldown, no more refreshes.
        let d = r.refused(5, false, 6);
        assert!(matches!(d, Decision::CoolingDown(Trip { started: true, .. })), "{d:?}");
        assert!(matches!(r.refused(5, true, 6), Decision::CoolingDown(Trip { started: false, .. })));
        assert!(cooling(r.refused(4, false, 6)));
    }

    #[test]
    fn acceptance_ends_the_cooldown_and_probation() {
        let r = Refusals::new(BASE);
        r.learning(0);
        assert!(cooling(r.refused(0, false, 1)), "the first token, refused, is worth no refresh");
        r.accepted();
        assert_eq!(r.refused(0, false, 1), Decision::Refresh);
        r.accepted();
        assert_eq!(r.refused(1, false, 2), Decision::Refresh, "an accepted token earns one refresh");
    }

    #[test]
    fn a_retry_refused_always_cools_down() {
        let r = Refusals::new(BASE);
        assert!(cooling(r.refused(0, true, 0)));
    }
}
