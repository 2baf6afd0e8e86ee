//! Stale-while-revalidate (issue 18, item 2): after `tag_ttl` and within
//! `stale_while_revalidate`, a tag is answered from the cache at once and refreshed in the
//! background, once however many pulls arrive; a moved tag's new manifest (and its blobs) are
//! fetched in the background, so the next pull is warm. The fake upstream holds the manifest
//! at a gate the test opens (no real registry is slow on demand).

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Gate, OCI_MANIFEST};
use common::*;
use std::time::Duration;

const HOST: &str = "hub.test";
const TAG_PATH: &str = "/v2/lib/app/manifests/latest";

/// A pull of `lib/app:latest`: its status and digest.
async fn pull(proxy: &Proxy) -> (u16, String) {
    let url = format!("{}/v2/lib/app/manifests/latest?ns={HOST}", proxy.url());
    let r = get(&url, &[("accept", OCI_MANIFEST)]).await.unwrap();
    let digest = r.header("docker-content-digest").unwrap_or_default().to_string();
    (r.status, digest)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_tag_is_answered_at_once_and_refreshed_in_the_background() {
    let fake = FakeUpstream::start().await;
    let (v1, _) = fake.put_image("lib/app", "latest", 1);
    // The window comes from the repository rule (the upstream's own is off).
    let extra = "tag_ttl = \"1s\"\n[[upstream.repository]]\nmatch = \"lib/*\"\nstale_while_revalidate = \"10m\"";
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), extra)).await;
    assert_eq!(pull(&proxy).await.0, 200);

    // The tag moves upstream, and the upstream stops answering for the tag's manifest until
    // the gate opens.
    let (v2, layer2) = fake.put_image("lib/app", "latest", 2);
    let gate = Gate::default();
    fake.hold(TAG_PATH, &gate);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past tag_ttl

    // Three pulls past the TTL, while the upstream holds every answer: from the cache.
    for _ in 0..3 {
        assert_eq!(pull(&proxy).await, (200, v1.clone()));
    }
    assert_eq!(fake.count("GET", TAG_PATH), 1, "only the first pull's GET reached the upstream");
    // In the background, one revalidation for all three, held at the gate.
    wait_until("the background revalidation to reach the upstream", Duration::from_secs(10), async || {
        gate.reached() == 1
    })
    .await;
    assert_eq!(pull(&proxy).await, (200, v1.clone()), "the old digest until the revalidation ends");
    gate.open();
    // Then the new digest is served, from the cache, with its layer fetched ahead of the
    // next pull.
    wait_until("the new digest to be served", Duration::from_secs(20), async || pull(&proxy).await.1 == v2).await;
    assert_eq!(fake.count("HEAD", TAG_PATH), 1, "one background revalidation per tag");
    assert_eq!(fake.count("GET", TAG_PATH), 2);
    assert_eq!(gate.reached(), 2, "the revalidation's HEAD and the new manifest's GET");
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
    let extra = "tag_ttl = \"1s\"\nstale_while_revalidate = \"4s\"";
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), extra)).await;
    assert_eq!(pull(&proxy).await.0, 200);
    let other_path = "/v2/lib/app/manifests/other";
    let other = format!("{}{other_path}?ns={HOST}", proxy.url());
    assert_eq!(get(&other, &[("accept", OCI_MANIFEST)]).await.unwrap().status, 200);
    let (v2, _) = fake.put_image("lib/app", "latest", 4);
    let (latest_gate, other_gate) = (Gate::default(), Gate::default());
    fake.hold(TAG_PATH, &latest_gate);
    fake.hold(other_path, &other_gate);
    // Within the window (1 s + 4 s): answered while the upstream holds its answer (the gate
    // opens only after).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&other, &[("accept", OCI_MANIFEST)]).await.unwrap().status, 200);
    other_gate.open();
    // Past tag_ttl + stale_while_revalidate: the answer waits for the upstream, and is new.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let pending = tokio::spawn({
        let url = format!("{}/v2/lib/app/manifests/latest?ns={HOST}", proxy.url());
        async move { get(&url, &[("accept", OCI_MANIFEST)]).await.unwrap() }
    });
    wait_until("the revalidation to reach the upstream", Duration::from_secs(10), async || latest_gate.reached() == 1)
        .await;
    assert!(!pending.is_finished(), "answered before the upstream revalidated it");
    latest_gate.open();
    let r = pending.await.unwrap();
    assert_eq!((r.status, r.header("docker-content-digest")), (200, Some(v2.as_str())));
    // The background refresh of `other` found it where it was.
    let unchanged = "pullthrough_tag_background_revalidations_total{result=\"unchanged\",upstream=\"hub.test\"}";
    wait_until("the refresh of `other` to be counted", Duration::from_secs(10), async || {
        proxy.metric_opt(unchanged).await == Some(1.0)
    })
    .await;
}
