//! Hardening: client access control (users, tokens, deny-list), the SSRF guard on
//! redirects, per-client connection limits, and more upstream faults (stalls, 5xx, 429,
//! redirect loops, a manifest that does not match its digest), with a check that file
//! descriptors return to their baseline afterwards.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::{self, pseudo_random};
use common::*;
use std::time::Duration;

/// sha256 of the bearer token "ci-token-123".
fn token_hash() -> String {
    sha256_hex(b"ci-token-123")
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn access_control_allows_and_denies_per_user() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 81, &[20_000], "amd64");
    let bad = image::manifest(src.path(), 82, &[10_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1"), (&bad.top, "b1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "b1", &registry.addr.to_string(), "other/thing:v1", None);
    push(src.path(), "v1", &registry.addr.to_string(), "test/evil:v1", None);

    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let access = format!(
        "[access]\ndeny = [\"lab.test/test/evil\", \"{}\"]\n[[access.user]]\nname = \"alice\"\npassword_bcrypt = \"{hash}\"\nallow = [\"lab.test/test/*\"]\n[[access.user]]\nname = \"ci\"\ntoken_sha256 = \"{}\"\n",
        bad.layers[0].digest,
        token_hash()
    );
    let proxy =
        Proxy::start(&format!("{access}\n{}", upstream_toml("lab.test", &registry.url(), "prefix = \"lab\""))).await;
    let p = proxy.url();
    let alice = basic("alice", "s3cret");

    // No credentials: 401 with a challenge, on /v2/ and on content.
    let r = get(&format!("{p}/v2/"), &[]).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"pullthrough\""));
    let r = get(&format!("{p}/v2/lab/test/app/manifests/v1"), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (401, Some("UNAUTHORIZED")));
    // Wrong password, unknown token: 401, never anonymous.
    let r =
        get(&format!("{p}/v2/lab/test/app/manifests/v1"), &[("authorization", &basic("alice", "nope"))]).await.unwrap();
    assert_eq!(r.status, 401);
    let r = get(&format!("{p}/v2/lab/test/app/manifests/v1"), &[("authorization", "Bearer wrong")]).await.unwrap();
    assert_eq!(r.status, 401);
    // Alice: her repositories yes, others no.
    let r = get(&format!("{p}/v2/lab/test/app/manifests/v1"), &[("authorization", &alice)]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&format!("{p}/v2/lab/other/thing/manifests/v1"), &[("authorization", &alice)]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")));
    // The token user may pull anything not deny-listed.
    let ci = "Bearer ci-token-123";
    let r = get(&format!("{p}/v2/lab/other/thing/manifests/v1"), &[("authorization", ci)]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Deny-list: a repository, and a digest, for everyone.
    let r = get(&format!("{p}/v2/lab/test/evil/manifests/v1"), &[("authorization", ci)]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")));
    assert!(r.text().contains("deny-list"));
    let r =
        get(&format!("{p}/v2/lab/other/thing/blobs/{}", bad.layers[0].digest), &[("authorization", ci)]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")));

    // A real client logs in the Docker way: 401 challenge, then Basic.
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "alice:s3cret",
        &format!("docker://{}/lab/test/app:v1", proxy.addr),
        &format!("oci:{}:v1", out.path().display()),
    ]);
    assert!(!proxy.proc.log_text().contains("s3cret"), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_link_local_addresses_are_refused() {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(5, 1000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes, Fault::RedirectTo("http://169.254.169.254/latest/meta-data/".into()));
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let r = get(&format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("link-local"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn per_client_connection_limit_closes_the_excess() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeUpstream::start().await;
    let proxy = Proxy::start(&format!(
        "[access]\nmax_connections_per_client = 2\n{}",
        upstream_toml("fake.test", &fake.url(), "")
    ))
    .await;
    // Let the launcher's readiness probe connection finish, then hold two connections that
    // have each been served (so both are surely counted).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the third connection was served: {:?}", String::from_utf8_lossy(&buf[..n]));
    let (a, b) = (held.remove(0), held.remove(0));
    drop((a, b));
    // Slots come back when connections end.
    wait_until(
        "a slot to free up",
        Duration::from_secs(5),
        async || matches!(get(&format!("{}/v2/", proxy.url()), &[]).await, Ok(r) if r.status == 200),
    )
    .await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_fault_matrix_gives_clear_errors_caches_nothing_and_leaks_nothing() {
    let fake = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"1s\"")).await;
    let pid = proxy.proc.child.id();
    assert_eq!(get(&format!("{}/v2/", proxy.url()), &[]).await.unwrap().status, 200);
    let baseline = open_fds(pid);

    let blob = |seed: u64| {
        let b = pseudo_random(seed, 300_000);
        (format!("sha256:{}", sha256_hex(&b)), b)
    };
    let url = |kind: &str, d: &str| format!("{}/v2/r/{kind}/{d}?ns=fake.test", proxy.url());

    // A stalled upstream: headers, then nothing. The read timeout ends it.
    let (d, b) = blob(1);
    fake.set_blob(&d, b, Fault::Slow { chunk: 1000, delay_ms: 5000 });
    let started = std::time::Instant::now();
    let r = get_hashed(&url("blobs", &d), &[]).await;
    assert!(r.is_err() || r.as_ref().unwrap().0 != 200, "a stalled transfer completed: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the stall was not cut by read_timeout");

    // 5xx: a 502 that names the upstream.
    let (d, b) = blob(2);
    fake.set_blob(&d, b, Fault::Status(500, vec![]));
    let r = get(&url("blobs", &d), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (502, Some("UNAVAILABLE")));
    assert!(r.text().contains("fake.test"));

    // A redirect loop: cut after a few hops.
    let (d, b) = blob(4);
    fake.set_blob(&d, b, Fault::RedirectTo(format!("{}/v2/r/blobs/{d}", fake.url())));
    let r = get(&url("blobs", &d), &[]).await.unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("redirects"), "{}", r.text());
    // The vouching HEAD stops at the first redirect (a redirect vouches); the GET and its
    // five redirects are cut after that.
    assert!(fake.hits(&format!("/blobs/{d}")) <= 7, "redirects were followed without bound");

    // A manifest whose bytes do not match the digest asked for: refused, not cached.
    let (wanted, _) = blob(5);
    let manifest =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#.to_vec();
    fake.set_blob(&wanted, manifest, Fault::Good);
    let r = get(&url("manifests", &wanted), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("verification"), "{}", r.text());

    // Wrong Content-Length (more announced than sent): a broken transfer.
    let (d, b) = blob(6);
    fake.set_blob(&d, b, Fault::TruncateAt(1000));
    assert!(get_hashed(&url("blobs", &d), &[]).await.is_err());

    // Nothing bad was cached, no temp file is left, the daemon still serves, and its file
    // descriptors are back to where they started.
    wait_until("temp files to go", Duration::from_secs(10), async || list_files(&proxy.cache.join("tmp")).is_empty())
        .await;
    assert!(proxy.cached_blobs().is_empty(), "{:?}", proxy.cached_blobs());
    let (d, b) = blob(7);
    fake.set_blob(&d, b, Fault::Good);
    assert_eq!(get_hashed(&url("blobs", &d), &[]).await.unwrap().0, 200);

    // 429 with Retry-After: passed on, so clients back off. Last, because the proxy then
    // holds every request to this upstream back until the Retry-After ends (see
    // `upstream::budget`).
    let (d, b) = blob(3);
    fake.set_blob(&d, b, Fault::Status(429, vec![("Retry-After".into(), "7".into())]));
    let r = get(&url("blobs", &d), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (429, Some("TOOMANYREQUESTS")));
    assert_eq!(r.header("retry-after"), Some("7"));
    wait_until("file descriptors to return to baseline", Duration::from_secs(15), async || {
        open_fds(pid) <= baseline + 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_are_refused_and_the_daemon_keeps_serving() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fake = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    // A head of exactly the daemon's 64 KiB buffer, unfinished: it reads every byte sent (so
    // its close is a FIN, never an RST that would drop its answer), finds the head too
    // large, and answers 431.
    let mut head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nx-padding: ".to_vec();
    head.resize(64 * 1024, b'x');
    let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(&head).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "an oversized header was not refused with 431: {answer:?}");
    assert_eq!(get(&format!("{}/v2/", proxy.url()), &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_dead_hosts_and_a_dead_token_endpoint_fail_clearly() {
    // Slow-loris upstream: the head trickles in; read_timeout bounds the wait.
    let fake = FakeUpstream::start().await;
    let b = pseudo_random(11, 5000);
    let d = format!("sha256:{}", sha256_hex(&b));
    fake.set_blob(&d, b, Fault::SlowHeaders { delay_ms: 200 });
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"1s\"")).await;
    let started = std::time::Instant::now();
    let r = get(&format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (504, Some("UNAVAILABLE")), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));

    // A host that does not resolve: 503 naming the upstream.
    let proxy = Proxy::start(&upstream_toml("gone.test", "http://registry.invalid", "connect_timeout = \"2s\"")).await;
    let r = get(&format!("{}/v2/x/manifests/latest?ns=gone.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (503, Some("UNAVAILABLE")), "{}", r.text());
    assert!(r.text().contains("gone.test"), "{}", r.text());

    // A Bearer upstream whose token endpoint is down: a clear token error, not a 404.
    let fake = FakeUpstream::start().await;
    let b = pseudo_random(12, 5000);
    let d = format!("sha256:{}", sha256_hex(&b));
    let dead_port = DeadPort::new();
    let dead = dead_port.addr.port();
    fake.set_blob(
        &d,
        b,
        Fault::Status(
            401,
            vec![("WWW-Authenticate".into(), format!("Bearer realm=\"http://127.0.0.1:{dead}/token\",service=\"x\""))],
        ),
    );
    let proxy = Proxy::start(&upstream_toml("tok.test", &fake.url(), "")).await;
    let r = get(&format!("{}/v2/r/blobs/{d}?ns=tok.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("token endpoint"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_stream_does_not_stop_the_fill() {
    let fake = FakeUpstream::start().await;
    let b = pseudo_random(13, 2 << 20);
    let d = format!("sha256:{}", sha256_hex(&b));
    fake.set_blob(&d, b, Fault::Slow { chunk: 64 * 1024, delay_ms: 20 });
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    // Read a little, then hang up.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(format!("GET /v2/r/blobs/{d}?ns=fake.test HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 100_000];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
    // Policy (README, "Fill policy"): the fill runs to completion and the blob is cached.
    proxy.wait_cached(&d).await;
    let gets = || fake.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with(&d)).count();
    assert_eq!(gets(), 1);
    let (status, _, hex) = get_hashed(&format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, d.clone()));
    assert_eq!(gets(), 1, "the cached blob was fetched again");
}

fn anon_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Mixed clients and faults for a bounded time (SOAK_SECONDS, default 20), then resources
/// must return to their baseline.
#[tokio::test(flavor = "multi_thread")]
async fn soak_mixed_clients_and_faults_returns_to_baseline() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let fake = FakeUpstream::start().await;
    let faults = [
        Fault::Good,
        Fault::FlipBit,
        Fault::TruncateAt(50_000),
        Fault::ResetAfter(30_000),
        Fault::Slow { chunk: 32 * 1024, delay_ms: 5 },
        Fault::Status(503, vec![]),
    ];
    let mut blobs = Vec::new();
    for i in 0..24u64 {
        let b = pseudo_random(1000 + i, 100_000 + i as usize * 7_000);
        let d = format!("sha256:{}", sha256_hex(&b));
        fake.set_blob(&d, b.clone(), faults[i as usize % faults.len()].clone());
        blobs.push((d, b, i as usize % faults.len() == 0 || i as usize % faults.len() == 4));
    }
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"2s\"")).await;
    let pid = proxy.proc.child.id();
    assert_eq!(get(&format!("{}/v2/", proxy.url()), &[]).await.unwrap().status, 200);
    let (fd0, rss0) = (open_fds(pid), anon_rss_kib(pid));
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let blobs = std::sync::Arc::new(blobs);
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (blobs, base) = (blobs.clone(), proxy.url());
        workers.push(tokio::spawn(async move {
            let mut x = w * 2654435761 + 1;
            let mut served = 0;
            while std::time::Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (d, bytes, good) = &blobs[(x % blobs.len() as u64) as usize];
                let url = format!("{base}/v2/r/blobs/{d}?ns=fake.test");
                match x % 4 {
                    0 => {
                        // A range answer is the right bytes, or no answer (a faulty blob).
                        let r = get(&url, &[("range", "bytes=10-99")]).await;
                        match &r {
                            Ok(r) if r.status == 206 => assert_eq!(&r.body[..], &bytes[10..100], "wrong range bytes"),
                            _ => assert!(!good, "a range of a good blob failed: {:?}", r.map(|r| r.status)),
                        }
                    }
                    1 => {
                        // A HEAD announces the blob's true size, or fails (a faulty blob).
                        let r = net::send("HEAD", &url, &[]).await;
                        match &r {
                            Ok(r) if r.status == 200 => {
                                assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()))
                            }
                            _ => assert!(!good, "a HEAD of a good blob failed: {:?}", r.map(|r| r.status)),
                        }
                    }
                    _ => {
                        // Whatever completes with 200 is correct, fault or not; a good blob
                        // always completes.
                        match get_hashed(&url, &[]).await {
                            Ok((200, _, hex)) => {
                                assert_eq!(format!("sha256:{hex}"), *d, "corrupt bytes served");
                                served += usize::from(*good);
                            }
                            other => assert!(!good, "a good blob failed: {other:?}"),
                        }
                    }
                }
            }
            served
        }));
    }
    let mut served = 0;
    for w in workers {
        served += w.await.unwrap();
    }
    assert!(served > 0, "no good blob was served during the soak");
    wait_until("temp files to go", Duration::from_secs(10), async || list_files(&proxy.cache.join("tmp")).is_empty())
        .await;
    wait_until("fds and memory back to baseline", Duration::from_secs(20), async || {
        open_fds(pid) <= fd0 + 4 && anon_rss_kib(pid) <= rss0 + 48 * 1024
    })
    .await;
    // Only good content was committed.
    for rel in proxy.cached_blobs() {
        let bytes = std::fs::read(proxy.cache.join("blobs").join(&rel)).unwrap();
        assert!(rel.ends_with(&sha256_hex(&bytes)), "{rel} does not verify");
    }
}

