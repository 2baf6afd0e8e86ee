//! The scrub: re-hash every cached blob and manifest with its digest's own algorithm, at a
//! bounded byte rate, and quarantine what does not match.
//!
//! One pass walks the index (every committed file, sorted by digest) and reads each file
//! through once, in `READ_CHUNK` reads, paced by a `Pace`. `pullthrough verify` runs one pass
//! on its own thread; the daemon (`[cache] scrub_rate`) runs passes one after another on a
//! thread of its own, at least `MIN_PASS` apart. A thread rather than the runtime's blocking
//! pool: a paced pass over a large cache takes hours, and a runtime waits for its blocking
//! tasks when it shuts down; a plain thread ends with the process.
//!
//! A file evicted or pruned while it is read is still read whole (an unlinked file stays
//! readable), and then found gone by the quarantine: no false alarm. Reads go through the
//! page cache like a client's; the rate bounds how much of it a scrub displaces. A scrub's
//! read is not a use: it opens the file directly, so least-recently-used eviction is not
//! fooled into keeping what nobody pulls.

use super::{take_out, Detector};
use crate::core::progress::{Event, Progress, Silent};
use crate::core::rate::{Pace, Rate};
use crate::core::PullThrough;
use crate::oci::{Digest, Hasher};
use crate::store::{FileId, Quarantined, Store};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes per read.
const READ_CHUNK: usize = 1 << 20;
/// What each file costs the pace beyond its bytes (an open and a `stat`), so a cache of
/// many small files is paced too.
const PER_FILE: u64 = 4096;
/// The daemon starts a pass at most this often (a small cache is not hashed in a loop).
const MIN_PASS: Duration = Duration::from_secs(1);
/// The one item a scrub reports progress on.
const SCRUB_ITEM: &str = "cached files";

/// A cached file whose bytes do not hash to its digest.
#[derive(Debug, Clone)]
pub struct Corruption {
    pub digest: Digest,
    /// What the file's bytes hash to.
    pub actual: Digest,
    /// Where it was cached.
    pub path: PathBuf,
    pub len: u64,
    /// A manifest (it has a recorded media type), rather than a layer or config blob.
    pub manifest: bool,
    /// Where it went: `Moved` to the quarantine by this scrub, or already taken care of by
    /// another process (`Replaced` by a fresh fill, `Gone`).
    pub outcome: Quarantined,
}

/// The verdict on one cached file.
#[derive(Debug)]
pub enum Verdict {
    Intact {
        digest: Digest,
        len: u64,
    },
    Corrupt(Corruption),
    /// Removed (evicted, pruned) between the listing and the read.
    Missing(Digest),
    /// Could not be read (an IO error: the disk itself may be failing). Left in place.
    Unreadable {
        digest: Digest,
        error: io::Error,
    },
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Files checked (those that were still there).
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
    pub corrupt: Vec<Corruption>,
    pub unreadable: Vec<(Digest, io::Error)>,
}

impl PullThrough {
    /// One pass over every cached blob and manifest: hash each, paced by `pace`, and
    /// quarantine those that do not match their digest. Blocking (for seconds to hours).
    pub fn scrub(&self, pace: &mut Pace, found_by: Detector, progress: &dyn Progress) -> ScrubReport {
        let mut blobs = self.store().blobs();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        // One item, the whole cache: a line per file would bury what matters (the findings).
        let total = blobs.iter().map(|b| b.size).sum();
        progress.event(Event::Planned { items: 1, bytes: Some(total) });
        progress.event(Event::Started { name: SCRUB_ITEM });
        progress.event(Event::Sized { bytes: total });
        let mut report = ScrubReport::default();
        let mut buf = vec![0u8; READ_CHUNK];
        for b in blobs {
            let check = check(self.store(), &b.digest, pace, &mut buf, found_by, progress);
            match check {
                Verdict::Intact { len, .. } => {
                    report.files += 1;
                    report.bytes += len;
                }
                Verdict::Corrupt(c) => {
                    report.files += 1;
                    report.bytes += c.len;
                    report.corrupt.push(c);
                }
                Verdict::Missing(_) => {}
                Verdict::Unreadable { digest, error } => {
                    tracing::warn!(%digest, path = %self.store().blob_path(&digest).display(), %error,
                        "cannot read a cached file to verify it");
                    report.unreadable.push((digest, error));
                }
            }
        }
        progress.event(Event::Finished { name: SCRUB_ITEM });
        report
    }
}

