//! Manifests and tag answers from memory, and image records written in batches: what the
//! hot path no longer reads or writes on disk, and what it still must (TTLs, vouching,
//! `ls`). Real upstream (docker-registry), the real binary, files changed behind its back.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An upstream with `test/app:v1` (two layers) and `test/big:v1` (a manifest of 40 layers,
/// several KiB), and a proxy in front of it as `lab.test` with `lab_extra` in its upstream
/// section and `cache_extra` in `[cache]`; `short.test` is the same upstream with a 1 s TTL.
struct Lab {
    registry: Registry,
    proxy: Proxy,
    app: Built,
    big: Built,
    _src: tempfile::TempDir,
}

async fn lab(cache_extra: &str, lab_extra: &str) -> Lab {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 1, &[3_000, 5_000], "amd64");
    let big = image::manifest(src.path(), 2, &[100; 40], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "app-v1"), (&big.top, "big-v1")]);
    push(src.path(), "app-v1", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "big-v1", &registry.addr.to_string(), "test/big:v1", None);
    let upstreams = format!(
        "{}{}",
        upstream_toml("lab.test", &registry.url(), lab_extra),
        upstream_toml("short.test", &registry.url(), "tag_ttl = \"1s\"")
    );
    let proxy = Proxy::start_with(cache_extra, &upstreams).await;
    Lab { registry, proxy, app, big, _src: src }
}

/// Requests the upstream registry served for `path`, any method.
fn upstream_requests(registry: &Registry, path: &str) -> usize {
    let needle = format!(" {path} HTTP");
    registry.proc.log_text().lines().filter(|l| l.contains(&needle)).count()
}

/// The cache's files for a blob or manifest by digest (the content, and a manifest's type).
fn blob_files(cache: &Path, digest: &str) -> [PathBuf; 2] {
    let hex = digest.trim_start_matches("sha256:");
    [
        cache.join("blobs/sha256").join(&hex[..2]).join(hex),
        cache.join("manifest-types/sha256").join(&hex[..2]).join(hex),
    ]
}

async fn manifest(proxy: &Proxy, upstream: &str, name: &str, reference: &str) -> Resp {
    get(&format!("{}/v2/{name}/manifests/{reference}?ns={upstream}", proxy.url()), &[]).await.unwrap()
}

