//! The application: one client request in, one response out. Health and readiness, who is
//! asking (a peer's cluster token, or the client's identity), routing to a handler, the
//! OCI error answer, HEAD's missing body, and the request's metrics and log line; and the
//! admin endpoints (/metrics, /healthz, /readyz). Connections are [`super::listener`]'s.

use super::body::{self, Body};
use super::error::ApiError;
use super::handlers::{handle, Call};
use super::outcome::Outcome;
use super::request_log::RequestLog;
use super::router;
use super::router::EndpointKind;
use super::tracked::track;
use crate::core::PullThrough;
use crate::metrics::METRICS;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Everything a request handler can reach.
pub struct App {
    pub pull: Arc<PullThrough>,
    pub access: Arc<super::access::Access>,
    /// Connections one client address may hold at once on the client listener.
    pub max_connections_per_client: usize,
    /// A connection with no request in flight for this long is closed (`[server]
    /// idle_timeout`); on HTTP/1.1 it also bounds how long a request's headers may take.
    pub idle_timeout: Duration,
}

impl App {
    /// Answer one client request (the OCI API, plus /healthz and /readyz).
    pub async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let (parts, _body) = req.into_parts();
        if let Some(resp) = self.health(parts.uri.path()).await {
            return resp;
        }
        let head = parts.method == Method::HEAD;
        let mut outcome = Outcome::default();
        let (result, kind) = self.answer(&parts, &mut outcome).await;
        let mut resp = result.unwrap_or_else(|e| {
            if e.status.is_server_error() {
                tracing::warn!(method = %parts.method, path = parts.uri.path(), code = e.code.as_str(), message = %e.message, "request failed");
            }
            e.into_response()
        });
        // The one place a HEAD loses its body: every answer above is the GET's.
        if head {
            resp = body::without_body(resp);
        }
        resp.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
        let headers_at = Instant::now();
        count(kind, head, &parts.method, &outcome, &resp, headers_at - start);
        // The log line is written when the body ends: time to the last byte, and how it
        // ended.
        let log = RequestLog {
            method: parts.method,
            uri: parts.uri,
            kind,
            upstream: outcome.upstream,
            status: resp.status().as_u16(),
            cache: outcome.cache,
            start,
            headers_at,
        };
        track(resp, log).map(BodyExt::boxed_unsync)
    }

    /// Who asks, which endpoint, and the handler's answer (or why there is none).
    async fn answer(
        &self,
        parts: &http::request::Parts,
        outcome: &mut Outcome,
    ) -> (Result<Response<Body>, ApiError>, EndpointKind) {
        let cert = parts.extensions.get::<super::tls::ClientCert>();
        let who = match self.peer(&parts.headers) {
            Some(peer) => peer,
            None => self.access.identify(&parts.headers, cert).await,
        };
        let from_peer = matches!(who, Ok(super::access::Identity::Peer));
        let (result, kind) = match (router::route(&parts.method, parts.uri.path()), who) {
            (Ok(ep), Ok(who)) => {
                let kind = ep.kind();
                let call = Call {
                    head: parts.method == Method::HEAD,
                    headers: &parts.headers,
                    query: parts.uri.query().unwrap_or(""),
                    who: &who,
                    access: &self.access,
                };
                (handle(&self.pull, ep, &call, outcome).await, kind)
            }
            (Ok(ep), Err(e)) => (Err(e), ep.kind()),
            (Err(e), _) => (Err(e), EndpointKind::Invalid),
        };
        if from_peer {
            let result = if result.is_ok() { "ok" } else { "error" };
            METRICS.peer_requests.with_label_values(&["served", result]).inc();
        }
        (result, kind)
    }

    /// A request from a peer node: one carrying the cluster token. A wrong token is refused
    /// outright (a misconfigured node should fail loudly, not fall back to client rules).
    fn peer(&self, headers: &http::HeaderMap) -> Option<Result<super::access::Identity, ApiError>> {
        let presented = headers.get(crate::cluster::TOKEN_HEADER)?;
        match self.pull.cluster() {
            Some(c) if c.accepts(presented.as_bytes()) => Some(Ok(super::access::Identity::Peer)),
            _ => Some(Err(ApiError::unauthorized_no_challenge(
                "invalid cluster token: every node needs the same [cluster] token_env secret",
            ))),
        }
    }

    /// `/healthz`: the process answers. `/readyz`: the cache directory is writable.
    async fn health(&self, path: &str) -> Option<Response<Body>> {
        let json = |status: StatusCode, v: serde_json::Value| {
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body::full(v.to_string()))
                .expect("valid response")
        };
        match path {
            "/healthz" => Some(json(StatusCode::OK, serde_json::json!({"status": "ok"}))),
            "/readyz" => {
                let writable = self.pull.store().probe_writable_async().await;
                let ready = writable.is_ok();
                let upstreams: serde_json::Map<String, serde_json::Value> = self
                    .pull
                    .upstream_reachability()
                    .into_iter()
                    .map(|(h, r)| (h, serde_json::to_value(r).unwrap_or_default()))
                    .collect();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                Some(json(
                    status,
                    serde_json::json!({
                        "status": if ready { "ready" } else { "not ready" },
                        "config_loaded": true,
                        "cache_dir_writable": ready,
                        "error": writable.err().map(|e| e.to_string()),
                        "upstreams": upstreams,
                        "rate_limits": self.pull.upstream_budgets(),
                        "cluster": self.pull.cluster().map(|c| c.describe()),
                        "shared": self.pull.shared_tier().map(|(tier, health)| serde_json::json!({"tier": tier, "state": health})),
                    }),
                ))
            }
            _ => None,
        }
    }

    /// Answer an admin request: /metrics, /healthz, /readyz.
    pub async fn admin(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if let Some(resp) = self.health(&path).await {
            return resp;
        }
        if path == "/metrics" {
            self.update_gauges();
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .body(body::full(crate::metrics::render()))
                .expect("valid response");
        }
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body::full("not found: try /metrics, /healthz or /readyz\n"))
            .expect("valid response")
    }

    fn update_gauges(&self) {
        let store = self.pull.store();
        let stats = store.stats();
        METRICS.cache_size_bytes.set(stats.bytes as i64);
        METRICS.cache_blobs.set(stats.blobs as i64);
        METRICS.cache_budget_bytes.set(store.budget().max_size.unwrap_or(0) as i64);
        METRICS.fills_in_flight.set(self.pull.fills_in_flight() as i64);
        for (host, r) in self.pull.upstream_reachability() {
            use crate::upstream::Reachability::*;
            match r {
                Reachable => METRICS.upstream_up.with_label_values(&[&host]).set(1),
                Unreachable | Offline => METRICS.upstream_up.with_label_values(&[&host]).set(0),
                Unknown => {}
            }
        }
    }
}

/// Count a request in the request and cache metrics, once its response head is ready.
fn count(kind: EndpointKind, head: bool, method: &Method, outcome: &Outcome, resp: &Response<Body>, elapsed: Duration) {
    let status = resp.status();
    METRICS.http_requests.with_label_values(&[kind.as_str(), method.as_str(), status.as_str()]).inc();
    METRICS.http_duration.with_label_values(&[kind.as_str()]).observe(elapsed.as_secs_f64());
    let (Some(up), Some(cache)) = (&outcome.upstream, outcome.cache) else { return };
    if !status.is_success() {
        return;
    }
    METRICS.cache_requests.with_label_values(&[up, kind.as_str(), cache.as_str()]).inc();
    if kind == EndpointKind::Blob && !head {
        let bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        METRICS.cache_bytes.with_label_values(&[up, cache.as_str()]).inc_by(bytes.unwrap_or(0));
    }
}
