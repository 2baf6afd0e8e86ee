//! Blobs: the single-flight fill (`fill`), its followers (`follow`), the sources a fill
//! reads (`source`), the one pipeline every body goes through (`pipeline`), the uncached
//! relay (`relay`), and the entry points the service offers http (`handle`).

pub mod fill;
pub mod follow;
mod handle;
pub(super) mod pipeline;
pub mod relay;
pub(super) mod source;

pub use handle::{Blob, BlobBody};
