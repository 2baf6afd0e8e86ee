//! Token discipline: Bearer token endpoints that fail are backed off, concurrent refusals of
//! one scope share one token fetch, and the token realm an upstream names passes the SSRF
//! guard (and gets the upstream's credentials only where they may go).

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image;
use common::token::{self, TokenServer};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` GETs of `url` at once: each answer's status and body.
async fn concurrently(url: &str, n: usize) -> Vec<(u16, String)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = url.to_string();
        set.spawn(async move { get(&url, &[]).await.map(|r| (r.status, r.text())) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap().unwrap());
    }
    out
}

fn all(answers: &[(u16, String)], status: u16, needle: &str) {
    for (s, body) in answers {
        assert_eq!(*s, status, "{body}");
        assert!(body.contains(needle), "{needle:?} not in {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_token_endpoint_is_asked_once_per_back_off_period() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path()).await;
    let auth = tokens.auth();
    let registry = Registry::start(Some(&auth)).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 21, &[60_000], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "team/app:v1", None);

    let proxy =
        Proxy::start(&upstream_toml("hub.test", &registry.url(), "prefix = \"hub\"\nauth_cooldown = \"2s\"")).await;
    let url = format!("{}/v2/hub/team/app/tags/list", proxy.url());
    tokens.fail_with.store(500, Ordering::SeqCst);
    let before = tokens.requests.load(Ordering::SeqCst);
    let fetches = || tokens.requests.load(Ordering::SeqCst) - before;

    // 30 requests at once: one token fetch; every client gets a clear error naming the endpoint.
    all(&concurrently(&url, 30).await, 502, "token endpoint for hub.test failed");
    assert_eq!(fetches(), 1, "30 concurrent requests against a failing token endpoint");

    // During the back-off: no fetch, an answer at once.
    let started = Instant::now();
    all(&concurrently(&url, 20).await, 502, "backing off");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fetches(), 1, "the token endpoint was asked during its back-off");
    assert!(proxy.metric("pullthrough_token_refreshes_suppressed_total{upstream=\"hub.test\"}").await >= 20.0);

    // Back-off over (2 s ± 20%): one fetch again for a burst, which fails and doubles it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    all(&concurrently(&url, 30).await, 502, "token endpoint");
    assert_eq!(fetches(), 2, "one fetch per back-off period");

    // The endpoint recovers: pulls work within one back-off period (4 s now), no restart.
    tokens.fail_with.store(0, Ordering::SeqCst);
    wait_until("pulls to recover", Duration::from_millis(4900), async || {
        get(&url, &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/hub/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&img.all));
    assert!(fetches() <= 4, "{} token requests", fetches());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_refusals_of_one_scope_share_one_token_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path()).await;
    // An upstream that refuses every token it is shown (as Docker Hub does for a repository
    // that does not exist): each refusal would otherwise fetch a token of its own.
    let fake = FakeUpstream::start().await;
    let challenge = format!("Bearer realm=\"{}\",service=\"{}\"", tokens.realm(), token::SERVICE);
    fake.set_blob("list", Vec::new(), Fault::Status(401, vec![("WWW-Authenticate".into(), challenge)]));
    let proxy = Proxy::start(&upstream_toml("hub.test", &fake.url(), "auth_cooldown = \"2s\"")).await;
    let url = format!("{}/v2/team/app/tags/list?ns=hub.test", proxy.url());
    let issued = || tokens.issued.load(Ordering::SeqCst);

    // Learning the scheme: one token for 30 requests, then the refusal starts a cooldown.
    all(&concurrently(&url, 30).await, 403, "freshly fetched token");
    assert_eq!(issued(), 1, "30 concurrent requests fetched {} tokens", issued());
    let hits = fake.hits("/tags/list");

    // During the cooldown: refused at once, no token fetched, one upstream request each.
    all(&concurrently(&url, 20).await, 403, "no new one is requested");
    assert_eq!(issued(), 1);
    assert_eq!(fake.hits("/tags/list") - hits, 20, "a refused request was retried during the cooldown");

    // After it, 30 refusals of the same token at once share one new token.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    all(&concurrently(&url, 30).await, 403, "hub.test");
    assert_eq!(issued(), 2, "30 concurrent refusals fetched {} new tokens", issued() - 1);
    assert_eq!(proxy.metric("pullthrough_token_forced_refreshes_total{upstream=\"hub.test\"}").await, 1.0);
}

/// A listener that counts connections, to prove nothing reached it.
struct Canary {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    async fn start(ip: &str) -> Canary {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                drop(sock);
            }
        });
        Canary { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fake upstream whose every tag list answer is a 401 naming `realm`.
async fn challenging(realm: &str) -> FakeUpstream {
    let fake = FakeUpstream::start().await;
    let challenge = format!("Bearer realm=\"{realm}\",service=\"x\"");
    fake.set_blob("list", Vec::new(), Fault::Status(401, vec![("WWW-Authenticate".into(), challenge)]));
    fake
}

#[tokio::test(flavor = "multi_thread")]
async fn token_realms_pass_the_ssrf_guard() {
    let canary = Canary::start("127.0.0.1").await;
    let other_loopback = Canary::start("127.0.0.2").await;
    let port = canary.addr.port();
    // (upstream, realm, what the refusal says); every upstream is on 127.0.0.1.
    let cases = [
        ("zero.test", format!("http://0.0.0.0:{port}/token"), "unspecified"),
        ("zero6.test", format!("http://[::]:{port}/token"), "unspecified"),
        ("meta.test", "http://169.254.169.254/latest/meta-data/".to_string(), "link-local"),
        ("mapped.test", format!("http://[::ffff:169.254.169.254]:{port}/token"), "link-local"),
        ("lo2.test", format!("http://{}/token", other_loopback.addr), "loopback"),
    ];
    let mut fakes = Vec::new();
    let mut toml = String::new();
    for (host, realm, _) in &cases {
        let fake = challenging(realm).await;
        toml.push_str(&upstream_toml(
            host,
            &fake.url(),
            "[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\npassword = \"hunter2-pw\"",
        ));
        fakes.push(fake);
    }
    // The control: the same upstream on its own loopback address does reach the canary.
    let control = challenging(&format!("http://127.0.0.1:{port}/token")).await;
    toml.push_str(&upstream_toml("control.test", &control.url(), ""));
    let proxy = Proxy::start(&toml).await;

    for (host, realm, why) in &cases {
        let started = Instant::now();
        let r = get(&format!("{}/v2/team/app/tags/list?ns={host}", proxy.url()), &[]).await.unwrap();
        assert_eq!(r.status, 502, "{realm}: {}", r.text());
        assert_eq!(r.error_code().as_deref(), Some("UNAVAILABLE"));
        assert!(r.text().contains("refuses") && r.text().contains(why), "{realm}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{realm}: refused only after a connection attempt");
        // Asked again, the upstream's challenge is learned again and refused again.
        let r = get(&format!("{}/v2/team/app/tags/list?ns={host}", proxy.url()), &[]).await.unwrap();
        assert_eq!(r.status, 502, "{realm}: {}", r.text());
    }
    assert_eq!(canary.hits(), 0, "a refused realm was contacted");
    assert_eq!(other_loopback.hits(), 0, "another loopback address was contacted");

    let r = get(&format!("{}/v2/team/app/tags/list?ns=control.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(canary.hits() >= 1, "the control realm was not contacted: the canary proves nothing");
    assert!(!proxy.proc.log_text().contains("hunter2-pw"));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_go_to_an_http_realm_on_another_host_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path()).await;
    // The upstream is 127.0.0.1; its realm names another host (`localhost`), over plain http.
    let realm = format!("http://localhost:{}/token", tokens.addr.port());
    let (refusing, allowing) = (challenging(&realm).await, challenging(&realm).await);
    let auth = "[upstream.auth]\nkind = \"basic\"\nusername = \"bob\"\npassword = \"s3cret\"";
    let toml = upstream_toml("strict.test", &refusing.url(), auth)
        + &upstream_toml("lax.test", &allowing.url(), &format!("allow_http_realm_credentials = true\n{auth}"));
    let proxy = Proxy::start(&toml).await;

    let r = get(&format!("{}/v2/team/app/tags/list?ns=strict.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("allow_http_realm_credentials"), "{}", r.text());
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 0, "the realm was contacted");

    // Allowed for this upstream: the token endpoint gets the credentials.
    let r = get(&format!("{}/v2/team/app/tags/list?ns=lax.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:s3cret"));
    let seen = tokens.authorizations.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(basic)], "the allowed realm did not get the credentials");
}
