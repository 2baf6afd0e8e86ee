//! Why a connection through the egress proxy failed, naming the proxy and what to fix.

use std::fmt;

/// Where the proxy in use was configured: what an operator must change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` in pullthrough's environment.
    Environment,
    /// The upstream's `proxy` setting.
    Setting,
}

impl ProxySource {
    /// Where the proxy's credentials are set.
    fn credentials(self) -> &'static str {
        match self {
            ProxySource::Environment => {
                "the credentials in HTTPS_PROXY / HTTP_PROXY (http://user:password@host:port), or set the \
                 upstream's proxy and proxy_password_env"
            }
            ProxySource::Setting => {
                "the upstream's proxy_password_env (with the user in the proxy URL, http://user@host:port), or \
                 the credentials in its proxy URL"
            }
        }
    }
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxySource::Environment => "from HTTPS_PROXY/HTTP_PROXY",
            ProxySource::Setting => "the upstream's proxy setting",
        })
    }
}

/// A connection through the egress proxy that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the egress proxy {proxy} ({from})")]
    Unreachable {
        proxy: String,
        from: ProxySource,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the egress proxy {proxy} ({from}) asks for credentials (407 Proxy Authentication Required): check {}", from.credentials())]
    AuthRequired { proxy: String, from: ProxySource },
    #[error(
        "the egress proxy {proxy} ({from}) would not open a tunnel to {target} (its answer to CONNECT was not 200)"
    )]
    Refused { proxy: String, from: ProxySource, target: String },
    #[error("the egress proxy {proxy} ({from}) failed while opening a tunnel to {target}")]
    Tunnel {
        proxy: String,
        from: ProxySource,
        target: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("refusing to reach {target} through the egress proxy: {why}")]
    Guard { target: String, why: String },
}
