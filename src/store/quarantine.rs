//! Quarantine: where a cached file that no longer hashes to its digest goes, so that it is
//! never served again and the next request for the digest fills it afresh.
//!
//! `quarantine/<algorithm>/<hex>` holds the damaged bytes for an operator to look at (a
//! disk going bad, something writing into the cache); nothing reads that directory, and the
//! index forgets the digest at once. One file per digest: content that rots again replaces
//! its earlier copy, so the directory never holds more than the cache's own digests. It is
//! not counted against the cache's budget; remove it once you have looked.
//!
//! A manifest's media type (`manifest-types/`) stays where it is: it is the same for the
//! refetched manifest, and the readers that follow manifests (vouches, reachability) then
//! treat the digest as a manifest that is missing for now, which is what it is.
//!
//! The file moved is the file that was hashed: between a scrub's read and its verdict the
//! daemon may have quarantined the same file and filled a good copy under the same name
//! (or the CLI may have, beside the daemon). `quarantine` compares the name's file identity
//! (device, inode) with the hashed file's and leaves a replacement alone. What remains is a
//! window between that check and the `rename` (microseconds, against a fill that takes at
//! least a network round trip); losing it costs one more fill, never a corrupt file served.

use super::Store;
use crate::oci::Digest;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Which file on disk some bytes were read from: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of an open file. Blocking (an `fstat`).
    pub fn of(f: &File) -> io::Result<FileId> {
        f.metadata().map(|m| FileId::from(&m))
    }
}

impl From<&Metadata> for FileId {
    fn from(m: &Metadata) -> FileId {
        FileId { dev: m.dev(), ino: m.ino() }
    }
}

/// What `quarantine` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quarantined {
    /// The damaged file is now at this path, and the digest is no longer cached.
    Moved(PathBuf),
    /// The name now holds another file (a fresh fill): left alone.
    Replaced,
    /// Nothing was there any more (evicted, pruned, or quarantined by another process).
    Gone,
}

impl Store {
    /// The directory damaged files are moved to.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Where the damaged copy of `d` goes.
    pub fn quarantine_path(&self, d: &Digest) -> PathBuf {
        self.quarantine_dir().join(d.algorithm().as_str()).join(d.hex())
    }

    /// Every digest with a damaged copy in the quarantine (cached again or not). Blocking.
    pub fn quarantined(&self) -> io::Result<Vec<Digest>> {
        let mut found = Vec::new();
        for algorithm in crate::oci::Algorithm::ALL {
            let dir = self.quarantine_dir().join(algorithm.as_str());
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let name = e?.file_name();
                // Anything else an operator left there is not ours to interpret.
                if let Ok(d) = format!("{}:{}", algorithm.as_str(), name.to_string_lossy()).parse::<Digest>() {
                    found.push(d);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Move the cached file of `d` to the quarantine, if it is still the file `hashed` (the
    /// one found damaged), and forget the digest so it is filled again. Blocking.
    pub fn quarantine(&self, d: &Digest, hashed: FileId) -> io::Result<Quarantined> {
        let from = self.cas.blob_path(d);
        match std::fs::metadata(&from) {
            Ok(m) if FileId::from(&m) != hashed => return Ok(Quarantined::Replaced),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.cas.index.remove(d);
                return Ok(Quarantined::Gone);
            }
            Err(e) => return Err(e),
        }
        let to = self.quarantine_path(d);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.cas.index.remove(d);
                return Ok(Quarantined::Gone);
            }
            Err(e) => return Err(e),
        }
        self.cas.index.remove(d);
        Ok(Quarantined::Moved(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SpaceBudget;

    #[test]
    fn moves_only_the_file_that_was_hashed() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), SpaceBudget::unlimited()).unwrap();
        let d = Digest::of_bytes(b"good bytes");
        store.cas.put_manifest(&d, "application/vnd.oci.image.manifest.v1+json", b"good bytes").unwrap();
        let path = store.cas.blob_path(&d);
        let hashed = FileId::of(&File::open(&path).unwrap()).unwrap();

        // Replaced under the same name since it was hashed: left alone.
        let other = root.path().join("other");
        std::fs::write(&other, b"good bytes").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(store.quarantine(&d, hashed).unwrap(), Quarantined::Replaced);
        assert!(path.is_file() && store.cas.index.contains(&d));

        // The file that was hashed: moved out, forgotten, its media type kept.
        let hashed = FileId::of(&File::open(&path).unwrap()).unwrap();
        let moved = store.quarantine(&d, hashed).unwrap();
        assert_eq!(moved, Quarantined::Moved(store.quarantine_path(&d)));
        assert!(!path.exists() && !store.cas.index.contains(&d) && store.cas.is_manifest(&d));
        assert_eq!(std::fs::read(store.quarantine_path(&d)).unwrap(), b"good bytes");

        // Already gone.
        assert_eq!(store.quarantine(&d, hashed).unwrap(), Quarantined::Gone);
        std::fs::write(store.quarantine_dir().join("sha256").join("notes.txt"), b"operator's").unwrap();
        assert_eq!(store.quarantined().unwrap(), vec![d]);
    }
}
