//! The shared tier: several pullthrough nodes (each its own process, cache directory and
//! ports) in front of one real upstream (Debian's docker-registry) and one real S3 engine
//! (Garage), pulled through with skopeo.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;
#[path = "common/garage.rs"]
mod garage;

use common::image::{self, Built};
use common::*;
use garage::Garage;
use std::time::Duration;

const PREFIX: &str = "cache/";

/// An upstream holding `test/app:v1`, and a bucket.
struct Cluster {
    registry: Registry,
    garage: Garage,
    app: Built,
    _src: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let (registry, garage) = tokio::join!(Registry::start(None), Garage::start());
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 7, &[400_000, 3_000_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "app-v1")]);
    push(src.path(), "app-v1", &registry.addr.to_string(), "test/app:v1", None);
    Cluster { registry, garage, app, _src: src }
}

impl Cluster {
    /// A node with an empty disk, sharing the bucket; `extra` goes into its upstream section.
    async fn node(&self, extra: &str) -> Proxy {
        self.node_at(&self.registry.url(), extra).await
    }

    async fn node_at(&self, upstream_url: &str, extra: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Proxy::write_config(
            dir.path(),
            "",
            &format!(
                "{}\n{}",
                self.garage.toml(PREFIX),
                upstream_toml("lab.test", upstream_url, &format!("prefix = \"lab\"\n{extra}"))
            ),
        );
        Proxy::launch(dir, &cfg, Garage::credentials).await
    }

    /// Upstream GETs of every blob and manifest of the app so far.
    fn upstream_gets(&self) -> usize {
        self.app.all.iter().map(|d| self.registry.count_gets(&format!("/v2/test/app/blobs/{d}"))).sum::<usize>()
            + self
                .app
                .all
                .iter()
                .map(|d| self.registry.count_gets(&format!("/v2/test/app/manifests/{d}")))
                .sum::<usize>()
            + self.registry.count_gets("/v2/test/app/manifests/v1")
    }

    fn layers(&self) -> Vec<String> {
        self.app.layers.iter().map(|l| l.digest.clone()).collect()
    }
}

