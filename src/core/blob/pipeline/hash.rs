//! The hashing stage: a thread of its own that hashes the chunks it is fed, so neither the
//! receive loop (async) nor the disk writer waits for SHA-256, and receiving, writing and
//! hashing overlap on separate cores.

use crate::oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use std::io;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Chunks queued for the hasher: bounds the memory a slow hasher can hold.
const QUEUE: usize = 16;

/// The hashing thread stopped before it was finished (it panicked, or could not start).
#[derive(Debug, thiserror::Error)]
#[error("the hashing thread stopped")]
pub struct HashGone;

pub struct HashStage {
    feed: mpsc::Sender<Bytes>,
    done: oneshot::Receiver<(Digest, Duration)>,
}

impl HashStage {
    /// Start a thread hashing with `algorithm`; it ends when the stage is finished or dropped.
    pub fn spawn(algorithm: Algorithm) -> io::Result<HashStage> {
        let (feed, mut chunks) = mpsc::channel::<Bytes>(QUEUE);
        let (result, done) = oneshot::channel();
        std::thread::Builder::new().name("pullthrough-hash".into()).spawn(move || {
            let mut h = Hasher::new(algorithm);
            let mut busy = Duration::ZERO;
            while let Some(chunk) = chunks.blocking_recv() {
                let t = Instant::now();
                h.update(&chunk);
                busy += t.elapsed();
            }
            let _ = result.send((h.finish(), busy));
        })?;
        Ok(HashStage { feed, done })
    }

    /// Queue `chunk` for hashing; waits (without blocking the runtime) while the queue is full.
    pub async fn feed(&self, chunk: Bytes) -> Result<(), HashGone> {
        self.feed.send(chunk).await.map_err(|_| HashGone)
    }

    /// The digest of everything fed, once the thread has hashed it all, and the time the
    /// thread spent hashing.
    pub async fn finish(self) -> Result<(Digest, Duration), HashGone> {
        drop(self.feed);
        self.done.await.map_err(|_| HashGone)
    }
}
