//! What an operator touches: metrics (checked by promtool), health endpoints, graceful
//! shutdown, TLS serving with certificate reload and HTTP/2, upstream TLS with a private CA,
//! JSON logs, and hosts.toml generation.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_hits_and_misses_and_pass_promtool() {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(9, 300_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes, Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let hit = "pullthrough_cache_requests_total{kind=\"blob\",result=\"hit\",upstream=\"fake.test\"}";
    let miss = "pullthrough_cache_requests_total{kind=\"blob\",result=\"miss\",upstream=\"fake.test\"}";
    let miss_bytes = "pullthrough_cache_served_bytes_total{result=\"miss\",upstream=\"fake.test\"}";
    let upstream_gets = "pullthrough_upstream_requests_total{method=\"GET\",status=\"200\",upstream=\"fake.test\"}";
    assert_eq!(proxy.metric(miss).await, 0.0);

    get_hashed(&url, &[]).await.unwrap();
    assert_eq!(proxy.metric(miss).await, 1.0);
    assert_eq!(proxy.metric(hit).await, 0.0);
    assert_eq!(proxy.metric(miss_bytes).await, 300_000.0);
    assert_eq!(proxy.metric(upstream_gets).await, 1.0);

    get_hashed(&url, &[]).await.unwrap();
    get_hashed(&url, &[]).await.unwrap();
    assert_eq!(proxy.metric(hit).await, 2.0);
    assert_eq!(proxy.metric(miss).await, 1.0);
    assert_eq!(proxy.metric(upstream_gets).await, 1.0, "a hit went upstream");
    assert!(proxy.metric("pullthrough_cache_size_bytes").await >= 300_000.0);
    assert_eq!(proxy.metric("pullthrough_fills_in_flight").await, 0.0);
    // A verification failure is counted too.
    let bad = pseudo_random(10, 1000);
    let bad_digest = format!("sha256:{}", sha256_hex(&bad));
    fake.set_blob(&bad_digest, bad, Fault::FlipBit);
    // Failed before the response started (a 502) or mid-stream (a broken transfer).
    match get_hashed(&format!("{}/v2/r/blobs/{bad_digest}?ns=fake.test", proxy.url()), &[]).await {
        Err(_) => {}
        Ok((status, _, _)) => assert_eq!(status, 502),
    }
    wait_until("the failure to be counted", Duration::from_secs(5), async || {
        proxy.metric("pullthrough_fill_verification_failures_total{upstream=\"fake.test\"}").await == 1.0
    })
    .await;

    let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await.unwrap().text();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs the prometheus package)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Health endpoints, on the admin and the client listener.
    for base in [format!("http://{}", proxy.admin), proxy.url()] {
        assert_eq!(get(&format!("{base}/healthz"), &[]).await.unwrap().status, 200);
        let r = get(&format!("{base}/readyz"), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("\"cache_dir_writable\":true"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_when_the_cache_dir_is_not_writable() {
    let fake = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let tmp = proxy.cache.join("tmp");
    // Replace tmp/ with a file: creating the probe fails even for root.
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, "not a directory").unwrap();
    let r = get(&format!("http://{}/readyz", proxy.admin), &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("\"cache_dir_writable\":false"));
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    assert_eq!(get(&format!("http://{}/readyz", proxy.admin), &[]).await.unwrap().status, 200);
}

async fn slow_blob_proxy(grace: &str) -> (FakeUpstream, Proxy, String, u64) {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(77, 4 << 20);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    // About 2 s of transfer.
    fake.set_blob(&digest, bytes, Fault::Slow { chunk: 128 * 1024, delay_ms: 60 });
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("fake.test", &fake.url(), ""));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("shutdown_grace = \"5s\"", &format!("shutdown_grace = \"{grace}\""));
    std::fs::write(&cfg, text).unwrap();
    let proxy = Proxy::launch(dir, &cfg, |c| c).await;
    (fake, proxy, digest, 4 << 20)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_transfer_finish_and_leaves_no_temp_file() {
    let (_fake, mut proxy, digest, size) = slow_blob_proxy("10s").await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let client = tokio::spawn(async move { get_hashed(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.proc.signal("TERM");
    // New connections are refused soon after the signal...
    wait_until("the listener to close", Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(proxy.addr).await.is_err()
    })
    .await;
    // ...while the transfer in flight completes, correct.
    let (status, n, hex) = client.await.unwrap().unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, size, digest.clone()));
    let status = wait_exit(&mut proxy).await;
    assert!(status.success(), "exit status {status}");
    assert!(list_files(&proxy.cache.join("tmp")).is_empty());
    // The daemon waited for the fill to commit before exiting.
    assert!(proxy.cached_blobs().iter().any(|p| p.ends_with(digest.trim_start_matches("sha256:"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_grace_period_aborts_cleanly() {
    let (_fake, mut proxy, digest, _) = slow_blob_proxy("300ms").await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let client = tokio::spawn(async move { get_hashed(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.proc.signal("TERM");
    assert!(client.await.unwrap().is_err(), "a cut transfer must not look complete");
    let status = wait_exit(&mut proxy).await;
    assert!(status.success(), "exit status {status}");
    assert!(list_files(&proxy.cache.join("tmp")).is_empty(), "a partial fill was left behind");
    assert!(!proxy.cached_blobs().iter().any(|p| p.ends_with(digest.trim_start_matches("sha256:"))));
}

async fn wait_exit(proxy: &mut Proxy) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(s) = proxy.proc.child.try_wait().unwrap() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pullthrough did not exit after SIGTERM:\n{}", proxy.proc.log_text());
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(args).output().expect("curl is installed (.ci/run installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn served_fingerprint(addr: std::net::SocketAddr) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn file_fingerprint(cert: &std::path::Path) -> String {
    let out =
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(cert).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_tls_with_http2_and_reloads_its_certificate_on_sighup() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let img = common::image::manifest(src.path(), 31, &[10_000], "amd64");
    common::image::finish_layout(src.path(), &[(&img.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "t/app:v1", None);

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path(), "server");
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", &registry.url(), "prefix = \"lab\""));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[cache]", &format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n[cache]", cert.display(), key.display()));
    std::fs::write(&cfg, text).unwrap();
    // Readiness of a TLS listener: the launcher's plain-HTTP probe cannot see it, so wait
    // on the admin listener instead.
    let proxy = launch_tls(dir, &cfg).await;
    let base = format!("https://{}", proxy.addr);
    let version = curl(&["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}", &format!("{base}/v2/")]);
    assert_eq!(version, "2", "HTTP/2 was not negotiated by ALPN");
    let version = curl(&["-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_version}", &format!("{base}/v2/")]);
    assert_eq!(version, "1.1");
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/lab/t/app:v1", proxy.addr),
        &format!("oci:{}:v1", out.path().display()),
    ]);

    assert_eq!(served_fingerprint(proxy.addr), file_fingerprint(&cert));
    let rotated = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = self_signed_cert(rotated.path(), "server");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    proxy.proc.signal("HUP");
    wait_until("the new certificate to be served", Duration::from_secs(10), async || {
        served_fingerprint(proxy.addr) == file_fingerprint(&new_cert)
    })
    .await;
    wait_log(&proxy.proc, "TLS certificate reloaded").await;
}

async fn launch_tls(dir: tempfile::TempDir, cfg: &std::path::Path) -> Proxy {
    let text = std::fs::read_to_string(cfg).unwrap();
    let value =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().trim_matches('"').to_string();
    let addr: std::net::SocketAddr = value("listen = ").parse().unwrap();
    let admin: std::net::SocketAddr = value("admin_listen = ").parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullthrough"));
    cmd.arg("serve").arg("--config").arg(cfg);
    let proc = Proc::spawn(cmd, dir.path().join("pullthrough.log"));
    wait_until(
        "the TLS proxy to be ready",
        Duration::from_secs(20),
        async || matches!(get(&format!("http://{admin}/healthz"), &[]).await, Ok(r) if r.status == 200),
    )
    .await;
    Proxy { addr, admin, cache: dir.path().join("cache"), proc, dir }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_upstream_with_a_private_ca_needs_its_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed_cert(certs.path(), "upstream");
    let tls_yaml = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    let registry = Registry::start_at(tempfile::tempdir().unwrap(), free_port(), &tls_yaml).await;
    let src = tempfile::tempdir().unwrap();
    let img = common::image::manifest(src.path(), 41, &[10_000], "amd64");
    common::image::finish_layout(src.path(), &[(&img.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "t/app:v1", None);
    let https = format!("https://{}", registry.addr);

    // Without the CA: refused with an error that says why.
    let proxy = Proxy::start(&upstream_toml("tls.test", &https, "")).await;
    let r = get(&format!("{}/v2/t/app/manifests/v1?ns=tls.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().to_lowercase().contains("certificate"), "{}", r.text());

    // With ca_file: pulled and verified.
    let proxy = Proxy::start(&upstream_toml("tls.test", &https, &format!("ca_file = \"{}\"", ca.display()))).await;
    let r = get(&format!("{}/v2/t/app/manifests/v1?ns=tls.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(img.top.digest.as_str()));

    // insecure_skip_verify works too, and says so loudly.
    let proxy = Proxy::start(&upstream_toml("tls.test", &https, "insecure_skip_verify = true")).await;
    let r = get(&format!("{}/v2/t/app/manifests/v1?ns=tls.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_log(&proxy.proc, "NOT verified").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_one_line_per_request() {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("fake.test", &fake.url(), ""));
    let proxy = Proxy::launch(dir, &cfg, |mut c| {
        c.arg("--log-format").arg("json");
        c
    })
    .await;
    get(&format!("{}/v2/x/manifests/latest?ns=fake.test", proxy.url()), &[]).await.unwrap();
    // Log lines reach the file from the log writer's own thread, a moment after the response.
    wait_until("the request line", Duration::from_secs(5), async || {
        proxy.proc.log_text().contains("\"kind\":\"manifest\"")
    })
    .await;
    let log = proxy.proc.log_text();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "request" && v["kind"] == "manifest")
        .unwrap_or_else(|| panic!("no JSON request line in:\n{log}"));
    assert_eq!(line["status"], 404);
    assert_eq!(line["upstream"], "fake.test", "a forwarded 404 names its upstream");
    assert_eq!(line["method"], "GET");
    assert!(line["ms"].is_u64());
    assert_eq!(line["query"], "ns=fake.test");
}

#[test]
fn hosts_toml_are_generated_for_every_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pullthrough"))
        .args(["hosts-toml", "--mirror", "http://127.0.0.1:5000", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut hosts = list_files(dir.path());
    hosts.sort();
    assert_eq!(
        hosts,
        [
            "docker.io/hosts.toml",
            "ghcr.io/hosts.toml",
            "public.ecr.aws/hosts.toml",
            "quay.io/hosts.toml",
            "registry.k8s.io/hosts.toml"
        ]
    );
    let hub = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
    assert!(hub.contains("server = \"https://registry-1.docker.io\""));
    assert!(hub.contains("[host.\"http://127.0.0.1:5000\"]"));
    let bad = Command::new(env!("CARGO_BIN_EXE_pullthrough"))
        .args(["hosts-toml", "--mirror", "ftp://x", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mirror"));
}
