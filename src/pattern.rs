//! Glob patterns for repository names and tags: `*` matches any run of characters
//! (including `/`), `?` one character; everything else is literal. The same syntax as ECR's
//! `tagPatternList`, used for immutable tags, repository rules, and lifecycle selections.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: &str) -> Pattern {
        Pattern(p.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative wildcard match with single backtrack point: O(len(p) * len(s)) worst case,
    /// no recursion, so hostile patterns cannot blow the stack.
    pub fn matches(&self, s: &str) -> bool {
        let (p, s) = (self.0.as_bytes(), s.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Pattern::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| Pattern::new(p).matches(s);
        assert!(m("v*", "v1.2.3"));
        assert!(m("*", ""));
        assert!(m("library/*", "library/nginx"));
        assert!(m("*/app", "org/team/app"));
        assert!(m("prod-*-east", "prod-x-y-east"));
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v10"));
        assert!(!m("v*", "latest"));
        assert!(!m("", "a"));
        assert!(m(&"*".repeat(50), &"a".repeat(1000)));
        assert!(!m(&format!("{}b", "*a".repeat(20)), &"a".repeat(200)));
    }
}
