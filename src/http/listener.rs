//! Accepting connections (HTTP/1.1, h2c, and HTTP/2 or 1.1 over TLS) on the client and
//! admin listeners, a limit of connections per client address, closing idle connections,
//! and graceful shutdown. Each request is handed to the [`App`].

use super::app::App;
use super::body::Body;
use super::idle::Activity;
use super::tracked::track;
use http::{Request, Response};
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
