//! What is known about reaching an upstream, kept in one atomic cell: the last request
//! answers it, `/readyz` and the `upstream_up` gauge read it.

use std::sync::atomic::{AtomicU8, Ordering};

/// What is known about reaching an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Reachability {
    Unknown = 0,
    Reachable = 1,
    Unreachable = 2,
    Offline = 3,
}

impl Reachability {
    fn from_repr(v: u8) -> Reachability {
        match v {
            1 => Reachability::Reachable,
            2 => Reachability::Unreachable,
            3 => Reachability::Offline,
            _ => Reachability::Unknown,
        }
    }
}

/// A `Reachability` shared between requests: the enum's own repr in an atomic.
#[derive(Debug)]
pub struct ReachabilityCell(AtomicU8);

impl ReachabilityCell {
    pub fn new(r: Reachability) -> ReachabilityCell {
        ReachabilityCell(AtomicU8::new(r as u8))
    }

    pub fn get(&self) -> Reachability {
        Reachability::from_repr(self.0.load(Ordering::Relaxed))
    }

    /// Set `r` and return what was there: one caller sees each transition (events).
    pub fn swap(&self, r: Reachability) -> Reachability {
        Reachability::from_repr(self.0.swap(r as u8, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_state() {
        for r in [Reachability::Unknown, Reachability::Reachable, Reachability::Unreachable, Reachability::Offline] {
            let c = ReachabilityCell::new(Reachability::Unknown);
            c.swap(r);
            assert_eq!(c.get(), r);
        }
    }
}
