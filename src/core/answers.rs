//! What the service answers with: a manifest, a page of a tag list. (A blob's answer is
//! the blob path's own: `Blob`.)

use crate::oci::{Digest, TagsQuery};
use bytes::Bytes;

/// A manifest ready to serve.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// Served from the cache (true) or fetched from upstream for this request (false).
    pub cached: bool,
}

/// One page of a tag list (JSON), with the query for the next page when tags remain.
pub struct TagsPage {
    pub body: Bytes,
    pub next: Option<TagsQuery>,
}
