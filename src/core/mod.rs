//! The pull-through logic: what to answer from the cache, what to fetch, and how fills are
//! shared. Knows nothing about HTTP clients; talks to `store` and `upstream` only.

mod answers;
mod blob;
mod error;
mod flight;
pub mod lifecycle;
mod manifest;
mod policy;
pub mod progress;
mod pull;
mod rate;
mod referrers;
mod tiers;
mod upkeep;
mod vouch;

pub use answers::{Manifest, TagsPage};
pub use blob::source::{Tier, Via};
pub use blob::{fill, follow, Blob, BlobBody};
pub use error::{CoreError, ManifestMismatch, NotCached, SharedOp};
pub use policy::{RepositoryPolicy, TagPolicies, TagPolicy};
pub use pull::PullThrough;
pub use referrers::ReferrersAnswer;
pub use upkeep::housekeeping::{spawn as spawn_housekeeping, spawn_prefetch, CachedImage, ExpiredImage, PruneReport};
pub use upkeep::integrity;
pub use upkeep::layout::{ImportError, ImportReport};
pub use upkeep::prefetch::{Platforms, PrefetchReport};

pub use blob::relay::Relay;
