//! Cluster-wide single flight: several pullthrough nodes (each its own process, cache and
//! ports) that know each other through `[cluster] peers`, in front of one upstream. A digest's
//! owner (rendezvous hashing) fills it once; the other nodes stream it from the owner and
//! verify every byte.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image;
use common::*;
use std::time::Duration;

const TOKEN: &str = "test-cluster-token-0123456789";

/// The rendezvous order of `peers` for `digest`, owner first, as every node computes it (the
/// score is a documented, stable contract: the first 8 bytes of sha256(peer "\n" digest)).
fn rendezvous(peers: &[String], digest: &str) -> Vec<String> {
    let score = |p: &String| {
        let hex = sha256_hex(format!("{p}\n{digest}").as_bytes());
        u64::from_str_radix(&hex[..16], 16).unwrap()
    };
    let mut v = peers.to_vec();
    v.sort_by(|a, b| score(b).cmp(&score(a)).then_with(|| a.cmp(b)));
    v
}

/// Start one node per entry of `urls` (its advertised URL, on 127.0.0.1), all peers of each
/// other plus `extra_peers`, with `upstream` as host `lab.test`.
async fn nodes(urls: &[String], extra_peers: &[String], upstream: &str) -> Vec<Proxy> {
    let mut all: Vec<String> = urls.to_vec();
    all.extend_from_slice(extra_peers);
    let peers = all.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    for url in urls {
        let dir = tempfile::tempdir().unwrap();
        let listen = url.trim_start_matches("http://");
        let cfg = format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nshutdown_grace = \"5s\"\n\
             [cache]\ndir = \"{cache}\"\nmin_free = \"0\"\n\
             [cluster]\nadvertise = \"{url}\"\npeers = [{peers}]\ntimeout = \"3s\"\n{up}",
            admin = free_port(),
            cache = dir.path().join("cache").display(),
            up = upstream_toml("lab.test", upstream, "prefix = \"lab\""),
        );
        let path = dir.path().join("pullthrough.toml");
        std::fs::write(&path, cfg).unwrap();
        out.push(
            Proxy::launch(dir, &path, |mut c| {
                c.env("PULLTHROUGH_CLUSTER_TOKEN", TOKEN);
                c
            })
            .await,
        );
    }
    out
}

fn urls(n: usize) -> Vec<String> {
    (0..n).map(|_| format!("http://127.0.0.1:{}", free_port())).collect()
}

