//! A webhook receiver on loopback (127.0.0.1, a free port): records each request (method,
//! headers, body) and answers it, 200 unless told a sequence of statuses first. Serves until
//! dropped: its task, and the connections it serves, are aborted on drop.

use super::wait_until;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: http::Method,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// When the receiver had read it (for lower bounds between deliveries).
    pub at: std::time::Instant,
}

impl Hit {
    /// A header's value, empty when absent (or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The body as JSON, failing the test unless it is.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// The receiver: see the module's doc.
pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// A receiver that answers 200 to every request, at once.
    pub async fn start() -> Receiver {
        Receiver::start_with(Duration::ZERO, &[]).await
    }

    /// A receiver that takes `delay` to answer each request.
    pub async fn start_slow(delay: Duration) -> Receiver {
        Receiver::start_with(delay, &[]).await
    }

    /// A receiver that answers its first requests with `statuses`, in order, then 200, each
    /// after `delay`.
    pub async fn start_with(delay: Duration, statuses: &[u16]) -> Receiver {
        let script = Arc::new(Mutex::new(statuses.iter().copied().collect::<VecDeque<u16>>()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let h = hits.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (h, script) = (h.clone(), script.clone());
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let h = h.clone();
                    let status = script.lock().unwrap().pop_front().unwrap_or(200);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        h.lock().unwrap().push(Hit {
                            method: parts.method,
                            headers: parts.headers,
                            body,
                            at: std::time::Instant::now(),
                        });
                        tokio::time::sleep(delay).await;
                        let mut resp = http::Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                // The connections end with this task (JoinSet aborts them on drop).
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Receiver { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The requests so far, in the order they arrived.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Wait (bounded: 15 s) until `n` requests have arrived; return them all.
    pub async fn wait_for(&self, n: usize, what: &str) -> Vec<Hit> {
        wait_until(what, Duration::from_secs(15), async || self.hits.lock().unwrap().len() >= n).await;
        self.hits()
    }
}
