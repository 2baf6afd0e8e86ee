//! Single-flight blob fills: one fetch per digest, however many clients ask.
//!
//! A fill runs as its own task, independent of the clients that asked for it, in named
//! stages: `open` (the first tier that has the blob, room in the cache, a temp file),
//! `receive` (the body through the one pipeline: per-chunk timeout, hash on its own thread,
//! last chunk held back until it verifies; each chunk appended to the temp file and handed,
//! without copying, to the followers' in-memory window), `commit` (fsync and rename) and
//! `publish` (metrics, the shared tier's copy). Clients follow the fill (see `follow`): from
//! the window while they keep up, from the temp file once they fall behind it, late joiners
//! starting from what is already on disk. A client that disconnects does not stop the fill:
//! the next pull of that blob is then a cache hit (see README, "Fill policy").

use super::pipeline::{DiskWriter, Mismatch, VerifiedBody, Window};
use super::source::{self, Tier, Tiers, Via};
use crate::cluster::PeerError;
use crate::events::{Event, EventKind};
use crate::oci::Digest;
use crate::shared::{SharedError, SharedTier};
use crate::store::{Reservation, Store, TempBlob};
use crate::upstream::{Route, UpstreamError};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where a blob's bytes stand, shared by the filler and every reader.
#[derive(Clone)]
pub struct Progress {
    pub state: FillState,
    /// A read handle on the file being filled (or the committed blob).
    pub file: Option<Arc<File>>,
    /// Bytes on disk so far.
    pub written: u64,
    /// The size upstream announced, when it did.
    pub total: Option<u64>,
    /// Whether the verified blob became a cache entry: `None` while pending.
    pub committed: Option<bool>,
    /// The fill's latest chunks in memory, while it runs.
    pub window: Option<Arc<Window>>,
}

#[derive(Clone, Debug)]
pub enum FillState {
    /// Waiting for upstream's response headers.
    Connecting,
    /// Bytes are arriving; nothing is verified yet.
    Streaming,
    /// Verified and committed: every byte up to `written` may be served.
    Verified,
    /// Failed before or after headers; readers must abort.
    Failed(Arc<FillError>),
}

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("fill of {digest} from the {} tier failed verification", tier.as_str())]
    Verification {
        digest: Digest,
        tier: Tier,
        #[source]
        mismatch: Mismatch,
    },
    #[error("fill of {digest} failed in the cache's storage")]
    Io {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    /// The cache has no room for this blob; it must be served without caching.
    #[error("not caching {digest}")]
    NoSpace {
        digest: Digest,
        #[source]
        source: crate::store::NoSpace,
    },
}

/// Wait until `progress` satisfies `done`, and return that state; an error if the filler
/// went away first.
pub async fn settle(
    progress: &mut watch::Receiver<Progress>,
    done: impl FnMut(&Progress) -> bool,
) -> Result<Progress, crate::core::CoreError> {
    match progress.wait_for(done).await {
        Ok(p) => Ok(p.clone()),
        Err(_) => Err(crate::core::CoreError::FillEnded),
    }
}

/// Watchers of a committed blob: a progress that is already final.
pub fn complete(file: File, len: u64) -> watch::Receiver<Progress> {
    let (_tx, rx) = watch::channel(Progress {
        state: FillState::Verified,
        file: Some(Arc::new(file)),
        written: len,
        total: Some(len),
        committed: Some(true),
        window: None,
    });
    rx
}

