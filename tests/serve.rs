//! What `pullthrough serve` starts beside the listeners: here, the `[[prefetch]]` images,
//! fetched at start with no client asking (README, "prefetch": "The daemon can do the same
//! from config, at start and every `[cache] prefetch_interval`").

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prefetches_configured_images_at_start() {
    let registry = Registry::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let built = image::manifest(&layout, 131, &[150_000, 40_000], "amd64");
    image::finish_layout(&layout, &[(&built.top, "v1")]);
    push(&layout, "v1", &registry.addr.to_string(), "team/app:v1", None);

    let upstreams =
        format!("{}[[prefetch]]\nimage = \"r.test/team/app:v1\"\n", upstream_toml("r.test", &registry.url(), ""));
    let proxy = Proxy::start_with("", &upstreams).await;
    // Nobody pulls: every layer and the config arrive in the cache on their own.
    let blobs: Vec<&String> = built.layers.iter().map(|l| &l.digest).collect();
    for digest in blobs {
        proxy.wait_cached(digest).await;
    }
    wait_log(&proxy.proc, "prefetched").await;
    let log = proxy.proc.log_text();
    assert!(log.contains("r.test/team/app:v1"), "the prefetch names its image:\n{log}");
    // Served from the cache now: the registry saw each layer fetched once, by the daemon.
    for l in &built.layers {
        assert_eq!(registry.count_gets(&format!("/v2/team/app/blobs/{}", l.digest)), 1, "{}", l.digest);
    }
}
