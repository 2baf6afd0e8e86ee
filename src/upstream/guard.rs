//! SSRF guard: where an upstream's connections may go. Upstream URLs come only from the
//! config, but redirect targets and token realms come from upstreams; neither may reach
//! link-local, unspecified, broadcast, multicast or cloud-metadata addresses (metadata
//! services live at 169.254.169.254 and fd00:ec2::254), and loopback is reachable only on the
//! loopback address the upstream itself is on (a lab, or a sidecar registry with its token
//! server on another port). Another loopback address (`127.0.0.2`, a local DNS stub at
//! `127.0.0.53`) is another service, not the registry's: refused.
//!
//! One [`Reach`] per upstream decides, for literal addresses in URLs ([`Reach::check_url`],
//! used for redirects and token realms alike) and for every DNS answer
//! ([`GuardedResolver`]); literal addresses never reach the resolver, so both are needed.

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Cloud metadata endpoints outside the link-local ranges (which hold the rest, such as
/// 169.254.169.254): AWS's IPv6 IMDS and Alibaba's.
const METADATA: [IpAddr; 2] =
    [IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200))];

/// Why an address is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// A metadata service outside the link-local ranges: instance credentials live there.
    Metadata,
    LinkLocal,
    /// 0.0.0.0 or `::`, which the kernel turns into "this host".
    Unspecified,
    Broadcast,
    Multicast,
    /// Loopback, while the upstream is not on this loopback address.
    Loopback,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::Metadata => "a cloud metadata address",
            Forbidden::LinkLocal => "a link-local address (cloud metadata services live there)",
            Forbidden::Unspecified => "the unspecified address (it means this host)",
            Forbidden::Broadcast => "a broadcast address",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Loopback => "a loopback address other than the upstream's own",
        })
    }
}

/// A connection target the guard refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target} is {why}")]
pub struct Refused {
    pub target: IpAddr,
    pub why: Forbidden,
}

/// Where the connections made for one upstream may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The loopback addresses the upstream itself is on (empty: it is not on loopback).
    own_loopback: Vec<IpAddr>,
}

impl Reach {
    /// The reach of an upstream whose configured URL has host `host` (`[::1]` brackets allowed).
    pub fn for_host(host: &str) -> Reach {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        let own_loopback = if h.eq_ignore_ascii_case("localhost") {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        } else {
            h.parse::<IpAddr>().map(|ip| ip.to_canonical()).into_iter().filter(IpAddr::is_loopback).collect()
        };
        Reach { own_loopback }
    }

    /// Whether the upstream itself is on loopback.
    pub fn on_loopback(&self) -> bool {
        !self.own_loopback.is_empty()
    }

    /// Whether a connection to `ip` is allowed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        // `::ffff:169.254.169.254` is 169.254.169.254.
        let ip = ip.to_canonical();
        let refuse = |why| Err(Refused { target: ip, why });
        if METADATA.contains(&ip) {
            return refuse(Forbidden::Metadata);
        }
        if ip.is_unspecified() {
            return refuse(Forbidden::Unspecified);
        }
        if ip.is_multicast() {
            return refuse(Forbidden::Multicast);
        }
        match ip {
            IpAddr::V4(v4) if v4.is_link_local() => return refuse(Forbidden::LinkLocal),
            IpAddr::V4(v4) if v4.is_broadcast() => return refuse(Forbidden::Broadcast),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => return refuse(Forbidden::LinkLocal),
            _ => {}
        }
        if ip.is_loopback() && !self.own_loopback.contains(&ip) {
            return refuse(Forbidden::Loopback);
        }
        Ok(())
    }

    /// Check the host of `url` when it is a literal address; names are checked when they
    /// are resolved ([`GuardedResolver`]). Used for every URL an upstream hands us.
    pub fn check_url(&self, url: &http::Uri) -> Result<(), Refused> {
        let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip),
            Err(_) => Ok(()),
        }
    }
}

/// The system resolver, with the addresses `Reach` refuses removed from every answer.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: GaiResolver,
    reach: Reach,
}

impl GuardedResolver {
    pub fn new(reach: Reach) -> GuardedResolver {
        GuardedResolver { inner: GaiResolver::new(), reach }
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
        let reach = self.reach.clone();
        let host = name.as_str().to_string();
        let fut = self.inner.call(name);
        Box::pin(async move {
            let mut refused = None;
            let addrs: Vec<SocketAddr> = fut
                .await?
                .filter(|a| match reach.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused = Some(r);
                        false
                    }
                })
                .collect();
            if addrs.is_empty() {
                let why = refused.map(|r| format!(": {r}")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "refusing to connect to {host}: it resolves only to addresses the SSRF guard refuses{why}"
                )));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_what_no_upstream_may_reach() {
        let lab = Reach::for_host("127.0.0.1");
        for (addr, why) in [
            ("169.254.169.254", Forbidden::LinkLocal),
            ("::ffff:169.254.169.254", Forbidden::LinkLocal),
            ("100.100.100.200", Forbidden::Metadata),
            ("fd00:ec2::254", Forbidden::Metadata),
            ("169.254.1.1", Forbidden::LinkLocal),
            ("fe80::1", Forbidden::LinkLocal),
            ("0.0.0.0", Forbidden::Unspecified),
            ("::", Forbidden::Unspecified),
            ("255.255.255.255", Forbidden::Broadcast),
            ("224.0.0.1", Forbidden::Multicast),
            ("127.0.0.2", Forbidden::Loopback),
            ("127.0.0.53", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
        ] {
            assert_eq!(lab.check_ip(ip(addr)).map_err(|r| r.why), Err(why), "{addr}");
        }
    }

    #[test]
    fn loopback_only_for_an_upstream_on_that_loopback_address() {
        let remote = Reach::for_host("registry-1.docker.io");
        assert!(!remote.on_loopback());
        assert!(remote.check_ip(ip("127.0.0.1")).is_err());
        assert!(remote.check_ip(ip("::ffff:127.0.0.1")).is_err());
        assert!(remote.check_ip(ip("10.1.2.3")).is_ok());
        assert!(remote.check_ip(ip("2001:db8::1")).is_ok());

        let lab = Reach::for_host("127.0.0.1");
        assert!(lab.on_loopback());
        assert!(lab.check_ip(ip("127.0.0.1")).is_ok());
        assert!(lab.check_ip(ip("::ffff:127.0.0.1")).is_ok());

        let v6 = Reach::for_host("[::1]");
        assert!(v6.check_ip(ip("::1")).is_ok() && v6.check_ip(ip("127.0.0.1")).is_err());
        let named = Reach::for_host("LOCALHOST");
        assert!(named.check_ip(ip("::1")).is_ok() && named.check_ip(ip("127.0.0.1")).is_ok());
        assert!(named.check_ip(ip("127.0.0.2")).is_err());
    }

    #[test]
    fn checks_literal_hosts_in_urls() {
        let lab = Reach::for_host("127.0.0.1");
        let url = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(lab.check_url(&url("http://0.0.0.0:5000/token")).is_err());
        assert!(lab.check_url(&url("http://[::]:5000/token")).is_err());
        assert!(lab.check_url(&url("http://169.254.169.254/latest/meta-data/")).is_err());
        assert!(lab.check_url(&url("http://127.0.0.1:5001/token")).is_ok());
        // Names are the resolver's business.
        assert!(lab.check_url(&url("https://auth.docker.io/token")).is_ok());
    }
}
