//! Single-flight blob fills: one upstream fetch per digest, however many clients ask.
//!
//! A fill runs as its own task, independent of the clients that asked for it: bytes go to
//! a temp file (hashed as written, on a blocking thread) and every client follows that file
//! as it grows, late joiners starting from what is already on disk. When the stream ends the
//! blob is verified and committed, or discarded. A client that disconnects does not stop the
//! fill: the next pull of that blob is then a cache hit (see README, "Fill policy").

use super::source::{self, Tier, Tiers, Via};
use crate::cluster::{Cluster, PeerError};
use crate::oci::{Digest, Hasher};
use crate::shared::{SharedError, SharedTier};
use crate::store::{blocking, Store};
use crate::upstream::{Route, UpstreamError};
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

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
    #[error("fill of {digest} from the {} tier failed verification: {message}", tier.as_str())]
    Verification { digest: Digest, tier: Tier, message: String },
    #[error("fill of {digest} failed: {message}")]
    Io { digest: Digest, message: String },
    /// The cache has no room for this blob; it must be served without caching.
    #[error("not caching {digest}: {message}")]
    NoSpace { digest: Digest, message: String },
}

/// Wait until `progress` satisfies `done`, and return that state; an error if the filler
/// went away first.
pub async fn settle(
    progress: &mut watch::Receiver<Progress>,
    done: impl FnMut(&Progress) -> bool,
) -> Result<Progress, super::CoreError> {
    match progress.wait_for(done).await {
        Ok(p) => Ok(p.clone()),
        Err(_) => Err(super::CoreError::Store(std::io::Error::other("blob fill ended unexpectedly"))),
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
    cluster: Option<Arc<Cluster>>,
}

/// Chunks queued between the network task and the disk writer: bounds memory per fill.
const WRITE_QUEUE: usize = 16;
/// Network reads are gathered into writes of at least this size.
const COALESCE: usize = 256 * 1024;
/// Progress is published to followers after at least this many new bytes.
const PUBLISH_EVERY: u64 = 256 * 1024;

impl Fills {
    pub fn new(max_concurrent: usize, shared: Option<Arc<SharedTier>>, cluster: Option<Arc<Cluster>>) -> Fills {
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
        });
        map.insert(digest.clone(), rx.clone());
        drop(map);
        let (fills, store, route, digest) = (self.clone(), store.clone(), route.clone(), digest.clone());
        let limit = self.limit.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let tiers = Tiers { shared: fills.shared.as_deref(), cluster: fills.cluster.as_deref(), via };
            match run(&store, fills.shared.as_ref(), tiers, &route, &digest, &tx).await {
                Ok(()) => {
                    let b = store.budget();
                    if b.max_size.is_some_and(|m| store.cas.index.total() as f64 > m as f64 * b.high_watermark) {
                        fills.housekeeping.notify_one();
                    }
                }
                Err(e) => {
                    let m = &crate::metrics::METRICS;
                    match &e {
                        FillError::NoSpace { .. } => m.uncached_blobs.with_label_values(&[route.upstream.host()]).inc(),
                        FillError::Verification { tier: Tier::Upstream, .. } => {
                            m.fill_verification_failures.with_label_values(&[route.upstream.host()]).inc()
                        }
                        _ => {}
                    }
                    if matches!(e, FillError::NoSpace { .. }) {
                        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %digest, reason = %e, "cache full: serving this blob without caching it");
                        fills.housekeeping.notify_one();
                    } else {
                        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %digest, error = %e, "blob fill failed; nothing was cached");
                    }
                    tx.send_modify(|p| p.state = FillState::Failed(Arc::new(e)));
                }
            }
            fills.inflight.lock().expect("fills lock").remove(&digest);
        });
        (rx, true)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("fills lock").len()
    }
}

