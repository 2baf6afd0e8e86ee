//! Single flight by key: one holder of a key at a time. `in_turn` queues the others behind
//! the holder (a burst of requests for one manifest: the first asks the upstream, the
//! others then find its answer in the cache); `try_claim` lets them skip instead (one
//! background refresh per tag). An entry lives only while someone holds or waits on it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

type Slots<K> = Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>;

/// The keys held or waited on.
pub(crate) struct Flight<K> {
    slots: Slots<K>,
}

impl<K> Default for Flight<K> {
    fn default() -> Self {
        Flight { slots: Arc::default() }
    }
}

/// One hold on a key (or a wait for it); the key's entry goes when the last one drops.
pub(crate) struct Turn<K: Eq + Hash> {
    slots: Slots<K>,
    key: K,
    slot: Arc<tokio::sync::Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Flight<K> {
    /// Run `work` once no other holder has `key`.
    pub(crate) async fn in_turn<T>(&self, key: K, work: impl Future<Output = T>) -> T {
        let mut turn = self.turn(key);
        // Dropped while waiting (a cancelled request), `turn` still removes an unused entry.
        turn.held = Some(turn.slot.clone().lock_owned().await);
        work.await
    }

    /// A hold on `key`, unless someone holds it already.
    pub(crate) fn try_claim(&self, key: K) -> Option<Turn<K>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.entry(key.clone()).or_default().clone();
        let held = slot.clone().try_lock_owned().ok()?;
        drop(slots);
        Some(Turn { slots: self.slots.clone(), key, slot, held: Some(held) })
    }

    fn turn(&self, key: K) -> Turn<K> {
        let slot = self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone();
        Turn { slots: self.slots.clone(), key, slot, held: None }
    }

    /// How many keys are held or waited on.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl<K: Eq + Hash> Drop for Turn<K> {
    fn drop(&mut self) {
        self.held = None;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else holds or waits on the key.
        if Arc::strong_count(&self.slot) == 2 {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_key_cannot_be_claimed_again_until_released() {
        let flight = Flight::default();
        let first = flight.try_claim("tag").expect("the first claim");
        assert!(flight.try_claim("tag").is_none());
        assert!(flight.try_claim("other").is_some());
        drop(first);
        assert_eq!(flight.len(), 0, "released keys leave no entry");
        assert!(flight.try_claim("tag").is_some());
    }

    #[tokio::test]
    async fn turns_run_one_at_a_time_in_order() {
        let flight = Arc::new(Flight::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let claim = flight.try_claim("m").expect("free");
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (flight, tx) = (flight.clone(), tx.clone());
            waiters.push(tokio::spawn(async move { flight.in_turn("m", async { tx.send(i).unwrap() }).await }));
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "no turn while the key is held");
        drop(claim);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!([rx.recv().await, rx.recv().await, rx.recv().await], [Some(0), Some(1), Some(2)]);
        assert_eq!(flight.len(), 0);
    }
}
