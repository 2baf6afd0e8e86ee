//! A repository's tag list, paged here: the upstream's whole list is read (following its
//! own `Link` pages, if it paginates), and paged by the client's `n` and `last`.

use super::Manifests;
use crate::core::answers::TagsPage;
use crate::core::error::CoreError;
use crate::oci::{RepoName, Tag, TagsQuery};
use crate::upstream::{Route, UpstreamError};
use bytes::Bytes;
use http::header;

/// Largest tag list accepted from upstream, all its pages together.
const MAX_TAGS_BYTES: usize = 16 * 1024 * 1024;
/// Most upstream tag list pages followed for one request.
const MAX_TAG_PAGES: usize = 256;

impl Manifests {
    /// One page of a repository's tag list (never cached: tag lists change). The upstream's
    /// whole list is read (following its own `Link` pages, if it paginates) and paged here:
    /// upstreams that ignore `n`/`last` or answer unsorted still give spec-conforming pages.
    /// `listed_as` is the repository's name as the client asked for it (with any prefix).
    pub(in crate::core) async fn tags(
        &self,
        route: &Route,
        listed_as: &RepoName,
        query: &TagsQuery,
    ) -> Result<TagsPage, CoreError> {
        let all = self.all_tags(route).await?;
        let page = query.page(all);
        let tags: Vec<&str> = page.tags.iter().map(Tag::as_str).collect();
        let body = serde_json::json!({ "name": listed_as.as_str(), "tags": tags }).to_string();
        Ok(TagsPage { body: Bytes::from(body), next: page.next })
    }

    /// Every tag the upstream lists for a repository, in its order; at most `MAX_TAGS_BYTES`
    /// of listings over at most `MAX_TAG_PAGES` pages. Tags that break the tag grammar cannot
    /// be pulled through this proxy anyway and are left out.
    async fn all_tags(&self, route: &Route) -> Result<Vec<Tag>, CoreError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let registry = &route.upstream.registry;
        let bad = |message: String| {
            CoreError::Upstream(UpstreamError::BadResponse { host: registry.host().to_string(), message })
        };
        let (mut all, mut read, mut skipped) = (Vec::new(), 0usize, 0usize);
        let mut query = TagsQuery::default();
        for _ in 0..MAX_TAG_PAGES {
            let resp = registry
                .tags(&route.name, &query.to_query())
                .await
                .map_err(|e| CoreError::from_upstream(e, CoreError::NameUnknown))?;
            let next = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).and_then(next_link_query);
            let budget = MAX_TAGS_BYTES
                .checked_sub(read)
                .filter(|b| *b > 0)
                .ok_or_else(|| bad(format!("the tag list is longer than {MAX_TAGS_BYTES} bytes")))?;
            let body = registry.read_body(resp, budget, "tag list").await.map_err(CoreError::Upstream)?;
            read += body.len();
            let list: TagList =
                serde_json::from_slice(&body).map_err(|e| bad(format!("tag list is not valid JSON: {e}")))?;
            for t in list.tags.unwrap_or_default() {
                match t.parse::<Tag>() {
                    Ok(t) => all.push(t),
                    Err(_) => skipped += 1,
                }
            }
            // Follow the upstream's pages while they make progress.
            match next {
                Some(n) if n.last.is_some() && n.last != query.last => query = n,
                _ => break,
            }
        }
        if skipped > 0 {
            tracing::debug!(repo = %route.name, skipped, "upstream listed tags that break the tag grammar; left out");
        }
        Ok(all)
    }
}

/// The query string of a `Link: <…?last=x&n=y>; rel="next"` header.
fn next_link_query(link: &str) -> Option<TagsQuery> {
    let (target, params) = link.split_once('>')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let target = target.trim().trim_start_matches('<');
    let (_, query) = target.split_once('?')?;
    TagsQuery::parse(query).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_next_link() {
        assert_eq!(
            next_link_query(r#"</v2/library/nginx/tags/list?last=1.2&n=2>; rel="next""#)
                .map(|q| q.to_query())
                .as_deref(),
            Some("n=2&last=1.2")
        );
        assert_eq!(next_link_query(r#"</v2/x/tags/list?n=2>; rel="prev""#), None);
        assert_eq!(next_link_query("garbage"), None);
    }
}
