//! The on-disk cache: content-addressed blobs and manifests, and tag records.
//!
//! Layout under the cache directory:
//! ```text
//! blobs/sha256/ab/<hex>          verified content (layers, configs, manifests), by digest
//! blobs/sha512/ab/<hex>          the same for content addressed by sha512 digests
//! manifest-types/sha256/ab/<hex> a manifest's media type (the wire type is not in the bytes)
//! tags/<upstream>/<repo>/_tags/<tag>     JSON tag record: digest, media type, checked-at
//! tags/<upstream>/<repo>/_images/<hex>   JSON image record: cached-at, pulled-at
//! tags/<upstream>/<repo>/_blobs/<hex>    empty: the upstream confirmed this blob here
//! quarantine/sha256/<hex>        a cached file that failed verification (see `quarantine`)
//! tmp/<session>/                 one process's temp files (fills in progress, atomic writes)
//! locks/sessions/<session>       flock held by that process while it lives
//! locks/daemons, locks/writers   flocks that let the daemon and the CLI share the directory
//! ```
//! Only `rename` puts a file under `blobs/`, and only after its bytes were hashed and
//! fsynced, so a crash at any point leaves no partial blob visible. `_tags` cannot collide
//! with a repository component, which must start with a letter or digit.
//!
//! Callers see the blobs through `Store`'s methods (`blobs.rs`: blocking, and `face.rs`:
//! the same operations for async callers, run on the blocking pool); the content-addressed
//! files and their index are private, so nothing outside this module can add or remove a
//! blob without the index knowing.
//!
//! Sharing one directory between a daemon and the command line (invariant 7: neither
//! destroys what the other writes):
//! - temp files are per process (`session`): nobody removes another live process's fills;
//!   the daemon alone removes those of dead processes (at start and every housekeeping
//!   tick), each process its own when it closes the store;
//! - a pass that deletes by policy (a lifecycle pass: `prune`, or the daemon's own) runs only
//!   while no other process adds content (`lock`): `prune` refuses while a daemon, `prefetch`
//!   or `import` runs, and the daemon's pass skips a turn while a `prefetch` or `import` runs;
//! - what another process commits is picked up as it is met: a blob file not in the index
//!   joins it when it is first read, and records are read again when their directory changes
//!   (`vouch`).

mod blobs;
mod cas;
mod evict;
mod face;
mod index;
mod lock;
mod quarantine;
mod reach;
mod record_ops;
mod records;
mod session;
mod space;
mod vouch;

pub use blobs::Stats;
pub use cas::{CommitError, TempBlob};
pub use evict::{EvictionReport, MinFree, NoSpace, SpaceBudget};
pub use index::IndexedBlob;
pub use lock::{Claim, LockError, PassLock, Role};
pub use quarantine::{FileId, Quarantined};
pub use records::{ImageRecord, Records, TagRecord};
pub use session::Cleaned;
pub use space::{fs_space, Reservation};

use std::io;
use std::path::{Path, PathBuf};

/// The whole store: blobs and tags under one directory.
pub struct Store {
    root: PathBuf,
    /// Private: every change to a blob goes through `blobs.rs`, which keeps the index in
    /// step.
    cas: cas::Cas,
    records: Records,
    budget: SpaceBudget,
    reservations: space::Reservations,
    /// This process's temp directory.
    session: session::Session,
    /// The cache locks this process holds (see `lock`), once it said what it does.
    claim: std::sync::Mutex<Option<Claim>>,
    /// What each upstream vouched for per repository (see `vouch`).
    vouches: vouch::Vouches,
}

impl Store {
    /// Open (creating if needed) a store, with a temp directory of this process's own.
    /// Nothing another process wrote is removed here: the daemon cleans up after dead
    /// processes when it claims `Role::Daemon`.
    pub fn open(root: &Path, budget: SpaceBudget) -> io::Result<Store> {
        std::fs::create_dir_all(root)?;
        let session = session::Session::create(root)?;
        let cas = cas::Cas::open(root, session.dir())?;
        Ok(Store {
            root: root.to_path_buf(),
            records: Records::new(root.join("tags"), session.dir().to_path_buf()),
            cas,
            budget,
            reservations: Default::default(),
            session,
            claim: Default::default(),
            vouches: Default::default(),
        })
    }

    /// Say what this process does with the cache, and take the locks that go with it (see
    /// `lock`); held until the store is dropped. The daemon then removes the temp files of
    /// processes that died. Blocking: a daemon waits out a `prune`, a writer a lifecycle
    /// pass; a pruner fails at once when others are at work.
    pub fn claim(&self, role: Role) -> Result<(), LockError> {
        let claim = lock::claim(&self.root, role)?;
        *self.claim.lock().expect("claim lock") = Some(claim);
        if role == Role::Daemon {
            match self.clean_dead_temp() {
                Ok(c) if c != Cleaned::default() => tracing::info!(
                    sessions = c.sessions,
                    loose = c.loose,
                    "removed temp files of processes that stopped before finishing their fills"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not clean temp files of stopped processes"),
            }
        }
        Ok(())
    }

    /// For one lifecycle pass of the daemon: the writers' lock, or `None` while a `prefetch`
    /// or `import` runs. A pruner already holds it. Blocking (never waits).
    pub fn lifecycle_pass(&self) -> Result<Option<PassLock>, LockError> {
        lock::try_pass(&self.root)
    }

    /// Remove the temp files of processes that are gone (their session lock is free).
    /// The daemon's job. Blocking.
    pub fn clean_dead_temp(&self) -> io::Result<Cleaned> {
        session::clean_dead(&self.root, &self.session)
    }

    /// This process's temp directory (fills, atomic writes, import staging).
    pub fn temp_dir(&self) -> &Path {
        self.session.dir()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write a file under the cache directory atomically (temp file, fsync, rename).
    /// Blocking.
    pub fn write_file(&self, relative: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(self.session.dir(), &self.root.join(relative), bytes)
    }

    /// A file under the cache directory, `None` if there is none. Blocking.
    pub fn read_file(&self, relative: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(relative)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Remove this process's temp files: its fills cut short by a shutdown. Never another
    /// process's. Blocking.
    pub fn clean_temp(&self) -> io::Result<usize> {
        self.session.clear()
    }

    /// Whether the cache directory takes writes: create, fsync and remove a probe file.
    /// Blocking.
    pub fn probe_writable(&self) -> io::Result<()> {
        // Recreated if someone removed it: the probe asks whether fills can work.
        std::fs::create_dir_all(self.session.dir())?;
        let p = self.session.dir().join(format!("probe-{}.tmp", unique_suffix()));
        let f = std::fs::File::create(&p)?;
        f.sync_all()?;
        std::fs::remove_file(&p)
    }

    pub fn budget(&self) -> &SpaceBudget {
        &self.budget
    }
}

/// Run blocking filesystem work off the async worker threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Write `bytes` to `path` atomically: a temp file in `tmp_dir`, fsync, rename.
fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // The session directory, recreated if it was removed from under us.
    std::fs::create_dir_all(tmp_dir)?;
    let tmp = tmp_dir.join(format!("w-{}.tmp", unique_suffix()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A process-unique suffix for temp file names.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
