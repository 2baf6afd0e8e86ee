//! ECR token injection against moto's ECR API and a real docker-registry that demands the
//! token as Basic auth (htpasswd user `AWS`).

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image;
use common::moto::{self, Moto};
use common::*;
use std::process::Command;
use std::time::Duration;

struct EcrLab {
    registry: Registry,
    img: image::Built,
    _src: tempfile::TempDir,
}

async fn ecr_registry() -> EcrLab {
    let dir = tempfile::tempdir().unwrap();
    let yaml = htpasswd_yaml(dir.path(), "AWS", &moto::password());
    let registry = Registry::start_at(dir, free_port(), &yaml).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 61, &[150_000], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1")]);
    let creds = format!("AWS:{}", moto::password());
    push(src.path(), "v1", &registry.addr.to_string(), "team/app:v1", Some(&creds));
    EcrLab { registry, img, _src: src }
}

/// A proxy for the ECR lab; `extra_upstream` goes into `[[upstream]]`, `extra_auth` into
/// `[upstream.auth]`.
async fn ecr_proxy(registry: &Registry, moto: &Moto, extra_upstream: &str, extra_auth: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream_toml(
        "ecr.test",
        &registry.url(),
        &format!(
            "prefix = \"ecr\"\n{extra_upstream}\n[upstream.auth]\nkind = \"ecr\"\nregion = \"us-east-1\"\nregistry_id = \"{}\"\nendpoint_url = \"{}\"\n{extra_auth}",
            moto::ACCOUNT,
            moto.url()
        ),
    );
    let cfg = Proxy::write_config(dir.path(), "", &upstream);
    Proxy::launch(dir, &cfg, |mut c: Command| {
        moto::credentials(&mut c);
        c
    })
    .await
}

