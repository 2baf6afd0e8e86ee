//! A fault-injecting fake upstream, for what no real registry does on demand: flipped bits,
//! connection resets and truncation mid-blob, redirects to another host, Docker Hub's
//! rate limit (its `ratelimit-limit`/`ratelimit-remaining: 98;w=21600` headers, manifest GETs
//! counted and HEADs free, 429 with `Retry-After` once spent), and answers held at a gate
//! the test opens (a slow upstream, without a clock). Blob GETs answer
//! `Range: bytes=<n>-` with a `206` (or, on demand, a `200` or a wrong `Content-Range`), a
//! blob's faults may differ GET by GET (`set_faults`), and the blob bytes sent are counted.
//! Raw TCP, one response per connection, serving until dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve the blob as it is.
    Good,
    /// Flip one bit in the middle; length and headers stay right.
    FlipBit,
    /// Send this many bytes (of the body, ranged or not), then reset the connection (RST).
    ResetAfter(usize),
    /// Announce the full length, send this many bytes, then close cleanly (FIN).
    TruncateAt(usize),
    /// Answer a `Range` with a `200` and the whole blob.
    IgnoreRange,
    /// Answer `Range: bytes=<n>-` with a `206` of the bytes from `n + 1`, labelled as such.
    WrongRange,
    /// Answer with a 307 to this URL.
    RedirectTo(String),
    /// Send the blob in `chunk`-byte pieces with `delay_ms` between them.
    Slow { chunk: usize, delay_ms: u64 },
    /// Answer with this status and headers (and a small error body).
    Status(u16, Vec<(String, String)>),
    /// Send the response head one byte every `delay_ms` (slow-loris).
    SlowHeaders { delay_ms: u64 },
    /// Announce the full length, send `at` bytes, then wait for `gate` to open before the
    /// rest: a transfer the test holds mid-way for as long as it needs, not for a time.
    Hold { at: usize, gate: Gate },
}

/// A gate held transfers wait at: the test waits until `reached` counts the ones it
/// expects, then opens it (for every held transfer and every later one).
#[derive(Clone, Debug)]
pub struct Gate(Arc<GateState>);

#[derive(Debug)]
struct GateState {
    reached: std::sync::atomic::AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(GateState { reached: 0.into(), open: tokio::sync::watch::channel(false).0 }))
    }
}

impl Gate {
    /// How many transfers have reached the gate.
    pub fn reached(&self) -> usize {
        self.0.reached.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.0.open.subscribe();
        self.0.reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = open.wait_for(|o| *o).await;
    }
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The `Range` header, when sent.
    pub range: Option<String>,
}

/// A manifest served by path (`/v2/<name>/manifests/<reference>`).
#[derive(Clone, Debug)]
struct Manifest {
    bytes: Vec<u8>,
    media_type: String,
    digest: String,
}

/// Docker Hub's pull limit: manifest GETs spend it, HEADs are free, both announce it.
#[derive(Clone, Copy, Debug)]
struct RateLimit {
    limit: u64,
    remaining: u64,
    /// The window announced in `w=` (seconds).
    window: u64,
    /// `Retry-After` on the 429 once spent (seconds); `None`: no `Retry-After` header.
    retry_after: Option<u64>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, (Vec<u8>, Fault)>,
    manifests: HashMap<String, Manifest>,
    rate: Option<RateLimit>,
    /// Paths answered only once their gate opens.
    holds: HashMap<String, Gate>,
    seen: Vec<Seen>,
    /// When set, every /v2/ request without exactly this Authorization gets a Basic 401.
    require_auth: Option<String>,
    /// Faults for a blob's next GETs, one each, before its standing fault applies again.
    next_faults: HashMap<String, std::collections::VecDeque<Fault>>,
    /// Blob body bytes written to sockets.
    blob_bytes_sent: u64,
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

    /// The blob's next GETs (to the registry) get these faults, one each, in order.
    pub fn set_faults(&self, digest: &str, faults: Vec<Fault>) {
        self.state.lock().unwrap().next_faults.insert(digest.to_string(), faults.into());
    }

    /// Blob body bytes written so far (to every client).
    pub fn blob_bytes_sent(&self) -> u64 {
        self.state.lock().unwrap().blob_bytes_sent
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

    /// Requests with `method` (`GET`, `HEAD`) for paths ending in `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.ends_with(suffix)).count()
    }

