//! Accepting connections (HTTP/1.1 and h2c), per-request logging, and graceful shutdown.

use super::handlers::{handle, Call};
use super::router;
use super::Body;
use crate::core::PullThrough;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Everything a request handler can reach.
pub struct App {
    pub pull: Arc<PullThrough>,
}

impl App {
    pub async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let head = req.method() == Method::HEAD;
        let (parts, _body) = req.into_parts();
        let path = parts.uri.path();
        let (result, kind) = match router::route(&parts.method, path) {
            Ok(ep) => {
                let kind = ep.kind();
                let call = Call {
                    head,
                    headers: &parts.headers,
                    query: parts.uri.query().unwrap_or(""),
                };
                (handle(&self.pull, ep, &call).await, kind)
            }
            Err(e) => (Err(e), "invalid"),
        };
        let (mut resp, cache) = match result {
            Ok(r) => r,
            Err(e) => {
                let level_warn = e.status.is_server_error();
                if level_warn {
                    tracing::warn!(method = %parts.method, path, code = e.code, message = %e.message, "request failed");
                }
                (e.into_response(head), "-")
            }
        };
        resp.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        tracing::info!(
            method = %parts.method,
            path,
            kind,
            status = resp.status().as_u16(),
            cache,
            ms = start.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and give
/// in-flight requests up to `grace` to finish.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    builder.http2().max_concurrent_streams(256);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.respond(req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?grace, "shutting down: no new connections; waiting for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over; cutting remaining connections");
    }
}
