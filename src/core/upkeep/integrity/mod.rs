//! Self-healing integrity: finding cached content that no longer matches its digest (bit
//! rot, a bad disk, something writing into the cache directory), taking it out of service,
//! and fetching it again.
//!
//! Three ways to find it, one way to handle it:
//! - `scrub`: re-hash every cached blob and manifest at a bounded byte rate: `pullthrough
//!   verify` once, or the daemon in the background (`[cache] scrub_rate`, off by default);
//! - `verified_read`: with `[cache] verify_on_read`, hash a cached blob while it is served
//!   and hold its last chunk back until it verifies, as a fill does;
//! - (manifests are verified on every read from disk already: `store::Cas::read_manifest`.)
//!
//! A corrupt file is moved to the quarantine (`store::quarantine`): never served again, and
//! the next request fills the digest afresh from a tier or the upstream, streamed and
//! verified like any miss. `repair` does that refill at once for `verify --repair`, from an
//! upstream that vouched for the digest.

mod repair;
mod scrub;
mod verified_read;

pub use crate::core::policy::IntegritySettings;
pub use crate::core::rate::{Pace, Rate};
pub use repair::{RepairError, Repaired};
pub use scrub::{spawn as spawn_scrub, Corruption, ScrubReport, Verdict};

use crate::events::{Event, EventKind};
use crate::oci::Digest;
use crate::store::{FileId, Quarantined, Store};
use std::path::PathBuf;

/// What found a corrupt file (the `found_by` label of the corruption metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// A scrub: `pullthrough verify`, or the daemon's background pass.
    Scrub,
    /// A client's read with `verify_on_read`.
    Read,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Scrub => "scrub",
            Detector::Read => "read",
        }
    }
}

/// Take a corrupt file out of service: quarantine it (if it is still the file that was
/// hashed) and, when this call moved it, count it and say so (log, metric, `blob.corrupt`
/// event). Blocking.
fn take_out(
    store: &Store,
    digest: &Digest,
    actual: &Digest,
    len: u64,
    file: FileId,
    found_by: Detector,
) -> std::io::Result<Quarantined> {
    let path: PathBuf = store.blob_path(digest);
    let outcome = store.quarantine(digest, file)?;
    if let Quarantined::Moved(to) = &outcome {
        crate::metrics::METRICS.corruptions_found.with_label_values(&[found_by.as_str()]).inc();
        tracing::warn!(%digest, %actual, path = %path.display(), quarantined = %to.display(), found_by = found_by.as_str(),
            "cached file does not match its digest; quarantined (the next request fetches it again)");
        let cause = format!("the cached file hashes to {actual} (found by {}); quarantined", found_by.as_str());
        crate::events::emit(Event::new(EventKind::BlobCorrupt).digest(digest).size(len).cause_text(cause));
    }
    Ok(outcome)
}
