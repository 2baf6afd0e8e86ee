//! Serving a blob straight from upstream without caching it, for when the cache has no
//! room (disk full, or a blob larger than the budget). The bytes go through the same
//! pipeline as a fill's (`pipeline::VerifiedBody`: per-chunk timeout, hash on its own
//! thread, the final chunk held back until the whole stream hashes to the requested
//! digest); only the disk writer and the followers are missing. A blob is never buffered.

use super::fill::FillError;
use super::pipeline::VerifiedBody;
use super::source::SourceBody;
use crate::oci::Digest;
use bytes::Bytes;
use futures_util::Stream;
use std::io;

/// A body to relay to one client, verified as it goes.
pub struct Relay {
    body: SourceBody,
    digest: Digest,
}

impl Relay {
    pub fn new(body: SourceBody, digest: Digest) -> Relay {
        Relay { body, digest }
    }

    /// The size the upstream announced, when it did.
    pub fn size(&self) -> Option<u64> {
        self.body.total
    }

    /// The verified bytes; the stream ends with an error (the client sees a broken
    /// transfer) if the upstream fails, stalls or sends bytes that do not verify.
    pub fn stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let digest = self.digest.clone();
        let init = VerifiedBody::new(self.body, &self.digest).map_err(|e| fail(&digest, e));
        futures_util::stream::unfold(Some((init, digest)), |st| async move {
            let (body, digest) = st?;
            let mut body = match body {
                Ok(b) => b,
                Err(e) => return Some((Err(e), None)),
            };
            match body.next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some((Ok(body), digest)))),
                Ok(None) => None,
                Err(e) => Some((Err(fail(&digest, e)), None)),
            }
        })
    }
}

fn fail(digest: &Digest, e: FillError) -> io::Error {
    let error = crate::error_text::error_chain(&e);
    tracing::warn!(%digest, %error, "uncached blob relay failed; aborting the client's transfer");
    io::Error::other(e)
}
