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
        format!("{}blobs/{}/{}", self.prefix, d.algorithm().as_str(), d.hex())
    }

    pub fn tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> String {
        format!("{}tags/{upstream}/{name}/_tags/{tag}", self.prefix)
    }

    pub fn probe(&self, node: &str) -> String {
        format!("{}_probe/{node}", self.prefix)
    }
}

/// `<upstream>/<repo>/_tags/<tag>` (a tag key without its prefix) as typed values.
pub fn parse_tag(rest: &str) -> Option<(String, RepoName, Tag)> {
    let (upstream, rest) = rest.split_once('/')?;
    let (repo, tag) = rest.rsplit_once("/_tags/")?;
    if upstream.is_empty() || upstream.contains(['\\', ' ']) {
        return None;
    }
    Some((upstream.to_string(), repo.parse().ok()?, tag.parse().ok()?))
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
        let key = k.tag("127.0.0.1:5000", &name, &tag);
        let parsed = parse_tag(key.strip_prefix("cache/tags/").unwrap()).unwrap();
        assert_eq!(parsed, ("127.0.0.1:5000".to_string(), name, tag));
        assert_eq!(parse_tag("docker.io/library/nginx/1.27"), None);
        assert_eq!(parse_tag("docker.io/../x/_tags/1"), None);
    }
}
