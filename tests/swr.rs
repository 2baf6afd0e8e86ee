//! Stale-while-revalidate (issue 18, item 2): after `tag_ttl` and within
//! `stale_while_revalidate`, a tag is answered from the cache at once and refreshed in the
//! background, once however many pulls arrive; a moved tag's new manifest (and its blobs) are
//! fetched in the background, so the next pull is warm. The fake upstream delays the manifest
//! (no real registry is slow on demand).

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, OCI_MANIFEST};
use common::*;
use std::time::{Duration, Instant};

const HOST: &str = "hub.test";
const TAG_PATH: &str = "/v2/lib/app/manifests/latest";

/// A pull of `lib/app:latest`: its status, digest and how long the answer took.
async fn pull(proxy: &Proxy) -> (u16, String, Duration) {
    let started = Instant::now();
    let url = format!("{}/v2/lib/app/manifests/latest?ns={HOST}", proxy.url());
    let r = get(&url, &[("accept", OCI_MANIFEST)]).await.unwrap();
    let digest = r.header("docker-content-digest").unwrap_or_default().to_string();
    (r.status, digest, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_tag_is_answered_at_once_and_refreshed_in_the_background() {
    let fake = FakeUpstream::start().await;
    let (v1, _) = fake.put_image("lib/app", "latest", 1);
    // The window comes from the repository rule (the upstream's own is off).
    let extra = "tag_ttl = \"1s\"\n[[upstream.repository]]\nmatch = \"lib/*\"\nstale_while_revalidate = \"10m\"";
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), extra)).await;
    assert_eq!(pull(&proxy).await.0, 200);

    // The tag moves upstream, and the upstream gets slow: 5 s for the tag's manifest.
    let (v2, layer2) = fake.put_image("lib/app", "latest", 2);
    fake.delay(TAG_PATH, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Three pulls past the TTL: each answered from the cache at once.
    for _ in 0..3 {
        let (status, digest, took) = pull(&proxy).await;
        assert_eq!((status, digest.as_str()), (200, v1.as_str()));
        assert!(took < Duration::from_millis(800), "a stale tag waited {took:?} for the upstream");
        eprintln!("stale pull answered in {took:?} (the upstream takes 5 s)");
    }
    // In the background, one revalidation for all three; then the new digest is served,
    // from the cache, with its layer fetched ahead of the next pull.
    wait_until("the new digest to be served", Duration::from_secs(20), async || pull(&proxy).await.1 == v2).await;
    assert_eq!(fake.count("HEAD", TAG_PATH), 1, "one background revalidation per tag");
    assert_eq!(fake.count("GET", TAG_PATH), 2);
    let (_, _, took) = pull(&proxy).await;
    assert!(took < Duration::from_millis(800), "{took:?}");
    proxy.wait_cached(&layer2).await;
    assert_eq!(
        proxy.metric("pullthrough_tag_background_revalidations_total{result=\"moved\",upstream=\"hub.test\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_ends_and_then_a_tag_is_revalidated_before_the_answer() {
    let fake = FakeUpstream::start().await;
    fake.put_image("lib/app", "latest", 3);
    fake.put_image("lib/app", "other", 5);
    let extra = "tag_ttl = \"1s\"\nstale_while_revalidate = \"2s\"";
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), extra)).await;
    assert_eq!(pull(&proxy).await.0, 200);
    let other = format!("{}/v2/lib/app/manifests/other?ns={HOST}", proxy.url());
    assert_eq!(get(&other, &[("accept", OCI_MANIFEST)]).await.unwrap().status, 200);
    let (v2, _) = fake.put_image("lib/app", "latest", 4);
    fake.delay(TAG_PATH, Duration::from_millis(1500));
    fake.delay("/v2/lib/app/manifests/other", Duration::from_millis(1500));
    // Within the window (1 s + 2 s): at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    assert_eq!(get(&other, &[("accept", OCI_MANIFEST)]).await.unwrap().status, 200);
    assert!(started.elapsed() < Duration::from_millis(800), "{:?}", started.elapsed());
    // Past tag_ttl + stale_while_revalidate: the answer waits for the upstream, and is new.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, digest, took) = pull(&proxy).await;
    assert_eq!((status, digest), (200, v2));
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // The background refresh of `other` found it where it was.
    let unchanged = "pullthrough_tag_background_revalidations_total{result=\"unchanged\",upstream=\"hub.test\"}";
    wait_until("the refresh of `other` to be counted", Duration::from_secs(10), async || {
        proxy.metric(unchanged).await == 1.0
    })
    .await;
}
