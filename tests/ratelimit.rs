//! Rate-limit budgets (issue 18, item 1), against the project's fake upstream playing Docker
//! Hub's pull limit (no real registry runs out of budget on demand): manifest GETs spend it,
//! HEADs are free, every manifest answer says what is left (`ratelimit-remaining: 2;w=21600`),
//! and once spent a GET gets 429.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault, OCI_MANIFEST};
use common::webhook::Receiver;
use common::*;
use std::time::Duration;

const HOST: &str = "hub.test";

async fn pull(proxy: &Proxy, name: &str, reference: &str) -> Resp {
    let url = format!("{}/v2/{name}/manifests/{reference}?ns={HOST}", proxy.url());
    get(&url, &[("accept", OCI_MANIFEST)]).await.unwrap()
}

/// The digest a pull answered, failing the test unless it is a 200.
async fn pulled(proxy: &Proxy, name: &str, reference: &str) -> String {
    let r = pull(proxy, name, reference).await;
    assert_eq!(r.status, 200, "{name}:{reference}: {}", r.text());
    r.header("docker-content-digest").unwrap().to_string()
}

fn manifest_gets(fake: &FakeUpstream) -> usize {
    fake.count_containing("GET", "/manifests/")
}

/// Past the 1 s `tag_ttl` of the proxies below.
async fn past_ttl() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spent_budget_serves_cached_tags_and_answers_uncached_with_429_until_it_is_back() {
    let fake = FakeUpstream::start().await;
    fake.rate_limit(3, 21600, Some(2));
    let (a, _) = fake.put_image("lib/a", "latest", 1);
    let (b, _) = fake.put_image("lib/b", "latest", 2);
    let (c, _) = fake.put_image("lib/c", "latest", 3);
    let (d, _) = fake.put_image("lib/d", "latest", 4);
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), "tag_ttl = \"1s\"\nrate_limit_reserve = 1")).await;

    // Three pulls spend the budget of three.
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a);
    assert_eq!(pulled(&proxy, "lib/b", "latest").await, b);
    assert_eq!(pulled(&proxy, "lib/c", "latest").await, c);
    assert_eq!(proxy.metric("pullthrough_upstream_ratelimit_remaining{upstream=\"hub.test\"}").await, 0.0);
    let gets = manifest_gets(&fake);

    // Cached tags are still served after their TTL: revalidated with a free HEAD.
    past_ttl().await;
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a);
    // A tag that moved upstream is served as cached: the new manifest would cost a GET.
    let (b2, _) = fake.put_image("lib/b", "latest", 22);
    assert_eq!(pulled(&proxy, "lib/b", "latest").await, b, "a moved tag was fetched with the budget spent");
    // Uncached content: 429 with Retry-After, and the upstream is not asked.
    let r = pull(&proxy, "lib/d", "latest").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("TOOMANYREQUESTS"));
    let retry: u64 = r.header("retry-after").expect("Retry-After on the 429").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(fake.hits("/v2/lib/d/manifests/latest"), 0, "the upstream was asked with the budget spent");
    assert_eq!(manifest_gets(&fake), gets, "a manifest GET reached the upstream with the budget spent");
    assert_eq!(proxy.metric("pullthrough_upstream_ratelimit_held_total{upstream=\"hub.test\"}").await, 1.0);
    let ready = get(&format!("http://{}/readyz", proxy.admin), &[]).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(v["rate_limits"][HOST]["state"], "spent", "{v}");

    // The window resets: the next HEAD says so, and pulls go through again.
    fake.set_remaining(3);
    assert_eq!(pulled(&proxy, "lib/b", "latest").await, b2, "the moved tag was not fetched once budget was back");
    assert_eq!(pulled(&proxy, "lib/d", "latest").await, d);
    assert_eq!(manifest_gets(&fake), gets + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_holds_every_request_until_it_ends() {
    let fake = FakeUpstream::start().await;
    let (a, _) = fake.put_image("lib/a", "latest", 5);
    let (d, _) = fake.put_image("lib/d", "latest", 6);
    let hook = Receiver::start().await;
    let events =
        format!("[[events.webhook]]\nurl = \"{}\"\nmode = \"structured\"\nkinds = [\"ratelimited\"]\n", hook.url());
    let proxy = Proxy::start(&format!("{}{events}", upstream_toml(HOST, &fake.url(), "tag_ttl = \"1s\""))).await;
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a);

    // The upstream starts refusing manifest GETs with 429 and Retry-After: 3.
    fake.rate_limit(0, 21600, Some(3));
    let r = pull(&proxy, "lib/d", "latest").await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("3")), "{}", r.text());
    let asked = fake.seen().len();

    // While it runs nothing is sent: not even a HEAD to revalidate a cached tag.
    past_ttl().await;
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a);
    let r = pull(&proxy, "lib/d", "latest").await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").expect("Retry-After on the 429").parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert_eq!(fake.seen().len(), asked, "the upstream was asked while its Retry-After ran: {:?}", fake.seen());
    assert_eq!(proxy.metric("pullthrough_stale_manifest_serves_total{upstream=\"hub.test\"}").await, 1.0);

    // Once it has passed (and the upstream serves again), pulls go through.
    fake.set_remaining(10);
    wait_until("the Retry-After to pass", Duration::from_secs(10), async || {
        pull(&proxy, "lib/d", "latest").await.status == 200
    })
    .await;
    assert_eq!(pulled(&proxy, "lib/d", "latest").await, d);
    wait_log(&proxy.proc, "upstream rate limit reached").await;
    // One `ratelimited` event, when the limit was reached (not one per request held back).
    hook.wait_for(1, "the ratelimited event").await;
    let sent: Vec<serde_json::Value> = hook.hits().iter().map(|h| h.json()).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["type"], "io.pullthrough.ratelimited", "{}", sent[0]);
    assert_eq!(sent[0]["data"]["upstream"], HOST, "{}", sent[0]);
    assert_eq!(sent[0]["data"]["retry_after_seconds"], 3, "{}", sent[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn below_the_reserve_uncached_content_answers_429_and_the_reserve_follows_moved_tags() {
    let fake = FakeUpstream::start().await;
    fake.rate_limit(4, 21600, None);
    let (a, _) = fake.put_image("lib/a", "latest", 7);
    let (b, _) = fake.put_image("lib/b", "latest", 8);
    fake.put_image("lib/c", "latest", 9);
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), "tag_ttl = \"1s\"\nrate_limit_reserve = 3")).await;
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a);
    assert_eq!(pulled(&proxy, "lib/b", "latest").await, b);
    // Two left, below the reserve of three: content the cache does not have is answered
    // 429 with Retry-After, and the upstream is not asked.
    let gets = manifest_gets(&fake);
    let r = pull(&proxy, "lib/c", "latest").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("TOOMANYREQUESTS"), "{}", r.text());
    let retry: u64 = r.header("retry-after").expect("a Retry-After").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(manifest_gets(&fake), gets, "the upstream was asked for uncached content below the reserve");
    assert_eq!(fake.count("HEAD", "/v2/lib/c/manifests/latest"), 0);
    // A cached tag that moved: the reserve is kept for its new manifest (one GET).
    let (a2, _) = fake.put_image("lib/a", "latest", 77);
    past_ttl().await;
    assert_eq!(pulled(&proxy, "lib/a", "latest").await, a2, "a moved cached tag was not followed below the reserve");
    assert_eq!(fake.count("HEAD", "/v2/lib/a/manifests/latest"), 1);
    assert_eq!(manifest_gets(&fake), gets + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_waits_for_the_budget_instead_of_failing() {
    let fake = std::sync::Arc::new(FakeUpstream::start().await);
    let (p, layer) = fake.put_image("lib/p", "latest", 10);
    fake.rate_limit(0, 21600, Some(2));
    // The layer is rate limited too, a while longer.
    let layer_bytes = common::image::pseudo_random(10 * 10 + 1, 10_000);
    let limited = Fault::Status(429, vec![("Retry-After".into(), "2".into())]);
    fake.set_blob(&layer, layer_bytes, limited);
    let proxy = Proxy::start(&upstream_toml(HOST, &fake.url(), "")).await;
    // The budget comes back once the first 429 is sent, and the layer once its first 429
    // is: each within the 2 s the prefetch waits (Retry-After) before it asks again.
    let refill = tokio::spawn({
        let (fake, layer) = (fake.clone(), layer.clone());
        async move {
            // Bounded polls (a spawned task: `wait_until`'s closure is not `Send`).
            let seen = async |what: &str, n: usize| {
                for _ in 0..400 {
                    if fake.count("GET", what) == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("no GET of {what} within 20 s");
            };
            seen("/v2/lib/p/manifests/latest", 1).await;
            fake.set_remaining(5);
            seen(&layer, 1).await;
            fake.set_fault(&layer, Fault::Good);
        }
    });
    let cli = tokio::task::spawn_blocking({
        let (config, image) = (proxy.config_path(), format!("{HOST}/lib/p:latest"));
        move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullthrough"))
                .args(["prefetch", &image, "--config"])
                .arg(config)
                .output()
                .unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let (ok, err) = tokio::time::timeout(Duration::from_secs(60), cli).await.unwrap().unwrap();
    refill.await.unwrap();
    assert!(ok, "prefetch failed instead of waiting for the budget:\n{err}");
    assert_eq!(fake.count("GET", "/v2/lib/p/manifests/latest"), 2, "one 429, then the fetch");
    assert_eq!(fake.count("GET", &layer), 2, "one 429, then the fetch: {:?}", fake.seen());
    assert!(proxy.cached_blobs().iter().any(|b| b.ends_with(layer.trim_start_matches("sha256:"))));
    assert_eq!(pulled(&proxy, "lib/p", "latest").await, p);
}