    /// Requests with `method` for paths containing `part` (e.g. `/manifests/`).
    pub fn count_containing(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.contains(part)).count()
    }

    /// Serve `bytes` as the manifest `name:reference` (a tag or a digest), with its media type
    /// and `Docker-Content-Digest`; HEAD answers the headers alone.
    pub fn set_manifest(&self, name: &str, reference: &str, bytes: &[u8], media_type: &str) {
        let digest = format!("sha256:{}", super::sha256_hex(bytes));
        let m = Manifest { bytes: bytes.to_vec(), media_type: media_type.to_string(), digest };
        self.state.lock().unwrap().manifests.insert(format!("/v2/{name}/manifests/{reference}"), m);
    }

    /// A small single-platform OCI image (a config and one layer of `seed`-random bytes) as
    /// `name:tag` and by its digest; the manifest's digest and the layer's.
    pub fn put_image(&self, name: &str, tag: &str, seed: u64) -> (String, String) {
        let mut descs = Vec::new();
        let types = ["application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"];
        for (i, mt) in types.iter().enumerate() {
            let b = super::image::pseudo_random(seed * 10 + i as u64, 10_000);
            let d = format!("sha256:{}", super::sha256_hex(&b));
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": b.len()}));
            self.set_blob(&d, b, Fault::Good);
        }
        let layer = descs[1]["digest"].as_str().unwrap_or_default().to_string();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descs[0],
            "layers": [descs[1]],
        })
        .to_string();
        let digest = format!("sha256:{}", super::sha256_hex(m.as_bytes()));
        self.set_manifest(name, tag, m.as_bytes(), OCI_MANIFEST);
        self.set_manifest(name, &digest, m.as_bytes(), OCI_MANIFEST);
        (digest, layer)
    }

    /// Forget the manifest `name:reference` (404 from now on).
    pub fn remove_manifest(&self, name: &str, reference: &str) {
        self.state.lock().unwrap().manifests.remove(&format!("/v2/{name}/manifests/{reference}"));
    }

    /// Limit manifest GETs as Docker Hub does: `limit` per `window_s` window, announced in
    /// `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 98;w=21600` on every manifest
    /// answer (HEADs too, which are not counted); once spent, GETs get 429 with `Retry-After:
    /// retry_after_s` (none when `None`).
    pub fn rate_limit(&self, limit: u64, window_s: u64, retry_after_s: Option<u64>) {
        self.state.lock().unwrap().rate =
            Some(RateLimit { limit, remaining: limit, window: window_s, retry_after: retry_after_s });
    }

    /// Set what is left of the rate-limit budget (a window reset: the limit again).
    pub fn set_remaining(&self, remaining: u64) {
        if let Some(r) = self.state.lock().unwrap().rate.as_mut() {
            r.remaining = remaining;
        }
    }

    /// Answer requests for `path` (any method) only once `gate` opens.
    pub fn hold(&self, path: &str, gate: &Gate) {
        self.state.lock().unwrap().holds.insert(path.to_string(), gate.clone());
    }
}

/// What the fake answers for a manifest path, decided under the lock.
enum ManifestAnswer {
    Found(Manifest, Vec<(String, String)>),
    Limited(Vec<(String, String)>),
}

