//! Cluster-wide single flight: several pullthrough nodes (each its own process, cache and
//! ports) that know each other through `[cluster] peers`, in front of one upstream. A digest's
//! owner (rendezvous hashing) fills it once; the other nodes stream it from the owner and
//! verify every byte.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault, Gate};
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

/// Start `n` nodes on 127.0.0.1, all peers of each other plus `extra_peers`, with `upstream`
/// as host `lab.test`: `(their advertised URLs, the nodes)`. Peers must know each other's
/// addresses before they start, so the ports are picked ahead; a node that finds its port
/// taken exits ("cannot listen"), and the whole set starts again on new ports.
async fn nodes(n: usize, extra_peers: &[String], upstream: &str) -> (Vec<String>, Vec<Proxy>) {
    nodes_with(n, extra_peers, upstream, "").await
}

/// `nodes`, with more `[cluster]` settings.
async fn nodes_with(n: usize, extra_peers: &[String], upstream: &str, cluster: &str) -> (Vec<String>, Vec<Proxy>) {
    for _ in 0..5 {
        let urls: Vec<String> = (0..n).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        match try_nodes(&urls, extra_peers, upstream, cluster).await {
            Ok(nodes) => return (urls, nodes),
            Err(log) => assert!(log.contains("cannot listen"), "a node exited:\n{log}"),
        }
    }
    panic!("no free ports for the cluster in 5 tries");
}