fn pull(node: &Proxy) -> Vec<String> {
    skopeo_pull(&format!("docker://{}/lab/test/app:v1", node.addr), &[]).1
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_share_what_one_fetched_and_serve_tags_while_the_upstream_is_down() {
    let mut c = cluster().await;
    let want = sorted_unique(&c.app.all);

    // Node 1 fills from the upstream and writes back to the bucket.
    let n1 = c.node("tag_ttl = \"1h\"").await;
    assert_eq!(pull(&n1), want);
    c.garage.wait_blobs(PREFIX, &c.app.all).await;
    let key = format!("{PREFIX}tags/lab.test/test/app/_tags/v1");
    wait_until("the tag record in the bucket", Duration::from_secs(30), async || c.garage.get(&key).await.is_some())
        .await;
    let after_n1 = c.upstream_gets();
    assert!(after_n1 >= 3, "node 1 fetched from the upstream ({after_n1} GETs)");

    // Node 2, empty disk: everything comes from the bucket (the tag record is fresh, so not
    // even the tag is asked of the upstream), the same bytes, verified.
    let n2 = c.node("tag_ttl = \"1h\"").await;
    assert_eq!(pull(&n2), want);
    assert_eq!(c.upstream_gets(), after_n1, "node 2 asked the upstream:\n{}", c.registry.proc.log_text());
    for l in c.layers() {
        n2.wait_cached(&l).await;
    }
    assert!(n2.metric("pullthrough_tier_requests_total{kind=\"blob\",result=\"hit\",tier=\"shared\"}").await >= 2.0);
    assert!(n2.metric("pullthrough_tier_fill_bytes_total{tier=\"shared\"}").await >= 3_000_000.0);
    assert_eq!(n2.metric("pullthrough_tier_fill_bytes_total{tier=\"upstream\"}").await, 0.0);

    // Upstream stopped; node 3 with an empty disk and a tag record past its TTL still pulls
    // by tag: the shared record stands in for the upstream's answer (served stale).
    c.registry.proc.kill();
    let n3 = c.node("tag_ttl = \"1s\"").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(pull(&n3), want);
    assert!(n3.metric("pullthrough_stale_manifest_serves_total{upstream=\"lab.test\"}").await >= 1.0);
    let ready = get(&format!("http://{}/readyz", n3.admin), &[]).await.unwrap().text();
    assert!(ready.contains("\"state\":\"up\""), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_object_is_never_served_and_is_replaced() {
    let c = cluster().await;
    let want = sorted_unique(&c.app.all);
    let n1 = c.node("").await;
    assert_eq!(pull(&n1), want);
    c.garage.wait_blobs(PREFIX, &c.app.all).await;

    // Flip one byte of the big layer in the bucket (same size, so only the hash tells).
    let big = c.app.layers.iter().max_by_key(|l| l.size).unwrap().digest.clone();
    let key = format!("{PREFIX}blobs/sha256/{}", big.trim_start_matches("sha256:"));
    let mut bytes = c.garage.get(&key).await.unwrap();
    bytes[1_000_000] ^= 0x40;
    c.garage.put(&key, bytes).await;

    // Node 2 reads the bad object: the transfer is aborted (never a complete bad blob),
    // nothing bad is committed, the object is deleted, the next pull goes upstream.
    let n2 = c.node("").await;
    let url = format!("{}/v2/lab/test/app/blobs/{big}", n2.url());
    // An error is the transfer aborted mid-stream, as it must be.
    if let Ok((status, _, hash)) = get_hashed(&url, &[]).await {
        assert!(status != 200 || format!("sha256:{hash}") == big, "a client completed a download of bad bytes");
    }
    assert!(n2.metric("pullthrough_tier_verification_failures_total{tier=\"shared\"}").await >= 1.0);
    assert!(!n2.cached_blobs().iter().any(|p| p.ends_with(big.trim_start_matches("sha256:"))), "bad bytes were cached");
    let before = c.registry.count_gets(&format!("/v2/test/app/blobs/{big}"));
    assert_eq!(pull(&n2), want);
    assert_eq!(c.registry.count_gets(&format!("/v2/test/app/blobs/{big}")), before + 1, "the fallback went upstream");
    n2.wait_cached(&big).await;
    let cached = std::fs::read(n2.cache.join("blobs/sha256").join(&big[7..9]).join(&big[7..])).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&cached)), big);

    // The upload of the verified fill replaces the bad object.
    wait_until("the object to be replaced by verified bytes", Duration::from_secs(30), async || {
        c.garage.get(&key).await.is_some_and(|b| format!("sha256:{}", sha256_hex(&b)) == big)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_succeed_when_the_bucket_is_down() {
    let mut c = cluster().await;
    let want = sorted_unique(&c.app.all);
    let n1 = c.node("").await;
    assert_eq!(pull(&n1), want);
    c.garage.wait_blobs(PREFIX, &c.app.all).await;

    c.garage.proc.kill();
    // Cached locally: served from disk. Not cached (a second node): from the upstream.
    assert_eq!(pull(&n1), want);
    let n2 = c.node("").await;
    let started = std::time::Instant::now();
    assert_eq!(pull(&n2), want);
    assert!(started.elapsed() < Duration::from_secs(20), "a dead bucket cost {:?}", started.elapsed());
    let ready = get(&format!("http://{}/readyz", n2.admin), &[]).await.unwrap();
    assert_eq!(ready.status, 200, "the shared tier is optional: still ready");
    assert!(ready.text().contains("\"state\":\"down\""), "{}", ready.text());
    assert_eq!(n2.metric("pullthrough_shared_up").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_applies_lifecycle_policies_to_the_shared_tag_records() {
    let c = cluster().await;
    let src = tempfile::tempdir().unwrap();
    let v2 = image::manifest(src.path(), 8, &[100_000], "amd64");
    image::finish_layout(src.path(), &[(&v2.top, "app-v2")]);
    push(src.path(), "app-v2", &c.registry.addr.to_string(), "test/app:v2", None);
    let policy = r#"[[upstream.repository]]
match = "test/*"
lifecycle_policy = '{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}'
"#;
    let n1 = c.node(policy).await;
    assert_eq!(pull(&n1), sorted_unique(&c.app.all));
    tokio::time::sleep(Duration::from_millis(20)).await;
    skopeo_pull(&format!("docker://{}/lab/test/app:v2", n1.addr), &[]);
    let key = |t: &str| format!("{PREFIX}tags/lab.test/test/app/_tags/{t}");
    for t in ["v1", "v2"] {
        wait_until("tag records in the bucket", Duration::from_secs(30), async || {
            c.garage.get(&key(t)).await.is_some()
        })
        .await;
    }

    let prune = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pullthrough"));
        cmd.args(["prune", "--shared", "--json", "--config"]).arg(n1.config_path()).args(extra);
        let out = Garage::credentials(cmd).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // The policy keeps the newest image: v1 (confirmed first) expires.
    let dry = prune(&["--dry-run"]);
    let expired = &dry["report"]["expired"];
    assert_eq!(expired.as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(expired[0]["digest"], c.app.top.digest.as_str());
    assert!(c.garage.get(&key("v1")).await.is_some(), "a dry run deletes nothing");
    prune(&[]);
    assert!(c.garage.get(&key("v1")).await.is_none(), "the expired tag's record is gone");
    assert!(c.garage.get(&key("v2")).await.is_some(), "the kept tag's record stays");
}
