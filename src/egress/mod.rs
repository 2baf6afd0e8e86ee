//! The site's egress proxy: which outbound connections go through an HTTP proxy, and how.
//!
//! Every client that leaves the site (registries and their token realms, the ECR and S3
//! APIs, webhooks) is built with an [`Egress`]: the environment's `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower case, read by hyper-util's
//! matcher the way curl and Go read them: host suffixes, IPs, CIDRs, `*`), an upstream's own
//! `proxy` setting, or none. Cluster peers are never given one: they are on the site.
//!
//! Every target, plain http or https, goes through the proxy as a `CONNECT` tunnel
//! ([`Connector`]): one path for both, the proxy never sees the registry's credentials or
//! bytes in clear, and pooled connections stay per target. A proxy that only allows
//! `CONNECT` to port 443 therefore refuses plain-http upstreams on other ports: allow their
//! ports (squid: `SSL_ports`) or bypass them with `NO_PROXY`.

mod connector;
mod error;

pub use connector::{Connector, TargetCheck};
pub use error::{ProxyError, ProxySource};

use crate::secret::Secret;
use base64::Engine;
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

/// How one client's connections leave the site.
#[derive(Debug, Clone, Default)]
pub enum Egress {
    /// The environment's proxy variables (`HTTPS_PROXY`, `NO_PROXY`, …), as curl reads them.
    #[default]
    Environment,
    /// Always direct (an upstream's `proxy = "none"`).
    Direct,
    /// Every connection through this proxy (an upstream's `proxy = "http://…"`).
    Via(Proxy),
}

/// A proxy named in the configuration.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `http://[user[:password]@]host:port`.
    pub url: Uri,
    /// The password for the URL's user, from `proxy_password_env`.
    pub password: Option<Secret>,
}

impl Egress {
    /// The matcher that picks the proxy for a target; `None`: always direct.
    pub(crate) fn matcher(&self) -> Option<Matcher> {
        match self {
            Egress::Environment => Some(Matcher::from_env()),
            Egress::Direct => None,
            Egress::Via(p) => Some(Matcher::builder().all(p.url.to_string()).build()),
        }
    }

    /// Where the proxy came from, for errors that name what to fix.
    pub(crate) fn source(&self) -> ProxySource {
        match self {
            Egress::Via(_) => ProxySource::Setting,
            Egress::Environment | Egress::Direct => ProxySource::Environment,
        }
    }

    /// `Proxy-Authorization` from `proxy_password_env` (the URL's own credentials are the
    /// matcher's business).
    pub(crate) fn password_auth(&self) -> Option<HeaderValue> {
        let Egress::Via(Proxy { url, password: Some(password) }) = self else { return None };
        let user = userinfo(url).map(|u| u.split(':').next().unwrap_or("")).unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
        HeaderValue::from_str(&format!("Basic {token}")).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        })
    }

    /// The proxy `target` would go through, without credentials (for `doctor` and logs).
    pub fn proxy_for(&self, target: &Uri) -> Option<String> {
        self.matcher()?.intercept(target).map(|i| without_credentials(i.uri()))
    }

    /// The AWS SDK's own proxy settings for the same choice (ECR and S3 clients).
    pub fn aws_proxy_config(&self) -> aws_smithy_http_client::proxy::ProxyConfig {
        use aws_smithy_http_client::proxy::ProxyConfig;
        match self {
            Egress::Environment => ProxyConfig::from_env(),
            Egress::Direct => ProxyConfig::disabled(),
            Egress::Via(p) => {
                let url = without_credentials(&p.url);
                let Ok(config) = ProxyConfig::all(url.as_str()) else { return ProxyConfig::disabled() };
                let user = userinfo(&p.url).unwrap_or("");
                let (name, inline) = user.split_once(':').unwrap_or((user, ""));
                let password = p.password.as_ref().map(|s| s.expose().to_string()).unwrap_or_else(|| inline.into());
                if name.is_empty() {
                    config
                } else {
                    config.with_basic_auth(name, password)
                }
            }
        }
    }
}

/// The `user:password` part of a URL's authority, if any.
fn userinfo(url: &Uri) -> Option<&str> {
    url.authority()?.as_str().rsplit_once('@').map(|(u, _)| u)
}

/// `scheme://host:port` of a proxy URL: never its credentials.
pub fn without_credentials(url: &Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}", url.scheme_str().unwrap_or("http"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_routes_everything_and_keeps_credentials_out_of_names() {
        let e = Egress::Via(Proxy { url: "http://u:p@proxy.site:3128".parse().unwrap(), password: None });
        let target: Uri = "https://registry-1.docker.io/v2/".parse().unwrap();
        assert_eq!(e.proxy_for(&target).as_deref(), Some("http://proxy.site:3128"));
        assert_eq!(Egress::Direct.proxy_for(&target), None);
    }

    #[test]
    fn the_password_setting_pairs_with_the_urls_user() {
        let url = "http://alice@proxy.site:3128".parse().unwrap();
        let e = Egress::Via(Proxy { url, password: Some(Secret::new("s3cret")) });
        // base64("alice:s3cret")
        assert_eq!(e.password_auth().unwrap(), "Basic YWxpY2U6czNjcmV0");
        assert!(Egress::Environment.password_auth().is_none());
    }
}
