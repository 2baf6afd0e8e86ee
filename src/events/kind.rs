//! The kinds of event pullthrough reports, and sets of them (what a webhook subscribes to).

use std::fmt;

/// What happened. The names ([`EventKind::as_str`]) are the configuration's `kinds` values
/// and, prefixed with `io.pullthrough.`, the CloudEvents `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A blob was fetched, verified and committed to the local cache.
    FillCompleted,
    /// A blob fill failed (upstream error, verification failure, IO); nothing was cached.
    FillFailed,
    /// Bytes did not match their digest: a fill from a tier, or a cached file found rotten.
    BlobCorrupt,
    /// A blob was evicted to keep the cache within its budget.
    Evicted,
    /// A lifecycle policy expired an image.
    Expired,
    /// An upstream stopped answering (sent on the transition only).
    UpstreamDown,
    /// An upstream answers again after being down (sent on the transition only).
    UpstreamUp,
    /// An upstream's rate limit stopped or held back a request.
    RateLimited,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::FillCompleted,
        EventKind::FillFailed,
        EventKind::BlobCorrupt,
        EventKind::Evicted,
        EventKind::Expired,
        EventKind::UpstreamDown,
        EventKind::UpstreamUp,
        EventKind::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FillCompleted => "fill.completed",
            EventKind::FillFailed => "fill.failed",
            EventKind::BlobCorrupt => "blob.corrupt",
            EventKind::Evicted => "evicted",
            EventKind::Expired => "expired",
            EventKind::UpstreamDown => "upstream.down",
            EventKind::UpstreamUp => "upstream.up",
            EventKind::RateLimited => "ratelimited",
        }
    }

    /// The CloudEvents `type` attribute (reverse-DNS prefixed, as the spec recommends).
    pub fn ce_type(self) -> String {
        format!("io.pullthrough.{}", self.as_str())
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the eight kinds.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown event kind {0:?}; known kinds: fill.completed, fill.failed, blob.corrupt, evicted, expired, upstream.down, upstream.up, ratelimited")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// A set of kinds: what one webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub fn all() -> Kinds {
        Kinds(EventKind::ALL.iter().fold(0, |m, k| m | k.bit()))
    }

    pub fn contains(self, k: EventKind) -> bool {
        self.0 & k.bit() != 0
    }
}

impl FromIterator<EventKind> for Kinds {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Self {
        Kinds(iter.into_iter().fold(0, |m, k| m | k.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_named() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            assert!(Kinds::all().contains(k));
        }
        let e = "fill.done".parse::<EventKind>().unwrap_err();
        assert!(e.to_string().contains("\"fill.done\""), "{e}");
        let some: Kinds = [EventKind::Evicted, EventKind::UpstreamUp].into_iter().collect();
        assert!(some.contains(EventKind::Evicted) && !some.contains(EventKind::FillCompleted));
    }
}
