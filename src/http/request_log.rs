//! The request log: one line per client request, written when its response body ends, so
//! it carries both the time to the response head (`headers_ms`) and to the last byte
//! (`ms`), the body bytes actually sent, and how the body ended.

use super::outcome::CacheOutcome;
use super::router::EndpointKind;
use super::tracked::{Ending, OnEnd};
use http::{Method, Uri};
use tokio::time::Instant;

/// What the line says about a request, gathered by the time its response head is ready.
pub struct RequestLog {
    pub method: Method,
    pub uri: Uri,
    pub kind: EndpointKind,
    pub upstream: Option<String>,
    pub status: u16,
    pub cache: Option<CacheOutcome>,
    pub start: Instant,
    pub headers_at: Instant,
}

impl OnEnd for RequestLog {
    fn on_end(self, how: Ending, sent: u64, at: Instant) {
        tracing::info!(
            method = %self.method,
            path = self.uri.path(),
            query = self.uri.query().unwrap_or(""),
            kind = self.kind.as_str(),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            status = self.status,
            bytes = sent,
            cache = self.cache.map_or("-", CacheOutcome::as_str),
            headers_ms = self.headers_at.duration_since(self.start).as_millis() as u64,
            ms = at.duration_since(self.start).as_millis() as u64,
            body = how.as_str(),
            "request"
        );
    }
}
