//! Upstream faults a real registry will not produce on demand, from the project's own fake
//! upstream: the client's transfer must fail (never a clean 200 with bad bytes), nothing
//! bad is cached, and the next request fetches again.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;
use std::time::Duration;

const SIZE: usize = 4 << 20;

async fn setup() -> (FakeUpstream, Proxy, String, Vec<u8>) {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(42, SIZE);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes.clone(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"5s\"")).await;
    (fake, proxy, digest, bytes)
}

/// The cache holds neither the blob nor any leftover temp file.
async fn assert_nothing_cached(proxy: &Proxy, digest: &str) {
    let hex = digest.trim_start_matches("sha256:").to_string();
    // The fill task cleans up just after the client sees the failure.
    wait_until("temp files to be removed", Duration::from_secs(10), async || {
        list_files(&proxy.cache.join("tmp")).is_empty()
    })
    .await;
    assert!(!proxy.cached_blobs().iter().any(|p| p.ends_with(&hex)), "a failed blob was cached");
}

async fn fault_case(fault: Fault, log_needle: &str) {
    let (fake, proxy, digest, _) = setup().await;
    fake.set_fault(&digest, fault.clone());
    let url = format!("{}/v2/some/repo/blobs/{digest}?ns=fake.test", proxy.url());

    match get_hashed(&url, &[]).await {
        Err(_) => {}
        Ok((status, n, hex)) => {
            assert_ne!(
                (status, n, format!("sha256:{hex}")),
                (200, SIZE as u64, digest.clone()),
                "impossible: fault served correct bytes"
            );
            panic!("{fault:?}: the client got a complete response (status {status}, {n} bytes) instead of a broken transfer");
        }
    }
    assert_nothing_cached(&proxy, &digest).await;
    wait_log(&proxy.proc, log_needle).await;

    // Upstream recovers: the next request fetches again and gets the right bytes.
    fake.set_fault(&digest, Fault::Good);
    let (status, n, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, SIZE as u64, digest.clone()));
    // Two transfers (the HEAD that vouched for the blob in this repository is not one).
    let gets = fake.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with(&digest)).count();
    assert_eq!(gets, 2, "the failed fill was not reused");
    proxy.wait_cached(&digest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_bit_fails_the_transfer_and_is_not_cached() {
    fault_case(Fault::FlipBit, "failed verification").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_mid_blob_fails_the_transfer() {
    fault_case(Fault::ResetAfter(SIZE / 3), "blob fill failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_body_fails_the_transfer() {
    fault_case(Fault::TruncateAt(SIZE - 1000), "blob fill failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waiters_of_a_bad_fill_all_fail() {
    let (fake, proxy, digest, _) = setup().await;
    fake.set_fault(&digest, Fault::FlipBit);
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn({
                let u = url.clone();
                async move { get_hashed(&u, &[]).await }
            })
        })
        .collect();
    // Each waiter's transfer breaks, or (arriving after the fill failed) it gets an error
    // status: never a 200 that ends cleanly.
    for t in tasks {
        if let Ok((status, n, _)) = t.await.unwrap() {
            assert!(status >= 500, "a waiter got a complete response for a corrupt blob: {status}, {n} bytes");
        }
    }
    assert_nothing_cached(&proxy, &digest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed_without_leaking_credentials() {
    let registry = FakeUpstream::start().await;
    let cdn = FakeUpstream::start().await;
    let bytes = pseudo_random(7, 100_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    cdn.set_blob(&digest, bytes, Fault::Good);
    registry.set_blob(&digest, Vec::new(), Fault::RedirectTo(format!("{}/cdn/{digest}", cdn.url())));
    // "user:secret-pw" in Basic form.
    let basic = "Basic dXNlcjpzZWNyZXQtcHc=";
    registry.require_auth(basic);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret-pw\n").unwrap();
    let proxy = Proxy::start(&upstream_toml(
        "fake.test",
        &registry.url(),
        &format!("[upstream.auth]\nkind = \"basic\"\nusername = \"user\"\npassword_file = \"{}\"", pw.display()),
    ))
    .await;

    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, digest.clone()));
    // The registry saw the credentials (after its 401 challenge); the CDN never did.
    assert!(registry.seen().iter().any(|s| s.authorization.as_deref() == Some(basic)));
    // One transfer from the CDN (a HEAD may follow the redirect too), never with the
    // registry's credentials.
    let cdn_seen = cdn.seen();
    assert_eq!(cdn_seen.iter().filter(|s| s.method == "GET").count(), 1);
    assert!(cdn_seen.iter().all(|s| s.authorization.is_none()), "Authorization leaked to another host");
    assert!(!proxy.proc.log_text().contains("secret-pw"), "a secret reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_non_http_schemes_are_refused() {
    let (fake, proxy, digest, _) = setup().await;
    fake.set_fault(&digest, Fault::RedirectTo("file:///etc/passwd".into()));
    let r = get(&format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("redirect"), "{}", r.text());
    assert_nothing_cached(&proxy, &digest).await;
}

/// A vouching HEAD that gets a redirect means the registry has the blob: Docker Hub, GHCR
/// and ECR redirect blob requests to storage URLs signed for GET, which refuse a HEAD (here
/// the storage answers 403 to everything). The redirect is not followed.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_answering_the_vouching_head_vouches_for_the_blob() {
    let registry = FakeUpstream::start().await;
    let storage = FakeUpstream::start().await;
    let bytes = pseudo_random(8, 100_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    registry.set_blob(&digest, bytes.clone(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &registry.url(), "")).await;
    // Cached through one repository.
    let (status, _, hex) = get_hashed(&format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, digest.clone()));

    // Asked for in another: the registry redirects (as Docker Hub does), the storage refuses.
    let signed = format!("{}/v2/signed/blobs/{digest}", storage.url());
    storage.set_blob(&digest, Vec::new(), Fault::Status(403, Vec::new()));
    registry.set_fault(&digest, Fault::RedirectTo(signed));
    let url = format!("{}/v2/other/blobs/{digest}?ns=fake.test", proxy.url());
    let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, digest.clone()), "{}", proxy.proc.log_text());
    assert_eq!(registry.count("HEAD", &format!("/v2/other/blobs/{digest}")), 1);
    assert_eq!(storage.seen().len(), 0, "the HEAD followed the redirect to storage signed for GET");
    // Served from disk: the registry was not asked for the bytes again.
    assert_eq!(registry.count("GET", &format!("/blobs/{digest}")), 1);
}
