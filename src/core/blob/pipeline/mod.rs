//! The one pipeline a blob body goes through, whichever tier it comes from and whether or
//! not it is cached:
//!
//! ```text
//! SourceBody ──► VerifiedBody ──► (fill) disk writer ──► Window ──► every follower
//!  (per-chunk      │  (hold back the last chunk               (recent chunks in memory;
//!   timeout)       ▼   until the digest verifies)              a lagging follower reads
//!              HashStage (own thread)                          the temp file instead)
//! ```
//!
//! A chunk is one reference-counted `Bytes` from the network to the socket of every client:
//! the hasher, the disk writer and the followers share it, none copies it. The uncached
//! relay reads the same `VerifiedBody` and hands its chunks straight to its one client, and
//! verify on read (`core::integrity`) reads a cached blob back through it.

mod hash;
mod verify;
mod window;
mod writer;

pub use verify::{Mismatch, VerifiedBody};
pub use window::Window;
pub use writer::DiskWriter;
