//! Content-addressed storage: blob files named by their sha256, committed only when verified.

use super::{unique_suffix, write_atomic};
use crate::oci::{Digest, Sha256Hasher};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub struct Cas {
    blobs: PathBuf,
    types: PathBuf,
    tmp: PathBuf,
}

impl Cas {
    pub(super) fn open(root: &Path) -> io::Result<Cas> {
        let cas = Cas {
            blobs: root.join("blobs").join("sha256"),
            types: root.join("manifest-types").join("sha256"),
            tmp: root.join("tmp"),
        };
        for d in [&cas.blobs, &cas.types, &cas.tmp] {
            std::fs::create_dir_all(d)?;
        }
        Ok(cas)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.shard()).join(d.hex())
    }

    fn type_path(&self, d: &Digest) -> PathBuf {
        self.types.join(d.shard()).join(d.hex())
    }

    /// Remove every temp file: fills that a crash or kill interrupted.
    pub(super) fn clean_temp(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.tmp)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Open a committed blob for reading, with its length. Blocking.
    pub fn open_blob(&self, d: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.blob_path(d)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Start writing a blob. Blocking.
    pub fn begin(&self, d: &Digest) -> io::Result<TempBlob> {
        let path = self.tmp.join(format!("{}.{}.tmp", d.hex(), unique_suffix()));
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        Ok(TempBlob {
            path,
            file: Some(file),
            hasher: Sha256Hasher::new(),
            written: 0,
            expected: d.clone(),
        })
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
        if Digest::of_bytes(&bytes) != *d {
            tracing::warn!(digest = %d, "cached manifest does not match its digest; removing it");
            let _ = std::fs::remove_file(self.blob_path(d));
            return Ok(None);
        }
        let media_type = std::fs::read_to_string(self.type_path(d))
            .ok()
            .filter(|s| !s.is_empty());
        Ok(Some((bytes, media_type)))
    }

    /// Store a manifest whose digest the caller has verified. The media type is written
    /// first so that a committed manifest always has one. Blocking.
    pub fn put_manifest(&self, d: &Digest, media_type: &str, bytes: &[u8]) -> io::Result<()> {
        debug_assert_eq!(Digest::of_bytes(bytes), *d);
        write_atomic(&self.tmp, &self.type_path(d), media_type.as_bytes())?;
        write_atomic(&self.tmp, &self.blob_path(d), bytes)
    }
}

/// A blob being written: bytes are hashed as they are appended; `commit` renames it into
/// place only if the hash and size match. Dropping it without committing deletes it.
pub struct TempBlob {
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256Hasher,
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

    /// Append and hash. Blocking.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("temp blob already closed"))?;
        f.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Verify, fsync and rename into `dest`. On any failure the temp file is removed.
    /// Blocking.
    pub fn commit(mut self, cas: &Cas, expected_size: Option<u64>) -> Result<(), CommitError> {
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(CommitError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        if let Some(size) = expected_size.filter(|s| *s != self.written) {
            return Err(CommitError::SizeMismatch {
                expected: size,
                actual: self.written,
            });
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
