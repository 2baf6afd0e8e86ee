//! Asking a peer: an ordinary pull request (`GET /v2/<name>/blobs/<digest>?ns=<upstream>`)
//! with the cluster token, over the peers' keep-alive connection pool.

use super::{Fetch, Peer, PeerError, TOKEN_HEADER};
use crate::oci::{media, Digest, RepoName};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use std::time::Duration;

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// A peer's answer: a body to verify, its announced size and type.
pub struct PeerResponse {
    pub peer: Peer,
    pub len: Option<u64>,
    pub content_type: Option<String>,
    /// `200`, or `206` for a ranged `GET` the peer answered with a range.
    pub status: StatusCode,
    /// The `Content-Range` of a `206`, as sent (the asker checks it).
    pub content_range: Option<String>,
    pub body: Incoming,
}

pub struct PeerClient {
    client: Client,
    header_timeout: Duration,
}

impl PeerClient {
    pub fn new(header_timeout: Duration) -> PeerClient {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(header_timeout.min(Duration::from_secs(2))));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls_client::config())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        PeerClient { client, header_timeout }
    }

    /// A blob or manifest from `peer`; a blob from byte `from` on when given
    /// (`Range: bytes=<from>-`: the peer answers `206` from its cache or its fill in flight,
    /// or a `200` of the whole blob).
    #[allow(clippy::too_many_arguments)]
    pub async fn get_from(
        &self,
        peer: &Peer,
        what: Fetch,
        host: &str,
        name: &RepoName,
        digest: &Digest,
        token: &str,
        from: Option<u64>,
    ) -> Result<PeerResponse, PeerError> {
        let kind = match what {
            Fetch::Blob => "blobs",
            Fetch::Manifest => "manifests",
        };
        let ns = percent_encoding::utf8_percent_encode(host, percent_encoding::NON_ALPHANUMERIC);
        let url = format!("{peer}/v2/{name}/{kind}/{digest}?ns={ns}");
        let mut token = HeaderValue::from_str(token)
            .map_err(|_| PeerError::Connect { peer: peer.to_string(), message: "token is not header text".into() })?;
        token.set_sensitive(true);
        let mut req = Request::get(&url).header(header::USER_AGENT, crate::oci::USER_AGENT).header(TOKEN_HEADER, token);
        if what == Fetch::Manifest {
            req = req.header(header::ACCEPT, media::MANIFEST_ACCEPT);
        }
        if let Some(from) = from {
            req = req.header(header::RANGE, format!("bytes={from}-"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| PeerError::Connect { peer: peer.to_string(), message: format!("bad peer URL {url}: {e}") })?;
        let resp = tokio::time::timeout(self.header_timeout, self.client.request(req))
            .await
            .map_err(|_| PeerError::Timeout { peer: peer.to_string(), after: self.header_timeout })?
            .map_err(|e| PeerError::Connect { peer: peer.to_string(), message: crate::error_text::error_chain(&e) })?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND => return Err(PeerError::NotFound { peer: peer.to_string() }),
            status => return Err(PeerError::Status { peer: peer.to_string(), status }),
        }
        let h = resp.headers();
        let len = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let content_type = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let content_range = h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let status = resp.status();
        Ok(PeerResponse { peer: peer.clone(), len, content_type, status, content_range, body: resp.into_body() })
    }
}