fn der_sha256(cert: &std::path::Path) -> String {
    let out =
        std::process::Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(cert).output().unwrap();
    sha256_hex(&out.stdout)
}

fn curl_status(args: &[&str]) -> Option<u16> {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_identify_users() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 91, &[1000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "v1", &registry.addr.to_string(), "other/app:v1", None);

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed_cert(dir.path(), "srv");
    let (node_crt, node_key) = client_cert(dir.path(), "srv", "node-1");
    let other = tempfile::tempdir().unwrap();
    ca_signed_cert(other.path(), "rogue");
    let (rogue_crt, rogue_key) = client_cert(other.path(), "rogue", "rogue");

    let access = format!(
        "[access]\nanonymous = false\n[[access.user]]\nname = \"node\"\ncert_sha256 = \"{}\"\nallow = [\"lab.test/test/*\"]\n",
        der_sha256(&node_crt)
    );
    let cfg = Proxy::write_config(
        dir.path(),
        "",
        &format!("{access}\n{}", upstream_toml("lab.test", &registry.url(), "prefix = \"lab\"")),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[cache]",
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n[cache]",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    // The daemon binds port 0 and logs the address it bound.
    let proxy = Proxy::launch(dir, &cfg, |c| c).await;
    let addr = proxy.addr;

    let url = |repo: &str| format!("https://{addr}/v2/lab/{repo}/manifests/v1");
    let (nc, nk) = (node_crt.to_str().unwrap(), node_key.to_str().unwrap());
    assert_eq!(curl_status(&["--cert", nc, "--key", nk, &url("test/app")]), Some(200));
    assert_eq!(curl_status(&["--cert", nc, "--key", nk, &url("other/app")]), Some(403));
    assert_eq!(curl_status(&[&url("test/app")]), Some(401), "no certificate, no credentials");
    // A certificate from another CA does not get through the handshake.
    assert_eq!(
        curl_status(&["--cert", rogue_crt.to_str().unwrap(), "--key", rogue_key.to_str().unwrap(), &url("test/app")]),
        None
    );
}
