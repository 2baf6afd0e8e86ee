//! Images as an operator writes them on the command line and in the configuration, before
//! they are routed to an upstream: `nginx`, `library/app:v2`, `docker-hub/nginx:1.27`,
//! `ghcr.io/org/app@sha256:…`, `127.0.0.1:5000/team/app:v1`. Which upstream a name means
//! is the routing's decision (`upstream::route`), the same one a client's path gets; here
//! only the reference (tag or digest) is split off and checked.

use super::{Digest, Reference, Tag};
use std::fmt;
use std::str::FromStr;

/// An image reference as written: a path (the registry or prefix, if any, and the
/// repository) and a tag or digest (`latest` when neither is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// Everything before the tag or digest, unchecked: its first component may be a
    /// registry host with a port, which no repository name may hold.
    pub path: String,
    pub reference: Reference,
}

/// A written image whose tag or digest is invalid, or that names nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an image like nginx, docker.io/library/nginx:1.27 or ghcr.io/org/app@sha256:…: {1}")]
pub struct WrittenImageError(String, String);

impl FromStr for WrittenImage {
    type Err = WrittenImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |m: &str| WrittenImageError(s.to_string(), m.to_string());
        let (path, reference) = match s.split_once('@') {
            Some((p, d)) => (p, Reference::Digest(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?)),
            // A colon after the last slash starts a tag; one before it is a registry's port.
            None => match s.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((p, t)) => (p, Reference::Tag(t.parse::<Tag>().map_err(|e| err(&e.to_string()))?)),
                None => (s, Reference::Tag("latest".parse().expect("latest is a valid tag"))),
            },
        };
        if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
            return Err(err("it names no repository"));
        }
        Ok(WrittenImage { path: path.to_string(), reference })
    }
}

impl fmt::Display for WrittenImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.path),
            Reference::Digest(d) => write!(f, "{}@{d}", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, String) {
        let w: WrittenImage = s.parse().unwrap();
        (w.path, w.reference.to_string())
    }

    #[test]
    fn splits_the_reference_off_and_leaves_the_path_to_routing() {
        assert_eq!(split("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split("library/app:v2"), ("library/app".into(), "v2".into()));
        assert_eq!(split("docker-hub/nginx:1.27"), ("docker-hub/nginx".into(), "1.27".into()));
        assert_eq!(split("127.0.0.1:5000/team/app"), ("127.0.0.1:5000/team/app".into(), "latest".into()));
        assert_eq!(split("127.0.0.1:5000/team/app:v1"), ("127.0.0.1:5000/team/app".into(), "v1".into()));
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(split(&format!("ghcr.io/o/a@{d}")), ("ghcr.io/o/a".into(), d));
        // Uppercase is the path's problem (routing names it); it is kept as written.
        assert_eq!(split("Library/app:v1"), ("Library/app".into(), "v1".into()));
        for bad in ["", ":v1", "app:", "app:bad tag", "app@sha256:12", "/app", "app/"] {
            assert!(bad.parse::<WrittenImage>().is_err(), "{bad:?} parsed");
        }
    }
}
