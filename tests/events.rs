//! Events (issue 18, item 4): CloudEvents reach a webhook receiver, in order, for fills from
//! a real docker-registry upstream, an eviction and an upstream outage, in binary and
//! structured mode; a dead webhook never slows a pull, and its drops are counted.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::webhook::{Hit, Receiver};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A listener that accepts connections and never answers: the worst webhook there is.
struct Blackhole {
    addr: SocketAddr,
    /// Once true, held connections are closed and new ones closed at once.
    release: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, mut released) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    Ok((s, _)) = listener.accept() => if !*released.borrow() { held.push(s) },
                    Ok(()) = released.changed() => held.clear(),
                }
            }
        });
        Blackhole { addr, release, task }
    }

    /// From now on, every connection (held or new) is closed without an answer.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

fn push_tag(layout: &Path, layout_tag: &str, registry: &Registry, name_tag: &str) {
    let src = format!("oci:{}:{layout_tag}", layout.display());
    let dst = format!("docker://{}/{name_tag}", registry.addr);
    skopeo(&["copy", "--preserve-digests", "--dest-tls-verify=false", &src, &dst]);
}

/// A registry with `test/app:v1` (layers of `sizes`), and the image.
async fn registry_with(sizes: &[usize]) -> (Registry, Built, tempfile::TempDir) {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 18, sizes, "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    push_tag(src.path(), "v1", &registry, "test/app:v1");
    (registry, app, src)
}

async fn pull_blob(proxy: &Proxy, digest: &str) {
    let url = format!("{}/v2/test/app/blobs/{digest}?ns=up.test", proxy.url());
    let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, digest.to_string()), "pull of {digest}");
}

