//! A Docker-style token server for docker-registry's `auth: token:` mode: an RS256 JWT
//! signer whose key is trusted through a self-signed certificate (made with openssl), with
//! the JWT `kid` set to the libtrust fingerprint distribution looks keys up by.
//!
//! It can also fail on demand (`fail_with`), which no real token service does, and records
//! every request's `Authorization` header.

use base64::Engine as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct TokenServer {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    /// Tokens handed out.
    pub issued: Arc<AtomicUsize>,
    /// Requests received, answered or failed.
    pub requests: Arc<AtomicUsize>,
    /// The `Authorization` header of every request, in order.
    pub authorizations: Arc<Mutex<Vec<Option<String>>>>,
    /// When non-zero, every request is answered with this status and no token.
    pub fail_with: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl is installed (.ci/run installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// libtrust's key ID: base32 of the first 240 bits of sha256(SPKI DER), in groups of four.
fn libtrust_kid(spki_der: &[u8]) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(spki_der);
    let b32 = base32(&sum[..30]);
    b32.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

fn base32(data: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u64, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl TokenServer {
    pub async fn start(dir: &Path) -> TokenServer {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let pk8 = dir.join("key.p8");
        let spki = dir.join("pub.der");
        let s = |p: &Path| p.display().to_string();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &s(&key)]);
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &s(&key),
            "-out",
            &s(&cert),
            "-days",
            "2",
            "-subj",
            "/CN=token-signer",
        ]);
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &s(&key), "-outform", "DER", "-out", &s(&pk8)]);
        openssl(&["pkey", "-in", &s(&key), "-pubout", "-outform", "DER", "-out", &s(&spki)]);
        let kid = libtrust_kid(&std::fs::read(&spki).unwrap());
        let keypair = Arc::new(ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&pk8).unwrap()).unwrap());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let fail_with = Arc::new(AtomicU16::new(0));
        let count = issued.clone();
        let (seen, auths, fail) = (requests.clone(), authorizations.clone(), fail_with.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (keypair, kid, count) = (keypair.clone(), kid.clone(), count.clone());
                let (seen, auths, fail) = (seen.clone(), auths.clone(), fail.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(m) => n += m,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.fetch_add(1, Ordering::SeqCst);
                    let authorization = head
                        .split("\r\n")
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.trim().to_string());
                    auths.lock().unwrap().push(authorization);
                    let status = fail.load(Ordering::SeqCst);
                    if status != 0 {
                        let body = r#"{"details":"injected failure"}"#;
                        let resp = format!(
                            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.shutdown().await;
                        return;
                    }
                    let target = head.split(' ').nth(1).unwrap_or("");
                    let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                    let scopes: Vec<String> = query
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("scope="))
                        .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
                        .collect();
                    let jwt = sign(&keypair, &kid, &scopes);
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TokenServer { addr, cert, issued, requests, authorizations, fail_with, task }
    }

    /// The `auth: token:` settings of a docker-registry that trusts this server.
    pub fn auth(&self) -> super::TokenAuth {
        super::TokenAuth {
            realm: self.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            cert: self.cert.clone(),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

/// A JWT granting every action each `scope` (`repository:name:pull,push`) asks for.
fn sign(keypair: &ring::signature::RsaKeyPair, kid: &str, scopes: &[String]) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let access: Vec<_> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let (typ, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let claims = serde_json::json!({
        "iss": super::token::ISSUER, "sub": "", "aud": super::token::SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut sig = vec![0u8; keypair.public().modulus_len()];
    keypair
        .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
        .unwrap();
    format!("{signing_input}.{}", b64(&sig))
}
