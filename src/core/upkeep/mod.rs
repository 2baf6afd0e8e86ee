//! Keeping the cache in shape and moving images in and out of it: housekeeping (eviction,
//! lifecycle policies, pins, inventory), prefetch, OCI layouts (import, export), integrity
//! (verify on read, scrub, repair) and lifecycle policies over the shared tier's tag records.
//! Everything here is above the service (`pull`): it uses the service, which knows none of it.

pub(super) mod housekeeping;
pub mod integrity;
pub(super) mod layout;
pub(super) mod patience;
pub(super) mod prefetch;
pub(super) mod shared_prune;
