//! One webhook: its settings, and the task that delivers its queue in order, retrying each
//! event with exponential backoff a bounded number of times before dropping it (counted).

use super::cloudevent;
use super::event::Event;
use super::kind::{EventKind, Kinds};
use crate::metrics::METRICS;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The HTTP binding's content mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes as `ce-*` headers, the event's data as the JSON body.
    Binary,
    /// The whole event as one `application/cloudevents+json` body.
    Structured,
}

/// One `[[events.webhook]]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// http:// or https://.
    pub url: Uri,
    /// The `webhook` label of its metrics (the URL's host and port: never its path or query,
    /// which may carry a token).
    pub name: String,
    pub kinds: Kinds,
    pub mode: Mode,
    /// Per attempt: connect, send, and the response's headers.
    pub timeout: Duration,
    /// Events waiting to be sent; beyond it the newest are dropped.
    pub queue: usize,
    /// Attempts per event (at least 1).
    pub max_attempts: u32,
    /// The wait before the first retry, doubling up to [`MAX_BACKOFF`].
    pub backoff: Duration,
    /// Sent with every request (e.g. `Authorization`).
    pub headers: HeaderMap,
}

/// Retries never wait longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Response bodies are read (so the connection can be reused) up to this much.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why an event was not delivered to a webhook.
#[derive(Debug, Clone, Copy)]
pub(super) enum DropReason {
    /// Its queue was full when the event happened.
    QueueFull,
    /// The delivery task is gone (the runtime is shutting down).
    Closed,
    /// Every attempt failed.
    Undelivered,
    /// The receiver refused it with a status retrying will not change (4xx).
    Rejected,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Closed => "closed",
            DropReason::Undelivered => "undelivered",
            DropReason::Rejected => "rejected",
        }
    }
}

pub(super) fn count_drop(webhook: &str, kind: EventKind, reason: DropReason) {
    METRICS.events_dropped.with_label_values(&[webhook, kind.as_str(), reason.as_str()]).inc();
}

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Status(StatusCode),
}

impl DeliveryError {
    /// Whether another attempt may succeed: network trouble, 5xx, 408 and 429 may pass;
    /// other 4xx say the receiver will not take this event.
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Timeout(_) | DeliveryError::Send(_) => true,
            DeliveryError::Status(s) => {
                s.is_server_error() || *s == StatusCode::REQUEST_TIMEOUT || *s == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<crate::egress::Connector<hyper_util::client::legacy::connect::HttpConnector>>,
    Full<Bytes>,
>;

fn client(timeout: Duration) -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    http.set_nodelay(true);
    // Through the environment's egress proxy: webhook receivers are the operator's choice.
    let anywhere: crate::egress::TargetCheck = std::sync::Arc::new(|_| Ok(()));
    let http = crate::egress::Connector::new(http, &crate::egress::Egress::Environment, timeout, anywhere);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls_client::config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(https)
}

/// Deliver `queue` to the webhook, one event at a time (so in order), until every sender
/// is gone.
pub(super) async fn deliver(
    w: WebhookSettings,
    source: Arc<str>,
    mut queue: mpsc::Receiver<Arc<Event>>,
    pending: Arc<AtomicUsize>,
) {
    let client = client(w.timeout);
    while let Some(event) = queue.recv().await {
        deliver_one(&w, &client, &source, &event).await;
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Send one event, retrying with backoff; count it as sent or dropped.
async fn deliver_one(w: &WebhookSettings, client: &Client, source: &str, event: &Event) {
    let mut wait = w.backoff;
    let mut attempt = 1;
    loop {
        let req = cloudevent::request(w.mode, &w.url, &w.headers, source, event);
        match send(client, req, w.timeout).await {
            Ok(()) => {
                METRICS.events_sent.with_label_values(&[&w.name, event.kind.as_str()]).inc();
                return;
            }
            Err(e) if e.retryable() && attempt < w.max_attempts => {
                METRICS.events_retries.with_label_values(&[&w.name]).inc();
                tracing::debug!(webhook = %w.name, kind = %event.kind, attempt, error = %crate::error_text::error_chain(&e), "event delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(e) => {
                let reason = if e.retryable() { DropReason::Undelivered } else { DropReason::Rejected };
                tracing::warn!(webhook = %w.name, kind = %event.kind, id = %event.id, attempts = attempt, error = %crate::error_text::error_chain(&e), "event not delivered; dropped");
                count_drop(&w.name, event.kind, reason);
                return;
            }
        }
    }
}

async fn send(client: &Client, req: http::Request<Full<Bytes>>, timeout: Duration) -> Result<(), DeliveryError> {
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| DeliveryError::Timeout(timeout))?
        .map_err(DeliveryError::Send)?;
    let status = resp.status();
    // Read a small answer so the connection goes back to the pool; a large or slow one is
    // not worth waiting for.
    let _ = tokio::time::timeout(timeout, Limited::new(resp.into_body(), MAX_RESPONSE_BODY).collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}
