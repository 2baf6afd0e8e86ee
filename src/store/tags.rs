//! Tag records: which digest a tag pointed to when it was last checked upstream.

use super::write_atomic;
use crate::oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// When upstream last confirmed this tag → digest.
    pub checked_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    digest: String,
    media_type: String,
    checked_at: u64,
}

pub struct TagIndex {
    root: PathBuf,
    tmp: PathBuf,
}

impl TagIndex {
    pub(super) fn new(root: PathBuf, tmp: PathBuf) -> TagIndex {
        TagIndex { root, tmp }
    }

    fn path(&self, upstream: &str, name: &RepoName, tag: &Tag) -> PathBuf {
        // `upstream` is a validated config host; `name` and `tag` are validated types whose
        // grammars exclude `..`, `/`-escapes and leading dots.
        let mut p = self.root.join(upstream);
        for c in name.components() {
            p.push(c);
        }
        p.push("_tags");
        p.push(tag.as_str());
        p
    }

    /// Blocking.
    pub fn get(&self, upstream: &str, name: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        let bytes = match std::fs::read(self.path(upstream, name, tag)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // A damaged record is treated as absent: the tag is simply fetched again.
        let Ok(d) = serde_json::from_slice::<OnDisk>(&bytes) else {
            return Ok(None);
        };
        let Ok(digest) = d.digest.parse() else {
            return Ok(None);
        };
        Ok(Some(TagRecord {
            digest,
            media_type: d.media_type,
            checked_at: UNIX_EPOCH + Duration::from_secs(d.checked_at),
        }))
    }

    /// Blocking.
    pub fn put(&self, upstream: &str, name: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<()> {
        let d = OnDisk {
            digest: rec.digest.to_string(),
            media_type: rec.media_type.clone(),
            checked_at: rec.checked_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        };
        write_atomic(
            &self.tmp,
            &self.path(upstream, name, tag),
            &serde_json::to_vec(&d).map_err(io::Error::other)?,
        )
    }
}
