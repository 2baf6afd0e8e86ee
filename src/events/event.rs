//! One event: what happened, to what, when, with typed details. Built where it happens with
//! a few chained setters, e.g.
//! `Event::new(EventKind::FillCompleted).upstream(host).repository(&name).digest(&d).size(n)`.

use super::kind::EventKind;
use crate::oci::{Digest, RepoName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Something that happened, for the webhooks.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// Unique per process run: the CloudEvents `id` (the same event sent to two webhooks
    /// keeps its id, so a receiver behind both can deduplicate).
    pub id: String,
    pub time: SystemTime,
    /// The upstream's configured host (e.g. `docker.io`).
    pub upstream: Option<String>,
    pub repository: Option<RepoName>,
    pub digest: Option<Digest>,
    /// Tags of an expired image.
    pub tags: Vec<String>,
    /// Bytes: of the blob filled, evicted or found corrupt.
    pub size: Option<u64>,
    /// Where the bytes came from (`local`, `shared`, `peer`, `upstream`).
    pub tier: Option<&'static str>,
    /// Why it failed: the error and its whole cause chain, as text.
    pub cause: Option<String>,
    /// How long the upstream asked us to wait (rate limits).
    pub retry_after: Option<Duration>,
}

/// This run's id prefix (start time in ms, hex) and a counter: ids stay unique across restarts.
static RUN: LazyLock<String> =
    LazyLock::new(|| format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()));
static SEQ: AtomicU64 = AtomicU64::new(1);

impl Event {
    pub fn new(kind: EventKind) -> Event {
        Event {
            kind,
            id: format!("{}-{}", *RUN, SEQ.fetch_add(1, Ordering::Relaxed)),
            time: SystemTime::now(),
            upstream: None,
            repository: None,
            digest: None,
            tags: Vec::new(),
            size: None,
            tier: None,
            cause: None,
            retry_after: None,
        }
    }

    pub fn upstream(mut self, host: &str) -> Event {
        self.upstream = Some(host.to_string());
        self
    }

    pub fn repository(mut self, name: &RepoName) -> Event {
        self.repository = Some(name.clone());
        self
    }

    pub fn digest(mut self, digest: &Digest) -> Event {
        self.digest = Some(digest.clone());
        self
    }

    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Event {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    pub fn size(mut self, bytes: u64) -> Event {
        self.size = Some(bytes);
        self
    }

    pub fn tier(mut self, tier: &'static str) -> Event {
        self.tier = Some(tier);
        self
    }

    /// The cause of a failure, with its whole source chain.
    pub fn cause(mut self, error: &dyn std::error::Error) -> Event {
        self.cause = Some(crate::error_text::error_chain(error));
        self
    }

    /// A cause that is not an error value (e.g. "content hashes to sha256:…").
    pub fn cause_text(mut self, text: impl Into<String>) -> Event {
        self.cause = Some(text.into());
        self
    }

    pub fn retry_after(mut self, wait: Duration) -> Event {
        self.retry_after = Some(wait);
        self
    }

    /// The CloudEvents `subject`: the most specific thing the event is about —
    /// `upstream/repository@digest`, `upstream/repository`, a digest, or an upstream.
    pub fn subject(&self) -> Option<String> {
        let place = match (&self.upstream, &self.repository) {
            (Some(u), Some(r)) => Some(format!("{u}/{r}")),
            (None, Some(r)) => Some(r.to_string()),
            (Some(u), None) => Some(u.clone()),
            (None, None) => None,
        };
        match (place, &self.digest) {
            (Some(p), Some(d)) if self.repository.is_some() => Some(format!("{p}@{d}")),
            (_, Some(d)) => Some(d.to_string()),
            (p, None) => p,
        }
    }

    /// The event's `data`: its typed details as a JSON object (absent fields left out).
    pub fn data(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_string(), v);
        };
        if let Some(u) = &self.upstream {
            put("upstream", u.as_str().into());
        }
        if let Some(r) = &self.repository {
            put("repository", r.as_str().into());
        }
        if let Some(d) = &self.digest {
            put("digest", d.to_string().into());
        }
        if !self.tags.is_empty() {
            put("tags", self.tags.clone().into());
        }
        if let Some(s) = self.size {
            put("size", s.into());
        }
        if let Some(t) = self.tier {
            put("tier", t.into());
        }
        if let Some(c) = &self.cause {
            put("cause", c.as_str().into());
        }
        if let Some(w) = self.retry_after {
            put("retry_after_seconds", w.as_secs().into());
        }
        serde_json::Value::Object(m)
    }

    /// The CloudEvents `time` attribute (RFC 3339, UTC).
    pub fn time_rfc3339(&self) -> String {
        humantime::format_rfc3339_millis(self.time).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_the_most_specific_thing() {
        let d = Digest::of_bytes(b"x");
        let name: RepoName = "library/nginx".parse().unwrap();
        let e = Event::new(EventKind::FillCompleted).upstream("docker.io").repository(&name).digest(&d);
        assert_eq!(e.subject().unwrap(), format!("docker.io/library/nginx@{d}"));
        assert_eq!(Event::new(EventKind::Evicted).digest(&d).subject().unwrap(), d.to_string());
        assert_eq!(Event::new(EventKind::UpstreamDown).upstream("ghcr.io").subject().unwrap(), "ghcr.io");
        assert_ne!(Event::new(EventKind::Evicted).id, Event::new(EventKind::Evicted).id);
    }
}