async fn run(
    store: &Arc<Store>,
    shared: Option<&Arc<SharedTier>>,
    tiers: Tiers<'_>,
    route: &Route,
    digest: &Digest,
    tx: &watch::Sender<Progress>,
) -> Result<(), FillError> {
    let io_err = |e: std::io::Error| FillError::Io { digest: digest.clone(), message: e.to_string() };

    // Another fill may have committed this blob between the caller's cache check and ours.
    let s = store.clone();
    let d = digest.clone();
    if let Some((f, len)) = blocking(move || s.cas.open_blob(&d)).await.map_err(io_err)? {
        tx.send_modify(|p| {
            *p = Progress {
                state: FillState::Verified,
                file: Some(Arc::new(f)),
                written: len,
                total: Some(len),
                committed: Some(true),
            }
        });
        return Ok(());
    }

    let mut body = source::open(tiers, route, digest).await?;
    let peer = body.peer();
    let total = body.total;

    // Room first: with none, the waiters are told to relay from upstream uncached.
    let s = store.clone();
    let reservation = tokio::task::spawn_blocking(move || s.reserve(total))
        .await
        .map_err(|e| io_err(std::io::Error::other(e)))?
        .map_err(|e| FillError::NoSpace { digest: digest.clone(), message: e.to_string() })?;

    let s = store.clone();
    let d = digest.clone();
    let (temp, reader) = blocking(move || {
        let t = s.cas.begin(&d)?;
        let r = t.reader()?;
        Ok((t, r))
    })
    .await
    .map_err(|e| {
        if e.raw_os_error() == Some(28) {
            FillError::NoSpace { digest: digest.clone(), message: e.to_string() }
        } else {
            io_err(e)
        }
    })?;
    tx.send_modify(|p| {
        p.state = FillState::Streaming;
        p.file = Some(Arc::new(reader));
        p.total = total;
    });

    // The disk writer appends on a blocking thread and hands each chunk to a hashing thread,
    // so writing and hashing overlap on two cores. Progress is published after the write, so
    // readers never see a byte that is not yet in the file.
    let (chunks, mut queue) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer_tx = tx.clone();
    // Verified with the algorithm of the digest it was asked by (sha256 or sha512).
    let algorithm = digest.algorithm();
    let writer = tokio::task::spawn_blocking(move || {
        let (to_hash, hash_rx) = std::sync::mpsc::sync_channel::<Bytes>(WRITE_QUEUE);
        let hasher = std::thread::Builder::new().name("pullthrough-hash".into()).spawn(move || {
            let mut h = Hasher::new(algorithm);
            for chunk in hash_rx {
                h.update(&chunk);
            }
            h.finish()
        })?;
        let mut temp = temp;
        let mut published = 0;
        let mut failed = None;
        while let Some(chunk) = queue.blocking_recv() {
            if let Err(e) = temp.append(&chunk) {
                failed = Some(e);
                break;
            }
            let _ = to_hash.send(chunk);
            let written = temp.written();
            // Publish in batches (or when caught up): every publish wakes every follower.
            if written - published >= PUBLISH_EVERY || queue.is_empty() {
                writer_tx.send_modify(|p| p.written = written);
                published = written;
            }
        }
        drop(to_hash);
        let actual = hasher.join().map_err(|_| std::io::Error::other("hashing thread panicked"))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let written = temp.written();
        writer_tx.send_modify(|p| p.written = written);
        Ok::<_, std::io::Error>((temp, actual))
    });

    let tier = body.tier;
    let mut received: u64 = 0;
    let mut pending = bytes::BytesMut::new();
    let result: Result<(), FillError> = async {
        loop {
            let Some(data) = body.next_chunk().await? else { break };
            {
                received += data.len() as u64;
                if total.is_some_and(|t| received > t) {
                    return Err(FillError::Verification {
                        digest: digest.clone(),
                        tier,
                        message: "the source sent more bytes than announced".into(),
                    });
                }
                // Coalesce small network reads into larger writes: fewer syscalls, fewer
                // wake-ups, fewer hash calls.
                if pending.is_empty() && data.len() >= COALESCE {
                    if chunks.send(data).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    continue;
                }
                pending.extend_from_slice(&data);
                if pending.len() >= COALESCE && chunks.send(pending.split().freeze()).await.is_err() {
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let _ = chunks.send(pending.split().freeze()).await;
        }
        Ok(())
    }
    .await;
    drop(chunks);
    let (temp, actual) = writer.await.map_err(|e| io_err(std::io::Error::other(e)))?.map_err(io_err)?;
    if let (Err(_), Some(p), Some(c)) = (&result, &peer, tiers.cluster) {
        // A peer that broke off mid-transfer (killed, overloaded): skip it for a while, so
        // the clients' retry goes to the next peer or the upstream.
        c.failed(p);
    }
    result?;
    crate::metrics::METRICS.tier_bytes.with_label_values(&[tier.as_str()]).inc_by(received);

    // Verify first, and release the held-back bytes to the clients as soon as the hash and
    // size are right: durability (fsync of a large file) is the cache's concern, not theirs.
    let mismatch = if actual != *digest {
        Some(format!("content hashes to {actual}"))
    } else {
        total
            .filter(|t| *t != temp.written())
            .map(|t| format!("size mismatch: announced {t} bytes, got {}", temp.written()))
    };
    if let Some(message) = mismatch {
        crate::metrics::METRICS.tier_verification_failures.with_label_values(&[tier.as_str()]).inc();
        if let (Some(p), Some(c)) = (&peer, tiers.cluster) {
            tracing::warn!(%p, %digest, "a peer sent bytes that failed verification; ignoring that peer for a while");
            c.failed(p);
        }
        if let (Tier::Shared, Some(s)) = (tier, shared) {
            // Never trust the bucket: drop the bad object so the next fill goes upstream
            // and its verified bytes replace it.
            let (s, d) = (s.clone(), digest.clone());
            tokio::spawn(async move { s.remove_corrupt(&d).await });
        }
        return Err(FillError::Verification { digest: digest.clone(), tier, message });
    }
    tx.send_modify(|p| {
        p.state = FillState::Verified;
        p.total = Some(p.written);
    });
    // Then make it a cache entry: fsync, rename, fsync the directory. Until the rename,
    // new requests join this fill and read the verified temp file.
    let s = store.clone();
    let committed = tokio::task::spawn_blocking(move || temp.commit(&s.cas, actual, total))
        .await
        .map_err(|e| io_err(std::io::Error::other(e)))?;
    drop(reservation);
    tx.send_modify(|p| p.committed = Some(committed.is_ok()));
    match committed {
        Ok(()) => {
            tracing::debug!(%digest, bytes = received, tier = tier.as_str(), "blob fill verified and committed");
            // Bytes from a peer: the owner uploads what it filled, so this node need not.
            if let (Tier::Upstream, Some(s)) = (tier, shared) {
                s.upload_blob(digest, store.cas.blob_path(digest), received);
            }
            Ok(())
        }
        Err(e) => {
            // The clients already have their (verified) bytes; only caching failed.
            tracing::warn!(%digest, error = %e, "verified blob could not be committed to the cache");
            Ok(())
        }
    }
}
