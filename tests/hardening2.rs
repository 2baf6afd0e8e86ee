//! Hardening, round 2 (issue 12): idle and silent connections are closed after
//! `[server] idle_timeout`; `Range` follows RFC 9110 §14.2; anonymous requests that
//! credentials could allow are challenged (401) rather than refused, so real containerd and
//! skopeo can log in; the request log names the upstream of forwarded errors and times the
//! whole body; `export` names the real cause of a failure and gives images that share a tag
//! distinct `ref.name`s.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::fake::{FakeUpstream, Fault};
use common::image::{self, pseudo_random};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy with extra `[server]` lines and the given `[access]`/`[[upstream]]` sections.
async fn proxy_with_server(server_toml: &str, rest_toml: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", rest_toml);
    let text = std::fs::read_to_string(&cfg).unwrap().replacen("[cache]", &format!("{server_toml}\n[cache]"), 1);
    std::fs::write(&cfg, text).unwrap();
    Proxy::launch(dir, &cfg, |c| c).await
}

/// Read until the peer closes (EOF or reset), bounded by `limit`: the time it took, or
/// `None` if the connection was still open at the limit.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_idle_connections_are_closed_but_slow_transfers_are_not() {
    let fake = FakeUpstream::start().await;
    // 10 pieces 300 ms apart: about 3 s, longer than the idle timeout.
    let slow = pseudo_random(21, 200_000);
    let slow_digest = format!("sha256:{}", sha256_hex(&slow));
    fake.set_blob(&slow_digest, slow, Fault::Slow { chunk: 20_000, delay_ms: 300 });
    let proxy = proxy_with_server(
        "idle_timeout = \"2s\"",
        &format!("[access]\nmax_connections_per_client = 5\n{}", upstream_toml("fake.test", &fake.url(), "")),
    )
    .await;
    // Let the launcher's readiness probe connection end.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Five sockets that never send a byte take every slot of this client address...
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut locked_out = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _ = locked_out.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), locked_out.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "a sixth connection was served while five were held");

    // ...until the idle timeout closes them: read sees EOF, and a new client gets in.
    for s in &mut silent {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        assert!(closed_within(s, left).await.is_some(), "a silent connection was still open after 10 s");
    }
    assert!(opened.elapsed() >= Duration::from_millis(1500), "closed before the idle timeout");
    wait_until(
        "a new client to be served",
        Duration::from_secs(5),
        async || matches!(get(&format!("{}/v2/", proxy.url()), &[]).await, Ok(r) if r.status == 200),
    )
    .await;

    // An HTTP/1.1 keep-alive connection idle after a request is closed too (hyper alone
    // would wait 30 s).
    let mut ka = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    ka.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), ka.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = closed_within(&mut ka, Duration::from_secs(8)).await.expect("idle keep-alive connection left open");
    assert!(t >= Duration::from_millis(1500), "keep-alive connection closed after {t:?}");

    // An HTTP/2 (h2c) connection that sends its preface and settings, then nothing.
    let mut h2 = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    assert!(closed_within(&mut h2, Duration::from_secs(8)).await.is_some(), "idle HTTP/2 connection left open");

    // A transfer that takes longer than the idle timeout is not idle, and completes.
    let (status, _, hex) =
        get_hashed(&format!("{}/v2/r/blobs/{slow_digest}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, slow_digest));
    wait_log(&proxy.proc, "closing an idle connection").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_requests_follow_rfc_9110() {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(22, 50_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes.clone(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());

    // Several ranges, or a unit other than bytes: the whole blob, 200, no Content-Range.
    for range in ["bytes=0-0,2-3", "bytes=0-0, 2-3, -5", "items=0-1"] {
        let r = get(&url, &[("range", range)]).await.unwrap();
        assert_eq!(r.status, 200, "{range}: {}", r.text());
        assert_eq!(r.body.as_ref(), bytes.as_slice(), "{range}");
        assert_eq!(r.header("content-range"), None, "{range}");
    }
    // One range: 206.
    let r = get(&url, &[("range", "bytes=2-3")]).await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (206, &bytes[2..4]));
    assert_eq!(r.header("content-range"), Some("bytes 2-3/50000"));
    // Invalid byte ranges keep their answers.
    for range in ["bytes=5-1", "bytes=0-1,x", "bytes=a-b"] {
        let r = get(&url, &[("range", range)]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (400, Some("RANGE_INVALID")), "{range}");
    }
    let r = get(&url, &[("range", "bytes=50000-")]).await.unwrap();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */50000"));
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn skopeo_status(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("skopeo").arg("--insecure-policy").args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_requests_are_challenged_so_containerd_and_skopeo_can_log_in() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "containerd tests run as root (as CI does)");
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 23, &[30_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    for name in ["public/app:v1", "team/app:v1", "other/app:v1"] {
        push(src.path(), "v1", &registry.addr.to_string(), name, None);
    }
    let access = format!(
        "[access]\nanonymous = true\nanonymous_allow = [\"lab.test/public/*\"]\n[[access.user]]\nname = \"alice\"\npassword_bcrypt = \"{}\"\nallow = [\"lab.test/public/*\", \"lab.test/team/*\"]\n",
        bcrypt::hash("s3cret", 4).unwrap()
    );
    let proxy = Proxy::start(&format!(
        "{access}\n{}",
        upstream_toml("lab.test", &registry.url(), "prefix = \"lab\"\ndefault = true")
    ))
    .await;
    let p = proxy.url();

    // Without credentials, outside anonymous_allow: 401 with a Basic challenge, and /v2/
    // challenges too (skopeo and podman decide there whether to send credentials).
    for path in ["/v2/lab/team/app/manifests/v1", "/v2/"] {
        let r = get(&format!("{p}{path}"), &[]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (401, Some("UNAUTHORIZED")), "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"pullthrough\""), "{path}");
    }
    // Wrong password: 401. A user outside their rules: 403, no challenge.
    let r = get(&format!("{p}/v2/lab/team/app/manifests/v1"), &[("authorization", &basic("alice", "nope"))]).await;
    assert_eq!(r.unwrap().status, 401);
    let r = get(&format!("{p}/v2/lab/other/app/manifests/v1"), &[("authorization", &basic("alice", "s3cret"))])
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")));
    assert_eq!(r.header("www-authenticate"), None);

    // skopeo: anonymous inside the allow-list still works (it answers the /v2/ challenge
    // with empty credentials); with credentials, the user's repositories too.
    let out = tempfile::tempdir().unwrap();
    let dest = |n: &str| format!("oci:{}:{n}", out.path().display());
    let from = |repo: &str| format!("docker://{}/lab/{repo}/app:v1", proxy.addr);
    let (ok, log) = skopeo_status(&["copy", "--src-tls-verify=false", &from("public"), &dest("anon")]);
    assert!(ok, "anonymous skopeo pull of an allowed repository failed:\n{log}");
    let (ok, log) = skopeo_status(&["copy", "--src-tls-verify=false", &from("team"), &dest("anon2")]);
    assert!(!ok && (log.contains("401") || log.to_lowercase().contains("unauthorized")), "{log}");
    let creds = ["--src-creds", "alice:s3cret"];
    let (ok, log) =
        skopeo_status(&[&["copy", "--src-tls-verify=false"][..], &creds, &[&from("team"), &dest("alice")]].concat());
    assert!(ok, "skopeo with credentials could not pull alice's repository:\n{log}");
    let (ok, log) = skopeo_status(
        &[&["copy", "--src-tls-verify=false", "--src-creds", "alice:nope"][..], &[&from("team"), &dest("wrong")]]
            .concat(),
    );
    assert!(!ok, "a wrong password pulled:\n{log}");
    let (ok, _) =
        skopeo_status(&[&["copy", "--src-tls-verify=false"][..], &creds, &[&from("other"), &dest("other")]].concat());
    assert!(!ok, "alice pulled a repository outside her rules");

    // containerd sends credentials only after a challenge: `ctr --user` now works. The
    // proxy is lab.test's only host, so a refusal cannot fall back to the registry.
    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("lab.test")).unwrap();
    let hosts_toml = format!("server = \"{p}\"\n[host.\"{p}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    std::fs::write(hosts.join("lab.test/hosts.toml"), hosts_toml).unwrap();
    let ctrd = start_containerd(&work.path().join("ctrd")).await;
    let pull = |image: &str, user: Option<&str>| {
        let mut args = vec!["images", "pull", "--hosts-dir", hosts.to_str().unwrap(), "--snapshotter", "native"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.push(image);
        let out = ctrd.ctr(&args);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = pull("lab.test/team/app:v1", Some("alice:s3cret"));
    assert!(ok, "ctr --user could not pull:\n{err}\n{}", proxy.proc.log_text());
    let bytes = ctrd.ctr(&["content", "get", &app.layers[0].digest]).stdout;
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), app.layers[0].digest);
    let (ok, err) = pull("lab.test/other/app:v1", Some("alice:s3cret"));
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, err) = pull("lab.test/team/app:v2", None);
    assert!(!ok && err.contains("401"), "{err}");
}

/// The `request` log lines of a text log that contain all of `needles`.
fn request_lines<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(" request ") && needles.iter().all(|n| l.contains(n))).collect()
}

