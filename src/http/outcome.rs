//! What a request's answer says about the cache and the upstream, beyond its status: what
//! the request log and the cache metrics record.

/// Whether a request was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache.
    Hit,
    /// Fetched (and cached) now.
    Miss,
    /// Relayed without caching: the cache had no room.
    Uncached,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Uncached => "uncached",
        }
    }

    /// `Hit` when the answer came from the cache, else `Miss`.
    pub fn hit_if(cached: bool) -> CacheOutcome {
        if cached {
            CacheOutcome::Hit
        } else {
            CacheOutcome::Miss
        }
    }
}

/// What the access log and the metrics record about a request beyond its status. Handlers
/// fill it in as they go, so an error answer still names the upstream it came from.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `None` where no cache is involved (the base endpoint, tags, errors before a lookup).
    pub cache: Option<CacheOutcome>,
    /// The upstream the request was routed to, once routing succeeded.
    pub upstream: Option<String>,
}

impl Outcome {
    pub fn routed(&mut self, upstream: &str) {
        self.upstream = Some(upstream.to_string());
    }

    pub fn cache(&mut self, c: CacheOutcome) {
        self.cache = Some(c);
    }
}