async fn try_nodes(
    urls: &[String],
    extra_peers: &[String],
    upstream: &str,
    cluster: &str,
) -> Result<Vec<Proxy>, String> {
    let mut all: Vec<String> = urls.to_vec();
    all.extend_from_slice(extra_peers);
    let peers = all.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    for url in urls {
        let dir = tempfile::tempdir().unwrap();
        let listen = url.trim_start_matches("http://");
        let cfg = format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [cache]\ndir = \"{cache}\"\nmin_free = \"0\"\n\
             [cluster]\nadvertise = \"{url}\"\npeers = [{peers}]\ntimeout = \"3s\"\n{cluster}\n{up}",
            cache = dir.path().join("cache").display(),
            up = upstream_toml("lab.test", upstream, "prefix = \"lab\""),
        );
        let path = dir.path().join("pullthrough.toml");
        std::fs::write(&path, cfg).unwrap();
        let node = Proxy::try_launch(dir, &path, |mut c| {
            c.env("PULLTHROUGH_CLUSTER_TOKEN", TOKEN);
            c
        })
        .await?;
        out.push(node);
    }
    Ok(out)
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

    let (urls, nodes) = nodes(3, &[], &registry.url()).await;
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
        let from_peer = n.metric_opt("pullthrough_tier_fill_bytes_total{tier=\"peer\"}").await.unwrap_or(0.0);
        if url == owner {
            assert_eq!(from_peer, 0.0);
            // One request from each other node (their eight clients share it).
            let served = "pullthrough_peer_requests_total{direction=\"served\",result=\"ok\"}";
            assert_eq!(n.metric(served).await, 2.0);
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
async fn the_owner_killed_mid_fill_costs_no_client_an_error() {
    let upstream = FakeUpstream::start().await;
    let bytes = image::pseudo_random(77, 8 << 20);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    // Held half-way at a gate: the owner is killed mid-fill, whatever the machine's speed.
    let gate = Gate::default();
    upstream.set_blob(&digest, bytes.clone(), Fault::Hold { at: 4 << 20, gate: gate.clone() });

    let (urls, mut nodes) = nodes(3, &[], &upstream.url()).await;
    let order = rendezvous(&urls, &digest);
    let owner = urls.iter().position(|u| *u == order[0]).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let node_urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let blob_url = |i: usize| format!("{}/v2/lab/test/app/blobs/{digest}", node_urls[i]);

    let first: Vec<String> = others.iter().flat_map(|i| std::iter::repeat_n(blob_url(*i), 4)).collect();
    let pending = tokio::spawn(fetch_all(first));
    wait_until("the owner's fill to be held half-way", Duration::from_secs(20), async || gate.reached() == 1).await;
    nodes[owner].proc.kill();
    gate.open();
    let results = pending.await.unwrap();

    // The fills that read from the owner resume at the byte from the next source: no
    // client sees the owner's death, and every download is whole and verified.
    for r in results {
        let (status, _, hash) = r.expect("every transfer completes despite the owner's death");
        assert_eq!((status, format!("sha256:{hash}")), (200, digest.clone()));
    }
    for i in &others {
        nodes[*i].wait_cached(&digest).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_sending_corrupt_bytes_is_never_trusted() {
    let registry = Registry::start(None).await;
    let bad_peer = FakeUpstream::start().await;
    let (urls, mut node) = nodes(1, &[bad_peer.url()], &registry.url()).await;
    let node = node.remove(0);
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

/// `series` summed over `nodes`.
async fn total(nodes: &[Proxy], series: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(series).await;
    }
    sum
}

/// `series` on each of `nodes`, sorted.
async fn each(nodes: &[Proxy], series: &str) -> Vec<f64> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(n.metric(series).await);
    }
    v.sort_by(f64::total_cmp);
    v
}

const MADE: &str = "pullthrough_peer_referrals_total{event=\"made\"}";
const FOLLOWED: &str = "pullthrough_peer_referrals_total{event=\"followed\"}";
const REFUSED: &str = "pullthrough_peer_referrals_total{event=\"refused\"}";
const FELL_BACK: &str = "pullthrough_peer_referrals_total{event=\"fell_back\"}";
const SENT: &str = "pullthrough_peer_sent_bytes_total";
const PEAK: &str = "pullthrough_peer_streams_peak";

/// A blob of `len` seeded bytes the fake upstream holds after its first MiB until the test
/// opens the gate: every stream of it stays open until then, so who asked whom is decided
/// before any transfer can end.
fn gated_blob(upstream: &FakeUpstream, seed: u64, len: usize) -> (Vec<u8>, String, Gate) {
    let bytes = image::pseudo_random(seed, len);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let gate = Gate::default();
    upstream.set_blob(&digest, bytes.clone(), Fault::Hold { at: 1 << 20, gate: gate.clone() });
    (bytes, digest, gate)
}

#[tokio::test(flavor = "multi_thread")]
async fn four_nodes_cold_on_one_blob_pass_it_down_a_chain() {
    let upstream = FakeUpstream::start().await;
    let (bytes, digest, gate) = gated_blob(&upstream, 25, 3 << 20);
    let size = bytes.len() as f64;
    // The default max_peer_streams (1): no node sends the blob to more than one peer at once.
    let (_, nodes) = nodes(4, &[], &upstream.url()).await;
    let pending =
        tokio::spawn(fetch_all(nodes.iter().map(|n| format!("{}/v2/lab/test/app/blobs/{digest}", n.url())).collect()));
    // The owner streams to the first node that asks and refers the other two, each to the
    // node that asked before it; both follow.
    wait_until("two referrals made and followed", Duration::from_secs(30), async || {
        total(&nodes, MADE).await == 2.0 && total(&nodes, FOLLOWED).await == 2.0
    })
    .await;
    gate.open();
    for r in pending.await.unwrap() {
        let (status, len, hash) = r.expect("every client completes");
        assert_eq!((status, len), (200, bytes.len() as u64));
        assert_eq!(format!("sha256:{hash}"), digest, "verified bytes");
    }
    assert_eq!(upstream.count("GET", &digest), 1, "one upstream GET for the cluster");
    // A chain: the owner and the next two nodes each sent one copy, the last none.
    assert_eq!(each(&nodes, PEAK).await, [0.0, 1.0, 1.0, 1.0], "no node sent to two peers at once");
    assert_eq!(each(&nodes, SENT).await, [0.0, size, size, size], "each link carried one copy");
    assert_eq!(total(&nodes, REFUSED).await + total(&nodes, FELL_BACK).await, 0.0);
    for n in &nodes {
        n.wait_cached(&digest).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referred_node_that_refuses_sends_the_asker_back_to_the_owner() {
    let upstream = FakeUpstream::start().await;
    let (bytes, digest, gate) = gated_blob(&upstream, 26, 2 << 20);
    let (urls, nodes) = nodes(3, &[], &upstream.url()).await;
    let order = rendezvous(&urls, &digest);
    let at = |u: &String| urls.iter().position(|x| x == u).unwrap();
    let (owner, idle, asker) = (at(&order[0]), at(&order[1]), at(&order[2]));

    // A peer request to the owner in the idle node's name takes the owner's one stream, and
    // the owner now believes the idle node is receiving the blob. It is not.
    let held = format!("{}/v2/test/app/blobs/{digest}?ns=lab.test", nodes[owner].url());
    let from = urls[idle].clone();
    let held = tokio::spawn(async move {
        get_hashed(
            &held,
            &[("x-pullthrough-peer", TOKEN), ("x-pullthrough-from", &from), ("x-pullthrough-ask", "referable")],
        )
        .await
    });
    wait_until("the owner's stream", Duration::from_secs(30), async || {
        nodes[owner].metric("pullthrough_peer_streams").await == 1.0
    })
    .await;

    // The asker is referred to the idle node, which refuses (it never starts a fill for a
    // peer), so the asker asks the owner again, directly: never the upstream.
    let url = format!("{}/v2/lab/test/app/blobs/{digest}", nodes[asker].url());
    let client = tokio::spawn(async move { get_hashed(&url, &[]).await });
    wait_until("the asker back at the owner", Duration::from_secs(30), async || {
        nodes[asker].metric(FELL_BACK).await == 1.0 && nodes[owner].metric("pullthrough_peer_streams").await == 2.0
    })
    .await;
    gate.open();
    let (status, len, hash) = client.await.unwrap().expect("the client completes");
    assert_eq!((status, len), (200, bytes.len() as u64));
    assert_eq!(format!("sha256:{hash}"), digest);
    assert_eq!(format!("sha256:{}", held.await.unwrap().unwrap().2), digest);
    assert_eq!(nodes[owner].metric(MADE).await, 1.0);
    assert_eq!(nodes[idle].metric(REFUSED).await, 1.0);
    assert_eq!(nodes[asker].metric(FOLLOWED).await, 0.0);
    // The asker's fill came from the owner (counted once it is committed, after the client's
    // last byte).
    let from_peer = "pullthrough_tier_fill_bytes_total{tier=\"peer\"}";
    wait_until("the asker's fill from its peer", Duration::from_secs(10), async || {
        nodes[asker].metric_opt(from_peer).await == Some(bytes.len() as f64)
    })
    .await;
    assert_eq!(upstream.count("GET", &digest), 1, "neither the idle node nor the asker went upstream");
    assert!(nodes[idle].cached_blobs().is_empty(), "a referred node never fills for a peer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_passing_the_blob_on_killed_mid_stream_costs_no_client_an_error() {
    let upstream = FakeUpstream::start().await;
    let (bytes, digest, gate) = gated_blob(&upstream, 27, 3 << 20);
    let (urls, mut nodes) = nodes(4, &[], &upstream.url()).await;
    let pending: Vec<_> = nodes
        .iter()
        .map(|n| {
            let url = format!("{}/v2/lab/test/app/blobs/{digest}", n.url());
            tokio::spawn(async move { get_hashed(&url, &[]).await })
        })
        .collect();
    wait_until("the chain", Duration::from_secs(30), async || {
        total(&nodes, MADE).await == 2.0 && total(&nodes, FOLLOWED).await == 2.0
    })
    .await;
    // The first link below the owner: it receives from the owner and sends to the next node.
    let owner = urls.iter().position(|u| *u == rendezvous(&urls, &digest)[0]).unwrap();
    let mut first = None;
    for (i, n) in nodes.iter().enumerate() {
        if i != owner && n.metric(FOLLOWED).await == 0.0 {
            first = Some(i);
        }
    }
    let first = first.expect("one node was served by the owner itself");
    assert!(nodes[first].metric(SENT).await > 0.0, "it is passing the blob on");
    nodes[first].proc.kill();
    gate.open();
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.await.unwrap();
        if i == first {
            continue;
        }
        let (status, len, hash) = r.expect("every client on the other nodes completes");
        assert_eq!((status, len), (200, bytes.len() as u64));
        assert_eq!(format!("sha256:{hash}"), digest);
    }
    assert_eq!(upstream.count("GET", &digest), 1, "the owner's one fill; the others resumed from peers");
}
