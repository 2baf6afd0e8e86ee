//! The owner's record, per digest, of which nodes receive the blob and from whom: a tree
//! rooted at the owner, each node with at most `max_peer_streams` children. An asker the
//! owner cannot serve itself (it is at its limit) is referred to the first node, in the
//! order they joined, that has a spare stream, and hangs off that node from then on. With a
//! limit of 1 the tree is a chain in arrival order: every node's uplink carries one copy.
//!
//! The record is advisory: a node it names may have failed or evicted the blob; the asker
//! is then refused there, comes back asking directly, and that node stops being a target.

use super::Peer;
use crate::oci::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A digest's tree is forgotten this long after its last ask (a rollout is over by then).
const KEEP_FOR: Duration = Duration::from_secs(600);
/// At most this many digests are tracked; the least recently asked goes first.
const MAX_DIGESTS: usize = 1024;

struct Member {
    peer: Peer,
    /// The node it receives from; `None`: this node.
    parent: Option<Peer>,
    /// Askers referred to it.
    children: usize,
    /// Whether askers may be referred to it (not after it failed an asker).
    target: bool,
}

struct Tree {
    members: Vec<Member>,
    asked: Instant,
}

impl Tree {
    /// Forget `asker` and every node under it (they received from it, so whatever they had
    /// from it is gone with it): a node asking again gets a fresh place, never one below
    /// itself, so no node ever receives, however indirectly, from itself.
    fn forget(&mut self, asker: &Peer) {
        let mut gone: HashSet<Peer> = HashSet::from([asker.clone()]);
        // Each pass adds at least one member or stops: bounded by the tree's size.
        loop {
            let more: Vec<Peer> = self
                .members
                .iter()
                .filter(|m| !gone.contains(&m.peer) && m.parent.as_ref().is_some_and(|p| gone.contains(p)))
                .map(|m| m.peer.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            gone.extend(more);
        }
        let parent = self.members.iter().find(|m| m.peer == *asker).and_then(|m| m.parent.clone());
        self.members.retain(|m| !gone.contains(&m.peer));
        if let Some(m) = parent.and_then(|p| self.members.iter_mut().find(|m| m.peer == p)) {
            m.children = m.children.saturating_sub(1);
        }
    }
}

pub struct Referrals {
    limit: usize,
    trees: Mutex<HashMap<Digest, Tree>>,
}

impl Referrals {
    pub fn new(limit: usize) -> Referrals {
        Referrals { limit: limit.max(1), trees: Mutex::default() }
    }

    /// Run `f` on `digest`'s tree (created empty), after dropping trees nobody asked about
    /// for a while.
    fn with_tree<T>(&self, digest: &Digest, f: impl FnOnce(&mut Tree) -> T) -> T {
        let mut trees = self.trees.lock().expect("referrals lock");
        let now = Instant::now();
        trees.retain(|_, t| now.duration_since(t.asked) < KEEP_FOR);
        if trees.len() >= MAX_DIGESTS && !trees.contains_key(digest) {
            if let Some(oldest) = trees.iter().min_by_key(|(_, t)| t.asked).map(|(d, _)| d.clone()) {
                trees.remove(&oldest);
            }
        }
        let tree = trees.entry(digest.clone()).or_insert_with(|| Tree { members: Vec::new(), asked: now });
        tree.asked = now;
        f(tree)
    }

    /// This node serves `asker` itself: record it as receiving from this node.
    pub fn served(&self, digest: &Digest, asker: &Peer) {
        self.with_tree(digest, |t| {
            t.forget(asker);
            t.members.push(Member { peer: asker.clone(), parent: None, children: 0, target: true });
        })
    }

    /// The node to refer `asker` to, recorded as its parent: the first receiving node with
    /// fewer than `limit` children. `None` when there is none (this node then serves).
    pub fn refer(&self, digest: &Digest, asker: &Peer) -> Option<Peer> {
        let limit = self.limit;
        self.with_tree(digest, |t| {
            t.forget(asker);
            let to = t.members.iter_mut().find(|m| m.target && m.children < limit)?;
            to.children += 1;
            let to = to.peer.clone();
            t.members.push(Member { peer: asker.clone(), parent: Some(to.clone()), children: 0, target: true });
            Some(to)
        })
    }

    /// `asker` was referred but its referral failed or was refused, so it asks directly: the
    /// node it was referred to is no longer a target, and `asker` receives from this node.
    pub fn referral_failed(&self, digest: &Digest, asker: &Peer) {
        self.with_tree(digest, |t| {
            let parent = t.members.iter().find(|m| m.peer == *asker).and_then(|m| m.parent.clone());
            if let Some(m) = parent.and_then(|p| t.members.iter_mut().find(|m| m.peer == p)) {
                m.target = false;
            }
        });
        self.served(digest, asker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: usize) -> Peer {
        Peer::new(&format!("http://10.0.0.{i}:5000"))
    }

    #[test]
    fn a_limit_of_one_makes_a_chain_in_arrival_order() {
        let (r, d) = (Referrals::new(1), Digest::of_bytes(b"x"));
        r.served(&d, &p(1));
        assert_eq!(r.refer(&d, &p(2)), Some(p(1)));
        assert_eq!(r.refer(&d, &p(3)), Some(p(2)));
        assert_eq!(r.refer(&d, &p(4)), Some(p(3)));
    }

    #[test]
    fn a_limit_of_two_makes_a_breadth_first_tree() {
        let (r, d) = (Referrals::new(2), Digest::of_bytes(b"x"));
        r.served(&d, &p(1));
        r.served(&d, &p(2));
        let parents: Vec<Peer> = (3..=8).map(|i| r.refer(&d, &p(i)).unwrap()).collect();
        assert_eq!(parents, [p(1), p(1), p(2), p(2), p(3), p(3)]);
    }

    #[test]
    fn asking_again_never_lands_below_itself() {
        let (r, d) = (Referrals::new(1), Digest::of_bytes(b"x"));
        r.served(&d, &p(1));
        r.refer(&d, &p(2));
        r.refer(&d, &p(3));
        // 2 asks again (its fill broke): it and 3 (which received from it) are forgotten,
        // so 2 is not referred to 3, and 1 has a spare stream again.
        assert_eq!(r.refer(&d, &p(2)), Some(p(1)));
        assert_eq!(r.refer(&d, &p(3)), Some(p(2)));
    }

    #[test]
    fn a_failed_referral_stops_referring_to_that_node() {
        let (r, d) = (Referrals::new(1), Digest::of_bytes(b"x"));
        r.served(&d, &p(1));
        assert_eq!(r.refer(&d, &p(2)), Some(p(1)));
        r.referral_failed(&d, &p(2));
        // 1 is no target now; 2 receives from the owner and takes the next asker.
        assert_eq!(r.refer(&d, &p(3)), Some(p(2)));
    }

    #[test]
    fn digests_have_separate_trees() {
        let r = Referrals::new(1);
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        r.served(&a, &p(1));
        assert_eq!(r.refer(&b, &p(2)), None, "nobody receives b yet");
    }
}
