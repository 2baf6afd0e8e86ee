//! The OCI vocabulary: typed values for what crosses the wire.
//!
//! Everything that arrives from a client or an upstream as a string is parsed here into a type
//! that can only hold a valid value (`Digest`, `RepoName`, `Tag`, `Reference`), so the layers
//! below never re-validate and never build a file path from an unchecked string.

mod digest;
mod image_ref;
pub mod manifest;
pub mod media;
mod name;
mod pagination;
mod reference;
pub mod referrers;
mod written_image;

pub use digest::{Algorithm, Digest, DigestError, Hasher, Sha256Hasher};
pub use image_ref::{ImageRef, ImageRefError};
pub use name::{NameError, RepoName};
pub use pagination::{query_pairs, query_param, TagsPageOf, TagsQuery, TagsQueryError};
pub use reference::{Reference, ReferenceError, Tag, TagError};
pub use written_image::{WrittenImage, WrittenImageError};

/// How pullthrough names itself on the wire (`User-Agent` of every request it makes to
/// upstreams, peers and webhooks), so operators can tell who is calling. Here, at the bottom,
/// because every layer that talks to another server sends it.
pub const USER_AGENT: &str = concat!("pullthrough/", env!("CARGO_PKG_VERSION"));
