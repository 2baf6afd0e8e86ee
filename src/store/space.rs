//! Disk space: what the cache's filesystem has free, and reservations for fills in
//! progress, so concurrent fills do not together overrun the space each one checked.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct FsSpace {
    pub size: u64,
    pub available: u64,
}

/// Size and space available to unprivileged writers on the filesystem holding `path`.
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(FsSpace { size: s.f_blocks * s.f_frsize, available: s.f_bavail * s.f_frsize })
}

/// Bytes promised to fills that are still being written.
#[derive(Default, Clone)]
pub struct Reservations(Arc<AtomicU64>);

/// Held by a fill; returns its bytes when dropped.
pub struct Reservation {
    pool: Reservations,
    bytes: u64,
}

impl Reservations {
    pub fn reserved(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn take(&self, bytes: u64) -> Reservation {
        self.0.fetch_add(bytes, Ordering::SeqCst);
        Reservation { pool: self.clone(), bytes }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.0.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}
