//! The pull-through logic: what to answer from the cache, what to fetch, and how fills are
//! shared. Knows nothing about HTTP clients; talks to `store` and `upstream` only.

mod error;
pub mod fill;
pub mod follow;
mod housekeeping;
pub mod integrity;
mod layout;
pub mod lifecycle;
mod memory;
mod patience;
mod peer_blob;
mod pipeline;
mod policy;
mod prefetch;
pub mod progress;
mod pull;
mod pulls;
mod referrers;
mod relay;
mod revalidate;
mod shared_prune;
mod source;
mod vouch;

pub use error::{CoreError, ManifestMismatch, NotCached, SharedOp};
pub use housekeeping::{spawn as spawn_housekeeping, spawn_prefetch, CachedImage, ExpiredImage, PruneReport};
pub use layout::{ImportError, ImportReport};
pub use peer_blob::PeerBlob;
pub use policy::{RepositoryPolicy, TagPolicies, TagPolicy};
pub use prefetch::{Platforms, PrefetchReport};
pub use pull::{Blob, BlobBody, Manifest, PullThrough, TagsPage};
pub use referrers::ReferrersAnswer;
pub use source::{Tier, Via};

pub use relay::Relay;
