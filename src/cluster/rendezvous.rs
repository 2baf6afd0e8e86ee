//! Rendezvous (highest random weight) hashing: every node ranks the peers for a digest the
//! same way without coordination, and a peer joining or leaving moves only the digests it
//! owns or takes. The score is the first 8 bytes of `sha256(peer URL "\n" digest)`, so it is
//! stable across versions and platforms (nodes of a rolling upgrade agree).

use super::Peer;
use crate::oci::{Digest, Sha256Hasher};

fn score(peer: &Peer, digest: &Digest) -> u64 {
    let mut h = Sha256Hasher::new();
    h.update(peer.as_str().as_bytes());
    h.update(b"\n");
    h.update(digest.to_string().as_bytes());
    let d = h.finish();
    u64::from_str_radix(&d.hex()[..16], 16).unwrap_or(0)
}

/// `peers` ordered by their score for `digest`, highest (the owner) first.
pub fn order(peers: &[Peer], digest: &Digest) -> Vec<Peer> {
    let mut scored: Vec<(u64, &Peer)> = peers.iter().map(|p| (score(p, digest), p)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
    scored.into_iter().map(|(_, p)| p.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u32) -> Digest {
        Digest::of_bytes(&i.to_le_bytes())
    }

    #[test]
    fn owners_spread_and_move_only_when_their_peer_leaves() {
        let peers: Vec<Peer> = (1..=4).map(|i| Peer::new(&format!("http://10.0.0.{i}:5000"))).collect();
        let mut owned = std::collections::HashMap::new();
        for i in 0..400 {
            *owned.entry(order(&peers, &digest(i))[0].clone()).or_insert(0) += 1;
        }
        assert_eq!(owned.len(), 4, "every peer owns some digests");
        assert!(owned.values().all(|n| *n > 50), "{owned:?}");

        // Peer 4 leaves: only its digests move; the rest keep their owner.
        let three = &peers[..3];
        for i in 0..400 {
            let before = order(&peers, &digest(i))[0].clone();
            let after = order(three, &digest(i))[0].clone();
            if before != peers[3] {
                assert_eq!(before, after);
            }
        }
        // Order does not depend on the order of the list.
        let mut rev = peers.clone();
        rev.reverse();
        assert_eq!(order(&peers, &digest(7)), order(&rev, &digest(7)));
    }

    #[test]
    fn the_score_is_a_stable_contract() {
        // Nodes of different versions must agree: pin one value.
        let p = Peer::new("http://127.0.0.1:5000");
        let d: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let mut h = Sha256Hasher::new();
        h.update(b"http://127.0.0.1:5000\nsha256:0000000000000000000000000000000000000000000000000000000000000000");
        let want = u64::from_str_radix(&h.finish().hex()[..16], 16).unwrap();
        assert_eq!(score(&p, &d), want);
    }
}
