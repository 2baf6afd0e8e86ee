//! A fault-injecting fake upstream, for what no real registry does on demand: flipped bits,
//! connection resets and truncation mid-blob, redirects to another host. Raw TCP, one
//! response per connection, serving until dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve the blob as it is.
    Good,
    /// Flip one bit in the middle; length and headers stay right.
    FlipBit,
    /// Send this many bytes, then reset the connection (RST).
    ResetAfter(usize),
    /// Announce the full length, send this many bytes, then close cleanly (FIN).
    TruncateAt(usize),
    /// Answer with a 307 to this URL.
    RedirectTo(String),
    /// Send the blob in `chunk`-byte pieces with `delay_ms` between them.
    Slow { chunk: usize, delay_ms: u64 },
    /// Answer with this status and headers (and a small error body).
    Status(u16, Vec<(String, String)>),
    /// Send the response head one byte every `delay_ms` (slow-loris).
    SlowHeaders { delay_ms: u64 },
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, (Vec<u8>, Fault)>,
    seen: Vec<Seen>,
    /// When set, every /v2/ request without exactly this Authorization gets a Basic 401.
    require_auth: Option<String>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        FakeUpstream { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `bytes` under `digest` (any repository) with `fault`.
    pub fn set_blob(&self, digest: &str, bytes: Vec<u8>, fault: Fault) {
        self.state.lock().unwrap().blobs.insert(digest.to_string(), (bytes, fault));
    }

    pub fn set_fault(&self, digest: &str, fault: Fault) {
        self.state.lock().unwrap().blobs.get_mut(digest).unwrap().1 = fault;
    }

    pub fn require_auth(&self, authorization: &str) {
        self.state.lock().unwrap().require_auth = Some(authorization.to_string());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests for paths ending in `suffix`.
    pub fn hits(&self, suffix: &str) -> usize {
        self.seen().iter().filter(|s| s.path.ends_with(suffix)).count()
    }
}

async fn serve(mut sock: TcpStream, st: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").split('?').next().unwrap_or("").to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let (blob, required) = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen { method: method.clone(), path: path.clone(), authorization: authorization.clone() });
        let digest = path.rsplit('/').next().unwrap_or("");
        (s.blobs.get(digest).cloned(), s.require_auth.clone())
    };
    let is_api = path.starts_with("/v2/");
    if is_api && required.is_some() && authorization != required {
        return respond(&mut sock, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"fake\"")], b"").await;
    }
    if path == "/v2/" {
        return respond(&mut sock, "200 OK", &[], b"{}").await;
    }
    let Some((bytes, fault)) = blob else {
        return respond(&mut sock, "404 Not Found", &[], br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#).await;
    };
    // The CDN side of a redirect serves plain bytes.
    let fault = if is_api { fault } else { Fault::Good };
    let head = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
    };
    match fault {
        Fault::Good => respond(&mut sock, "200 OK", &[], &bytes).await,
        Fault::FlipBit => {
            let mut b = bytes.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            respond(&mut sock, "200 OK", &[], &b).await
        }
        Fault::ResetAfter(n) => {
            sock.write_all(head(bytes.len()).as_bytes()).await?;
            sock.write_all(&bytes[..n]).await?;
            sock.flush().await?;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            // Zero linger turns the close into an RST; on loopback it never blocks.
            #[allow(deprecated)]
            sock.set_linger(Some(std::time::Duration::ZERO))?;
            drop(sock);
            Ok(())
        }
        Fault::TruncateAt(n) => {
            sock.write_all(head(bytes.len()).as_bytes()).await?;
            sock.write_all(&bytes[..n]).await?;
            sock.shutdown().await
        }
        Fault::RedirectTo(url) => respond(&mut sock, "307 Temporary Redirect", &[("Location", &url)], b"").await,
        Fault::Status(code, headers) => {
            let status = format!("{code} Fault");
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            respond(&mut sock, &status, &h, br#"{"errors":[{"code":"UNKNOWN"}]}"#).await
        }
        Fault::SlowHeaders { delay_ms } => {
            for b in head(bytes.len()).as_bytes() {
                sock.write_all(&[*b]).await?;
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            }
            sock.write_all(&bytes).await?;
            sock.shutdown().await
        }
        Fault::Slow { chunk, delay_ms } => {
            sock.write_all(head(bytes.len()).as_bytes()).await?;
            for piece in bytes.chunks(chunk) {
                sock.write_all(piece).await?;
                sock.flush().await?;
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            }
            sock.shutdown().await
        }
    }
}

async fn respond(sock: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}
