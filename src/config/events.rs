//! `[events]`: CloudEvents sent to webhooks (`[[events.webhook]]`).

use super::error::Invalid;
use super::serde_util::duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[events]`: where events go. No webhook: nothing is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The CloudEvents `source` attribute of every event (a URI-reference naming this
    /// pullthrough, e.g. "//pullthrough/node-7"). Default "/pullthrough".
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { source: default_source(), webhooks: Vec::new() }
    }
}

/// The HTTP binding's content mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// Attributes in `ce-*` headers, the data as the JSON body.
    #[default]
    Binary,
    /// The whole event as one `application/cloudevents+json` document.
    Structured,
}

/// One `[[events.webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http:// or https://.
    pub url: String,
    /// Event kinds sent to it (names as in `events::EventKind::as_str`); default: all.
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub mode: WebhookMode,
    /// Its `webhook` label in metrics; default: the URL's host:port.
    pub name: Option<String>,
    /// Per attempt: connect, send, response headers. Default 5s.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Events waiting to be sent; when full, new events are dropped (counted). Default 1000.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Attempts per event before it is dropped (counted). Default 5.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry, doubling (at most 30s). Default 1s.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: Duration,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The event kinds a webhook may subscribe to: `events::EventKind::as_str` of each (the
/// schema does not import the events module; a test holds the two lists equal).
pub const EVENT_KINDS: [&str; 8] = [
    "fill.completed",
    "fill.failed",
    "blob.corrupt",
    "evicted",
    "expired",
    "upstream.down",
    "upstream.up",
    "ratelimited",
];

fn default_source() -> String {
    "/pullthrough".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_queue() -> usize {
    1000
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl EventsConfig {
    /// Check every webhook: an http(s) URL, known kinds, sane limits, valid headers.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let mut names: Vec<String> = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("events.webhook[{i}].{k}");
            let url = w.url.parse::<http::Uri>().ok().filter(|u| matches!(u.scheme_str(), Some("http" | "https")));
            let Some(authority) = url.as_ref().and_then(|u| u.authority()).filter(|a| !a.host().is_empty()) else {
                return Err(Invalid::rule(
                    key("url"),
                    format!("{:?} is not an http(s) URL like \"http://127.0.0.1:9000/hook\"", w.url),
                ));
            };
            // Each webhook's metrics are labelled by its name: two with one name would mix.
            let name = w.name.clone().unwrap_or_else(|| authority.to_string());
            if let Some(j) = names.iter().position(|n| *n == name) {
                return Err(Invalid::rule(
                    key("name"),
                    format!("{name:?} is also webhook[{j}]'s metrics label; give one of them a distinct `name`"),
                ));
            }
            names.push(name);
            if let Some(kinds) = &w.kinds {
                if kinds.is_empty() {
                    return Err(Invalid::rule(key("kinds"), "empty: leave `kinds` out to receive every kind"));
                }
                for (j, k) in kinds.iter().enumerate() {
                    if !EVENT_KINDS.contains(&k.as_str()) {
                        return Err(Invalid::rule(
                            format!("events.webhook[{i}].kinds[{j}]"),
                            format!("unknown event kind {k:?}; known kinds: {}", EVENT_KINDS.join(", ")),
                        ));
                    }
                }
            }
            if w.queue == 0 || w.attempts == 0 || w.timeout.is_zero() {
                return Err(Invalid::rule(key("queue"), "queue, attempts and timeout must be greater than zero"));
            }
            for (name, value) in &w.headers {
                let valid =
                    http::HeaderName::from_bytes(name.as_bytes()).is_ok() && http::HeaderValue::from_str(value).is_ok();
                let reserved =
                    name.to_ascii_lowercase().starts_with("ce-") || name.eq_ignore_ascii_case("content-type");
                if !valid || reserved {
                    return Err(Invalid::rule(
                        format!("events.webhook[{i}].headers.{name}"),
                        "must be a valid HTTP header, and not a CloudEvents attribute (ce-*) or Content-Type",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, WebhookMode};

    const UP: &str = "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n";

    fn err(events: &str) -> String {
        Config::parse(&format!("{UP}{events}"), "t").unwrap_err().to_string()
    }

    #[test]
    fn webhooks_parse_with_defaults_and_bad_ones_are_named() {
        let c = Config::parse(&format!("{UP}[[events.webhook]]\nurl = \"https://hooks.example/x\"\n"), "t").unwrap();
        let w = &c.events.webhooks[0];
        assert_eq!((w.mode, w.queue, w.attempts, w.kinds.is_none()), (WebhookMode::Binary, 1000, 5, true));
        assert_eq!(c.events.source, "/pullthrough");

        let e = err("[[events.webhook]]\nurl = \"http://h/x\"\nkinds = [\"evicted\", \"fill.done\"]\n");
        assert!(e.contains("events.webhook[0].kinds[1]") && e.contains("\"fill.done\""), "{e}");
        assert!(err("[[events.webhook]]\nurl = \"ftp://h/x\"\n").contains("events.webhook[0].url"));
        assert!(err("[[events.webhook]]\nurl = \"http://h/x\"\nkinds = []\n").contains("events.webhook[0].kinds"));
        assert!(err("[[events.webhook]]\nurl = \"http://h/x\"\nmode = \"json\"\n").contains("mode"));
        assert!(err("[[events.webhook]]\nurl = \"http://h/x\"\nqueue = 0\n").contains("events.webhook[0].queue"));
        let two = "[[events.webhook]]\nurl = \"http://h/a\"\n[[events.webhook]]\nurl = \"http://h/b\"\n";
        assert!(err(two).contains("events.webhook[1].name"));
        assert!(Config::parse(&format!("{UP}{two}name = \"b\"\n"), "t").is_ok());
        assert!(err("[[events.webhook]]\nurl = \"http://h/x\"\nheaders = { ce-type = \"x\" }\n")
            .contains("events.webhook[0].headers.ce-type"));
    }
}
