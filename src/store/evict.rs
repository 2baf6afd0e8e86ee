//! Keeping the cache within its budget: the size cap (between high and low watermarks)
//! and the free space the filesystem must keep. Least recently used goes first, blobs no
//! kept image references before referenced ones; protected (pinned) blobs never.

use super::space::{fs_space, Reservation};
use super::Store;
use crate::oci::Digest;
use std::collections::HashSet;
use std::io;

/// Free space the store leaves on its filesystem: bytes, or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    Percent(f64),
}

impl MinFree {
    /// The amount in bytes on a filesystem of `fs_size` bytes.
    pub fn bytes_of(self, fs_size: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (fs_size as f64 * p / 100.0) as u64,
        }
    }
}

/// The limits the store keeps itself to.
#[derive(Debug, Clone, Copy)]
pub struct SpaceBudget {
    pub max_size: Option<u64>,
    pub min_free: MinFree,
    pub high_watermark: f64,
    pub low_watermark: f64,
}

impl SpaceBudget {
    /// No size cap and no free-space floor.
    pub fn unlimited() -> SpaceBudget {
        SpaceBudget { max_size: None, min_free: MinFree::Bytes(0), high_watermark: 0.95, low_watermark: 0.85 }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvictionReport {
    pub removed: usize,
    pub bytes: u64,
}

/// Why a fill will not be cached.
#[derive(Debug, thiserror::Error)]
pub enum NoSpace {
    #[error("blob of {size} bytes is larger than the cache budget")]
    OverBudget { size: u64 },
    #[error("not enough free disk space for {size} bytes (available {available}, reserved by other fills {reserved}, min_free {min_free})")]
    Disk { size: u64, available: u64, reserved: u64, min_free: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Store {
    /// Bytes to free now to get back within the budget: down to the low watermark once over
    /// the high one, and back above `min_free` (plus a tenth, so passes do not thrash).
    /// Blocking (statvfs).
    pub fn eviction_need(&self) -> io::Result<u64> {
        let b = &self.budget;
        let total = self.cas.index.total();
        let mut need = 0;
        if let Some(max) = b.max_size {
            if total as f64 > max as f64 * b.high_watermark {
                need = total - (max as f64 * b.low_watermark) as u64;
            }
        }
        let fs = fs_space(self.root())?;
        let min_free = b.min_free.bytes_of(fs.size);
        if fs.available < min_free {
            need = need.max(min_free - fs.available + min_free / 10);
        }
        Ok(need)
    }

    /// Remove blobs until `need` bytes are freed: unreferenced before referenced, least
    /// recently used first, never a `protected` one. Blocking.
    pub fn evict(
        &self,
        need: u64,
        protected: &HashSet<Digest>,
        referenced: &HashSet<Digest>,
    ) -> io::Result<EvictionReport> {
        let mut report = EvictionReport::default();
        if need == 0 {
            return Ok(report);
        }
        let mut candidates: Vec<_> =
            self.cas.index.snapshot().into_iter().filter(|b| !protected.contains(&b.digest)).collect();
        candidates.sort_by_key(|b| (referenced.contains(&b.digest), b.last_use));
        tracing::debug!(order = ?candidates.iter().map(|b| (&b.digest.hex()[..6], b.last_use)).collect::<Vec<_>>(), "eviction order");
        for b in candidates {
            if report.bytes >= need {
                break;
            }
            let freed = self.cas.remove_blob(&b.digest)?;
            report.bytes += freed;
            report.removed += 1;
            crate::events::emit(
                crate::events::Event::new(crate::events::EventKind::Evicted).digest(&b.digest).size(freed),
            );
        }
        if report.bytes < need {
            tracing::warn!(need, freed = report.bytes, "eviction could not free enough: the rest is pinned");
        }
        Ok(report)
    }

    /// Room for a fill of `size` bytes (unknown: 0), reserved until the returned value
    /// drops. Blocking (statvfs).
    pub fn reserve(&self, size: Option<u64>) -> Result<Reservation, NoSpace> {
        let size = size.unwrap_or(0);
        if let Some(max) = self.budget.max_size {
            if size as f64 > max as f64 * self.budget.low_watermark {
                return Err(NoSpace::OverBudget { size });
            }
        }
        let fs = fs_space(self.root())?;
        let min_free = self.budget.min_free.bytes_of(fs.size);
        let reserved = self.reservations.reserved();
        if fs.available.saturating_sub(reserved) < size.saturating_add(min_free) {
            return Err(NoSpace::Disk { size, available: fs.available, reserved, min_free });
        }
        Ok(self.reservations.take(size))
    }
}
