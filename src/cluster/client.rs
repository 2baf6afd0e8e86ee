//! Asking a peer: an ordinary pull request (`GET /v2/<name>/blobs/<digest>?ns=<upstream>`)
//! with the cluster token, over the peers' keep-alive connection pool; for a blob, also who
//! asks and on what terms (see `ask`), and a referral as an answer.

use super::ask::{Ask, ASK_HEADER, FROM_HEADER, REFERRAL_HEADER};
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

/// What a peer is asked for, routed as the original request was: to upstream `host`,
/// repository `name`.
pub struct Wanted<'a> {
    pub what: Fetch,
    pub host: &'a str,
    pub name: &'a RepoName,
    pub digest: &'a Digest,
    /// A blob from this byte on (`Range: bytes=<from>-`), for a fill resuming at the byte
    /// it received: the peer answers `206` from its cache or its fill in flight, or a `200`
    /// of the whole blob.
    pub from: Option<u64>,
}

/// A peer's answer: the content, or a referral to another node that is receiving it.
pub enum Answer {
    Body(PeerResponse),
    Referral(Peer),
}

pub struct PeerClient {
    client: Client,
    header_timeout: Duration,
}

impl PeerClient {
    pub fn new(header_timeout: Duration, tls: rustls::ClientConfig) -> PeerClient {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(header_timeout.min(Duration::from_secs(2))));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        PeerClient { client, header_timeout }
    }

    /// Ask `peer` for what `w` names, on the terms of `ask` (blobs only; `None` for a
    /// manifest), saying this node is `from`.
    pub async fn get(
        &self,
        peer: &Peer,
        w: &Wanted<'_>,
        token: &str,
        ask: Option<(&Peer, Ask)>,
    ) -> Result<Answer, PeerError> {
        let kind = match w.what {
            Fetch::Blob => "blobs",
            Fetch::Manifest => "manifests",
        };
        let ns = percent_encoding::utf8_percent_encode(w.host, percent_encoding::NON_ALPHANUMERIC);
        let url = format!("{peer}/v2/{}/{kind}/{}?ns={ns}", w.name, w.digest);
        let bad = |message: String| PeerError::Connect { peer: peer.to_string(), message };
        let mut token = HeaderValue::from_str(token).map_err(|_| bad("token is not header text".into()))?;
        token.set_sensitive(true);
        let mut req = Request::get(&url).header(header::USER_AGENT, crate::oci::USER_AGENT).header(TOKEN_HEADER, token);
        if w.what == Fetch::Manifest {
            req = req.header(header::ACCEPT, media::MANIFEST_ACCEPT);
        }
        if let Some((me, ask)) = ask {
            req = req.header(FROM_HEADER, me.as_str()).header(ASK_HEADER, ask.as_str());
        }
        if let Some(from) = w.from {
            req = req.header(header::RANGE, format!("bytes={from}-"));
        }
        let req = req.body(Empty::new()).map_err(|e| bad(format!("bad peer URL {url}: {e}")))?;
        let resp = tokio::time::timeout(self.header_timeout, self.client.request(req))
            .await
            .map_err(|_| PeerError::Timeout { peer: peer.to_string(), after: self.header_timeout })?
            .map_err(|e| bad(crate::error_text::error_chain(&e)))?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::TEMPORARY_REDIRECT => {
                let to = resp.headers().get(REFERRAL_HEADER).and_then(|v| v.to_str().ok());
                return match to {
                    Some(to) => Ok(Answer::Referral(Peer::new(to))),
                    None => Err(PeerError::Status { peer: peer.to_string(), status: resp.status() }),
                };
            }
            StatusCode::NOT_FOUND => return Err(PeerError::NotFound { peer: peer.to_string() }),
            StatusCode::CONFLICT => return Err(PeerError::Refused { peer: peer.to_string() }),
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
        Ok(Answer::Body(PeerResponse {
            peer: peer.clone(),
            len,
            content_type,
            status,
            content_range,
            body: resp.into_body(),
        }))
    }
}
