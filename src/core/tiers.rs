//! The tiers a lookup asks, in the one order every lookup uses (manifests here; blobs in
//! `source`), and what happens when a tier sends bytes that fail verification.

use super::blob::source::{Tier, Via};
use crate::oci::Digest;

/// Local disk, then the tier shared by every node, then the peers, then the upstream.
pub(crate) const ORDER: [Tier; 4] = [Tier::Local, Tier::Shared, Tier::Peer, Tier::Upstream];

/// The tiers a request asks, in [`ORDER`]: a peer's request is never passed on to other
/// peers (so there are no loops).
pub(crate) fn order(via: Via) -> impl Iterator<Item = Tier> {
    ORDER.into_iter().filter(move |t| via == Via::Client || *t != Tier::Peer)
}

/// A tier sent `what` (a manifest, a blob) that does not hash to `digest`: counted and said;
/// the caller drops the bytes and does what the tier needs (a peer is skipped for a while,
/// the shared tier's object is removed).
pub(crate) fn bad_bytes(tier: Tier, what: &str, digest: &Digest) {
    crate::metrics::METRICS.tier_verification_failures.with_label_values(&[tier.as_str()]).inc();
    tracing::warn!(tier = tier.as_str(), %digest, "a {what} from the {} tier failed verification; dropped", tier.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_asks_no_peer() {
        assert_eq!(order(Via::Client).collect::<Vec<_>>(), ORDER);
        assert_eq!(order(Via::Peer).collect::<Vec<_>>(), [Tier::Local, Tier::Shared, Tier::Upstream]);
    }
}
