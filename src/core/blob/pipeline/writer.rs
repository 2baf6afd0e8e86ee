//! The disk writer of a fill: appends each chunk to the temp file on a blocking thread, then
//! puts that same chunk into the followers' window and publishes how far the file goes.
//! Publishing only after the write means no follower is ever told of a byte that the file
//! does not hold yet.

use super::window::Window;
use crate::store::TempBlob;
use bytes::Bytes;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks queued between the receive loop and the writer: bounds memory per fill.
const QUEUE: usize = 16;
/// Progress is published to followers after at least this many new bytes (or when the
/// writer has caught up): every publish wakes every follower.
const PUBLISH_EVERY: u64 = 256 * 1024;

/// The writer stopped (it failed); `DiskWriter::finish` says why.
#[derive(Debug)]
pub struct WriterGone;

pub struct DiskWriter {
    chunks: mpsc::Sender<Bytes>,
    task: JoinHandle<io::Result<(TempBlob, Duration)>>,
}

impl DiskWriter {
    /// Start writing to `temp`; `publish(written)` tells the followers how far the file goes.
    pub fn spawn(temp: TempBlob, window: Arc<Window>, publish: impl Fn(u64) + Send + 'static) -> DiskWriter {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut temp = temp;
            let mut published = temp.written();
            let mut busy = Duration::ZERO;
            while let Some(chunk) = queue.blocking_recv() {
                let offset = temp.written();
                let t = Instant::now();
                temp.append(&chunk)?;
                busy += t.elapsed();
                window.push(offset, chunk);
                let written = temp.written();
                if written - published >= PUBLISH_EVERY || queue.is_empty() {
                    publish(written);
                    published = written;
                }
            }
            publish(temp.written());
            Ok((temp, busy))
        });
        DiskWriter { chunks, task }
    }

    /// Queue `chunk` for writing; waits while the queue is full.
    pub async fn write(&self, chunk: Bytes) -> Result<(), WriterGone> {
        self.chunks.send(chunk).await.map_err(|_| WriterGone)
    }

    /// Wait until every queued chunk is written; the temp file and the time spent writing
    /// it, or why writing failed.
    pub async fn finish(self) -> io::Result<(TempBlob, Duration)> {
        drop(self.chunks);
        self.task.await.map_err(io::Error::other)?
    }
}
