//! Serving a blob straight from upstream without caching it, for when the cache has no
//! room (disk full, or a blob larger than the budget). The bytes are still verified: the
//! final chunk is held back until the whole stream hashes to the requested digest.
//!
//! Hashing happens inline on the async task: chunks from the network are small (tens of
//! KiB), so each update takes microseconds; a blob is never buffered.

use crate::oci::{Digest, Hasher};
use crate::upstream::error_chain;
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::io;
use std::time::Duration;

struct Relay {
    body: Incoming,
    /// `None` once the stream has ended, successfully or not.
    hasher: Option<Hasher>,
    held: Option<Bytes>,
    digest: Digest,
    idle_timeout: Duration,
}

impl Relay {
    fn fail(mut self, msg: String) -> Option<(io::Result<Bytes>, Relay)> {
        tracing::warn!(digest = %self.digest, error = %msg, "uncached blob relay failed; aborting the client's transfer");
        self.hasher = None;
        Some((Err(io::Error::other(msg)), self))
    }
}

pub fn stream(
    body: Incoming,
    digest: Digest,
    idle_timeout: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let init = Relay { body, hasher: Some(Hasher::for_digest(&digest)), held: None, digest, idle_timeout };
    futures_util::stream::unfold(init, |mut st| async move {
        loop {
            st.hasher.as_ref()?;
            let frame = match tokio::time::timeout(st.idle_timeout, st.body.frame()).await {
                Err(_) => {
                    let t = st.idle_timeout;
                    return st.fail(format!("upstream stalled for {t:?}"));
                }
                Ok(None) => {
                    let actual = st.hasher.take()?.finish();
                    if actual != st.digest {
                        let expected = st.digest.clone();
                        return st.fail(format!("upstream bytes hash to {actual}, expected {expected}"));
                    }
                    let last = st.held.take()?;
                    return Some((Ok(last), st));
                }
                Ok(Some(Err(e))) => return st.fail(format!("upstream transfer failed: {}", error_chain(&e))),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if let Some(h) = st.hasher.as_mut() {
                h.update(&data);
            }
            if let Some(prev) = st.held.replace(data) {
                return Some((Ok(prev), st));
            }
        }
    })
}