fn assert_manifest(r: &Resp, want: &image::Desc) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(want.digest.as_str()));
    assert_eq!(format!("sha256:{}", sha256_hex(&r.body)), want.digest);
    assert_eq!(r.header("content-type"), Some(want.media_type.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_by_digest_is_served_from_memory_and_still_vouched_for() {
    let lab = lab("", "").await;
    let (p, d) = (&lab.proxy, &lab.app.top.digest);
    assert_manifest(&manifest(p, "lab.test", "test/app", d).await, &lab.app.top);
    let path = format!("/v2/test/app/manifests/{d}");
    let asked = upstream_requests(&lab.registry, &path);

    // Remove the manifest from the disk cache behind the daemon's back. Intended: what is in
    // memory is verified content keyed by its digest, and is served without any file IO.
    for f in blob_files(&p.cache, d) {
        std::fs::remove_file(&f).unwrap();
    }
    for _ in 0..3 {
        assert_manifest(&manifest(p, "lab.test", "test/app", d).await, &lab.app.top);
    }
    assert_eq!(upstream_requests(&lab.registry, &path), asked, "the upstream was asked again");
    assert!(blob_files(&p.cache, d).iter().all(|f| !f.exists()), "served from disk: it was fetched again");

    // Tenant isolation holds for memory hits: under a repository whose upstream does not
    // have this manifest, the upstream is asked and its refusal is the answer.
    let other = manifest(p, "lab.test", "test/other", d).await;
    assert_eq!((other.status, other.error_code().as_deref()), (404, Some("MANIFEST_UNKNOWN")), "{}", other.text());
    assert_eq!(upstream_requests(&lab.registry, &format!("/v2/test/other/manifests/{d}")), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_within_its_ttl_is_answered_from_memory_and_ttls_still_hold() {
    let lab = lab("", "tag_ttl = \"1h\"").await;
    let p = &lab.proxy;
    assert_manifest(&manifest(p, "lab.test", "test/app", "v1").await, &lab.app.top);
    let tag_path = "/v2/test/app/manifests/v1";
    let asked = upstream_requests(&lab.registry, tag_path);
    let record = p.cache.join("tags/lab.test/test/app/_tags/v1");
    assert!(record.is_file(), "the tag record is written");

    // The record removed behind the daemon's back: within the TTL the answer comes from
    // memory (no read; not even the upstream is asked, as it would be without a record).
    std::fs::remove_file(&record).unwrap();
    for _ in 0..3 {
        assert_manifest(&manifest(p, "lab.test", "test/app", "v1").await, &lab.app.top);
    }
    assert_eq!(upstream_requests(&lab.registry, tag_path), asked, "the upstream was asked within the TTL");
    assert!(!record.exists(), "the record was rewritten: the answer did not come from memory");

    // Memory does not stretch a TTL: past 1 s, `short.test` asks the upstream again.
    assert_manifest(&manifest(p, "short.test", "test/app", "v1").await, &lab.app.top);
    let before = upstream_requests(&lab.registry, tag_path);
    assert_manifest(&manifest(p, "short.test", "test/app", "v1").await, &lab.app.top);
    assert_eq!(upstream_requests(&lab.registry, tag_path), before, "asked within the 1 s TTL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_manifest(&manifest(p, "short.test", "test/app", "v1").await, &lab.app.top);
    assert_eq!(upstream_requests(&lab.registry, tag_path), before + 1, "not revalidated after the TTL");
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `pulled_at` (unix seconds) of `digest` in `ls --json`, if listed.
fn listed_pulled_at(proxy: &Proxy, digest: &str) -> Option<u64> {
    let (ok, out, err) = proxy.cli(&["ls", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["images"].as_array()?.iter().find(|i| i["digest"] == digest).and_then(|i| i["pulled_at"].as_u64())
}

/// Set an image record's pull time on disk, behind the daemon's back.
fn age_record(cache: &Path, name: &str, digest: &str, days: u64) {
    let path = cache.join("tags/lab.test").join(name).join("_images").join(digest.trim_start_matches("sha256:"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["pulled_at_ms"] = serde_json::json!(now_ms() - days * 86_400_000);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_reach_ls_in_batches_at_housekeeping_and_at_sigterm() {
    // No housekeeping tick during the test: only SIGTERM flushes.
    let mut lab = lab("housekeeping_interval = \"1h\"", "").await;
    let d = lab.app.top.digest.clone();
    assert_manifest(&manifest(&lab.proxy, "lab.test", "test/app", "v1").await, &lab.app.top);
    // The first pull is on disk at once: `ls` (another process) lists it.
    let first = listed_pulled_at(&lab.proxy, &d).expect("the first pull is listed at once");
    assert!(first + 60 > now_ms() / 1000);

    // Later pulls are batched in memory: no record write per request.
    age_record(&lab.proxy.cache, "test/app", &d, 2);
    let old = listed_pulled_at(&lab.proxy, &d).unwrap();
    for reference in ["v1", d.as_str(), "v1"] {
        assert_manifest(&manifest(&lab.proxy, "lab.test", "test/app", reference).await, &lab.app.top);
    }
    assert_eq!(listed_pulled_at(&lab.proxy, &d), Some(old), "a pull wrote its record at once");

    // SIGTERM flushes the batch.
    lab.proxy.proc.signal("TERM");
    wait_until("the daemon to stop", Duration::from_secs(15), async || {
        matches!(lab.proxy.proc.child.try_wait(), Ok(Some(_)))
    })
    .await;
    let flushed = listed_pulled_at(&lab.proxy, &d).unwrap();
    assert!(flushed + 60 > now_ms() / 1000, "the pull time was not written at shutdown: {flushed} vs {old}");

    // And so does the housekeeping tick, while the daemon runs.
    let cfg = std::fs::read_to_string(lab.proxy.config_path()).unwrap();
    std::fs::write(
        lab.proxy.config_path(),
        cfg.replace("housekeeping_interval = \"1h\"", "housekeeping_interval = \"1s\""),
    )
    .unwrap();
    lab.proxy = lab.proxy.restart().await;
    assert_manifest(&manifest(&lab.proxy, "lab.test", "test/app", "v1").await, &lab.app.top);
    age_record(&lab.proxy.cache, "test/app", &d, 2);
    assert_manifest(&manifest(&lab.proxy, "lab.test", "test/app", "v1").await, &lab.app.top);
    wait_until("a housekeeping tick to write the pull time", Duration::from_secs(10), async || {
        listed_pulled_at(&lab.proxy, &d).is_some_and(|t| t + 60 > now_ms() / 1000)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_bounded_and_big_manifests_come_from_disk() {
    let lab = lab("memory = \"1KiB\"", "").await;
    let (p, big) = (&lab.proxy, &lab.big.top);
    assert!(big.size > 4096, "the test needs a manifest bigger than the memory: {}", big.size);
    for _ in 0..3 {
        assert_manifest(&manifest(p, "lab.test", "test/big", &big.digest).await, big);
    }
    // Not in memory: removed from the disk, it is fetched from the upstream again.
    let path = format!("/v2/test/big/manifests/{}", big.digest);
    let asked = upstream_requests(&lab.registry, &path);
    for f in blob_files(&p.cache, &big.digest) {
        std::fs::remove_file(&f).unwrap();
    }
    assert_manifest(&manifest(p, "lab.test", "test/big", &big.digest).await, big);
    assert_eq!(upstream_requests(&lab.registry, &path), asked + 1, "a manifest bigger than the memory was kept in it");
    assert!(blob_files(&p.cache, &big.digest)[0].is_file(), "fetched again into the disk cache");
}