/// The CloudEvents attributes every binary-mode request must carry.
fn assert_binary(hit: &Hit, kind: &str) {
    assert_eq!(hit.header("ce-specversion"), "1.0", "{hit:?}");
    assert_eq!(hit.header("ce-type"), format!("io.pullthrough.{kind}"), "{hit:?}");
    assert!(["//pullthrough/test", "/pullthrough"].contains(&hit.header("ce-source")), "{hit:?}");
    assert!(!hit.header("ce-id").is_empty(), "{hit:?}");
    assert!(humantime::parse_rfc3339(hit.header("ce-time")).is_ok(), "ce-time is RFC 3339: {hit:?}");
    assert_eq!(hit.header("content-type"), "application/json", "{hit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fills_an_eviction_and_an_outage_reach_the_webhooks_in_order() {
    let (registry, app, _src) = registry_with(&[600_000, 600_000]).await;
    let (a, b) = (app.layers[0].digest.clone(), app.layers[1].digest.clone());
    let all = Receiver::start().await;
    let fills = Receiver::start().await;
    let events = format!(
        "[events]\nsource = \"//pullthrough/test\"\n\
         [[events.webhook]]\nurl = \"{}\"\n\
         [[events.webhook]]\nurl = \"{}\"\nmode = \"structured\"\nkinds = [\"fill.completed\"]\n\
         headers = {{ Authorization = \"Bearer hook-token\" }}\n",
        all.url(),
        fills.url()
    );
    // Two ~600 kB layers in a 1 MiB cache: the second fill pushes the first out.
    // The proxy's address for the registry, which stops and starts again on a new port.
    let relay = common::relay::Relay::start(registry.addr).await;
    let proxy =
        Proxy::start_with("max_size = \"1MiB\"", &format!("{}{events}", upstream_toml("up.test", &relay.url(), "")))
            .await;

    pull_blob(&proxy, &a).await;
    all.wait_for(1, "fill.completed of the first layer").await;
    pull_blob(&proxy, &b).await;
    all.wait_for(3, "fill.completed of the second layer and the eviction of the first").await;

    // The outage: the upstream stops, a pull fails, the upstream comes back, a pull works.
    let manifest = format!("{}/v2/test/app/manifests/v1?ns=up.test", proxy.url());
    let accept = [("Accept", image::OCI_MANIFEST)];
    let (dir, _port) = registry.stop();
    relay.point_to(None);
    let r = get(&manifest, &accept).await.unwrap();
    assert_eq!(r.status, 503, "no upstream (the relay refuses connections), nothing cached: {}", r.text());
    all.wait_for(4, "upstream.down").await;
    let registry = Registry::start_in(dir, "").await;
    relay.point_to(Some(registry.addr));
    assert_eq!(get(&manifest, &accept).await.unwrap().status, 200);
    let hits = all.wait_for(5, "upstream.up").await;

    let kinds: Vec<&str> = hits.iter().map(|h| h.header("ce-type")).collect();
    assert_eq!(
        kinds,
        [
            "io.pullthrough.fill.completed",
            "io.pullthrough.fill.completed",
            "io.pullthrough.evicted",
            "io.pullthrough.upstream.down",
            "io.pullthrough.upstream.up"
        ],
        "{}",
        proxy.proc.log_text()
    );
    for (hit, kind) in hits.iter().zip(["fill.completed", "fill.completed", "evicted", "upstream.down", "upstream.up"])
    {
        assert_binary(hit, kind);
    }
    let ids: std::collections::HashSet<&str> = hits.iter().map(|h| h.header("ce-id")).collect();
    assert_eq!(ids.len(), hits.len(), "ids are unique");
    // What each is about, in the subject and the data.
    for (hit, digest, size) in [(&hits[0], &a, app.layers[0].size), (&hits[1], &b, app.layers[1].size)] {
        assert_eq!(hit.header("ce-subject"), format!("up.test/test/app@{digest}"));
        let data = hit.json();
        assert_eq!(data["digest"], digest.as_str());
        assert_eq!(data["size"], size);
        assert_eq!(data["tier"], "upstream");
        assert_eq!(data["upstream"], "up.test");
    }
    assert_eq!(hits[2].header("ce-subject"), a.as_str(), "the least recently used layer is evicted");
    assert_eq!(hits[2].json()["size"], app.layers[0].size);
    for h in &hits[3..] {
        assert_eq!(h.header("ce-subject"), "up.test");
    }
    let down = hits[3].json();
    assert!(down["cause"].as_str().is_some_and(|c| !c.is_empty()), "upstream.down says why: {down}");
    assert_eq!(
        proxy.metric(&format!("pullthrough_events_sent_total{{kind=\"evicted\",webhook=\"{}\"}}", all.addr)).await,
        1.0
    );

    // Structured mode, filtered by kind: only the two fills, each a whole CloudEvent.
    // A third fill after the outage is the sentinel: delivery is in order, so an evicted or
    // upstream event wrongly sent to this webhook would arrive before it.
    pull_blob(&proxy, &a).await;
    let structured = fills.wait_for(3, "the structured webhook's three fills").await;
    let kinds: Vec<String> = structured.iter().map(|h| h.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["io.pullthrough.fill.completed"; 3], "only fill.completed is sent to it");
    for (hit, digest) in structured.iter().zip([&a, &b]) {
        assert_eq!(hit.header("content-type"), "application/cloudevents+json");
        assert_eq!(hit.header("authorization"), "Bearer hook-token");
        assert!(hit.headers.get("ce-type").is_none(), "structured mode has no ce- headers");
        let ev = hit.json();
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["type"], "io.pullthrough.fill.completed");
        assert_eq!(ev["source"], "//pullthrough/test");
        assert_eq!(ev["subject"], format!("up.test/test/app@{digest}"));
        assert_eq!(ev["datacontenttype"], "application/json");
        assert!(ev["id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(humantime::parse_rfc3339(ev["time"].as_str().unwrap()).is_ok());
        assert_eq!(ev["data"]["digest"], digest.as_str());
    }
    // The same event keeps its id across webhooks.
    assert_eq!(structured[0].json()["id"], hits[0].header("ce-id"));
    drop(registry);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_webhook_never_slows_a_pull_and_its_drops_are_counted() {
    let (registry, app, _src) = registry_with(&[20_000, 20_000, 20_000, 20_000, 20_000]).await;
    let hole = Blackhole::start().await;
    // The webhook never answers within the test: a pull that waited on it would not finish.
    let events = format!(
        "[[events.webhook]]\nurl = \"http://{}/hook\"\ntimeout = \"10min\"\nqueue = 1\nattempts = 2\nbackoff = \"100ms\"\n",
        hole.addr
    );
    let proxy = Proxy::start(&format!("{}{events}", upstream_toml("up.test", &registry.url(), ""))).await;

    // Five fills while the webhook hangs: one event in delivery, one queued, three dropped.
    for l in &app.layers {
        pull_blob(&proxy, &l.digest).await;
    }
    let series = |reason: &str| {
        format!(
            "pullthrough_events_dropped_total{{kind=\"fill.completed\",reason=\"{reason}\",webhook=\"{}\"}}",
            hole.addr
        )
    };
    wait_until("the queue-full drops to be counted", Duration::from_secs(10), async || {
        proxy.metric_opt(&series("queue_full")).await == Some(3.0)
    })
    .await;
    assert_eq!(proxy.metric_opt(&series("undelivered")).await, None, "an event was given up while the hook hung");
    // The webhook fails every attempt now: each event is tried twice, then dropped.
    hole.release();
    wait_until("both undelivered events to be counted", Duration::from_secs(15), async || {
        proxy.metric_opt(&series("undelivered")).await == Some(2.0)
    })
    .await;
    assert_eq!(proxy.metric(&format!("pullthrough_events_retries_total{{webhook=\"{}\"}}", hole.addr)).await, 2.0);
    assert_eq!(proxy.metric(&series("queue_full")).await, 3.0);
    let sent = format!("pullthrough_events_sent_total{{kind=\"fill.completed\",webhook=\"{}\"}}", hole.addr);
    assert_eq!(proxy.metric_opt(&sent).await.unwrap_or(0.0), 0.0);
}

/// The config schema lists the kinds by name (it does not import the events module): the
/// two lists must stay the same.
#[test]
fn the_config_knows_every_event_kind() {
    let names: Vec<&str> = pullthrough::events::EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, pullthrough::config::EVENT_KINDS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lifecycle_expiry_is_an_event() {
    let (registry, v1, src) = registry_with(&[1000]).await;
    let v2 = image::manifest(src.path(), 19, &[1000], "amd64");
    image::finish_layout(src.path(), &[(&v2.top, "v2")]);
    push_tag(src.path(), "v2", &registry, "test/app:v2");
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let hook = Receiver::start().await;
    let upstream = upstream_toml(
        "up.test",
        &registry.url(),
        &format!("[[upstream.repository]]\nmatch = \"test/*\"\nlifecycle_policy = '''{policy}'''"),
    );
    let events = format!("[[events.webhook]]\nurl = \"{}\"\nkinds = [\"expired\"]\n", hook.url());
    let proxy = Proxy::start_with("lifecycle_interval = \"300ms\"", &format!("{upstream}{events}")).await;
    // v1 cached first, v2 a while later: the policy keeps one image, the newer.
    for tag in ["v1", "v2"] {
        let r = get(&format!("{}/v2/test/app/manifests/{tag}?ns=up.test", proxy.url()), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let hits = hook.wait_for(1, "the expired event").await;
    assert_binary(&hits[0], "expired");
    assert_eq!(hits[0].header("ce-subject"), format!("up.test/test/app@{}", v1.top.digest));
    assert_eq!(hits[0].json()["tags"], serde_json::json!(["v1"]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(hook.hits().len(), 1, "v2 is kept, and v1 expires once");
}

/// Bytes that do not match their digest: the fill is refused, and both the corruption and
/// the failed fill are reported with their cause (the fake upstream: a real registry does
/// not flip bits on demand).
#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_fails_verification_is_reported_with_its_cause() {
    let fake = common::fake::FakeUpstream::start().await;
    let bytes = image::pseudo_random(7, 100_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes, common::fake::Fault::FlipBit);
    let hook = Receiver::start().await;
    let events = format!("[[events.webhook]]\nurl = \"{}\"\nmode = \"structured\"\n", hook.url());
    let proxy = Proxy::start(&format!("{}{events}", upstream_toml("fake.test", &fake.url(), ""))).await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let got = get_hashed(&url, &[]).await;
    assert!(
        !matches!(&got, Ok((200, _, hex)) if format!("sha256:{hex}") == digest),
        "the corrupt blob must not arrive whole: {got:?}"
    );
    let hits = hook.wait_for(2, "blob.corrupt and fill.failed").await;
    let evs: Vec<serde_json::Value> = hits.iter().map(Hit::json).collect();
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["io.pullthrough.blob.corrupt", "io.pullthrough.fill.failed"]);
    for e in &evs {
        assert_eq!(e["subject"], format!("fake.test/r@{digest}"));
        assert!(e["data"]["cause"].as_str().is_some_and(|c| c.contains("hashes to")), "{e}");
    }
    assert_eq!(evs[0]["data"]["tier"], "upstream");
}

/// A clean shutdown delivers what is still queued (bounded): the events of the last
/// moments before a SIGTERM are not lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_shutdown_delivers_the_queued_events() {
    let (registry, app, _src) = registry_with(&[20_000, 20_000, 20_000]).await;
    let hook = Receiver::start_slow(Duration::from_millis(400)).await;
    let events = format!("[[events.webhook]]\nurl = \"{}\"\nkinds = [\"fill.completed\"]\n", hook.url());
    let mut proxy = Proxy::start(&format!("{}{events}", upstream_toml("up.test", &registry.url(), ""))).await;
    for l in &app.layers {
        pull_blob(&proxy, &l.digest).await;
        proxy.wait_cached(&l.digest).await;
    }
    // Three events take 1.2 s to deliver; the daemon is told to stop at once.
    proxy.proc.signal("TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = proxy.proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the daemon did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", proxy.proc.log_text());
    let got: Vec<String> =
        hook.hits().iter().map(|h| h.json()["digest"].as_str().unwrap_or_default().to_string()).collect();
    let want: Vec<String> = app.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(got, want, "every queued event was delivered before the exit, in order");
}

/// A receiver that fails gets the same event again after a backoff, and the next event only
/// after it (order kept); a 4xx refusal is not retried, and is counted.
#[tokio::test(flavor = "multi_thread")]
async fn failed_deliveries_are_retried_in_order_and_refusals_are_counted() {
    let (registry, app, _src) = registry_with(&[20_000, 20_000]).await;
    let hook = Receiver::start_with(Duration::ZERO, &[503, 503, 200, 400]).await;
    let events = format!(
        "[[events.webhook]]\nurl = \"{}\"\nkinds = [\"fill.completed\"]\nbackoff = \"200ms\"\nname = \"flaky\"\n",
        hook.url()
    );
    let proxy = Proxy::start(&format!("{}{events}", upstream_toml("up.test", &registry.url(), ""))).await;
    for l in &app.layers {
        pull_blob(&proxy, &l.digest).await;
    }
    let hits = hook.wait_for(4, "three attempts of the first event, then the second").await;
    // Backoff: 200 ms, then 400 ms before the third attempt (a lower bound: it cannot be
    // shorter, however loaded the machine).
    let gap = |i: usize| hits[i + 1].at.duration_since(hits[i].at);
    assert!(gap(0) >= Duration::from_millis(200) && gap(1) >= Duration::from_millis(400), "{hits:?}");
    let digests: Vec<String> = hits.iter().map(|h| h.json()["digest"].as_str().unwrap().to_string()).collect();
    let (a, b) = (&app.layers[0].digest, &app.layers[1].digest);
    assert_eq!(
        digests,
        [a.clone(), a.clone(), a.clone(), b.clone()],
        "the first event until it is taken, then the next"
    );
    assert!(hits[..3].iter().all(|h| h.header("ce-id") == hits[0].header("ce-id")), "a retry is the same event");
    let dropped = "pullthrough_events_dropped_total{kind=\"fill.completed\",reason=\"rejected\",webhook=\"flaky\"}";
    wait_until("the refusal to be counted", Duration::from_secs(5), async || {
        proxy.metric_opt(dropped).await == Some(1.0)
    })
    .await;
    assert_eq!(proxy.metric("pullthrough_events_retries_total{webhook=\"flaky\"}").await, 2.0);
    assert_eq!(proxy.metric("pullthrough_events_sent_total{kind=\"fill.completed\",webhook=\"flaky\"}").await, 1.0);
    // Counted as dropped, the refused event is done with: no retry can follow.
    assert_eq!(hook.hits().len(), 4, "a 400 is not retried");
}
