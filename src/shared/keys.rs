//! Object keys in the bucket. Every component comes from a validated value (`Digest`,
//! `RepoName`, `Tag`, a configured upstream host), so no key can escape the prefix.

use crate::oci::{Digest, RepoName, Tag};

pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }

    pub fn blob(&self, d: &Digest) -> String {
        format!("{}blobs/sha256/{}", self.prefix, d.hex())
    }

    pub fn tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> String {
        format!("{}tags/{upstream}/{name}/_tags/{tag}", self.prefix)
    }

    pub fn probe(&self, node: &str) -> String {
        format!("{}_probe/{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_prefix() {
        let k = Keys::new("cache/");
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(k.blob(&d), format!("cache/blobs/sha256/{}", "ab".repeat(32)));
        let name: RepoName = "library/nginx".parse().unwrap();
        let tag: Tag = "1.27".parse().unwrap();
        assert_eq!(k.tag("docker.io", &name, &tag), "cache/tags/docker.io/library/nginx/_tags/1.27");
        assert_eq!(Keys::new("").probe("n1"), "_probe/n1");
    }
}
