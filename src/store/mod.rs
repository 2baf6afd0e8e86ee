//! The on-disk cache: content-addressed blobs and manifests, and tag records.
//!
//! Layout under the cache directory:
//! ```text
//! blobs/sha256/ab/<hex>          verified content (layers, configs, manifests), by digest
//! manifest-types/sha256/ab/<hex> a manifest's media type (the wire type is not in the bytes)
//! tags/<upstream>/<repo>/_tags/<tag>     JSON tag record: digest, media type, checked-at
//! tags/<upstream>/<repo>/_images/<hex>   JSON image record: cached-at, pulled-at
//! tmp/                           fills in progress; emptied at start
//! ```
//! Only `rename` puts a file under `blobs/`, and only after its bytes were hashed and
//! fsynced, so a crash at any point leaves no partial blob visible. `_tags` cannot collide
//! with a repository component, which must start with a letter or digit.

mod cas;
mod evict;
mod index;
mod reach;
mod records;
mod space;

pub use cas::{Cas, CommitError, TempBlob};
pub use evict::{Budget, EvictionReport, NoSpace};
pub use index::IndexedBlob;
pub use records::{ImageRecord, Records, TagRecord};
pub use space::{fs_space, Reservation};

use std::io;
use std::path::{Path, PathBuf};

/// The whole store: blobs and tags under one directory.
pub struct Store {
    root: PathBuf,
    pub cas: Cas,
    pub records: Records,
    budget: Budget,
    reservations: space::Reservations,
}

impl Store {
    /// Open (creating if needed) a store and clean up what an interrupted run left behind.
    pub fn open(root: &Path, budget: Budget) -> io::Result<Store> {
        std::fs::create_dir_all(root)?;
        let cas = Cas::open(root)?;
        let removed = cas.clean_temp()?;
        if removed > 0 {
            tracing::info!(removed, "removed temp files of fills interrupted by the last shutdown");
        }
        Ok(Store {
            root: root.to_path_buf(),
            records: Records::new(root.join("tags"), root.join("tmp")),
            cas,
            budget,
            reservations: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write a file under the cache directory atomically (temp file, fsync, rename).
    /// Blocking.
    pub fn write_file(&self, relative: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.root.join("tmp"), &self.root.join(relative), bytes)
    }

    /// Remove every temp file of fills in progress (at shutdown). Blocking.
    pub fn clean_temp(&self) -> io::Result<usize> {
        self.cas.clean_temp()
    }

    /// Whether the cache directory takes writes: create, fsync and remove a probe file.
    /// Blocking.
    pub fn probe_writable(&self) -> io::Result<()> {
        let p = self.root.join("tmp").join(format!("probe-{}.tmp", unique_suffix()));
        let f = std::fs::File::create(&p)?;
        f.sync_all()?;
        std::fs::remove_file(&p)
    }

    pub fn budget(&self) -> &Budget {
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
