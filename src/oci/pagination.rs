//! Tag-list pagination (`?n=&last=`), and the query-string decoding it needs.
//!
//! Pagination is done here, over the upstream's whole list, rather than handed to the
//! upstream: some ignore `n` and `last` and answer unsorted (Debian's docker-registry 2.8.2
//! does), and the spec wants lexical order, exactly `n` tags while more remain, and a `Link`
//! to the next page.

use super::reference::Tag;

/// The validated `n`/`last` of a tag-list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagsQuery {
    pub n: Option<u32>,
    pub last: Option<Tag>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagsQueryError {
    #[error("n must be a non-negative integer")]
    BadN,
    #[error("last must be a valid tag")]
    BadLast,
}

impl TagsQuery {
    /// From a query string; parameters other than `n` and `last` are ignored.
    pub fn parse(query: &str) -> Result<TagsQuery, TagsQueryError> {
        let mut q = TagsQuery::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "n" => q.n = Some(v.parse().map_err(|_| TagsQueryError::BadN)?),
                "last" => q.last = Some(v.parse().map_err(|_| TagsQueryError::BadLast)?),
                _ => {}
            }
        }
        Ok(q)
    }

    /// Canonical query string (tags need no escaping: their grammar is URL-safe).
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.n {
            parts.push(format!("n={n}"));
        }
        if let Some(l) = &self.last {
            parts.push(format!("last={l}"));
        }
        parts.join("&")
    }
}

/// One page of a tag list, and the query for the next page when tags remain after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagsPageOf {
    pub tags: Vec<Tag>,
    pub next: Option<TagsQuery>,
}

impl TagsQuery {
    /// The page this query asks for out of `all` (any order, duplicates allowed): lexical
    /// (byte-wise, Go's `sort.Strings`) order, the tags after `last`, at most `n` of them.
    /// `n = 0` is an empty page with no next one, as the spec requires.
    pub fn page(&self, mut all: Vec<Tag>) -> TagsPageOf {
        all.sort_unstable();
        all.dedup();
        let start = match &self.last {
            Some(last) => all.partition_point(|t| t <= last),
            None => 0,
        };
        let mut tags = all.split_off(start);
        let Some(n) = self.n.map(|n| n as usize) else {
            return TagsPageOf { tags, next: None };
        };
        if n == 0 {
            return TagsPageOf { tags: Vec::new(), next: None };
        }
        let more = tags.len() > n;
        tags.truncate(n);
        let next = match (more, tags.last()) {
            (true, Some(l)) => Some(TagsQuery { n: Some(n as u32), last: Some(l.clone()) }),
            _ => None,
        };
        TagsPageOf { tags, next }
    }
}

/// Decode `a=b&c=d` (percent-escapes and `+`); malformed escapes are kept literally.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of `key` in a query string, decoded as `query_pairs` does.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query_pairs(query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let q = TagsQuery::parse("last=v1.2&n=10&x=y").unwrap();
        assert_eq!(q.n, Some(10));
        assert_eq!(q.to_query(), "n=10&last=v1.2");
        assert_eq!(TagsQuery::parse("n=-1"), Err(TagsQueryError::BadN));
        assert_eq!(TagsQuery::parse("last=..%2F"), Err(TagsQueryError::BadLast));
        assert_eq!(TagsQuery::parse("").unwrap(), TagsQuery::default());
    }

    fn tags(v: &[&str]) -> Vec<Tag> {
        v.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn pages_an_unsorted_list() {
        let all = tags(&["v2", "B", "a", "v10", "v1", "a", "_x"]);
        let q = |s: &str| TagsQuery::parse(s).unwrap();
        // Byte-wise order: uppercase, then `_`, then lowercase; duplicates once.
        assert_eq!(q("").page(all.clone()).tags, tags(&["B", "_x", "a", "v1", "v10", "v2"]));
        assert_eq!(q("").page(all.clone()).next, None);
        let first = q("n=2").page(all.clone());
        assert_eq!(first.tags, tags(&["B", "_x"]));
        assert_eq!(first.next.as_ref().map(TagsQuery::to_query).as_deref(), Some("n=2&last=_x"));
        let second = first.next.unwrap().page(all.clone());
        assert_eq!(second.tags, tags(&["a", "v1"]));
        let third = second.next.unwrap().page(all.clone());
        assert_eq!((third.tags, third.next), (tags(&["v10", "v2"]), None));
        // `last` alone: everything after it; a `last` that is not in the list still orders.
        assert_eq!(q("last=v1").page(all.clone()).tags, tags(&["v10", "v2"]));
        assert_eq!(q("last=c").page(all.clone()).tags, tags(&["v1", "v10", "v2"]));
        // n = 0: empty, and no next page.
        assert_eq!(q("n=0").page(all.clone()), TagsPageOf { tags: vec![], next: None });
        // Exactly n left: no next page.
        assert_eq!(q("n=2&last=v1").page(all).next, None);
    }

    #[test]
    fn decodes_pairs() {
        assert_eq!(
            query_pairs("ns=docker.io&a=%41+b&flag"),
            [("ns".to_string(), "docker.io".to_string()), ("a".into(), "A b".into()), ("flag".into(), "".into())]
        );
    }
}
