//! sha512 digests: blobs and manifests addressed by `sha512:` are fetched, verified with
//! SHA-512 and cached like sha256 ones (`blobs/sha512/…`); missing ones are 404, a corrupt one
//! is refused, and algorithms other than sha256 and sha512 stay `400 DIGEST_INVALID`.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::{self, pseudo_random};
use common::*;
use sha2::Digest as _;
use std::time::Duration;

fn sha512(bytes: &[u8]) -> String {
    let hex: String = sha2::Sha512::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha512:{hex}")
}

/// The cached files (relative to `blobs/`) for `digest`.
fn cached(proxy: &Proxy, digest: &str) -> Vec<String> {
    let (algo, hex) = digest.split_once(':').unwrap();
    proxy.cached_blobs().into_iter().filter(|p| p.starts_with(algo) && p.ends_with(hex)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sha512_blob_is_fetched_verified_cached_and_served_by_digest() {
    let registry = Registry::start(None).await;
    let bytes = pseudo_random(512, 300_000);
    let digest = sha512(&bytes);
    // Debian's docker-registry takes a sha512 upload (skopeo cannot make one).
    common::artifact::upload_blob(&registry.url(), "team/app", &digest, &bytes).await;
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;
    let url = format!("{}/v2/team/app/blobs/{digest}?ns=lab.test", proxy.url());

    let r = get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha512(&r.body), digest, "wrong bytes");
    // Our own digest, not the sha256 one this upstream announces for it.
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let hex = digest.trim_start_matches("sha512:");
    wait_until("the sha512 blob to be committed", Duration::from_secs(10), async || {
        cached(&proxy, &digest) == [format!("sha512/{}/{hex}", &hex[..2])]
    })
    .await;

    // Served from the cache: whole, by range, and HEAD; the upstream is not asked again.
    let gets = registry.count_gets(&format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(gets, 1);
    assert_eq!(get(&url, &[]).await.unwrap().body, r.body);
    let part = get(&url, &[("range", "bytes=5-9")]).await.unwrap();
    assert_eq!((part.status, &part.body[..]), (206, &bytes[5..10]));
    let head = net::send("HEAD", &url, &[]).await.unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("300000")));
    assert_eq!(registry.count_gets(&format!("/v2/team/app/blobs/{digest}")), gets);

    // After a restart too: the index is rebuilt from blobs/sha512.
    let proxy = proxy.restart().await;
    let r = get(&format!("{}/v2/team/app/blobs/{digest}?ns=lab.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, sha512(&r.body)), (200, digest.clone()));
    assert_eq!(registry.count_gets(&format!("/v2/team/app/blobs/{digest}")), gets);

    // Missing: 404 with the spec's codes. Other algorithms: 400.
    let zero = format!("sha512:{}", "0".repeat(128));
    let p = proxy.url();
    let r = get(&format!("{p}/v2/team/app/blobs/{zero}?ns=lab.test"), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (404, Some("BLOB_UNKNOWN")));
    let r = net::send("HEAD", &format!("{p}/v2/team/app/blobs/{zero}?ns=lab.test"), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    let r = get(&format!("{p}/v2/team/app/manifests/{zero}?ns=lab.test"), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (404, Some("MANIFEST_UNKNOWN")));
    for bad in [format!("sha384:{}", "0".repeat(96)), format!("sha512:{}", "0".repeat(64))] {
        let r = get(&format!("{p}/v2/team/app/blobs/{bad}?ns=lab.test"), &[]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (400, Some("DIGEST_INVALID")), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_sha512_blob_is_refused_and_a_sha512_manifest_is_verified() {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(513, 2 << 20);
    let digest = sha512(&bytes);
    fake.set_blob(&digest, bytes.clone(), Fault::FlipBit);
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 514, &[1000], "amd64");
    let manifest =
        std::fs::read(src.path().join("blobs/sha256").join(img.top.digest.trim_start_matches("sha256:"))).unwrap();
    let manifest_digest = sha512(&manifest);
    fake.set_blob(&manifest_digest, manifest.clone(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"5s\"")).await;
    let url = format!("{}/v2/some/repo/blobs/{digest}?ns=fake.test", proxy.url());

    // A flipped bit: the client's transfer breaks, nothing is cached.
    let got = get_hashed(&url, &[]).await;
    assert!(got.is_err(), "a corrupt sha512 blob was served completely: {got:?}");
    wait_until("temp files to be removed", Duration::from_secs(10), async || {
        list_files(&proxy.cache.join("tmp")).is_empty()
    })
    .await;
    assert!(cached(&proxy, &digest).is_empty(), "a corrupt sha512 blob was cached");
    // The log writer does not block: the line lands a moment after the response.
    wait_until("the verification failure to be logged", Duration::from_secs(10), async || {
        proxy.proc.log_text().contains("failed verification")
    })
    .await;
    // The upstream recovers: the right bytes, verified, cached.
    fake.set_fault(&digest, Fault::Good);
    let r = get(&url, &[]).await.unwrap();
    assert_eq!((r.status, sha512(&r.body)), (200, digest.clone()));
    wait_until("the blob to be committed", Duration::from_secs(10), async || cached(&proxy, &digest).len() == 1).await;

    // A manifest by sha512: verified with SHA-512, cached, then served without the upstream.
    let murl = format!("{}/v2/some/repo/manifests/{manifest_digest}?ns=fake.test", proxy.url());
    let r = get(&murl, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("docker-content-digest"), Some(manifest_digest.as_str()));
    assert_eq!(r.header("content-type"), Some(image::OCI_MANIFEST));
    let asked = fake.hits(&format!("/manifests/{manifest_digest}"));
    assert_eq!(get(&murl, &[]).await.unwrap().body, manifest);
    assert_eq!(
        fake.hits(&format!("/manifests/{manifest_digest}")),
        asked,
        "a cached sha512 manifest was fetched again"
    );
    assert_eq!(cached(&proxy, &manifest_digest).len(), 1);

    // A manifest whose bytes do not hash to the sha512 asked for is refused.
    let wrong = sha512(b"something else");
    fake.set_blob(&wrong, manifest.clone(), Fault::Good);
    let r = get(&format!("{}/v2/some/repo/manifests/{wrong}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(cached(&proxy, &wrong).is_empty());
}
