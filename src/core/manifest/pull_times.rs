//! Per-pull image records, batched: a pull of an image this process already recorded
//! costs a hash-map update, not a file read and write.
//!
//! The image record (`_images/<hex>`: cached-at, pulled-at) says two things. Its existence
//! says the repository's upstream served that manifest there: tenant isolation (`vouch`),
//! eviction order and `ls` depend on it, possibly in another process. So the first pull of an
//! image in this process goes to disk as before (`Records::note_pull`: create the record,
//! or refresh an old pull time), and the record exists before the pull is answered; that
//! happens once per image, not once per request.
//! Its pull time only feeds lifecycle policies (`sinceImagePulled`) and `ls`, to within an
//! hour (`note_pull`'s resolution): later pulls mark the image in memory, and `flush` hands
//! the marked ones to `note_pull` in one batch, like the blob index's last-use times. The
//! daemon flushes on every housekeeping tick, before a lifecycle pass, and at shutdown; the
//! CLI after a prefetch. A pull time on disk therefore lags by at most the resolution plus
//! one housekeeping interval.
//!
//! Memory stays bounded: at most `MAX_ENTRIES` images are remembered (beyond that a pull
//! goes to disk, as before), and images not pulled for `IDLE` are forgotten at a flush.

use crate::oci::{Digest, RepoName};
use crate::store::Store;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// An image not pulled for this long is forgotten (its next pull goes to disk again).
const IDLE: Duration = Duration::from_secs(30 * 60);

/// Images remembered at most (about 200 bytes each).
const MAX_ENTRIES: usize = 65_536;

type Key = (String, RepoName, Digest);

struct Pulled {
    media_type: String,
    /// The last pull.
    last: SystemTime,
    /// Pulled since the record on disk was last brought up to date.
    dirty: bool,
}

#[derive(Default)]
pub(super) struct Pulls {
    images: Mutex<HashMap<Key, Pulled>>,
}

impl Pulls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Pulled>> {
        self.images.lock().expect("pulls lock")
    }

    /// Note that `digest` was served from `name` at `upstream`: in memory when its record
    /// is known to exist, else on disk first (then remembered).
    pub(super) async fn note(
        &self,
        store: &Arc<Store>,
        upstream: &str,
        name: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> io::Result<()> {
        let key = (upstream.to_string(), name.clone(), digest.clone());
        if let Some(p) = self.lock().get_mut(&key) {
            p.last = SystemTime::now();
            p.dirty = true;
            return Ok(());
        }
        store.note_pull_async(&key.0, &key.1, &key.2, media_type).await?;
        let mut images = self.lock();
        if images.len() < MAX_ENTRIES {
            let p = Pulled { media_type: media_type.to_string(), last: SystemTime::now(), dirty: false };
            images.insert(key, p);
        }
        Ok(())
    }

    /// Bring the records of the images pulled since the last flush up to date, and forget
    /// images not pulled for `IDLE`. Returns how many records were checked. Blocking.
    pub(super) fn flush(&self, store: &Store) -> usize {
        let now = SystemTime::now();
        let due: Vec<(Key, String)> = {
            let mut images = self.lock();
            let due = images
                .iter_mut()
                .filter(|(_, p)| p.dirty)
                .map(|(k, p)| {
                    p.dirty = false;
                    (k.clone(), p.media_type.clone())
                })
                .collect();
            images.retain(|_, p| now.duration_since(p.last).unwrap_or_default() < IDLE);
            due
        };
        let mut checked = 0;
        for ((h, n, d), t) in due {
            match store.note_pull(&h, &n, &d, &t) {
                Ok(()) => checked += 1,
                Err(e) => {
                    tracing::warn!(upstream = %h, repo = %n, digest = %d, error = %e, "could not record a pull time");
                    // Try again at the next flush.
                    if let Some(p) = self.lock().get_mut(&(h, n, d)) {
                        p.dirty = true;
                    }
                }
            }
        }
        checked
    }

    /// Forget an image whose record was removed (a lifecycle pass expired it): its next
    /// pull records it again, on disk.
    pub(super) fn forget(&self, upstream: &str, name: &RepoName, digest: &Digest) {
        self.lock().remove(&(upstream.to_string(), name.clone(), digest.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ImageRecord, SpaceBudget};

    #[tokio::test]
    async fn first_pull_is_on_disk_at_once_later_ones_at_a_flush() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(root.path(), SpaceBudget::unlimited()).unwrap());
        let pulls = Pulls::default();
        let name: RepoName = "a/b".parse().unwrap();
        let d = Digest::of_bytes(b"{}");
        let pulled_at = |store: &Store| store.images("up.test", &name).unwrap()[0].1.pulled_at;
        pulls.note(&store, "up.test", &name, &d, "application/vnd.oci.image.manifest.v1+json").await.unwrap();
        let recorded = store.images("up.test", &name).unwrap();
        assert_eq!(recorded.len(), 1, "the first pull creates the record");

        // The record's pull time is old; a pull changes it in memory only, until a flush.
        let old = SystemTime::now() - Duration::from_secs(7200);
        store.put_image("up.test", &name, &d, &ImageRecord { pulled_at: old, ..recorded[0].1.clone() }).unwrap();
        pulls.note(&store, "up.test", &name, &d, "x").await.unwrap();
        let age = |store: &Store| SystemTime::now().duration_since(pulled_at(store)).unwrap();
        assert!(age(&store) > Duration::from_secs(7000), "a pull wrote its record at once");
        assert_eq!(pulls.flush(&store), 1);
        assert!(age(&store) < Duration::from_secs(60));
        assert_eq!(pulls.flush(&store), 0, "nothing pulled since");

        pulls.forget("up.test", &name, &d);
        assert!(pulls.lock().is_empty());
    }
}
