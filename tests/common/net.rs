//! A small HTTP/1.1 client for tests (hyper), plus helpers for streamed bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `code` of the first OCI error in the body.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_string)
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    // No pooling: each request gets its own connection, as independent clients would.
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http()
}

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> http::Request<Empty<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).unwrap()
}

/// `GET` with headers; the whole body is collected (use for small bodies). Bounded by 60 s.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    send("GET", url, headers).await
}

pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let fut = async {
        let resp = client().request(request(method, url, headers)).await.map_err(|e| format!("request: {e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e:?}"))?.to_bytes();
        Ok(Resp { status, headers, body })
    };
    tokio::time::timeout(Duration::from_secs(60), fut).await.map_err(|_| "timed out".to_string())?
}

/// `GET` a possibly large body, hashing it as it streams: `(status, bytes, sha256 hex)`.
/// A broken transfer is an `Err`.
pub async fn get_hashed(url: &str, headers: &[(&str, &str)]) -> Result<(u16, u64, String), String> {
    use sha2::Digest as _;
    let fut = async {
        let resp = client().request(request("GET", url, headers)).await.map_err(|e| format!("request: {e:?}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e:?}"))?;
            if let Ok(d) = frame.into_data() {
                n += d.len() as u64;
                h.update(&d);
            }
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((status, n, hex))
    };
    tokio::time::timeout(Duration::from_secs(120), fut).await.map_err(|_| "timed out".to_string())?
}
