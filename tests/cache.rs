//! The cache managing itself: size budget and LRU eviction, crash safety, disk full,
//! lifecycle policies, immutable tags, pins, `prune` and `ls`.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::{self, pseudo_random};
use common::*;
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn blob(seed: u64, size: usize) -> (String, Vec<u8>) {
    let bytes = pseudo_random(seed, size);
    (format!("sha256:{}", sha256_hex(&bytes)), bytes)
}

fn cached(proxy: &Proxy, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    proxy.cached_blobs().iter().any(|p| p.ends_with(hex))
}

/// Every file under blobs/ hashes to its own name: nothing partial or corrupt is visible.
fn assert_all_cached_blobs_verify(proxy: &Proxy) {
    let root = proxy.cache.join("blobs");
    for rel in list_files(&root) {
        // Eviction may remove a file between the listing and the read.
        let Ok(bytes) = std::fs::read(root.join(&rel)) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap();
        assert_eq!(sha256_hex(&bytes), name, "cached file {rel} does not match its digest");
    }
}

/// Wait until the cache is within `budget` and no eviction pass is still removing files.
async fn settle_under(proxy: &Proxy, budget: u64) {
    let mut last = u64::MAX;
    wait_until("the cache to settle under its budget", Duration::from_secs(10), async || {
        let now = proxy.cached_bytes();
        let settled = now <= budget && now == last;
        last = now;
        if !settled {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        settled
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_keeps_the_budget_under_a_stream_of_fills() {
    let fake = FakeUpstream::start().await;
    let blobs: Vec<_> = (0..8).map(|i| blob(100 + i, 3 * MIB)).collect();
    for (d, b) in &blobs {
        fake.set_blob(d, b.clone(), Fault::Good);
    }
    let budget = 10 * MIB as u64;
    let proxy = Proxy::start_with(
        "max_size = \"10MiB\"\nhousekeeping_interval = \"100ms\"",
        &upstream_toml("fake.test", &fake.url(), ""),
    )
    .await;
    for (d, _) in &blobs {
        let url = format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url());
        let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
        assert_eq!((status, format!("sha256:{hex}")), (200, d.clone()));
        settle_under(&proxy, budget).await;
    }
    // 24 MiB went through a 10 MiB cache: the newest blob stayed, the oldest went.
    assert!(proxy.cached_bytes() <= budget);
    assert!(
        cached(&proxy, &blobs[7].0),
        "the most recent blob was evicted: {:?}\n{}",
        proxy.cached_blobs(),
        proxy.proc.log_text()
    );
    assert!(
        !cached(&proxy, &blobs[0].0),
        "the oldest blob was kept over budget: {:?}\n{}",
        proxy.cached_blobs(),
        proxy.proc.log_text()
    );
    wait_log(&proxy.proc, "evicted least recently used blobs").await;
    // A hit refreshes recency: touch blob 5, fill two more, and 5 survives while 6 goes.
    let url = |d: &str| format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url());
    let touched = &blobs[5].0;
    if cached(&proxy, touched) {
        get_hashed(&url(touched), &[]).await.unwrap();
        for (d, b) in [blob(200, 3 * MIB), blob(201, 3 * MIB)] {
            fake.set_blob(&d, b, Fault::Good);
            get_hashed(&url(&d), &[]).await.unwrap();
            settle_under(&proxy, budget).await;
        }
        assert!(
            cached(&proxy, touched),
            "a recently hit blob was evicted before colder ones: {:?}\n{}",
            proxy.cached_blobs(),
            proxy.proc.log_text()
        );
        assert!(!cached(&proxy, &blobs[6].0));
    }
    assert_all_cached_blobs_verify(&proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_being_filled_is_never_evicted() {
    let fake = FakeUpstream::start().await;
    let (slow_d, slow_b) = blob(1, 4 * MIB);
    // About 1.6 s of transfer.
    fake.set_blob(&slow_d, slow_b, Fault::Slow { chunk: 128 * 1024, delay_ms: 50 });
    let others: Vec<_> = (0..4).map(|i| blob(10 + i, 3 * MIB)).collect();
    for (d, b) in &others {
        fake.set_blob(d, b.clone(), Fault::Good);
    }
    let proxy = Proxy::start_with(
        "max_size = \"8MiB\"\nhousekeeping_interval = \"50ms\"",
        &upstream_toml("fake.test", &fake.url(), ""),
    )
    .await;
    let url = |d: &str| format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url());
    let slow_url = url(&slow_d);
    let slow = tokio::spawn(async move { get_hashed(&slow_url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile 12 MiB of other fills push the cache over budget again and again.
    for (d, _) in &others {
        get_hashed(&url(d), &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(!slow.is_finished(), "the slow fill should still be running while eviction works");
    let (status, n, hex) = slow.await.unwrap().unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, 4 * MIB as u64, slow_d.clone()));
    wait_log(&proxy.proc, "evicted least recently used blobs").await;
    // It committed after all that eviction: the freshest entry in the cache.
    wait_until("the slow blob to be committed", Duration::from_secs(5), async || cached(&proxy, &slow_d)).await;
    assert_all_cached_blobs_verify(&proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_twenty_fills_leaves_no_partial_blob() {
    let fake = FakeUpstream::start().await;
    let blobs: Vec<_> = (0..20).map(|i| blob(300 + i, MIB + i as usize * 1000)).collect();
    for (i, (d, b)) in blobs.iter().enumerate() {
        // Some finish before the kill, most are mid-transfer when it lands.
        let fault = if i % 4 == 0 { Fault::Good } else { Fault::Slow { chunk: 64 * 1024, delay_ms: 40 } };
        fake.set_blob(d, b.clone(), fault);
    }
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let tasks: Vec<_> = blobs
        .iter()
        .map(|(d, _)| {
            let u = format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url());
            tokio::spawn(async move { get_hashed(&u, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let tmp_before_kill = list_files(&proxy.cache.join("tmp")).len();
    assert!(tmp_before_kill > 0, "no fill was in progress at the kill");
    let proxy = proxy.restart().await; // SIGKILL, then start on the same cache
    for t in tasks {
        let _ = t.await; // broken transfers, or complete ones from before the kill
    }
    assert!(list_files(&proxy.cache.join("tmp")).is_empty(), "temp files survived the restart");
    assert_all_cached_blobs_verify(&proxy);

    for (d, _) in &blobs {
        fake.set_fault(d, Fault::Good);
    }
    for (d, b) in &blobs {
        let (status, n, hex) = get_hashed(&format!("{}/v2/r/blobs/{d}?ns=fake.test", proxy.url()), &[]).await.unwrap();
        assert_eq!((status, n, format!("sha256:{hex}")), (200, b.len() as u64, d.clone()));
    }
    assert_all_cached_blobs_verify(&proxy);
    // The index the daemon rebuilt agrees with the disk.
    let (ok, out, err) = proxy.cli(&["ls", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["blobs"].as_u64().unwrap() as usize, proxy.cached_blobs().len());
    assert_eq!(v["bytes"].as_u64().unwrap(), proxy.cached_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_keeps_serving_pulls_uncached() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 21, &[4 * MIB, 4 * MIB, 4 * MIB], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "big/app:v1", None);

    // The proxy gets a private 6 MiB tmpfs as its cache: its own mount namespace, so the
    // mount vanishes with the process.
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", &registry.url(), "prefix = \"lab\""));
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let root = unsafe_is_root();
    let proxy = Proxy::launch(dir, &cfg, |inner| {
        let mut c = Command::new("unshare");
        c.args(if root { vec!["-m"] } else { vec!["-r", "-m"] });
        c.args(["--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=6m tmpfs \"$0\" && exec \"$@\""]);
        c.arg(&cache).arg(inner.get_program()).args(inner.get_args());
        c.env("RUST_LOG", "info,pullthrough=debug");
        c
    })
    .await;

    let from = format!("docker://{}/lab/big/app:v1", proxy.addr);
    let (_out, got) = skopeo_pull(&from, &[]);
    assert_eq!(got, sorted_unique(&img.all), "the pull through a full cache was not complete and correct");
    let log = proxy.proc.log_text();
    assert!(log.contains("cache full: serving this blob without caching it"), "{log}");
    // What the proxy did cache fits its 6 MiB and verifies (seen through its namespace).
    let inside = std::path::PathBuf::from(format!("/proc/{}/root{}", proxy.proc.child.id(), cache.display()));
    let blobs = inside.join("blobs");
    let total: u64 = list_files(&blobs).iter().map(|p| std::fs::metadata(blobs.join(p)).unwrap().len()).sum();
    assert!(total <= 6 * MIB as u64, "cached {total} bytes on a 6 MiB filesystem");
    for rel in list_files(&blobs) {
        let name = rel.rsplit('/').next().unwrap().to_string();
        assert_eq!(sha256_hex(&std::fs::read(blobs.join(&rel)).unwrap()), name);
    }
    // And it keeps serving: the same pull again.
    let (_again, got) = skopeo_pull(&from, &[]);
    assert_eq!(got, sorted_unique(&img.all));
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Push `n` distinct single-layer images as test/app:v1..vN.
fn push_versions(registry: &Registry, n: usize) -> Vec<image::Built> {
    let src = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for i in 1..=n {
        let b = image::manifest(src.path(), 500 + i as u64, &[20_000 + i * 100], "amd64");
        image::finish_layout(src.path(), &[(&b.top, "x")]);
        push(src.path(), "x", &registry.addr.to_string(), &format!("test/app:v{i}"), None);
        built.push(b);
    }
    built
}

async fn pull_manifest(proxy: &Proxy, name: &str, reference: &str) -> Resp {
    let r = get(&format!("{}/v2/{name}/manifests/{reference}?ns=lab.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_policy_expires_exactly_what_it_says_and_dry_run_touches_nothing() {
    let registry = Registry::start(None).await;
    let versions = push_versions(&registry, 5);
    let untagged = push_versions_named(&registry, "test/app:scratch");
    let policy = r#"{"rules":[
      {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},
      {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}
    ]}"#;
    let upstream = upstream_toml(
        "lab.test",
        &registry.url(),
        &format!("[[upstream.repository]]\nmatch = \"test/*\"\nlifecycle_policy = '''{policy}'''"),
    );
    // v2 is pinned: never expired, whatever the count says.
    let mut proxy = Proxy::start_with("pins = [\"lab.test/test/app:v2\"]", &upstream).await;
    // Cache v1..v5 in order (distinct cache times), each with its layer, and one image by
    // digest only: untagged in this repository.
    for (i, v) in versions.iter().enumerate() {
        pull_manifest(&proxy, "test/app", &format!("v{}", i + 1)).await;
        let l = &v.layers[0].digest;
        get_hashed(&format!("{}/v2/test/app/blobs/{l}?ns=lab.test", proxy.url()), &[]).await.unwrap();
        proxy.wait_cached(l).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pull_manifest(&proxy, "test/app", &untagged.top.digest).await;
    get_hashed(&format!("{}/v2/test/app/blobs/{}?ns=lab.test", proxy.url(), untagged.layers[0].digest), &[])
        .await
        .unwrap();
    proxy.wait_cached(&untagged.layers[0].digest).await;

    // Expected by hand: rule 1 selects v1..v5, keeps the newest two (v5, v4), expires v3,
    // v2 and v1 but v2 is pinned; rule 2 expires the untagged image.
    let mut expected: Vec<String> =
        vec![versions[0].top.digest.clone(), versions[2].top.digest.clone(), untagged.top.digest.clone()];
    expected.sort();
    let expired_of = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        let mut d: Vec<String> = v["report"]["expired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        (d, v["report"]["bytes_freed"].as_u64().unwrap())
    };

    let before = list_files(&proxy.cache);
    let (ok, out, err) = proxy.cli(&["prune", "--dry-run", "--json"]);
    assert!(ok, "{err}");
    let (dry, dry_bytes) = expired_of(&out);
    assert_eq!(
        dry,
        expected,
        "v1 {} v3 {} untagged {}\n{out}\n{}",
        versions[0].top.digest,
        versions[2].top.digest,
        untagged.top.digest,
        proxy.cli(&["ls"]).1
    );
    assert_eq!(list_files(&proxy.cache), before, "prune --dry-run changed the cache");
    let (_, text, _) = proxy.cli(&["prune", "--dry-run"]);
    assert!(text.contains("would remove 3 images"), "{text}");

    // A real prune deletes by policy: not beside a running daemon (which applies the same
    // policies itself every lifecycle_interval).
    let (ok, _, err) = proxy.cli(&["prune", "--json"]);
    assert!(!ok && err.contains("daemon is using"), "prune ran beside the daemon: {err}");
    assert_eq!(list_files(&proxy.cache), before, "a refused prune changed the cache");
    proxy.proc.kill();
    let (ok, out, err) = proxy.cli(&["prune", "--json"]);
    assert!(ok, "{err}");
    let (real, bytes) = expired_of(&out);
    assert_eq!(real, expected);
    assert_eq!(bytes, dry_bytes);
    // Each expired image freed what was pulled of it (manifest and layer; no config was
    // asked for); kept ones keep theirs.
    let expected_bytes: u64 =
        [&versions[0], &versions[2], &untagged].iter().flat_map(|b| [b.top.size, b.layers[0].size]).sum();
    assert_eq!(bytes, expected_bytes);
    for (i, v) in versions.iter().enumerate() {
        let kept = [1, 3, 4].contains(&i);
        assert_eq!(cached(&proxy, &v.layers[0].digest), kept, "v{}", i + 1);
        assert_eq!(cached(&proxy, &v.top.digest), kept, "v{} manifest", i + 1);
    }
    assert!(!cached(&proxy, &untagged.layers[0].digest));

    let (ok, out, _) = proxy.cli(&["ls", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut tags: Vec<String> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()))
        .collect();
    tags.sort();
    assert_eq!(tags, ["v2", "v4", "v5"]);
    let (_, table, _) = proxy.cli(&["ls"]);
    assert!(table.contains("test/app") && table.contains("v5") && table.contains("3 images"), "{table}");

    // Nothing more to expire; and the expired tags are fetched again on demand.
    let (_, out, _) = proxy.cli(&["prune", "--json"]);
    assert!(expired_of(&out).0.is_empty());
    let proxy = proxy.restart().await;
    let r = pull_manifest(&proxy, "test/app", "v1").await;
    assert_eq!(r.header("docker-content-digest"), Some(versions[0].top.digest.as_str()));
}

fn push_versions_named(registry: &Registry, name_tag: &str) -> image::Built {
    let src = tempfile::tempdir().unwrap();
    let b = image::manifest(src.path(), 777, &[33_333], "amd64");
    image::finish_layout(src.path(), &[(&b.top, "x")]);
    push(src.path(), "x", &registry.addr.to_string(), name_tag, None);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn immutable_tags_are_not_revalidated_and_mutable_ones_are() {
    let registry = Registry::start(None).await;
    let first = push_versions(&registry, 1).remove(0);
    let latest_old = push_versions_named(&registry, "test/app:latest");
    let upstream = upstream_toml(
        "lab.test",
        &registry.url(),
        "tag_ttl = \"1s\"\n[[upstream.repository]]\nmatch = \"*\"\nimmutable_tags = [\"v*\"]",
    );
    let proxy = Proxy::start(&upstream).await;
    assert_eq!(
        pull_manifest(&proxy, "test/app", "v1").await.header("docker-content-digest"),
        Some(first.top.digest.as_str())
    );
    assert_eq!(
        pull_manifest(&proxy, "test/app", "latest").await.header("docker-content-digest"),
        Some(latest_old.top.digest.as_str())
    );
    // Both tags move upstream.
    let moved = tempfile::tempdir().unwrap();
    let other = image::manifest(moved.path(), 4242, &[1234], "amd64");
    image::finish_layout(moved.path(), &[(&other.top, "x")]);
    push(moved.path(), "x", &registry.addr.to_string(), "test/app:v1", None);
    push(moved.path(), "x", &registry.addr.to_string(), "test/app:latest", None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let heads_before = registry.proc.log_text().matches("\"HEAD /v2/test/app/manifests/v1 ").count();
    assert_eq!(
        pull_manifest(&proxy, "test/app", "v1").await.header("docker-content-digest"),
        Some(first.top.digest.as_str())
    );
    assert_eq!(
        pull_manifest(&proxy, "test/app", "latest").await.header("docker-content-digest"),
        Some(other.top.digest.as_str())
    );
    let heads_after = registry.proc.log_text().matches("\"HEAD /v2/test/app/manifests/v1 ").count();
    assert_eq!(heads_before, heads_after, "an immutable tag was revalidated upstream");
}
