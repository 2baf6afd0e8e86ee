//! Manifests and tags: the tier walk for a manifest (memory, disk, shared tier, peers, the
//! upstream), tag answers and their revalidation, the in-memory manifest cache, the image
//! records' pull times, and tag-list paging.

pub(super) mod memory;
pub(super) mod pull_times;
pub(super) mod revalidate;
