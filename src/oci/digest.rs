//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), the keys of the cache.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

/// The digest algorithms this proxy fetches and verifies: the two the OCI image spec
/// registers. Anything else is refused (`400 DIGEST_INVALID`) rather than proxied unverified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex part.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];
}

/// A validated content digest: a supported algorithm and its lowercase hex. The on-disk
/// layout (`blobs/<algorithm>/ab/<hex>`) is keyed by it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// `algorithm.hex_len()` lowercase hex characters; never anything else (checked in
    /// `from_str`).
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must look like sha256:<64 lowercase hex characters> (or sha512:<128>)")]
    Malformed,
    #[error("digest algorithm {0:?} is not supported; only sha256 and sha512 are")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The hex characters after `<algorithm>:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The two-character fan-out directory used on disk.
    pub fn shard(&self) -> &str {
        &self.hex[..2]
    }

    /// The digest whose hex part is a file name written by `hex()`: the algorithm follows
    /// from the length, which differs between the supported ones.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let algorithm = Algorithm::ALL.into_iter().find(|a| a.hex_len() == hex.len())?;
        format!("{}:{hex}", algorithm.as_str()).parse().ok()
    }

    /// sha256 digest of an in-memory buffer (manifests; never whole blobs on async threads).
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::of_bytes_with(Algorithm::Sha256, bytes)
    }

    /// Digest of an in-memory buffer with `algorithm`.
    pub fn of_bytes_with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// Whether `bytes` hash to this digest (with its own algorithm).
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        Digest::of_bytes_with(self.algorithm, bytes) == *self
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let Some(algorithm) = Algorithm::ALL.into_iter().find(|a| a.as_str() == algo) else {
            // The algorithm component grammar is [a-z0-9]+([+._-][a-z0-9]+)*; anything else
            // is malformed rather than merely unsupported.
            let valid_algo = !algo.is_empty()
                && algo.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if valid_algo {
                DigestError::UnsupportedAlgorithm(algo.to_string())
            } else {
                DigestError::Malformed
            });
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::Malformed);
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn to_hex(out: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(out.len() * 2);
    for b in out {
        hex.push(HEX[(b >> 4) as usize] as char);
        hex.push(HEX[(b & 15) as usize] as char);
    }
    hex
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
        Digest { algorithm: Algorithm::Sha256, hex: to_hex(&self.0.finalize()) }
    }
}

/// Incremental hashing with a digest's own algorithm: what verifies content fetched by that
/// digest.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256Hasher),
    Sha512(Box<Sha512>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256Hasher::new()),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(Sha512::new())),
        }
    }

    /// A hasher for checking content against `d`.
    pub fn for_digest(d: &Digest) -> Hasher {
        Hasher::new(d.algorithm)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => h.finish(),
            Hasher::Sha512(h) => Digest { algorithm: Algorithm::Sha512, hex: to_hex(&h.finalize()) },
        }
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
        assert_eq!(Digest::from_hex(d.hex()), Some(d.clone()));
        assert!(d.verifies(b""));
        // sha512 of the empty string.
        let e = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
        let d: Digest = e.parse().unwrap();
        assert_eq!((d.to_string().as_str(), d.algorithm(), d.shard()), (e, Algorithm::Sha512, "cf"));
        assert_eq!(Digest::of_bytes_with(Algorithm::Sha512, b""), d);
        assert!(d.verifies(b"") && !d.verifies(b"x"));
        assert_eq!(Digest::from_hex(d.hex()), Some(d.clone()));
        let mut h = Hasher::for_digest(&d);
        h.update(b"");
        assert_eq!(h.finish(), d);
        assert_eq!(Digest::from_hex("abc"), None);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256:",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
            // A sha256-length hex under sha512, and the other way round.
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:00",
            "md5",
            ":abc",
        ] {
            assert_eq!(bad.parse::<Digest>(), Err(DigestError::Malformed), "{bad}");
        }
        assert!(matches!(
            "sha384:00".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(a)) if a == "sha384"
        ));
        assert!(matches!("md5:00".parse::<Digest>(), Err(DigestError::UnsupportedAlgorithm(_))));
    }
}
