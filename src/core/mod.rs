//! The pull-through logic: what to answer from the cache, what to fetch, and how fills are
//! shared. Knows nothing about HTTP clients; talks to `store` and `upstream` only.

mod error;
pub mod fill;
pub mod follow;
mod pull;

pub use error::CoreError;
pub use pull::{Blob, Manifest, PullThrough, TagsPage};
