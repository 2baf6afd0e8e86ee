//! The pull-through logic: what to answer from the cache, what to fetch, and how fills are
//! shared. Knows nothing about HTTP clients; talks to `store` and `upstream` only.

mod error;
pub mod fill;
pub mod follow;
mod housekeeping;
pub mod lifecycle;
mod pull;
mod relay;

pub use error::CoreError;
pub use housekeeping::{spawn as spawn_housekeeping, CachedImage, ExpiredImage, PruneReport};
pub use pull::{Blob, BlobBody, Manifest, PullThrough, TagsPage};

pub use relay::stream as relay_stream;
