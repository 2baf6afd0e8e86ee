//! Per-repository records: tags (which digest a tag pointed to when last checked upstream),
//! images (which manifests were served from a repository, when they entered the cache and
//! when they were last pulled) and confirmed blobs (blobs the upstream said it has in that
//! repository). Lifecycle policies, pins and `ls` read the first two; all three say what
//! the upstream vouched for in a repository (see `vouch`).

use super::write_atomic;
use crate::oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How stale a pull time may get before a pull rewrites it: bounds disk writes to one per
/// image per interval, however often it is pulled.
const PULL_TIME_RESOLUTION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// When upstream last confirmed this tag → digest.
    pub checked_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub media_type: String,
    /// When the manifest entered the cache for this repository: the cache's "push time".
    pub cached_at: SystemTime,
    /// Last pull, to within `PULL_TIME_RESOLUTION`.
    pub pulled_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct TagOnDisk {
    digest: String,
    media_type: String,
    checked_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct ImageOnDisk {
    media_type: String,
    cached_at_ms: u64,
    pulled_at_ms: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn from_ms(v: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(v)
}

const TAGS: &str = "_tags";
const IMAGES: &str = "_images";
const CONFIRMED: &str = "_blobs";

/// When each record directory of a repository last changed (`None`: absent), to tell
/// whether another writer added records since they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamps {
    pub tags: Option<SystemTime>,
    pub images: Option<SystemTime>,
    pub confirmed: Option<SystemTime>,
}

impl Stamps {
    /// The latest change.
    pub fn latest(&self) -> Option<SystemTime> {
        [self.tags, self.images, self.confirmed].into_iter().flatten().max()
    }
}

pub struct Records {
    root: PathBuf,
    tmp: PathBuf,
}

impl Records {
    pub(super) fn new(root: PathBuf, tmp: PathBuf) -> Records {
        Records { root, tmp }
    }

    fn repo_dir(&self, upstream: &str, name: &RepoName) -> PathBuf {
        // `upstream` is a validated config host; `name` a validated RepoName whose grammar
        // excludes `..` and leading dots; `_tags`/`_images` cannot be repository components.
        let mut p = self.root.join(upstream);
        for c in name.components() {
            p.push(c);
        }
        p
    }

    /// Blocking.
    pub fn get_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        let path = self.repo_dir(upstream, name).join(TAGS).join(tag.as_str());
        Ok(read_json::<TagOnDisk>(&path)?.and_then(|d| {
            Some(TagRecord {
                digest: d.digest.parse().ok()?,
                media_type: d.media_type,
                checked_at: from_ms(d.checked_at_ms),
            })
        }))
    }

    /// Blocking.
    pub fn put_tag(&self, upstream: &str, name: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<()> {
        let d = TagOnDisk {
            digest: rec.digest.to_string(),
            media_type: rec.media_type.clone(),
            checked_at_ms: ms(rec.checked_at),
        };
        let path = self.repo_dir(upstream, name).join(TAGS).join(tag.as_str());
        write_atomic(&self.tmp, &path, &serde_json::to_vec(&d).map_err(io::Error::other)?)
    }

    /// Blocking.
    pub fn remove_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> io::Result<()> {
        remove_if_present(&self.repo_dir(upstream, name).join(TAGS).join(tag.as_str()))
    }

    /// Every tag of a repository. Blocking.
    pub fn tags(&self, upstream: &str, name: &RepoName) -> io::Result<Vec<(Tag, TagRecord)>> {
        let mut out = Vec::new();
        for (file, _) in list_dir(&self.repo_dir(upstream, name).join(TAGS))? {
            let Ok(tag) = file.parse::<Tag>() else { continue };
            if let Some(rec) = self.get_tag(upstream, name, &tag)? {
                out.push((tag, rec));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Note that `digest` was served from this repository: create its image record, or
    /// refresh its pull time if that is older than the resolution. Blocking.
    pub fn note_pull(&self, upstream: &str, name: &RepoName, digest: &Digest, media_type: &str) -> io::Result<()> {
        let now = SystemTime::now();
        let path = self.repo_dir(upstream, name).join(IMAGES).join(digest.hex());
        let rec = match read_json::<ImageOnDisk>(&path)? {
            Some(d) if now.duration_since(from_ms(d.pulled_at_ms)).unwrap_or_default() < PULL_TIME_RESOLUTION => {
                return Ok(())
            }
            Some(d) => ImageOnDisk { pulled_at_ms: ms(now), ..d },
            None => ImageOnDisk { media_type: media_type.to_string(), cached_at_ms: ms(now), pulled_at_ms: ms(now) },
        };
        write_atomic(&self.tmp, &path, &serde_json::to_vec(&rec).map_err(io::Error::other)?)
    }

    /// Set an image record outright (import, tests of lifecycle rules). Blocking.
    pub fn put_image(&self, upstream: &str, name: &RepoName, digest: &Digest, rec: &ImageRecord) -> io::Result<()> {
        let d = ImageOnDisk {
            media_type: rec.media_type.clone(),
            cached_at_ms: ms(rec.cached_at),
            pulled_at_ms: ms(rec.pulled_at),
        };
        let path = self.repo_dir(upstream, name).join(IMAGES).join(digest.hex());
        write_atomic(&self.tmp, &path, &serde_json::to_vec(&d).map_err(io::Error::other)?)
    }

    /// Blocking.
    pub fn remove_image(&self, upstream: &str, name: &RepoName, digest: &Digest) -> io::Result<()> {
        remove_if_present(&self.repo_dir(upstream, name).join(IMAGES).join(digest.hex()))
    }

    /// Every image record of a repository. Blocking.
    pub fn images(&self, upstream: &str, name: &RepoName) -> io::Result<Vec<(Digest, ImageRecord)>> {
        let dir = self.repo_dir(upstream, name).join(IMAGES);
        let mut out = Vec::new();
        for (file, _) in list_dir(&dir)? {
            // Named by the digest's hex; its length says the algorithm (sha256 or sha512).
            let Some(digest) = Digest::from_hex(&file) else {
                continue;
            };
            if let Some(d) = read_json::<ImageOnDisk>(&dir.join(&file))? {
                out.push((
                    digest,
                    ImageRecord {
                        media_type: d.media_type,
                        cached_at: from_ms(d.cached_at_ms),
                        pulled_at: from_ms(d.pulled_at_ms),
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Record that the upstream confirmed (a successful `HEAD`) that it has blob `digest` in
    /// this repository. Blocking.
    pub fn put_confirmed(&self, upstream: &str, name: &RepoName, digest: &Digest) -> io::Result<()> {
        let dir = self.repo_dir(upstream, name).join(CONFIRMED);
        std::fs::create_dir_all(&dir)?;
        // Empty: the name is the record, and a torn write cannot damage it.
        std::fs::File::create(dir.join(digest.hex())).map(drop)
    }

    /// Every blob the upstream confirmed in this repository. Blocking.
    pub fn confirmed(&self, upstream: &str, name: &RepoName) -> io::Result<Vec<Digest>> {
        let dir = self.repo_dir(upstream, name).join(CONFIRMED);
        Ok(list_dir(&dir)?.into_iter().filter_map(|(f, _)| Digest::from_hex(&f)).collect())
    }

    /// When this repository's record directories last changed. Blocking.
    pub fn stamps(&self, upstream: &str, name: &RepoName) -> io::Result<Stamps> {
        let dir = self.repo_dir(upstream, name);
        let stamp = |sub: &str| match std::fs::metadata(dir.join(sub)) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        Ok(Stamps { tags: stamp(TAGS)?, images: stamp(IMAGES)?, confirmed: stamp(CONFIRMED)? })
    }

    /// Every (upstream, repository) with records. Blocking.
    pub fn repositories(&self) -> io::Result<Vec<(String, RepoName)>> {
        let mut out = Vec::new();
        for (upstream, is_dir) in list_dir(&self.root)? {
            if !is_dir {
                continue;
            }
            let mut stack = vec![(self.root.join(&upstream), String::new())];
            while let Some((dir, prefix)) = stack.pop() {
                let mut has_records = false;
                for (entry, is_dir) in list_dir(&dir)? {
                    if entry == TAGS || entry == IMAGES || entry == CONFIRMED {
                        has_records = true;
                    } else if is_dir {
                        let name = if prefix.is_empty() { entry.clone() } else { format!("{prefix}/{entry}") };
                        stack.push((dir.join(&entry), name));
                    }
                }
                if has_records {
                    if let Ok(name) = prefix.parse::<RepoName>() {
                        out.push((upstream.clone(), name));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        // A damaged record is treated as absent: the thing is simply fetched again.
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// (name, is_dir) of a directory's entries; a missing directory is empty.
fn list_dir(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if let Some(name) = e.file_name().to_str() {
            out.push((name.to_string(), e.file_type()?.is_dir()));
        }
    }
    Ok(out)
}
