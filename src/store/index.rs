//! The in-memory index of committed blobs: size and last use of each, for the size budget
//! and least-recently-used eviction.
//!
//! A hit updates a timestamp in memory only; `flush_touched` writes accumulated last-use
//! times to the files' mtimes in one batch, so the order survives a restart without a disk
//! write per hit. The index is rebuilt from the disk at start: the layout is the truth.
//!
//! Why not moka: its size-weighted eviction evicts exactly at capacity, on insert, with no
//! high/low watermarks and no way to skip pinned or referenced entries or to order
//! unreferenced blobs first; the eviction itself must delete files, which wants a
//! deliberate background pass rather than a listener on the insert path.

use crate::oci::{Algorithm, Digest};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    /// Unix milliseconds: fine enough to order fills that follow each other closely.
    last_use: u64,
    touched: bool,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, Entry>,
    total: u64,
}

#[derive(Default)]
pub struct BlobIndex {
    inner: Mutex<Inner>,
}

/// One indexed blob, as seen by the evictor and `ls`.
#[derive(Debug, Clone)]
pub struct IndexedBlob {
    pub digest: Digest,
    pub size: u64,
    /// Unix milliseconds.
    pub last_use: u64,
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl BlobIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("blob index lock")
    }

    pub fn insert(&self, d: &Digest, size: u64) {
        self.insert_at(d, size, now_millis());
    }

    fn insert_at(&self, d: &Digest, size: u64, last_use: u64) {
        let mut g = self.lock();
        if let Some(old) = g.entries.insert(d.clone(), Entry { size, last_use, touched: false }) {
            g.total -= old.size;
        }
        g.total += size;
    }

    /// Count a use of `d`; false if it is not indexed.
    pub fn touch(&self, d: &Digest) -> bool {
        match self.lock().entries.get_mut(d) {
            Some(e) => {
                e.last_use = now_millis();
                e.touched = true;
                true
            }
            None => false,
        }
    }

    pub fn remove(&self, d: &Digest) -> Option<u64> {
        let mut g = self.lock();
        let e = g.entries.remove(d)?;
        g.total -= e.size;
        Some(e.size)
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.lock().entries.contains_key(d)
    }

    pub fn total(&self) -> u64 {
        self.lock().total
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn snapshot(&self) -> Vec<IndexedBlob> {
        self.lock()
            .entries
            .iter()
            .map(|(d, e)| IndexedBlob { digest: d.clone(), size: e.size, last_use: e.last_use })
            .collect()
    }

    /// Persist last-use times of blobs hit since the last flush (as file mtimes). Blocking.
    pub fn flush_touched(&self, path_of: impl Fn(&Digest) -> std::path::PathBuf) -> usize {
        let touched: Vec<(Digest, u64)> = {
            let mut g = self.lock();
            g.entries
                .iter_mut()
                .filter(|(_, e)| e.touched)
                .map(|(d, e)| {
                    e.touched = false;
                    (d.clone(), e.last_use)
                })
                .collect()
        };
        let mut n = 0;
        for (d, t) in touched {
            let when = UNIX_EPOCH + std::time::Duration::from_millis(t);
            if std::fs::File::open(path_of(&d)).and_then(|f| f.set_modified(when)).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Build the index from `blobs/<algorithm>` (sha256, sha512), removing what cannot be a
    /// valid blob: stray names, files in the wrong shard, and empty files (a truncated write;
    /// the empty blob itself is kept). Blocking. Returns the index and how many files were
    /// removed.
    pub fn rebuild(blobs: &Path) -> io::Result<(BlobIndex, usize)> {
        let index = BlobIndex::default();
        let mut removed = 0;
        let mut entries = Vec::new();
        for algorithm in Algorithm::ALL {
            let dir = blobs.join(algorithm.as_str());
            if dir.is_dir() {
                removed += scan(&dir, algorithm, &mut entries)?;
            }
        }
        {
            let mut g = index.lock();
            g.entries.reserve(entries.len());
            for (d, size, t) in entries {
                g.total += size;
                g.entries.insert(d, Entry { size, last_use: t, touched: false });
            }
        }
        Ok((index, removed))
    }
}

/// Index the blobs of one algorithm's directory into `entries`; how many files were removed.
fn scan(blobs: &Path, algorithm: Algorithm, entries: &mut Vec<(Digest, u64, u64)>) -> io::Result<usize> {
    let mut removed = 0;
    let empty = Digest::of_bytes_with(algorithm, b"");
    for shard in std::fs::read_dir(blobs)? {
        let shard = shard?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        if !shard.file_type()?.is_dir() {
            std::fs::remove_file(shard.path())?;
            removed += 1;
            continue;
        }
        for f in std::fs::read_dir(shard.path())? {
            let f = f?;
            let name = f.file_name().to_string_lossy().into_owned();
            let meta = f.metadata()?;
            let digest =
                format!("{}:{name}", algorithm.as_str()).parse::<Digest>().ok().filter(|d| d.shard() == shard_name);
            match digest {
                Some(d) if meta.is_file() && (meta.len() > 0 || d == empty) => {
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64);
                    entries.push((d, meta.len(), mtime.unwrap_or(0)));
                }
                _ => {
                    tracing::warn!(path = %f.path().display(), "removing a file that is not a valid cached blob");
                    if meta.is_dir() {
                        std::fs::remove_dir_all(f.path())?;
                    } else {
                        std::fs::remove_file(f.path())?;
                    }
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn tracks_totals() {
        let i = BlobIndex::default();
        i.insert(&d('a'), 10);
        i.insert(&d('b'), 5);
        i.insert(&d('a'), 7);
        assert_eq!((i.total(), i.len()), (12, 2));
        assert_eq!(i.remove(&d('b')), Some(5));
        assert_eq!(i.remove(&d('b')), None);
        assert_eq!(i.total(), 7);
    }
}
