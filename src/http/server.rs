//! Accepting connections (HTTP/1.1, h2c, and HTTP/2 or 1.1 over TLS), the admin listener
//! (metrics, health), per-request logging and metrics, closing idle connections, and
//! graceful shutdown.

use super::body::{self, Body};
use super::error::ApiError;
use super::handlers::{handle, Call};
use super::idle::Activity;
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
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
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

/// What to serve on: the client listener (optionally TLS) and the admin listener.
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serve until `shutdown` resolves; then stop accepting and give in-flight requests up to
/// `grace` to finish. Returns whether they all did (false: some were cut, and the caller
/// should exit now, which ends them).
pub async fn serve(listeners: Listeners, app: Arc<App>, shutdown: impl Future<Output = ()>, grace: Duration) -> bool {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; when they are all gone, every connection ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut loops = Vec::new();
    let a = app.clone();
    let main = Accept {
        stop: stop_rx.clone(),
        alive: alive_tx.clone(),
        per_client: app.max_connections_per_client,
        idle_timeout: app.idle_timeout,
    };
    loops.push(tokio::spawn(accept_loop(listeners.main, listeners.tls, main, move |req| {
        let a = a.clone();
        async move { a.respond(req).await }
    })));
    if let Some(admin) = listeners.admin {
        let a = app.clone();
        let accept = Accept { stop: stop_rx, alive: alive_tx, per_client: usize::MAX, idle_timeout: app.idle_timeout };
        loops.push(tokio::spawn(accept_loop(admin, None, accept, move |req| {
            let a = a.clone();
            async move { a.admin(req).await }
        })));
    } else {
        drop(alive_tx);
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    tracing::info!(grace = ?grace, "shutting down: no new connections; waiting for in-flight requests");
    // The accept loops are gone with their senders; connections hold the rest.
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!("grace period over; cutting remaining connections");
        return false;
    }
    true
}

/// How an accept loop treats its connections.
struct Accept {
    /// Becomes true at shutdown: connections finish what is in flight and close.
    stop: watch::Receiver<bool>,
    /// Held by every connection task until it ends.
    alive: mpsc::Sender<()>,
    per_client: usize,
    idle_timeout: Duration,
}

/// What a connection runs over: TCP, or TLS over TCP.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// How long an idle connection told to close (HTTP/2 GOAWAY) may take before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut accept: Accept,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(connection_builder(accept.idle_timeout));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let clients: Clients = Arc::default();
    while let Some((stream, peer)) = next_connection(&listener, &mut accept.stop).await {
        let Some(slot) = ClientSlot::take(&clients, peer.ip(), accept.per_client) else {
            tracing::warn!(%peer, limit = accept.per_client, "too many connections from this client; closing the new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Every connection holds `alive` from before its task starts, so a shutdown waits
        // for it, handshake included.
        let conn = Connection {
            peer,
            idle: accept.idle_timeout,
            builder: builder.clone(),
            stop: accept.stop.clone(),
            _alive: accept.alive.clone(),
            _slot: slot,
        };
        tokio::spawn(conn.serve(stream, acceptor.clone(), handler.clone()));
    }
}

/// hyper's connection settings for both protocols.
fn connection_builder(idle: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper starts this timer when it begins waiting for a request head, so on HTTP/1.1 it
    // also ends an idle keep-alive connection; the idle watchdog covers the rest.
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle).max_buf_size(64 * 1024);
    // Bounded headers on both protocols: 64 KiB is far beyond any registry client's needs.
    builder.http2().max_concurrent_streams(256).max_header_list_size(64 * 1024);
    builder
}

/// The next accepted connection, or `None` once shutdown begins.
async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// One client connection, and what it holds until it ends.
struct Connection {
    peer: std::net::SocketAddr,
    idle: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    _slot: ClientSlot,
}

impl Connection {
    /// The TLS handshake if any, then requests until the client leaves, the connection
    /// idles out, or shutdown.
    async fn serve<F, Fut>(mut self, stream: tokio::net::TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, handler: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let Some((io, cert)) = self.handshake(stream, tls).await else { return };
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            service_fn(move |mut req: Request<Incoming>| {
                let h = handler.clone();
                if let Some(c) = &cert {
                    req.extensions_mut().insert(c.clone());
                }
                // In flight until the response body ends (or the request is dropped).
                let busy = activity.begin();
                async move { Ok::<_, std::convert::Infallible>(track(h(req).await, busy)) }
            })
        };
        let (peer, idle) = (self.peer, self.idle);
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = activity.idle_for(idle, Instant::now()) => {
                tracing::debug!(%peer, timeout = ?idle, "closing an idle connection");
                // HTTP/1.1 closes at once, HTTP/2 says GOAWAY first; a request that
                // slipped in meanwhile is finished.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = activity.idle_for(CLOSE_GRACE, Instant::now()) => Ok(()),
                }
            }
            _ = async { self.stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }

    /// The connection's transport: plain TCP, or TLS with the client certificate's sha256
    /// when the client presented a verified one (it identifies every request). `None` when
    /// the handshake failed or took too long.
    async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Option<(Box<dyn ClientIo>, Option<super::tls::ClientCert>)> {
        let Some(acc) = tls else { return Some((Box::new(stream), None)) };
        let peer = self.peer;
        let tls = match tokio::time::timeout(Duration::from_secs(10).min(self.idle), acc.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| {
            let mut h = crate::oci::Sha256Hasher::new();
            h.update(c.as_ref());
            super::tls::ClientCert(h.finish().hex().to_string())
        });
        Some((Box::new(tls), cert))
    }
}

type Clients = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of a client address's connection slots, returned when the connection ends.
struct ClientSlot {
    clients: Clients,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(clients: &Clients, ip: std::net::IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut map = clients.lock().expect("client slots lock");
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot { clients: clients.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.clients.lock().expect("client slots lock");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
