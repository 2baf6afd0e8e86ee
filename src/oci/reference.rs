//! Manifest references: a tag or a digest.

use super::digest::{Digest, DigestError};
use std::fmt;
use std::str::FromStr;

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`. It never starts with `.` or `-`, so it is safe
/// as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tag must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")]
pub struct TagError;

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Tag(s.to_string()))
        } else {
            Err(TagError)
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What follows `/manifests/`: a tag, or a digest when it contains `:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("v1.2.3-rc_1".parse::<Tag>().is_ok());
        assert!("_x".parse::<Tag>().is_ok());
        assert!("x".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", ".", "..", "-x", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(ReferenceError::Digest(_))));
    }
}
