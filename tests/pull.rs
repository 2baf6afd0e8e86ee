//! Pulling real images through pullthrough from a real upstream (Debian's docker-registry),
//! with real clients (skopeo) and containerd-style `?ns=` requests.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::*;
use std::path::Path;
use std::time::Duration;

const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// An upstream registry holding `test/app:v1` (one platform) and `test/multi:v1` (an index
/// over amd64 and arm64), and a proxy in front of it as host `lab.test`, prefix `lab`.
struct Lab {
    registry: Registry,
    proxy: Proxy,
    app: Built,
    multi: Built,
    _src: tempfile::TempDir,
}

async fn lab(extra: &str) -> Lab {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 1, &[300_000, 2_000_000], "amd64");
    let multi = image::index(src.path(), 2, &[100_000], &["amd64", "arm64"]);
    image::finish_layout(src.path(), &[(&app.top, "app-v1"), (&multi.top, "multi-v1")]);
    push_tag(src.path(), "app-v1", &registry, "test/app:v1");
    push_tag(src.path(), "multi-v1", &registry, "test/multi:v1");
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), &format!("prefix = \"lab\"\n{extra}"))).await;
    Lab { registry, proxy, app, multi, _src: src }
}

fn push_tag(layout: &Path, layout_tag: &str, registry: &Registry, name_tag: &str) {
    let src = format!("oci:{}:{layout_tag}", layout.display());
    let dst = format!("docker://{}/{name_tag}", registry.addr);
    skopeo(&["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src, &dst]);
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_single_and_multi_arch_images_through_the_prefix() {
    let lab = lab("").await;
    for (name, built) in [("test/app:v1", &lab.app), ("test/multi:v1", &lab.multi)] {
        let out = tempfile::tempdir().unwrap();
        let src = format!("docker://{}/lab/{name}", lab.proxy.addr);
        let dst = format!("oci:{}:t", out.path().display());
        skopeo(&["copy", "--all", "--preserve-digests", "--src-tls-verify=false", &src, &dst]);
        // skopeo verified every digest as it copied; the set must be exactly what was pushed.
        assert_eq!(layout_digests(out.path()), sorted_unique(&built.all), "{name}");

        // The manifest bytes through the proxy equal the upstream's, and so do the headers.
        let direct =
            skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/{name}", lab.registry.addr)]);
        let proxied = skopeo(&["inspect", "--raw", "--tls-verify=false", &src]);
        assert_eq!(direct, proxied);
        assert_eq!(sha256_hex(proxied.as_bytes()), built.top.digest.trim_start_matches("sha256:"));
    }
    // Everything that was pulled is now in the cache, content-addressed.
    for d in lab.app.all.iter().chain(&lab.multi.all) {
        lab.proxy.wait_cached(d).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_style_ns_requests_get_correct_headers_and_bytes() {
    let lab = lab("").await;
    let p = lab.proxy.url();

    // Resolve like containerd: HEAD by tag with its Accept line, then GET by digest.
    let head =
        send_req("HEAD", &format!("{p}/v2/test/app/manifests/v1?ns=lab.test"), &[("accept", CONTAINERD_ACCEPT)]).await;
    assert_eq!(head.status, 200, "{}", head.text());
    assert_eq!(head.header("docker-content-digest"), Some(lab.app.top.digest.as_str()));
    assert_eq!(head.header("content-type"), Some(image::OCI_MANIFEST));
    assert_eq!(head.header("content-length"), Some(lab.app.top.size.to_string().as_str()));
    assert!(head.body.is_empty());

    let m = get(
        &format!("{p}/v2/test/app/manifests/{}?ns=lab.test", lab.app.top.digest),
        &[("accept", image::OCI_MANIFEST), ("accept", "*/*")],
    )
    .await
    .unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&m.body)), lab.app.top.digest);
    let direct = get(&format!("{}/v2/test/app/manifests/v1", lab.registry.url()), &[("accept", CONTAINERD_ACCEPT)])
        .await
        .unwrap();
    assert_eq!(direct.body, m.body, "proxied manifest differs from upstream's");

    // Multi-arch: the index by tag, with its media type.
    let idx =
        get(&format!("{p}/v2/test/multi/manifests/v1?ns=lab.test"), &[("accept", CONTAINERD_ACCEPT)]).await.unwrap();
    assert_eq!(idx.status, 200);
    assert_eq!(idx.header("content-type"), Some(image::OCI_INDEX));
    assert_eq!(idx.header("docker-content-digest"), Some(lab.multi.top.digest.as_str()));

    // Blobs by digest, whole and by range.
    let layer = &lab.app.layers[1];
    let url = format!("{p}/v2/test/app/blobs/{}?ns=lab.test", layer.digest);
    let (status, n, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, n), (200, layer.size));
    assert_eq!(format!("sha256:{hex}"), layer.digest);
    let whole = get(&url, &[]).await.unwrap();
    assert_eq!(whole.header("docker-content-digest"), Some(layer.digest.as_str()));
    let part = get(&url, &[("range", "bytes=100-199")]).await.unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some(format!("bytes 100-199/{}", layer.size).as_str()));
    assert_eq!(&part.body[..], &whole.body[100..200]);
    let tail = get(&url, &[("range", "bytes=-10")]).await.unwrap();
    assert_eq!(&tail.body[..], &whole.body[whole.body.len() - 10..]);
    let beyond = get(&url, &[("range", &format!("bytes={}-", layer.size))]).await.unwrap();
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some(format!("bytes */{}", layer.size).as_str()));
    let blob_head = send_req("HEAD", &url, &[]).await;
    assert_eq!(blob_head.header("content-length"), Some(layer.size.to_string().as_str()));

    // Tag list, proxied with pagination.
    let tags = get(&format!("{p}/v2/test/app/tags/list?ns=lab.test"), &[]).await.unwrap();
    assert_eq!(tags.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v1"]));

    // A registry that is not configured is refused: no open proxy.
    let denied = get(&format!("{p}/v2/library/nginx/manifests/latest?ns=docker.io"), &[]).await.unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code().as_deref(), Some("DENIED"));
    assert!(denied.text().contains("not configured"), "{}", denied.text());
    // Unknown things upstream are 404s with the right codes.
    let missing = get(&format!("{p}/v2/test/app/manifests/nope?ns=lab.test"), &[]).await.unwrap();
    assert_eq!((missing.status, missing.error_code().as_deref()), (404, Some("MANIFEST_UNKNOWN")));
    let zero = format!("sha256:{}", "0".repeat(64));
    let missing = get(&format!("{p}/v2/test/app/blobs/{zero}?ns=lab.test"), &[]).await.unwrap();
    assert_eq!((missing.status, missing.error_code().as_deref()), (404, Some("BLOB_UNKNOWN")));
}