/// Hash one cached file and quarantine it if it does not match. Blocking.
fn check(
    store: &Store,
    digest: &Digest,
    pace: &mut Pace,
    buf: &mut [u8],
    found_by: Detector,
    progress: &dyn Progress,
) -> Verdict {
    let path = store.blob_path(digest);
    let read = (|| {
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = FileId::of(&f)?;
        let mut h = Hasher::for_digest(digest);
        let mut len = 0u64;
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            len += n as u64;
            crate::metrics::METRICS.scrub_bytes.inc_by(n as u64);
            progress.bytes(n as u64);
            pace.take(n as u64);
        }
        pace.take(PER_FILE);
        Ok(Some((h.finish(), id, len)))
    })();
    let (actual, id, len) = match read {
        Ok(Some(r)) => r,
        Ok(None) => return Verdict::Missing(digest.clone()),
        Err(error) => return Verdict::Unreadable { digest: digest.clone(), error },
    };
    if actual == *digest {
        return Verdict::Intact { digest: digest.clone(), len };
    }
    let manifest = store.is_manifest(digest);
    match take_out(store, digest, &actual, len, id, found_by) {
        Ok(outcome) => Verdict::Corrupt(Corruption { digest: digest.clone(), actual, path, len, manifest, outcome }),
        Err(error) => Verdict::Unreadable { digest: digest.clone(), error },
    }
}

/// Start the daemon's background scrub when `[cache] scrub_rate` is set: passes over the
/// whole cache at that rate, forever, on a thread of its own.
pub fn spawn(pt: Arc<PullThrough>) {
    let Some(rate) = pt.integrity().scrub_rate else { return };
    let started = std::thread::Builder::new().name("pullthrough-scrub".into()).spawn(move || run(&pt, rate));
    match started {
        Ok(_) => tracing::info!(bytes_per_second = rate.get(), "background scrub started"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the background scrub thread; cached files are not re-verified")
        }
    }
}

fn run(pt: &PullThrough, rate: Rate) {
    let mut pace = Pace::new(Some(rate));
    loop {
        let started = Instant::now();
        pace.restart();
        let r = pt.scrub(&mut pace, Detector::Scrub, &Silent);
        tracing::debug!(
            files = r.files,
            bytes = r.bytes,
            corrupt = r.corrupt.len(),
            unreadable = r.unreadable.len(),
            ms = started.elapsed().as_millis() as u64,
            "background scrub pass done"
        );
        std::thread::sleep(MIN_PASS.saturating_sub(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SpaceBudget;

    #[test]
    fn finds_and_quarantines_a_flipped_byte() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(root.path(), SpaceBudget::unlimited()).unwrap());
        let good = Digest::of_bytes(b"intact manifest");
        store.put_manifest(&good, "application/vnd.oci.image.manifest.v1+json", b"intact manifest").unwrap();
        let bad = Digest::of_bytes(b"rotting manifest");
        store.put_manifest(&bad, "application/vnd.oci.image.manifest.v1+json", b"rotting manifest").unwrap();
        std::fs::write(store.blob_path(&bad), b"rotting manifesT").unwrap();

        let pt = PullThrough::new(store.clone(), crate::upstream::Upstreams::new(vec![]), vec![], 1, None, None);
        let r = pt.scrub(&mut Pace::new(None), Detector::Scrub, &Silent);
        assert_eq!((r.files, r.bytes, r.corrupt.len()), (2, 31, 1));
        let c = &r.corrupt[0];
        assert_eq!((&c.digest, &c.actual, c.manifest), (&bad, &Digest::of_bytes(b"rotting manifesT"), true));
        assert_eq!(c.outcome, Quarantined::Moved(store.quarantine_path(&bad)));
        assert!(!store.contains(&bad) && store.contains(&good));
        // The next pass finds nothing left to do.
        let r = pt.scrub(&mut Pace::new(None), Detector::Scrub, &Silent);
        assert_eq!((r.files, r.corrupt.len()), (1, 0));
    }

    #[test]
    fn sha512_content_is_checked_with_sha512() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(root.path(), SpaceBudget::unlimited()).unwrap());
        let d = Digest::of_bytes_with(crate::oci::Algorithm::Sha512, b"sha512 manifest");
        store.put_manifest(&d, "application/vnd.oci.image.manifest.v1+json", b"sha512 manifest").unwrap();
        let pt = PullThrough::new(store.clone(), crate::upstream::Upstreams::new(vec![]), vec![], 1, None, None);
        let r = pt.scrub(&mut Pace::new(None), Detector::Scrub, &Silent);
        assert_eq!((r.files, r.corrupt.len()), (1, 0));
        std::fs::write(store.blob_path(&d), b"sha512 manifesT").unwrap();
        let r = pt.scrub(&mut Pace::new(None), Detector::Scrub, &Silent);
        assert_eq!(r.corrupt.len(), 1);
        assert_eq!(r.corrupt[0].actual, Digest::of_bytes_with(crate::oci::Algorithm::Sha512, b"sha512 manifesT"));
        assert!(store.quarantine_path(&d).starts_with(root.path().join("quarantine/sha512")));
        assert_eq!(store.quarantined().unwrap(), vec![d]);
    }
}
