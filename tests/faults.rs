//! Upstream faults a real registry will not produce on demand, from the project's own fake
//! upstream. Bad bytes: the client's transfer must fail (never a clean 200 with bad bytes),
//! nothing bad is cached, and the next request fetches again. A source that breaks off
//! mid-stream (a reset, a truncation): the fill resumes at the byte it received with a
//! `Range` GET and the client never sees the break; a resumed answer that does not fit (a
//! `200`, a wrong `Content-Range`) is read past or skipped, and bytes that do not hash are
//! never committed or released.

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

/// The blob's GETs to the upstream, with the `Range` each carried.
fn blob_gets(fake: &FakeUpstream, digest: &str) -> Vec<Option<String>> {
    fake.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with(digest)).map(|s| s.range.clone()).collect()
}

/// The byte a `Range: bytes=<n>-` starts from.
fn range_start(range: &Option<String>) -> u64 {
    let r = range.as_deref().expect("a Range header");
    r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).expect("bytes=<n>-").parse().unwrap()
}

/// A proxy on a fake upstream serving `len` pseudo-random bytes, with extra `[cache]` settings.
async fn resume_setup(len: usize, cache_toml: &str) -> (FakeUpstream, Proxy, String) {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(43, len);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes, Fault::Good);
    let proxy = Proxy::start_with(cache_toml, &upstream_toml("fake.test", &fake.url(), "read_timeout = \"5s\"")).await;
    (fake, proxy, digest)
}

/// The client's GET completes with the blob's bytes, and the blob is committed.
async fn assert_served_whole(proxy: &Proxy, digest: &str, len: usize) {
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let (status, n, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, len as u64, digest.to_string()));
    proxy.wait_cached(digest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_mid_blob_is_resumed_at_the_byte() {
    const BIG: usize = 256 << 20;
    let (fake, proxy, digest) = resume_setup(BIG, "").await;
    fake.set_faults(&digest, vec![Fault::ResetAfter(BIG / 2)]);
    assert_served_whole(&proxy, &digest, BIG).await;
    let gets = blob_gets(&fake, &digest);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], None);
    // The second GET starts where the fill's bytes stopped: at most what was sent before the
    // reset (bytes in flight when the RST came are lost), never from 0.
    let start = range_start(&gets[1]);
    assert!(start > 0 && start <= (BIG / 2) as u64, "{start}");
    // The upstream sent the blob once, plus what the reset lost in flight.
    assert_eq!(fake.blob_bytes_sent(), BIG as u64 + (BIG / 2) as u64 - start);
    assert_eq!(proxy.metric("pullthrough_fill_resumes_total{reason=\"reset\",tier=\"upstream\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_body_is_resumed_at_the_byte() {
    let (fake, proxy, digest) = resume_setup(SIZE, "").await;
    fake.set_faults(&digest, vec![Fault::TruncateAt(SIZE / 2)]);
    assert_served_whole(&proxy, &digest, SIZE).await;
    assert_eq!(blob_gets(&fake, &digest), vec![None, Some(format!("bytes={}-", SIZE / 2))]);
    assert_eq!(fake.blob_bytes_sent(), SIZE as u64, "the upstream sent the blob exactly once");
    // hyper reports a body closed before its Content-Length as a failed transfer.
    assert_eq!(proxy.metric("pullthrough_fill_resumes_total{reason=\"reset\",tier=\"upstream\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_read_answered_with_the_whole_blob_is_read_past_the_prefix() {
    let (fake, proxy, digest) = resume_setup(SIZE, "").await;
    fake.set_faults(&digest, vec![Fault::TruncateAt(SIZE / 2), Fault::IgnoreRange]);
    assert_served_whole(&proxy, &digest, SIZE).await;
    assert_eq!(blob_gets(&fake, &digest), vec![None, Some(format!("bytes={}-", SIZE / 2))]);
    assert_eq!(fake.blob_bytes_sent(), (SIZE + SIZE / 2) as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_read_answered_with_a_wrong_content_range_is_skipped() {
    let (fake, proxy, digest) = resume_setup(SIZE, "").await;
    fake.set_faults(&digest, vec![Fault::TruncateAt(SIZE / 2), Fault::WrongRange]);
    assert_served_whole(&proxy, &digest, SIZE).await;
    // The wrong answer cost one attempt; the next one fit.
    let from = Some(format!("bytes={}-", SIZE / 2));
    assert_eq!(blob_gets(&fake, &digest), vec![None, from.clone(), from]);
    assert_eq!(proxy.metric("pullthrough_fill_resumes_total{reason=\"reset\",tier=\"upstream\"}").await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn resumed_bytes_that_do_not_hash_are_never_committed_or_released() {
    let (fake, proxy, digest) = resume_setup(SIZE, "").await;
    fake.set_faults(&digest, vec![Fault::TruncateAt(SIZE / 2), Fault::FlipBit]);
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    // A broken transfer (or, had the fill failed before the answer began, an error status).
    let r = get_hashed(&url, &[]).await;
    assert!(
        matches!(r, Err(_) | Ok((500..=599, _, _))),
        "the client got a complete response for bytes that do not hash: {r:?}"
    );
    assert_nothing_cached(&proxy, &digest).await;
    wait_log(&proxy.proc, "failed verification").await;
    assert_eq!(blob_gets(&fake, &digest).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_always_breaks_fails_the_fill_after_the_attempts() {
    let (fake, proxy, digest) = resume_setup(SIZE, "fill_resume_attempts = 2").await;
    fake.set_fault(&digest, Fault::TruncateAt(SIZE / 8));
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());
    let r = get_hashed(&url, &[]).await;
    assert!(matches!(r, Err(_) | Ok((500..=599, _, _))), "the client got a complete response: {r:?}");
    assert_nothing_cached(&proxy, &digest).await;
    wait_log(&proxy.proc, "blob fill failed").await;
    // The first GET and two resumes, each from where the last stopped.
    let gets = blob_gets(&fake, &digest);
    let starts: Vec<u64> = gets[1..].iter().map(range_start).collect();
    assert_eq!((gets.len(), starts), (3, vec![(SIZE / 8) as u64, (SIZE / 4) as u64]));
    assert_eq!(proxy.metric("pullthrough_fill_resumes_total{reason=\"reset\",tier=\"upstream\"}").await, 2.0);
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