async fn send_req(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    net::send(method, url, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_images_are_served_when_the_upstream_is_down() {
    let lab = lab("tag_ttl = \"1s\"").await;
    let src = format!("docker://{}/lab/test/multi:v1", lab.proxy.addr);
    let by_digest = format!("docker://{}/lab/test/multi@{}", lab.proxy.addr, lab.multi.top.digest);
    let first = tempfile::tempdir().unwrap();
    skopeo(&["copy", "--all", "--src-tls-verify=false", &src, &format!("oci:{}:t", first.path().display())]);

    let Lab { registry, proxy, multi, .. } = lab;
    drop(registry.stop());
    // Past the tag TTL, so the proxy tries to revalidate, fails, and serves the stale digest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, src) in [&src, &by_digest].into_iter().enumerate() {
        let out = tempfile::tempdir().unwrap();
        skopeo(&["copy", "--all", "--src-tls-verify=false", src, &format!("oci:{}:t{i}", out.path().display())]);
        assert_eq!(layout_digests(out.path()), sorted_unique(&multi.all));
    }
    wait_log(&proxy.proc, "stale").await; // the stale serve is logged

    // What was never cached fails with a clear "unreachable", not a misleading 404.
    let r = get(&format!("{}/v2/lab/test/other/manifests/v1", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("UNAVAILABLE"));
    assert!(r.text().contains("lab.test"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_is_seen_after_its_ttl_and_digests_stay_immutable() {
    let lab = lab("tag_ttl = \"1s\"").await;
    let p = lab.proxy.url();
    let url = format!("{p}/v2/test/app/manifests/v1?ns=lab.test");
    let first = get(&url, &[]).await.unwrap();
    assert_eq!(first.header("docker-content-digest"), Some(lab.app.top.digest.as_str()));

    // Retag upstream: v1 now points at a different image.
    let src2 = tempfile::tempdir().unwrap();
    let other = image::manifest(src2.path(), 99, &[1000], "amd64");
    image::finish_layout(src2.path(), &[(&other.top, "x")]);
    push_tag(src2.path(), "x", &lab.registry, "test/app:v1");

    // Within the TTL the cached answer stands; after it, the HEAD revalidation sees the move.
    let within = get(&url, &[]).await.unwrap();
    assert_eq!(within.header("docker-content-digest"), Some(lab.app.top.digest.as_str()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = get(&url, &[]).await.unwrap();
    assert_eq!(after.header("docker-content-digest"), Some(other.top.digest.as_str()));
    // The old manifest is still served by digest from the cache.
    let old = get(&format!("{p}/v2/test/app/manifests/{}?ns=lab.test", lab.app.top.digest), &[]).await.unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(old.body, first.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_requests_for_a_cold_blob_make_one_upstream_get() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let big = image::manifest(src.path(), 5, &[48 << 20], "amd64");
    image::finish_layout(src.path(), &[(&big.top, "big")]);
    push_tag(src.path(), "big", &registry, "test/big:v1");
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;

    let layer = big.layers[0].clone();
    let url = format!("{}/v2/test/big/blobs/{}?ns=lab.test", proxy.url(), layer.digest);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // Stagger a little so some clients join mid-transfer and read the file's head
            // from disk before following its tail.
            tokio::time::sleep(Duration::from_millis(i * 5)).await;
            get_hashed(&url, &[]).await
        }));
    }
    for t in tasks {
        let (status, n, hex) = t.await.unwrap().unwrap();
        assert_eq!((status, n), (200, layer.size));
        assert_eq!(format!("sha256:{hex}"), layer.digest);
    }
    assert_eq!(
        registry.count_gets(&format!("/v2/test/big/blobs/{}", layer.digest)),
        1,
        "one upstream GET for 20 clients"
    );
    // The transfers overlapped: clients joined the fill in progress rather than queueing.
    let joined = proxy.proc.log_text().matches("joined a fill in progress").count();
    assert!(joined >= 1, "no client joined the running fill");
    // And a later request is served from the cache.
    let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, layer.digest.clone()));
    assert_eq!(registry.count_gets(&format!("/v2/test/big/blobs/{}", layer.digest)), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_oci_errors_and_touches_nothing() {
    let lab = lab("").await;
    let p = lab.proxy.url();
    // Warm the cache a little so there is something that must stay as it is.
    assert_eq!(get(&format!("{p}/v2/test/app/manifests/v1?ns=lab.test"), &[]).await.unwrap().status, 200);
    let before = list_files(&lab.proxy.cache);
    let outside = lab.proxy.dir.path().join("outside-sentinel");
    std::fs::write(&outside, "untouched").unwrap();

    let layer = &lab.app.layers[0].digest;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/v2/test/app/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        ("GET", "/v2/test/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"),
        ("GET", "/v2/test/app/manifests/sha256:XYZ", 400, "DIGEST_INVALID"),
        ("GET", "/v2/../../etc/passwd/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/test/../../app/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/test/%2e%2e/app/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/Test/App/manifests/v1", 400, "NAME_INVALID"),
        // Not a tag by the spec's grammar, so no manifest: 404, as its pull tests expect.
        ("GET", "/v2/test/app/manifests/.hidden", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/test/app/referrers/sha256:1234", 400, "DIGEST_INVALID"),
        ("GET", "/v2/test/app/manifests/v1?ns=169.254.169.254", 403, "DENIED"),
        ("GET", "/v2/test/app/manifests/v1?ns=evil.example.com", 403, "DENIED"),
        ("PUT", "/v2/test/app/manifests/v1", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/test/app/manifests/v1", 405, "UNSUPPORTED"),
        ("POST", "/v2/test/app/blobs/uploads/", 405, "UNSUPPORTED"),
        ("GET", "/v2/_catalog", 404, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let r = net::send(method, &format!("{p}{path}"), &[]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (*status, Some(*code)), "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // Invalid byte ranges (several valid ones, or another unit, get the whole blob: RFC 9110).
    for range in ["bytes=a-b", "bytes=5-1", "bytes=0-1,x", "bytes="] {
        let r = get(&format!("{p}/v2/test/app/blobs/{layer}?ns=lab.test"), &[("range", range)]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (400, Some("RANGE_INVALID")), "{range}");
    }
    // A path outside the API.
    assert_eq!(get(&format!("{p}/etc/passwd"), &[]).await.unwrap().status, 404);

    assert_eq!(list_files(&lab.proxy.cache), before, "bad requests changed the cache");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    // The daemon is still serving.
    assert_eq!(get(&format!("{p}/v2/"), &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_requests_for_one_cold_tag_makes_one_upstream_request() {
    let lab = lab("").await;
    let url = format!("{}/v2/test/app/manifests/v1?ns=lab.test", lab.proxy.url());
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let u = url.clone();
            tokio::spawn(async move { get(&u, &[("accept", CONTAINERD_ACCEPT)]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some(lab.app.top.digest.as_str()));
    }
    let log = lab.registry.proc.log_text();
    // Only the proxy's requests (its User-Agent), not the test's own push.
    let upstream =
        log.lines().filter(|l| l.contains("/v2/test/app/manifests/v1 HTTP") && l.contains("pullthrough/")).count();
    assert_eq!(upstream, 1, "12 clients resolving one tag made {upstream} upstream requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_requests_for_one_cold_manifest_digest_makes_one_upstream_request() {
    let lab = lab("").await;
    let digest = lab.app.top.digest.clone();
    let url = format!("{}/v2/test/app/manifests/{digest}?ns=lab.test", lab.proxy.url());
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let u = url.clone();
            tokio::spawn(async move { get(&u, &[]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(format!("sha256:{}", sha256_hex(&r.body)), digest);
    }
    let log = lab.registry.proc.log_text();
    let needle = format!("/v2/test/app/manifests/{digest} HTTP");
    let upstream = log.lines().filter(|l| l.contains(&needle) && l.contains("pullthrough/")).count();
    assert_eq!(upstream, 1, "12 clients fetching one manifest digest made {upstream} upstream requests");
}
