//! Image references as operators write them: `registry/repo:tag` or `registry/repo@digest`.

use super::{Digest, Reference, RepoName};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry, as an upstream's `host`.
    pub host: String,
    pub name: RepoName,
    pub reference: Reference,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an image reference like docker.io/library/nginx:1.27 or ghcr.io/org/app@sha256:…: {1}")]
pub struct ImageRefError(String, String);

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |m: &str| ImageRefError(s.to_string(), m.to_string());
        let (host, rest) = s.split_once('/').ok_or_else(|| err("it needs a registry host first"))?;
        let (name, reference) = if let Some((n, d)) = rest.split_once('@') {
            (n, Reference::Digest(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?))
        } else {
            match rest.rsplit_once(':') {
                Some((n, t)) => (n, t.parse().map_err(|e: super::ReferenceError| err(&e.to_string()))?),
                None => (rest, "latest".parse().expect("latest is a valid tag")),
            }
        };
        let name = name.parse::<RepoName>().map_err(|e| err(&e.to_string()))?;
        Ok(ImageRef { host: host.to_ascii_lowercase(), name, reference })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{t}", self.host, self.name),
            Reference::Digest(d) => write!(f, "{}/{}@{d}", self.host, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let r: ImageRef = "docker.io/library/nginx:1.27".parse().unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.to_string().as_str()),
            ("docker.io", "library/nginx", "1.27")
        );
        let r: ImageRef = "localhost:5000/a/b".parse().unwrap();
        assert_eq!((r.host.as_str(), r.reference.to_string().as_str()), ("localhost:5000", "latest"));
        let d = format!("ghcr.io/o/a@sha256:{}", "0".repeat(64));
        assert!(matches!(d.parse::<ImageRef>().unwrap().reference, Reference::Digest(_)));
        assert!("nginx".parse::<ImageRef>().is_err());
        assert!("docker.io/../x:1".parse::<ImageRef>().is_err());
    }
}