/// The numeric value of `key=` in a text log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .trim_matches('"')
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_log_names_upstreams_of_errors_and_times_the_whole_body() {
    let fake = FakeUpstream::start().await;
    let slow = pseudo_random(24, 100_000);
    let slow_digest = format!("sha256:{}", sha256_hex(&slow));
    fake.set_blob(&slow_digest, slow, Fault::Slow { chunk: 10_000, delay_ms: 150 });
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&format!(
        "{}{}",
        upstream_toml("fake.test", &fake.url(), ""),
        upstream_toml("dead.test", &dead, "connect_timeout = \"1s\"")
    ))
    .await;
    let p = proxy.url();
    assert_eq!(get(&format!("{p}/v2/x/manifests/nope?ns=fake.test"), &[]).await.unwrap().status, 404);
    assert_eq!(get(&format!("{p}/v2/x/manifests/v1?ns=dead.test"), &[]).await.unwrap().status, 503);
    let (status, ..) = get_hashed(&format!("{p}/v2/r/blobs/{slow_digest}?ns=fake.test"), &[]).await.unwrap();
    assert_eq!(status, 200);
    // The line is written when the body ends, just after the client has its last byte.
    let mut log = String::new();
    wait_until("the blob's log line", Duration::from_secs(5), async || {
        log = proxy.proc.log_text();
        !request_lines(&log, &["kind=\"blob\"", "status=200"]).is_empty()
    })
    .await;

    let l404 = request_lines(&log, &["status=404", "nope"]);
    assert!(l404.len() == 1 && l404[0].contains("upstream=\"fake.test\""), "{log}");
    let l503 = request_lines(&log, &["status=503"]);
    assert!(l503.len() == 1 && l503[0].contains("upstream=\"dead.test\""), "{log}");
    let blob = request_lines(&log, &["kind=\"blob\"", "status=200"])[0];
    // About 1.5 s of trickle after the headers: `ms` covers it, `headers_ms` does not.
    let (headers_ms, ms) = (field(blob, "headers_ms"), field(blob, "ms"));
    assert!(ms >= 1200 && headers_ms < ms - 1000, "headers_ms={headers_ms} ms={ms}: {blob}");
    assert_eq!(field(blob, "bytes"), 100_000, "{blob}");
    assert!(blob.contains("body=\"complete\""), "{blob}");
}

