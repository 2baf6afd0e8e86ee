//! Blobs: the single-flight fill (`fill`), its followers (`follow`), the sources a fill
//! reads (`source`, in the order `tiers` asks them), resumed at the byte when one breaks
//! off (`resume`, the answers checked by `range`), the one pipeline every body goes through
//! (`pipeline`), the uncached relay (`relay`), and the entry points the service offers http
//! (`handle`; to peer nodes, `peer`).

pub mod fill;
pub mod follow;
mod handle;
mod peer;
pub(super) mod pipeline;
mod range;
pub mod relay;
mod resume;
pub(super) mod source;
mod tiers;

pub use handle::Blob;
pub use peer::PeerBlob;
pub use resume::ResumePolicy;