/// Every client's answer for `url`: Ok((status, size, sha256 hex)) or the transfer's error.
async fn fetch_all(urls: Vec<String>) -> Vec<Result<(u16, u64, String), String>> {
    let tasks: Vec<_> = urls.into_iter().map(|u| tokio::spawn(async move { get_hashed(&u, &[]).await })).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_times_eight_clients_make_one_upstream_fetch() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 31, &[48 << 20], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/big:v1", None);
    let layer = app.layers[0].digest.clone();

    let urls = urls(3);
    let nodes = nodes(&urls, &[], &registry.url()).await;
    // 8 clients on each node, all at once, cold.
    let requests: Vec<String> = nodes
        .iter()
        .flat_map(|n| std::iter::repeat_n(format!("{}/v2/lab/test/big/blobs/{layer}", n.url()), 8))
        .collect();
    for r in fetch_all(requests).await {
        let (status, size, hash) = r.expect("every client completes");
        assert_eq!((status, size), (200, app.layers[0].size));
        assert_eq!(format!("sha256:{hash}"), layer, "verified bytes");
    }
    assert_eq!(registry.count_gets(&format!("/v2/test/big/blobs/{layer}")), 1, "one upstream GET for the cluster");

    // The owner filled it; each other node streamed it from the owner (and cached it).
    let owner = &rendezvous(&urls, &layer)[0];
    for (url, n) in urls.iter().zip(&nodes) {
        n.wait_cached(&layer).await;
        let from_peer = n.metric("pullthrough_tier_fill_bytes_total{tier=\"peer\"}").await;
        if url == owner {
            assert_eq!(from_peer, 0.0);
            assert!(n.metric("pullthrough_peer_requests_total{direction=\"served\",result=\"ok\"}").await >= 1.0);
        } else {
            assert_eq!(from_peer, app.layers[0].size as f64, "{url} streamed from the owner");
        }
    }
    // The token never reaches a log.
    for n in &nodes {
        assert!(!n.proc.log_text().contains(TOKEN));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_killed_mid_fill_costs_one_retry_never_a_wrong_byte() {
    let upstream = FakeUpstream::start().await;
    let bytes = image::pseudo_random(77, 8 << 20);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    // About 4 s per transfer: time to kill the owner half-way.
    upstream.set_blob(&digest, bytes.clone(), Fault::Slow { chunk: 64 << 10, delay_ms: 30 });

    let urls = urls(3);
    let mut nodes = nodes(&urls, &[], &upstream.url()).await;
    let order = rendezvous(&urls, &digest);
    let owner = urls.iter().position(|u| *u == order[0]).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let node_urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let blob_url = |i: usize| format!("{}/v2/lab/test/app/blobs/{digest}", node_urls[i]);

    let first: Vec<String> = others.iter().flat_map(|i| std::iter::repeat_n(blob_url(*i), 4)).collect();
    let pending = tokio::spawn(fetch_all(first));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[owner].proc.kill();
    let results = pending.await.unwrap();

    // A transfer cut by the owner's death fails; one that completes is verified.
    let mut retries = Vec::new();
    for (k, r) in results.into_iter().enumerate() {
        match r {
            Ok((200, _, hash)) if format!("sha256:{hash}") == digest => {}
            Ok((200, _, _)) => panic!("a client completed a download of wrong bytes"),
            _ => retries.push(blob_url(others[k / 4])),
        }
    }
    assert!(!retries.is_empty(), "the owner's death should have cut some transfers");
    // One retry each (as runtimes retry): the next node in line fills, the other asks it.
    for r in fetch_all(retries).await {
        let (status, _, hash) = r.expect("the retry completes");
        assert_eq!(status, 200);
        assert_eq!(format!("sha256:{hash}"), digest);
    }
    for i in &others {
        nodes[*i].wait_cached(&digest).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_sending_corrupt_bytes_is_never_trusted() {
    let registry = Registry::start(None).await;
    let bad_peer = FakeUpstream::start().await;
    let urls = urls(1);
    let peers = vec![urls[0].clone(), bad_peer.url()];

    // An image whose layer the bad peer owns (rendezvous order over the two peers).
    let src = tempfile::tempdir().unwrap();
    let (dir, app, layer) = (1..64)
        .find_map(|seed| {
            let dir = src.path().join(seed.to_string());
            let app = image::manifest(&dir, seed, &[2 << 20], "amd64");
            let layer = app.layers[0].digest.clone();
            (rendezvous(&peers, &layer)[0] == bad_peer.url()).then_some((dir, app, layer))
        })
        .expect("some seed gives the bad peer the layer");
    image::finish_layout(&dir, &[(&app.top, "v1")]);
    push(&dir, "v1", &registry.addr.to_string(), "test/app:v1", None);
    let hex = layer.trim_start_matches("sha256:");
    let bytes = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
    bad_peer.set_blob(&layer, bytes, Fault::FlipBit);

    let node = nodes(&urls, &[bad_peer.url()], &registry.url()).await.remove(0);
    let url = format!("{}/v2/lab/test/app/blobs/{layer}", node.url());
    if let Ok((status, _, hash)) = get_hashed(&url, &[]).await {
        assert!(status != 200 || format!("sha256:{hash}") == layer, "a client completed a download of bad bytes");
    }
    assert_eq!(bad_peer.hits(&layer), 1, "the owner was asked");
    assert_eq!(node.metric("pullthrough_tier_verification_failures_total{tier=\"peer\"}").await, 1.0);
    assert!(!node.cached_blobs().iter().any(|p| p.ends_with(hex)), "bad bytes were committed");

    // The peer is skipped now: the retry goes to the upstream and gets the right bytes.
    let (status, size, hash) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, size), (200, app.layers[0].size));
    assert_eq!(format!("sha256:{hash}"), layer);
    assert_eq!(registry.count_gets(&format!("/v2/test/app/blobs/{layer}")), 1);
    assert_eq!(bad_peer.hits(&layer), 1);

    // A request with a wrong cluster token is refused, not served as a client's.
    let wrong = common::net::send("GET", &url, &[("x-pullthrough-peer", "not-the-token")]).await.unwrap();
    assert_eq!(wrong.status, 401);
}