/// `ref.name` → digest, from an OCI layout's index.json.
fn ref_names(layout: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or("").to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_names_the_real_cause_and_keeps_shared_tags_apart() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "containerd tests run as root (as CI does)");
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 25, &[20_000], "amd64");
    let other = image::manifest(src.path(), 26, &[25_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "a"), (&other.top, "b")]);
    push(src.path(), "a", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "b", &registry.addr.to_string(), "test/other:v1", None);
    push(src.path(), "a", &registry.addr.to_string(), "test/app:v2", None);
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;
    let (ok, out, err) =
        proxy.cli(&["prefetch", "lab.test/test/app:v1", "lab.test/test/other:v1", "lab.test/test/app:v2"]);
    assert!(ok, "{out}{err}");

    // A name without a configured registry: the error says so, as prefetch's does.
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("x.tar");
    let (ok, _, err) = proxy.cli(&["export", "library/app:2", "--out", tar.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("registry \"library\" is not a configured upstream"), "{err}");
    assert!(!err.contains("not in the cache"), "{err}");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "a failed export left {left:?} behind");
    // A configured registry, an uncached tag: that is the cause.
    let (ok, _, err) = proxy.cli(&["export", "lab.test/test/app:9", "--out", tar.to_str().unwrap()]);
    assert!(!ok && err.contains("lab.test/test/app:9 is not in the cache"), "{err}");

    // Two images tagged v1: distinct ref.names, each its full name; a unique tag stays short.
    let dir = work.path().join("layout");
    let images = ["lab.test/test/app:v1", "lab.test/test/other:v1", "lab.test/test/app:v2"];
    let (ok, out, err) = proxy.cli(&[&["export"][..], &images, &["--out", dir.to_str().unwrap()]].concat());
    assert!(ok, "{out}{err}");
    let names = ref_names(&dir);
    assert_eq!(
        names,
        vec![
            ("lab.test/test/app:v1".to_string(), app.top.digest.clone()),
            ("lab.test/test/other:v1".to_string(), other.top.digest.clone()),
            ("v2".to_string(), app.top.digest.clone()),
        ]
    );
    // skopeo selects each by its ref.name.
    for (name, built) in [("lab.test/test/app:v1", &app), ("lab.test/test/other:v1", &other), ("v2", &app)] {
        let copy = work.path().join(format!("copy-{}", name.replace(['/', ':'], "_")));
        skopeo(&[
            "copy",
            "--preserve-digests",
            &format!("oci:{}:{name}", dir.display()),
            &format!("oci:{}:x", copy.display()),
        ]);
        assert_eq!(layout_digests(&copy), sorted_unique(&built.all), "{name}");
    }
    // containerd imports the archive under the full names.
    let (ok, out, err) = proxy.cli(&[&["export"][..], &images, &["--out", tar.to_str().unwrap()]].concat());
    assert!(ok, "{out}{err}");
    let ctrd = start_containerd(&work.path().join("ctrd")).await;
    let imported = ctrd.ctr(&["images", "import", "--snapshotter", "native", tar.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let listed = String::from_utf8_lossy(&ctrd.ctr(&["images", "ls", "-q"]).stdout).into_owned();
    for name in images {
        assert!(listed.lines().any(|l| l == name), "{name} not in:\n{listed}");
    }
}