/// The fills in progress, by digest.
pub struct Fills {
    /// Bounds the upstream fetches running at once; fills beyond it wait (as Connecting).
    limit: Arc<tokio::sync::Semaphore>,
    inflight: Mutex<HashMap<Digest, watch::Receiver<Progress>>>,
    /// Woken when a fill commits past the high watermark or finds no room: the
    /// housekeeper then evicts without waiting for its next tick.
    pub housekeeping: Arc<tokio::sync::Notify>,
    /// The shared tier, read before the upstream and written back to after a fill.
    shared: Option<Arc<SharedTier>>,
    /// The peers that own digests, asked before the upstream by a client's fill.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Bytes of recent chunks a fill keeps in memory for its followers: a follower further
/// behind reads the temp file (page cache). Bounds memory per fill, not per follower.
const WINDOW: usize = 4 * 1024 * 1024;

impl Fills {
    pub fn new(
        max_concurrent: usize,
        shared: Option<Arc<SharedTier>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Fills {
        Fills {
            limit: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            inflight: Mutex::default(),
            housekeeping: Arc::default(),
            shared,
            cluster,
        }
    }

    /// Follow the fill of `digest`, starting one from `route` if none is running. Returns
    /// the progress receiver and whether this call started the fill.
    pub fn join_or_start(
        self: &Arc<Self>,
        store: &Arc<Store>,
        route: &Route,
        digest: &Digest,
        via: Via,
    ) -> (watch::Receiver<Progress>, bool) {
        let mut map = self.inflight.lock().expect("fills lock");
        if let Some(rx) = map.get(digest) {
            crate::metrics::METRICS.fills_joined.inc();
            return (rx.clone(), false);
        }
        let (tx, rx) = watch::channel(Progress {
            state: FillState::Connecting,
            file: None,
            written: 0,
            total: None,
            committed: None,
            window: None,
        });
        map.insert(digest.clone(), rx.clone());
        drop(map);
        let (fills, store, route, digest) = (self.clone(), store.clone(), route.clone(), digest.clone());
        let limit = self.limit.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let tiers = Tiers { shared: fills.shared.as_deref(), cluster: fills.cluster.as_deref(), via };
            let fill =
                Fill { store: &store, shared: fills.shared.as_ref(), tiers, route: &route, digest: &digest, tx: &tx };
            match fill.run().await {
                Ok(()) => fills.succeeded(&store),
                Err(e) => fills.failed(&route, &digest, e, &tx),
            }
            fills.inflight.lock().expect("fills lock").remove(&digest);
        });
        (rx, true)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("fills lock").len()
    }

    /// Past the high watermark: evict now rather than at the housekeeper's next tick.
    fn succeeded(&self, store: &Store) {
        let b = store.budget();
        if b.max_size.is_some_and(|m| store.stats().bytes as f64 > m as f64 * b.high_watermark) {
            self.housekeeping.notify_one();
        }
    }

    /// Count and log the failure, and abort every follower.
    fn failed(&self, route: &Route, digest: &Digest, e: FillError, tx: &watch::Sender<Progress>) {
        let m = &crate::metrics::METRICS;
        let host = route.upstream.host();
        let error = crate::error_text::error_chain(&e);
        match &e {
            FillError::NoSpace { .. } => {
                m.uncached_blobs.with_label_values(&[host]).inc();
                tracing::warn!(upstream = %host, repo = %route.name, %digest, reason = %error, "cache full: serving this blob without caching it");
                self.housekeeping.notify_one();
            }
            FillError::Verification { tier: Tier::Upstream, .. } => {
                m.fill_verification_failures.with_label_values(&[host]).inc();
                tracing::warn!(upstream = %host, repo = %route.name, %digest, %error, "blob fill failed; nothing was cached");
            }
            _ => {
                tracing::warn!(upstream = %host, repo = %route.name, %digest, %error, "blob fill failed; nothing was cached")
            }
        }
        if !matches!(e, FillError::NoSpace { .. }) {
            crate::events::emit(
                Event::new(EventKind::FillFailed).upstream(host).repository(&route.name).digest(digest).cause(&e),
            );
        }
        tx.send_modify(|p| {
            p.state = FillState::Failed(Arc::new(e));
            release(p);
        });
    }
}

/// Drop the fill's window: followers read the file from here on.
fn release(p: &mut Progress) {
    if let Some(w) = p.window.take() {
        w.clear();
    }
}

/// What the open stage hands to the rest of the fill.
struct Opened {
    body: VerifiedBody,
    temp: TempBlob,
    /// The room the blob takes until it is committed (or dropped).
    reservation: Reservation,
    window: Arc<Window>,
}

