//! Repository names (`library/nginx`, `org/team/app`), validated by the distribution grammar.

use std::fmt;
use std::str::FromStr;

/// A repository name: `/`-separated components, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`,
/// at most 255 characters. The grammar rules out `.`, `..`, empty components and any
/// character that could escape a directory, so a `RepoName` is safe to use as a relative path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than 255 characters")]
    TooLong,
    #[error("repository name component {0:?} is invalid: components are lowercase letters and digits, separated by '.', '_', '__' or dashes")]
    BadComponent(String),
}

pub const MAX_NAME_LEN: usize = 255;

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first component and the rest, if there is more than one component.
    pub fn split_first(&self) -> Option<(&str, RepoName)> {
        let (first, rest) = self.0.split_once('/')?;
        Some((first, RepoName(rest.to_string())))
    }

    /// `prefix/self`, for Docker Hub's implicit `library/`.
    pub fn with_prefix(&self, prefix: &str) -> Result<RepoName, NameError> {
        format!("{prefix}/{}", self.0).parse()
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-"; always followed by alnum
        // (guaranteed by the last-byte check plus this loop).
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i >= b.len() || !alnum(b[i]) || i == start {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for c in s.split('/') {
            if !valid_component(c) {
                return Err(NameError::BadComponent(c.chars().take(64).collect()));
            }
        }
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in
            ["nginx", "library/nginx", "org/team/app", "a", "docker.io/library/nginx", "my-app__x/a.b_c", "a--b", "0"]
        {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "", "..", "a/../b", "a/./b", "/a", "a/", "a//b", "A", "a b", "a/.b", "a.", "-a", "a___b", "a_-b", "a%2fb",
            "a\\b", "a\0b",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert_eq!("a/".repeat(200).trim_end_matches('/').parse::<RepoName>(), Err(NameError::TooLong));
    }

    #[test]
    fn splits_first_component() {
        let n: RepoName = "docker.io/library/nginx".parse().unwrap();
        let (first, rest) = n.split_first().unwrap();
        assert_eq!(first, "docker.io");
        assert_eq!(rest.as_str(), "library/nginx");
        assert!("nginx".parse::<RepoName>().unwrap().split_first().is_none());
    }
}
