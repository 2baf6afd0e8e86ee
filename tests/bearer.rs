//! A Docker-Hub-like upstream: docker-registry with token auth and a token server. The
//! proxy pulls through it anonymously, with one token fetched per repository scope.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image;
use common::token::TokenServer;
use common::*;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread")]
async fn pulls_through_a_bearer_token_upstream_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path()).await;
    let auth = tokens.auth();
    let registry = Registry::start(Some(&auth)).await;

    // Sanity: the upstream really demands a token.
    let r = get(&format!("{}/v2/", registry.url()), &[]).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap_or("").starts_with("Bearer "));

    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 11, &[200_000, 50_000], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "team/app:v1", None);

    let proxy = Proxy::start(&upstream_toml("hub.test", &registry.url(), "prefix = \"hub\"")).await;
    let before = tokens.issued.load(Ordering::SeqCst);
    let (_out, got) = skopeo_pull(&format!("docker://{}/hub/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&img.all));

    // One token for the repository scope, reused for the manifest and every blob.
    let fetched = tokens.issued.load(Ordering::SeqCst) - before;
    assert_eq!(fetched, 1, "expected exactly one token fetch, got {fetched}");
    // And the proxy's own clients needed no credentials at all.
    let m = get(&format!("{}/v2/hub/team/app/manifests/v1", proxy.url()), &[]).await.unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(m.header("docker-content-digest"), Some(img.top.digest.as_str()));
}
