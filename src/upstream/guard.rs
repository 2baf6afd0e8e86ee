//! SSRF guard: where an upstream connection may go. Upstream URLs come only from the config,
//! but redirects come from upstreams; neither may reach link-local addresses (cloud metadata
//! services live at 169.254.169.254), and loopback is reachable only when the upstream itself
//! is on loopback (a lab, or a sidecar registry).

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Whether a connection to `ip` is allowed.
pub fn allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local() || v4.is_loopback() && !allow_loopback)
        }
    };
    !link_local && (allow_loopback || !ip.is_loopback())
}

/// Whether a configured base host is a loopback address (which then allows loopback).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The system resolver, with disallowed addresses removed from every answer.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: GaiResolver,
    allow_loopback: bool,
}

impl GuardedResolver {
    pub fn new(allow_loopback: bool) -> GuardedResolver {
        GuardedResolver { inner: GaiResolver::new(), allow_loopback }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_string();
        let fut = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = fut.await?.filter(|a| allowed(a.ip(), allow_loopback)).collect();
            if addrs.is_empty() {
                return Err(std::io::Error::other(format!(
                    "refusing to connect to {host}: it resolves only to link-local or loopback addresses"
                )));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!allowed(ip("169.254.169.254"), true));
        assert!(!allowed(ip("fe80::1"), true));
        assert!(!allowed(ip("0.0.0.0"), true));
        assert!(!allowed(ip("127.0.0.1"), false));
        assert!(!allowed(ip("::1"), false));
        assert!(!allowed(ip("::ffff:169.254.169.254"), true));
        assert!(allowed(ip("127.0.0.1"), true));
        assert!(allowed(ip("10.1.2.3"), false));
        assert!(allowed(ip("2001:db8::1"), false));
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("[::1]") && is_loopback_host("localhost"));
        assert!(!is_loopback_host("registry-1.docker.io"));
    }
}