/// One fill's inputs, for its stages.
struct Fill<'a> {
    store: &'a Arc<Store>,
    shared: Option<&'a Arc<SharedTier>>,
    tiers: Tiers<'a>,
    route: &'a Route,
    digest: &'a Digest,
    tx: &'a watch::Sender<Progress>,
}

impl Fill<'_> {
    async fn run(&self) -> Result<(), FillError> {
        if self.already_cached().await? {
            return Ok(());
        }
        let Opened { body, temp, reservation, window } = self.open().await?;
        let tier = body.tier();
        let (temp, received) = self.receive(body, temp, window).await?;
        self.commit(temp, reservation).await;
        self.publish(tier, received);
        Ok(())
    }

    /// An event about this fill's blob, in its repository and upstream.
    fn event(&self, kind: EventKind) -> Event {
        Event::new(kind).upstream(self.route.upstream.host()).repository(&self.route.name).digest(self.digest)
    }

    fn io_err(&self, source: io::Error) -> FillError {
        FillError::Io { digest: self.digest.clone(), source }
    }

    /// Another fill may have committed this blob between the caller's cache check and ours.
    async fn already_cached(&self) -> Result<bool, FillError> {
        let Some((f, len)) = self.store.open_blob_async(self.digest).await.map_err(|e| self.io_err(e))? else {
            return Ok(false);
        };
        self.tx.send_modify(|p| {
            *p = Progress {
                state: FillState::Verified,
                file: Some(Arc::new(f)),
                written: len,
                total: Some(len),
                committed: Some(true),
                window: None,
            }
        });
        Ok(true)
    }

    /// Open stage: the body from the first tier that has it, room in the cache (with none,
    /// the waiters are told to relay from upstream uncached), and the temp file followers read.
    async fn open(&self) -> Result<Opened, FillError> {
        let body = VerifiedBody::new(source::open(self.tiers, self.route, self.digest).await?, self.digest)?;
        let total = body.total();
        let no_space = |source| FillError::NoSpace { digest: self.digest.clone(), source };
        let s = self.store.clone();
        let reservation = tokio::task::spawn_blocking(move || s.reserve(total))
            .await
            .map_err(|e| self.io_err(io::Error::other(e)))?
            .map_err(no_space)?;
        let d = self.digest.clone();
        let (temp, reader) = self
            .store
            .run(move |s| {
                let t = s.begin(&d)?;
                if let Some(len) = total {
                    t.preallocate(len)?;
                }
                let r = t.reader()?;
                Ok((t, r))
            })
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::StorageFull => no_space(crate::store::NoSpace::Io(e)),
                _ => self.io_err(e),
            })?;
        let window = Arc::new(Window::new(WINDOW));
        self.tx.send_modify(|p| {
            p.state = FillState::Streaming;
            p.file = Some(Arc::new(reader));
            p.total = total;
            p.window = Some(window.clone());
        });
        Ok(Opened { body, temp, reservation, window })
    }

    /// Receive stage: every chunk of the verified body to the disk writer, which hands it
    /// on to the followers' window. Ends verified (the state says so) with the temp file and
    /// the bytes received.
    async fn receive(
        &self,
        mut body: VerifiedBody,
        temp: TempBlob,
        window: Arc<Window>,
    ) -> Result<(TempBlob, u64), FillError> {
        let tx = self.tx.clone();
        let started = Instant::now();
        let writer = DiskWriter::spawn(temp, window, move |written| tx.send_modify(|p| p.written = written));
        let mut write_wait = Duration::ZERO;
        let received = async {
            while let Some(chunk) = body.next().await? {
                let t = Instant::now();
                if writer.write(chunk).await.is_err() {
                    break; // the writer failed; finish() says why
                }
                write_wait += t.elapsed();
            }
            Ok(body.received())
        }
        .await;
        let temp = writer.finish().await;
        let received = match received {
            Ok(n) => n,
            Err(e) => {
                self.rejected(&e, body.peer());
                return Err(e);
            }
        };
        let (temp, write_busy) = temp.map_err(|e| self.io_err(e))?;
        let t = body.timings();
        // Where the time went (benches/RESULTS.md): the slowest stage shows as the others'
        // waits (hash_wait: the hasher; write_wait: the disk writer; source_wait: the source).
        tracing::debug!(
            digest = %self.digest, bytes = received, wall = ?started.elapsed(), source_wait = ?t.source_wait,
            hash_busy = ?t.hash_busy, hash_wait = ?t.hash_wait, write_busy = ?write_busy, write_wait = ?write_wait,
            chunks = t.chunks,
            "blob fill received"
        );
        // Verified: the held-back bytes go to the clients now; durability (fsync of a large
        // file) is the cache's concern, not theirs.
        self.tx.send_modify(|p| {
            p.state = FillState::Verified;
            p.total = Some(p.written);
        });
        Ok((temp, received))
    }

    /// A source that broke off or sent bad bytes: skip that peer for a while, drop a bad
    /// object from the bucket, so the clients' retry goes elsewhere.
    fn rejected(&self, e: &FillError, peer: Option<crate::cluster::Peer>) {
        let FillError::Verification { tier, .. } = e else {
            if let (Some(p), Some(c)) = (&peer, self.tiers.cluster) {
                c.failed(p);
            }
            return;
        };
        crate::metrics::METRICS.tier_verification_failures.with_label_values(&[tier.as_str()]).inc();
        crate::events::emit(self.event(EventKind::BlobCorrupt).tier(tier.as_str()).cause(e));
        if let (Some(p), Some(c)) = (&peer, self.tiers.cluster) {
            tracing::warn!(%p, digest = %self.digest, "a peer sent bytes that failed verification; ignoring that peer for a while");
            c.failed(p);
        }
        if let (Tier::Shared, Some(s)) = (tier, self.shared) {
            // Never trust the bucket: the next fill goes upstream and its verified bytes
            // replace the bad object.
            let (s, d) = (s.clone(), self.digest.clone());
            tokio::spawn(async move { s.remove_corrupt(&d).await });
        }
    }

    /// Commit stage: fsync, rename, fsync the directory. Until the rename, new requests join
    /// this fill and read the verified temp file. The clients already have their verified
    /// bytes, so a failure here only means the blob is not cached.
    async fn commit(&self, temp: TempBlob, reservation: Reservation) {
        let (s, d) = (self.store.clone(), self.digest.clone());
        let total = self.tx.borrow().total;
        let started = Instant::now();
        let committed = tokio::task::spawn_blocking(move || s.commit(temp, d, total)).await;
        tracing::debug!(digest = %self.digest, took = ?started.elapsed(), "blob fill committed");
        drop(reservation);
        let ok = matches!(committed, Ok(Ok(())));
        self.tx.send_modify(|p| {
            p.committed = Some(ok);
            release(p);
        });
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let error = crate::error_text::error_chain(&e);
                tracing::warn!(digest = %self.digest, %error, "verified blob could not be committed to the cache");
            }
            Err(e) => {
                tracing::warn!(digest = %self.digest, error = %e, "verified blob could not be committed to the cache")
            }
        }
    }

    /// Publish stage: count the bytes, and upload what came from the upstream to the shared
    /// tier (a peer's owner uploads what it filled, so this node need not).
    fn publish(&self, tier: Tier, received: u64) {
        crate::metrics::METRICS.tier_bytes.with_label_values(&[tier.as_str()]).inc_by(received);
        tracing::debug!(digest = %self.digest, bytes = received, tier = tier.as_str(), "blob fill verified");
        if !self.tx.borrow().committed.unwrap_or(false) {
            return;
        }
        crate::events::emit(self.event(EventKind::FillCompleted).size(received).tier(tier.as_str()));
        if let (Tier::Upstream, Some(s)) = (tier, self.shared) {
            s.upload_blob(self.digest, self.store.blob_path(self.digest), received);
        }
    }
}
