//! A hyper connector that sends a connection through the egress proxy (a `CONNECT` tunnel,
//! hyper-util's `Tunnel`) when the matcher picks one for the target, and otherwise through
//! the client's own direct connector. TLS to the target wraps the result, so it is the same
//! whether the bytes travel through a tunnel or not.

use super::{Egress, ProxyError, ProxySource};
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a target may be reached through the proxy (the client's SSRF guard: the proxy
/// connects for us, so the target's literal address is judged before the tunnel is asked for).
pub type TargetCheck = Arc<dyn Fn(&Uri) -> Result<(), String> + Send + Sync>;

/// What every connection of one client shares: the matcher and how to authenticate.
struct Route {
    matcher: Option<Matcher>,
    /// `Proxy-Authorization` from `proxy_password_env`, over the URL's own credentials.
    password_auth: Option<HeaderValue>,
    source: ProxySource,
    connect_timeout: Duration,
    check: TargetCheck,
}

/// Connects directly with `D`, or through the egress proxy.
#[derive(Clone)]
pub struct Connector<D> {
    direct: D,
    route: Arc<Route>,
}

impl<D> Connector<D> {
    /// `direct` makes the connections that bypass the proxy (with the client's own resolver
    /// and guard); the proxy itself is reached with the system resolver: its address is the
    /// operator's choice, never an upstream's.
    pub fn new(direct: D, egress: &Egress, connect_timeout: Duration, check: TargetCheck) -> Connector<D> {
        let route = Route {
            matcher: egress.matcher(),
            password_auth: egress.password_auth(),
            source: egress.source(),
            connect_timeout,
            check,
        };
        Connector { direct, route: Arc::new(route) }
    }
}

impl<D> Service<Uri> for Connector<D>
where
    D: Service<Uri, Response = TokioIo<TcpStream>> + Clone + Send + 'static,
    D::Future: Send + 'static,
    D::Error: Into<BoxError>,
{
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(intercept) = self.route.matcher.as_ref().and_then(|m| m.intercept(&dst)) else {
            let fut = self.direct.call(dst);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        };
        let route = self.route.clone();
        let proxy_uri = intercept.uri().clone();
        let auth = route.password_auth.clone().or_else(|| intercept.basic_auth().cloned());
        Box::pin(async move { route.tunnel(proxy_uri, auth, dst).await.map_err(Into::into) })
    }
}

impl Route {
    /// Open a `CONNECT` tunnel to `dst` through the proxy at `proxy_uri`.
    async fn tunnel(
        &self,
        proxy_uri: Uri,
        auth: Option<HeaderValue>,
        dst: Uri,
    ) -> Result<TokioIo<TcpStream>, ProxyError> {
        let proxy = super::without_credentials(&proxy_uri);
        let target = authority_with_port(&dst);
        (self.check)(&dst).map_err(|why| ProxyError::Guard { target: target.clone(), why })?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        let mut tunnel = Tunnel::new(proxy_uri, http);
        if let Some(a) = auth {
            tunnel = tunnel.with_auth(a);
        }
        // The tunnel assumes 443 when the target names no port; plain http means 80.
        let dst: Uri = format!("{}://{target}/", dst.scheme_str().unwrap_or("https")).parse().unwrap_or(dst);
        let from = self.source;
        tunnel.call(dst).await.map_err(|e| {
            // hyper-util does not export its `TunnelError`: its variants are told apart by
            // their (fixed) messages.
            let text = e.to_string();
            if text.ends_with("proxy authorization required") {
                ProxyError::AuthRequired { proxy, from }
            } else if text.ends_with("unsuccessful") {
                ProxyError::Refused { proxy, from, target }
            } else if text.ends_with("failed to create underlying connection") {
                ProxyError::Unreachable { proxy, from, cause: Box::new(e) }
            } else {
                ProxyError::Tunnel { proxy, from, target, cause: Box::new(e) }
            }
        })
    }
}

/// `host:port` of a target, with the scheme's default port when none is written.
fn authority_with_port(dst: &Uri) -> String {
    let port = dst.port_u16().unwrap_or(if dst.scheme_str() == Some("http") { 80 } else { 443 });
    let host = dst.host().unwrap_or("");
    format!("{host}:{port}")
}
