//! Tenant isolation of the shared cache: content stored once per digest is served under an
//! upstream and repository only when that upstream vouched for it there. Two real
//! docker-registry upstreams behind one pullthrough: `a.test` needs Basic credentials (which
//! the proxy has) and holds a private image; `b.test` is public.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::*;

struct Lab {
    private: Registry,
    public: Registry,
    proxy: Proxy,
    /// Only on the private registry, as `team/app:v1`.
    secret: Built,
    /// On both: `team/base:v1` on the private one, `library/base:v1` on the public one.
    base: Built,
    _pw: tempfile::TempDir,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let auth = htpasswd_yaml(dir.path(), "alice", "s3cret");
    let private = Registry::start_at(dir, free_port(), &auth).await;
    let public = Registry::start(None).await;

    let src = tempfile::tempdir().unwrap();
    let secret = image::manifest(src.path(), 501, &[300_000], "amd64");
    let base = image::manifest(src.path(), 502, &[200_000], "amd64");
    image::finish_layout(src.path(), &[(&secret.top, "secret"), (&base.top, "base")]);
    let creds = Some("alice:s3cret");
    push(src.path(), "secret", &private.addr.to_string(), "team/app:v1", creds);
    push(src.path(), "base", &private.addr.to_string(), "team/base:v1", creds);
    push(src.path(), "base", &public.addr.to_string(), "library/base:v1", None);

    let pw = tempfile::tempdir().unwrap();
    let pw_file = pw.path().join("password");
    std::fs::write(&pw_file, "s3cret").unwrap();
    let auth =
        format!("[upstream.auth]\nkind = \"basic\"\nusername = \"alice\"\npassword_file = \"{}\"", pw_file.display());
    let upstreams = upstream_toml("a.test", &private.url(), &auth) + &upstream_toml("b.test", &public.url(), "");
    let proxy = Proxy::start(&upstreams).await;
    Lab { private, public, proxy, secret, base, _pw: pw }
}

/// Requests with `method` for `path` in a registry's access log.
fn served(registry: &Registry, method: &str, path: &str) -> usize {
    let needle = format!("\"{method} {path} HTTP");
    registry.proc.log_text().lines().filter(|l| l.contains(&needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_layer_is_not_served_under_another_upstream_or_repository() {
    let lab = lab().await;
    let proxy = &lab.proxy;
    // Pulled through the credentialed upstream: every blob is now on disk.
    let (_out, digests) = skopeo_pull(&format!("docker://{}/a.test/team/app:v1", proxy.addr), &[]);
    assert_eq!(digests, sorted_unique(&lab.secret.all));
    let layer = &lab.secret.layers[0].digest;
    let private_path = format!("/v2/team/app/blobs/{layer}");
    assert_eq!(lab.private.count_gets(&private_path), 1);

    // Routed to the public upstream (by ?ns= and by path prefix): it does not have the
    // blob, so neither do we. It was asked (a HEAD), never made to send bytes.
    for url in [
        format!("{}/v2/team/app/blobs/{layer}?ns=b.test", proxy.url()),
        format!("{}/v2/b.test/team/app/blobs/{layer}", proxy.url()),
    ] {
        let r = get(&url, &[]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (404, Some("BLOB_UNKNOWN")), "{url}: {}", r.text());
        let r = get(&url, &[("range", "bytes=0-99")]).await.unwrap();
        assert_eq!(r.status, 404, "a range of the private layer was served: {url}");
    }
    assert!(served(&lab.public, "HEAD", &private_path) >= 2, "the public upstream was not asked");
    assert_eq!(served(&lab.public, "GET", &private_path), 0);
    // Nor its config, nor the manifest itself by digest.
    let config = lab.secret.all.iter().find(|d| *d != layer && **d != lab.secret.top.digest).unwrap();
    let r = get(&format!("{}/v2/team/app/blobs/{config}?ns=b.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    let top = &lab.secret.top.digest;
    let r = get(&format!("{}/v2/team/app/manifests/{top}?ns=b.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (404, Some("MANIFEST_UNKNOWN")), "{}", r.text());

    // The same upstream, another repository: the registry scopes blobs per repository, and
    // so do we.
    let base_path = format!("/v2/team/base/blobs/{layer}");
    let asked = served(&lab.private, "HEAD", &base_path);
    let r = get(&format!("{}/v2/a.test/team/base/blobs/{layer}", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (404, Some("BLOB_UNKNOWN")), "{}", r.text());
    assert!(served(&lab.private, "HEAD", &base_path) > asked, "the private upstream was not asked");

    // Under the repository it came from: served from disk, no upstream request at all (the
    // cached manifest of team/app vouches for it).
    let heads_before = served(&lab.private, "HEAD", &private_path);
    let (status, n, hex) = get_hashed(&format!("{}/v2/a.test/team/app/blobs/{layer}", proxy.url()), &[]).await.unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, lab.secret.layers[0].size, layer.clone()));
    assert_eq!(lab.private.count_gets(&private_path), 1, "served from the upstream again, not from disk");
    assert_eq!(served(&lab.private, "HEAD", &private_path), heads_before, "the normal path asked the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_both_upstreams_have_is_fetched_once_and_served_to_both() {
    let lab = lab().await;
    let proxy = &lab.proxy;
    skopeo_pull(&format!("docker://{}/a.test/team/base:v1", proxy.addr), &[]);
    let layer = &lab.base.layers[0];
    let public_path = format!("/v2/library/base/blobs/{}", layer.digest);

    // The public upstream vouches with a HEAD; the bytes come from disk. (The log also
    // holds the push's own requests: count from here.)
    let (heads, gets) = (served(&lab.public, "HEAD", &public_path), served(&lab.public, "GET", &public_path));
    let url = format!("{}/v2/library/base/blobs/{}?ns=b.test", proxy.url(), layer.digest);
    for _ in 0..2 {
        let (status, n, hex) = get_hashed(&url, &[]).await.unwrap();
        assert_eq!((status, n, format!("sha256:{hex}")), (200, layer.size, layer.digest.clone()));
    }
    assert_eq!(served(&lab.public, "HEAD", &public_path), heads + 1, "the answer was not remembered");
    assert_eq!(served(&lab.public, "GET", &public_path), gets, "the disk copy was not reused");

    // A whole pull of the public image: its manifest comes from the public upstream, its
    // blobs from disk.
    let (_out, digests) = skopeo_pull(&format!("docker://{}/b.test/library/base:v1", proxy.addr), &[]);
    assert_eq!(digests, sorted_unique(&lab.base.all));
    assert_eq!(served(&lab.public, "GET", &public_path), gets);
    let config = lab.base.all.iter().find(|d| **d != layer.digest && **d != lab.base.top.digest).unwrap();
    assert_eq!(served(&lab.public, "GET", &format!("/v2/library/base/blobs/{config}")), 0);
}
