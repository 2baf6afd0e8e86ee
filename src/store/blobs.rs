//! The store's blobs and manifests, as callers see them: the content-addressed files and
//! their index stay private to `store/`, so every add and remove goes through a method here
//! that keeps the two in step. Every method here is blocking (file IO); async callers use
//! the async face in `face.rs`.

use super::cas::{CommitError, TempBlob};
use super::index::IndexedBlob;
use super::Store;
use crate::oci::Digest;
use std::fs::File;
use std::io;
use std::path::PathBuf;

/// What the cache holds, from the index (no IO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of committed blobs and manifests.
    pub bytes: u64,
    /// How many there are.
    pub blobs: usize,
}

impl Store {
    /// Totals from the index. No IO.
    pub fn stats(&self) -> Stats {
        Stats { bytes: self.cas.index.total(), blobs: self.cas.index.len() }
    }

    /// Every indexed blob with its size and last use. No IO.
    pub fn blobs(&self) -> Vec<IndexedBlob> {
        self.cas.index.snapshot()
    }

    /// Count a blob as used now (eviction order); false if it is not indexed. No IO.
    pub fn touch(&self, d: &Digest) -> bool {
        self.cas.index.touch(d)
    }

    /// Whether the index holds a blob (no IO: a blob another process committed since may be
    /// missing).
    pub fn is_indexed(&self, d: &Digest) -> bool {
        self.cas.index.contains(d)
    }

    /// Where a committed blob lives (whether or not it is there).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.cas.blob_path(d)
    }

    /// Whether a blob is committed. Blocking (a stat when not indexed).
    pub fn contains(&self, d: &Digest) -> bool {
        self.cas.contains(d)
    }

    /// Whether a committed blob is a manifest (it has a media type). Blocking.
    pub fn is_manifest(&self, d: &Digest) -> bool {
        self.cas.is_manifest(d)
    }

    /// Open a committed blob with its length, and count it as used. Blocking.
    pub fn open_blob(&self, d: &Digest) -> io::Result<Option<(File, u64)>> {
        self.cas.open_blob(d)
    }

    /// Remove a blob; the bytes freed. Blocking.
    pub fn remove_blob(&self, d: &Digest) -> io::Result<u64> {
        self.cas.remove_blob(d)
    }

    /// Start writing a blob into this process's temp directory. Blocking.
    pub fn begin(&self, d: &Digest) -> io::Result<TempBlob> {
        self.cas.begin(d)
    }

    /// Commit a written blob: checked against its digest (`actual`, hashed by the caller as
    /// it wrote) and size, fsynced and renamed into place. Blocking.
    pub fn commit(&self, blob: TempBlob, actual: Digest, expected_size: Option<u64>) -> Result<(), CommitError> {
        blob.commit(&self.cas, actual, expected_size)
    }

    /// A manifest and its media type, verified as it is read. Blocking.
    pub fn read_manifest(&self, d: &Digest, limit: usize) -> io::Result<Option<(Vec<u8>, Option<String>)>> {
        self.cas.read_manifest(d, limit)
    }

    /// Store a manifest whose digest the caller verified. Blocking.
    pub fn put_manifest(&self, d: &Digest, media_type: &str, bytes: &[u8]) -> io::Result<()> {
        self.cas.put_manifest(d, media_type, bytes)
    }

    /// Persist the last-use times gathered since the last call. Blocking.
    pub fn flush_last_use(&self) -> usize {
        self.cas.flush_last_use()
    }
}