fn assert_no_secret_in(log: &str) {
    use base64::Engine as _;
    let pw = moto::password();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{pw}"));
    assert!(!log.contains(&pw), "the ECR password reached the log");
    assert!(!log.contains(&basic), "the ECR Basic credentials reached the log");
    assert!(!log.contains("testing\""), "AWS credentials reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_with_ecr_tokens_refreshed_in_the_background_and_survives_a_failed_refresh() {
    let lab = ecr_registry().await;
    // Sanity: the registry refuses anonymous pulls.
    let r = get(&format!("{}/v2/team/app/manifests/v1", lab.registry.url()), &[]).await.unwrap();
    assert_eq!(r.status, 401);

    let moto = Moto::start().await;
    let proxy = ecr_proxy(&lab.registry, &moto, "", "refresh_every = \"1s\"").await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/ecr/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    assert!(moto.calls() >= 1, "no GetAuthorizationToken call reached moto");

    // Refreshed in the background, with no requests: about once a second here.
    let before = moto.calls();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let refreshed = moto.calls() - before;
    assert!(refreshed >= 2, "expected background refreshes, saw {refreshed}");

    // ECR goes away: refreshes fail, the current token keeps working.
    let Moto { mut proc, .. } = moto;
    proc.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let tags = get(&format!("{}/v2/ecr/team/app/tags/list", proxy.url()), &[]).await.unwrap();
    assert_eq!(tags.status, 200, "{}", tags.text());
    wait_until("a failed refresh to be logged", Duration::from_secs(30), async || {
        proxy.proc.log_text().contains("ECR token refresh failed")
    })
    .await;
    let tags = get(&format!("{}/v2/ecr/team/app/tags/list", proxy.url()), &[]).await.unwrap();
    assert_eq!(tags.status, 200, "the old token stopped working after a failed refresh: {}", tags.text());
    assert_no_secret_in(&proxy.proc.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_401_forces_exactly_one_refresh() {
    let lab = ecr_registry().await;
    let moto = Moto::start().await;
    // No refresh_every: with moto's past expiresAt the next scheduled refresh is minutes away.
    let proxy = ecr_proxy(&lab.registry, &moto, "", "").await;
    let m = get(&format!("{}/v2/ecr/team/app/manifests/v1", proxy.url()), &[]).await.unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.header("docker-content-digest"), Some(lab.img.top.digest.as_str()));

    // The registry rotates its password: our token is now refused.
    let (dir, port) = lab.registry.stop();
    let yaml = htpasswd_yaml(dir.path(), "AWS", "rotated-password");
    let registry = Registry::start_at(dir, port, &yaml).await;
    let before = moto.calls();
    let r = get(&format!("{}/v2/ecr/team/app/tags/list", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("DENIED"));
    assert_eq!(moto.calls() - before, 1, "a 401 must force exactly one token refresh");
    wait_log(&proxy.proc, "forcing a refresh").await;

    // Back to the password ECR hands out: pulls work again with the refreshed token.
    let (dir, port) = registry.stop();
    let yaml = htpasswd_yaml(dir.path(), "AWS", &moto::password());
    let _registry = Registry::start_at(dir, port, &yaml).await;
    let r = get(&format!("{}/v2/ecr/team/app/tags/list", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_secret_in(&proxy.proc.log_text());
}

/// Refused with a rotated password while `n` requests run at once: each answer's status and
/// body.
async fn tags_concurrently(proxy: &Proxy, n: usize) -> Vec<(u16, String)> {
    let url = format!("{}/v2/ecr/team/app/tags/list", proxy.url());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = url.clone();
        set.spawn(async move { get(&url, &[]).await.map(|r| (r.status, r.text())) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_refusals_share_one_refresh_then_cool_down_and_recover() {
    let lab = ecr_registry().await;
    let moto = Moto::start().await;
    // A short cooldown so the test need not wait 30 s; the base doubles after each failure.
    let proxy = ecr_proxy(&lab.registry, &moto, "auth_cooldown = \"3s\"", "").await;
    let up = "{upstream=\"ecr.test\"}";
    let forced = format!("pullthrough_token_forced_refreshes_total{up}");
    let suppressed = format!("pullthrough_token_refreshes_suppressed_total{up}");
    let r = get(&format!("{}/v2/ecr/team/app/tags/list", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The registry stops accepting the token (a rotated or revoked role).
    let (dir, port) = lab.registry.stop();
    let yaml = htpasswd_yaml(dir.path(), "AWS", "rotated-password");
    let registry = Registry::start_at(dir, port, &yaml).await;

    // 30 refused at once: one forced refresh between them, not 30.
    let before = moto.calls();
    let answers = tags_concurrently(&proxy, 30).await;
    let calls = moto.calls() - before;
    assert!(calls <= 2, "30 concurrent refusals made {calls} GetAuthorizationToken calls");
    assert_eq!(proxy.metric(&forced).await, 1.0);
    for (status, body) in &answers {
        assert_eq!(*status, 403, "{body}");
        assert!(body.contains("ecr.test") && body.contains("ecr:GetAuthorizationToken"), "no advice: {body}");
    }

    // During the cooldown refused requests fail at once, with no call to ECR.
    let started = std::time::Instant::now();
    let answers = tags_concurrently(&proxy, 20).await;
    assert!(answers.iter().all(|(s, _)| *s == 403), "{answers:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "refusals were not answered at once");
    assert_eq!(moto.calls() - before, calls, "a refresh was forced during the cooldown");
    assert!(proxy.metric(&suppressed).await >= 20.0);

    // When it ends, the next refusal may force one refresh again (then a longer cooldown).
    tokio::time::sleep(Duration::from_millis(3700)).await;
    let answers = tags_concurrently(&proxy, 10).await;
    assert!(answers.iter().all(|(s, _)| *s == 403), "{answers:?}");
    assert_eq!(moto.calls() - before, calls + 1, "one refresh after the cooldown");
    assert_eq!(proxy.metric(&forced).await, 2.0);

    // The registry accepts ECR's password again: pulls recover within one cooldown period
    // (6 s now, plus jitter), with no restart.
    let (dir, port) = registry.stop();
    let yaml = htpasswd_yaml(dir.path(), "AWS", &moto::password());
    let _registry = Registry::start_at(dir, port, &yaml).await;
    let url = format!("{}/v2/ecr/team/app/tags/list", proxy.url());
    wait_until("pulls to recover", Duration::from_millis(7200), async || {
        get(&url, &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/ecr/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    assert!(moto.calls() - before <= calls + 2, "recovery stormed ECR");
    assert_no_secret_in(&proxy.proc.log_text());
}
