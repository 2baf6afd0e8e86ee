//! Content digests (`sha256:<64 hex>`), the keys of the cache.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A validated sha256 content digest. Only sha256 is accepted: it is what every registry
/// this proxy talks to uses, and the on-disk layout (`blobs/sha256/ab/<hex>`) is keyed by it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// 64 lowercase hex characters; never anything else (checked in `from_str`).
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must look like sha256:<64 lowercase hex characters>")]
    Malformed,
    #[error("digest algorithm {0:?} is not supported; only sha256 is")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The two-character fan-out directory used on disk.
    pub fn shard(&self) -> &str {
        &self.hex[..2]
    }

    /// Digest of an in-memory buffer (manifests; never whole blobs on async threads).
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        let mut h = Sha256Hasher::new();
        h.update(bytes);
        h.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if algo != "sha256" {
            // The algorithm component grammar is [a-z0-9]+([+._-][a-z0-9]+)*; anything else
            // is malformed rather than merely unsupported.
            let valid_algo = !algo.is_empty()
                && algo.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if valid_algo {
                DigestError::UnsupportedAlgorithm(algo.to_string())
            } else {
                DigestError::Malformed
            });
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::Malformed);
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Incremental sha256 that yields a `Digest`. sha2 picks the CPU's SHA extensions at run time.
#[derive(Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let out = self.0.finalize();
        let mut hex = String::with_capacity(64);
        for b in out {
            hex.push(HEX[(b >> 4) as usize] as char);
            hex.push(HEX[(b & 15) as usize] as char);
        }
        Digest { hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.shard(), "e3");
        assert_eq!(Digest::of_bytes(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256:",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
            "md5",
            ":abc",
        ] {
            assert_eq!(bad.parse::<Digest>(), Err(DigestError::Malformed), "{bad}");
        }
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(a)) if a == "sha512"
        ));
    }
}