/// A manifest request: counted against the rate limit (GETs), with its headers.
fn manifest_answer(s: &mut State, method: &str, path: &str) -> Option<ManifestAnswer> {
    let m = s.manifests.get(path).cloned();
    let mut headers = Vec::new();
    if let Some(r) = s.rate.as_mut() {
        if method == "GET" && m.is_some() {
            if r.remaining == 0 {
                let mut h = vec![
                    ("ratelimit-limit".to_string(), format!("{};w={}", r.limit, r.window)),
                    ("ratelimit-remaining".to_string(), format!("0;w={}", r.window)),
                ];
                if let Some(ra) = r.retry_after {
                    h.push(("Retry-After".to_string(), ra.to_string()));
                }
                return Some(ManifestAnswer::Limited(h));
            }
            r.remaining -= 1;
        }
        headers.push(("ratelimit-limit".to_string(), format!("{};w={}", r.limit, r.window)));
        headers.push(("ratelimit-remaining".to_string(), format!("{};w={}", r.remaining, r.window)));
    }
    m.map(|m| ManifestAnswer::Found(m, headers))
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
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (authorization, range) = (header("authorization"), header("range"));
    let is_api = path.starts_with("/v2/");
    let (blob, required, manifest, hold, next_fault) = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            range: range.clone(),
        });
        let digest = path.rsplit('/').next().unwrap_or("");
        let manifest = manifest_answer(&mut s, &method, &path);
        let next = match (is_api, method.as_str()) {
            (true, "GET") => s.next_faults.get_mut(digest).and_then(|q| q.pop_front()),
            _ => None,
        };
        (s.blobs.get(digest).cloned(), s.require_auth.clone(), manifest, s.holds.get(&path).cloned(), next)
    };
    if let Some(gate) = hold {
        gate.pass().await;
    }
    if is_api && required.is_some() && authorization != required {
        return respond(&mut sock, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"fake\"")], b"").await;
    }
    if path == "/v2/" {
        return respond(&mut sock, "200 OK", &[], b"{}").await;
    }
    match manifest {
        Some(ManifestAnswer::Found(m, extra)) => {
            let mut h: Vec<(&str, &str)> = vec![("Content-Type", &m.media_type), ("Docker-Content-Digest", &m.digest)];
            h.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            return if method == "HEAD" {
                respond_head(&mut sock, "200 OK", &h, m.bytes.len()).await
            } else {
                respond(&mut sock, "200 OK", &h, &m.bytes).await
            };
        }
        Some(ManifestAnswer::Limited(extra)) => {
            let h: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#;
            return respond(&mut sock, "429 Too Many Requests", &h, body).await;
        }
        None => {}
    }
    let Some((bytes, fault)) = blob else {
        return respond(&mut sock, "404 Not Found", &[], br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#).await;
    };
    // The CDN side of a redirect serves plain bytes.
    let fault = if is_api { next_fault.unwrap_or(fault) } else { Fault::Good };
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|f| *f <= bytes.len());
    let len = bytes.len();
    let (status, start, content_range) = match (from, &fault) {
        (None, _) | (Some(_), Fault::IgnoreRange) => ("200 OK", 0, None),
        (Some(f), Fault::WrongRange) => {
            ("206 Partial Content", (f + 1).min(len), Some(format!("bytes {}-{}/{len}", f + 1, len - 1)))
        }
        (Some(f), _) => ("206 Partial Content", f, Some(format!("bytes {f}-{}/{len}", len.saturating_sub(1)))),
    };
    let part = &bytes[start..];
    let head = |n: usize| {
        let cr = content_range.as_ref().map(|c| format!("Content-Range: {c}\r\n")).unwrap_or_default();
        format!("HTTP/1.1 {status}\r\nContent-Length: {n}\r\n{cr}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
    };
    let sent = |n: usize| st.lock().unwrap().blob_bytes_sent += n as u64;
    match fault {
        Fault::Good | Fault::IgnoreRange | Fault::WrongRange => {
            sock.write_all(head(part.len()).as_bytes()).await?;
            sock.write_all(part).await?;
            sent(part.len());
            sock.shutdown().await
        }
        Fault::FlipBit => {
            let mut b = part.to_vec();
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            sock.write_all(head(b.len()).as_bytes()).await?;
            sock.write_all(&b).await?;
            sent(b.len());
            sock.shutdown().await
        }
        Fault::ResetAfter(n) => {
            let n = n.min(part.len());
            sock.write_all(head(part.len()).as_bytes()).await?;
            sock.write_all(&part[..n]).await?;
            sock.flush().await?;
            sent(n);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            // Zero linger turns the close into an RST; on loopback it never blocks.
            #[allow(deprecated)]
            sock.set_linger(Some(std::time::Duration::ZERO))?;
            drop(sock);
            Ok(())
        }
        Fault::TruncateAt(n) => {
            let n = n.min(part.len());
            sock.write_all(head(part.len()).as_bytes()).await?;
            sock.write_all(&part[..n]).await?;
            sent(n);
            sock.shutdown().await
        }
        Fault::RedirectTo(url) => respond(&mut sock, "307 Temporary Redirect", &[("Location", &url)], b"").await,
        Fault::Status(code, headers) => {
            let status = format!("{code} Fault");
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            respond(&mut sock, &status, &h, br#"{"errors":[{"code":"UNKNOWN"}]}"#).await
        }
        Fault::SlowHeaders { delay_ms } => {
            for b in head(part.len()).as_bytes() {
                sock.write_all(&[*b]).await?;
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            }
            sock.write_all(part).await?;
            sent(part.len());
            sock.shutdown().await
        }
        // A HEAD has no body to hold: answered at once, and never counted at the gate.
        Fault::Hold { .. } if method == "HEAD" => respond_head(&mut sock, status, &[], part.len()).await,
        Fault::Hold { at, gate } => {
            let at = at.min(part.len());
            sock.write_all(head(part.len()).as_bytes()).await?;
            sock.write_all(&part[..at]).await?;
            sock.flush().await?;
            sent(at);
            gate.pass().await;
            sock.write_all(&part[at..]).await?;
            sent(part.len() - at);
            sock.shutdown().await
        }
        Fault::Slow { chunk, delay_ms } => {
            sock.write_all(head(part.len()).as_bytes()).await?;
            for piece in part.chunks(chunk) {
                sock.write_all(piece).await?;
                sock.flush().await?;
                sent(piece.len());
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            }
            sock.shutdown().await
        }
    }
}

/// A HEAD answer: the headers of a `len`-byte body, and no body.
async fn respond_head(sock: &mut TcpStream, status: &str, headers: &[(&str, &str)], len: usize) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await?;
    sock.shutdown().await
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
