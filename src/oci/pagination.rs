//! Tag-list pagination (`?n=&last=`), and the query-string decoding it needs.

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

    #[test]
    fn decodes_pairs() {
        assert_eq!(
            query_pairs("ns=docker.io&a=%41+b&flag"),
            [("ns".to_string(), "docker.io".to_string()), ("a".into(), "A b".into()), ("flag".into(), "".into())]
        );
    }
}
