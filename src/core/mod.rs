//! The pull-through logic: what to answer from the cache, what to fetch, and how fills are
//! shared. Knows nothing about HTTP clients; talks to `store` and `upstream` only.

mod blob;
mod error;
mod housekeeping;
pub mod integrity;
mod layout;
pub mod lifecycle;
mod memory;
mod patience;
mod policy;
mod prefetch;
pub mod progress;
mod pull;
mod pulls;
mod referrers;
mod revalidate;
mod shared_prune;
mod vouch;

pub use blob::fill::FillError;
pub use blob::source::{Tier, Via};
pub(crate) use blob::{fill, follow};
pub use blob::{Blob, ResumePolicy};
pub use error::{CoreError, ManifestMismatch, NotCached, SharedOp};
pub use housekeeping::{spawn as spawn_housekeeping, spawn_prefetch, CachedImage, ExpiredImage, PruneReport};
pub use layout::{ImportError, ImportReport};
pub use policy::{RepositoryPolicy, TagPolicies, TagPolicy};
pub use prefetch::{Platforms, PrefetchReport};
pub use pull::{Manifest, PullThrough, TagsPage};
pub use referrers::ReferrersAnswer;

pub use blob::relay::Relay;
