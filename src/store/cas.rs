//! Content-addressed storage: blob files named by their digest (`blobs/<algorithm>/ab/<hex>`,
//! sha256 or sha512), committed only when verified.

use super::index::BlobIndex;
use super::{unique_suffix, write_atomic};
use crate::oci::Digest;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub struct Cas {
    /// `blobs/`, holding one directory per digest algorithm.
    blobs: PathBuf,
    /// `manifest-types/`, likewise.
    types: PathBuf,
    tmp: PathBuf,
    /// Every committed blob's size and last use; kept in step with `blobs/` by every
    /// method here that adds or removes a file.
    pub(super) index: BlobIndex,
}

impl Cas {
    /// Open the blobs under `root`; temp files go to `tmp` (this process's session).
    pub(super) fn open(root: &Path, tmp: &Path) -> io::Result<Cas> {
        let blobs = root.join("blobs");
        let types = root.join("manifest-types");
        let tmp = tmp.to_path_buf();
        for d in [&blobs.join("sha256"), &types.join("sha256"), &tmp] {
            std::fs::create_dir_all(d)?;
        }
        let started = std::time::Instant::now();
        let (index, removed) = BlobIndex::rebuild(&blobs)?;
        tracing::info!(
            blobs = index.len(),
            bytes = index.total(),
            removed_invalid = removed,
            ms = started.elapsed().as_millis() as u64,
            "cache index rebuilt from disk"
        );
        Ok(Cas { blobs, types, tmp, index })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.algorithm().as_str()).join(d.shard()).join(d.hex())
    }

    fn type_path(&self, d: &Digest) -> PathBuf {
        self.types.join(d.algorithm().as_str()).join(d.shard()).join(d.hex())
    }

    /// Open a committed blob for reading, with its length, and count it as used. Blocking.
    pub fn open_blob(&self, d: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.blob_path(d)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                // Committed by another process (prefetch, import) since the index was built:
                // count it from now on.
                if !self.index.touch(d) {
                    self.index.insert(d, len);
                }
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Removed behind our back (another process pruned it): forget it.
                self.index.remove(d);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Delete a blob (and its media type, if a manifest); returns the bytes freed. A reader
    /// that already opened it keeps reading what it opened. Blocking.
    pub fn remove_blob(&self, d: &Digest) -> io::Result<u64> {
        let size = match std::fs::metadata(self.blob_path(d)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        match std::fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let _ = std::fs::remove_file(self.type_path(d));
        self.index.remove(d);
        Ok(size)
    }

    /// Whether a stored blob is a manifest (it has a recorded media type).
    pub fn is_manifest(&self, d: &Digest) -> bool {
        self.type_path(d).is_file()
    }

    /// Persist last-use times gathered since the last call. Blocking.
    pub fn flush_last_use(&self) -> usize {
        self.index.flush_touched(|d| self.blob_path(d))
    }

    /// Start writing a blob. Blocking.
    pub fn begin(&self, d: &Digest) -> io::Result<TempBlob> {
        // This process's session directory; recreated if someone removed it.
        std::fs::create_dir_all(&self.tmp)?;
        let path = self.tmp.join(format!("{}.{}.tmp", d.hex(), unique_suffix()));
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        Ok(TempBlob { path, file: Some(file), written: 0, expected: d.clone() })
    }

    /// A manifest (small, buffered) and its media type, checked against its digest as it is
    /// read: a file damaged on disk is dropped rather than served. Blocking.
    pub fn read_manifest(&self, d: &Digest, limit: usize) -> io::Result<Option<(Vec<u8>, Option<String>)>> {
        let Some((f, len)) = self.open_blob(d)? else {
            return Ok(None);
        };
        if len > limit as u64 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.take(limit as u64).read_to_end(&mut bytes)?;
        if !d.verifies(&bytes) {
            tracing::warn!(digest = %d, "cached manifest does not match its digest; removing it");
            self.remove_blob(d)?;
            return Ok(None);
        }
        let media_type = std::fs::read_to_string(self.type_path(d)).ok().filter(|s| !s.is_empty());
        Ok(Some((bytes, media_type)))
    }

    /// Store a manifest whose digest the caller has verified. The media type is written
    /// first so that a committed manifest always has one. Blocking.
    pub fn put_manifest(&self, d: &Digest, media_type: &str, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(d.verifies(bytes));
        write_atomic(&self.tmp, &self.type_path(d), media_type.as_bytes())?;
        write_atomic(&self.tmp, &self.blob_path(d), bytes)?;
        self.index.insert(d, bytes.len() as u64);
        Ok(())
    }
}

/// A blob being written; `commit` renames it into place only if its hash and size match.
/// Dropping it without committing deletes it.
pub struct TempBlob {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    expected: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl TempBlob {
    /// A second handle on the file, for readers that follow the fill.
    pub fn reader(&self) -> io::Result<File> {
        File::open(&self.path)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Allocate the disk space for `len` bytes now, before they arrive: the file system
    /// then allocates one run of blocks instead of reserving and mapping them page by page
    /// as each write lands (ext4's delayed allocation was ≈ 10 % of a cold fill's CPU,
    /// benches/RESULTS.md). The file's size is unchanged: it grows with the writes, as
    /// followers expect. A file system that cannot preallocate is not an error; a disk
    /// that cannot hold `len` bytes is (`StorageFull`). Blocking.
    pub fn preallocate(&self, len: u64) -> io::Result<()> {
        let f = self.file.as_ref().ok_or_else(|| io::Error::other("temp blob already closed"))?;
        match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Append. Blocking.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("temp blob already closed"))?;
        f.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Verify that the bytes written hash to the expected digest (`actual` is their hash,
    /// computed by the caller alongside the writes) and have the expected size, then fsync
    /// and rename into place. On any failure the temp file is removed. Blocking.
    pub(super) fn commit(mut self, cas: &Cas, actual: Digest, expected_size: Option<u64>) -> Result<(), CommitError> {
        if actual != self.expected {
            return Err(CommitError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        if let Some(size) = expected_size.filter(|s| *s != self.written) {
            return Err(CommitError::SizeMismatch { expected: size, actual: self.written });
        }
        let file = self.file.take().expect("file present until commit");
        file.sync_all()?;
        drop(file);
        let dest = cas.blob_path(&self.expected);
        let dir = dest.parent().expect("blob path has a parent");
        std::fs::create_dir_all(dir)?;
        std::fs::rename(&self.path, &dest)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()?;
        self.path = PathBuf::new();
        cas.index.insert(&self.expected, self.written);
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::oci::Digest;
    use crate::store::{SpaceBudget, Store};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn preallocation_takes_the_blocks_keeps_the_size_and_the_blob_commits_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SpaceBudget::unlimited()).unwrap();
        let bytes = vec![7u8; 1 << 20];
        let d = Digest::of_bytes(&bytes);
        let mut temp = store.begin(&d).unwrap();
        temp.preallocate(bytes.len() as u64).unwrap();
        let meta = std::fs::metadata(&temp.path).unwrap();
        assert_eq!(meta.len(), 0, "a follower must see only what was written");
        // Where the file system can preallocate (ext4, xfs, tmpfs, btrfs), the blocks are
        // taken before a byte is written.
        if meta.blocks() > 0 {
            assert!(meta.blocks() * 512 >= bytes.len() as u64, "{} blocks", meta.blocks());
        }
        temp.append(&bytes[..1000]).unwrap();
        assert_eq!(std::fs::metadata(&temp.path).unwrap().len(), 1000);
        temp.append(&bytes[1000..]).unwrap();
        store.commit(temp, d.clone(), Some(bytes.len() as u64)).unwrap();
        let (mut file, len) = store.open_blob(&d).unwrap().unwrap();
        assert_eq!(len, bytes.len() as u64);
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut read).unwrap();
        assert!(read == bytes, "the committed blob differs from what was written");
    }
}
