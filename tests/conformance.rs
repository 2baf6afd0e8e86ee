//! The OCI distribution-spec v1.1 checks of a pull-only registry, as our own tests: the
//! "Pull" and "Content Discovery" workflows (what the conformance suite's pull and discovery
//! tests ask, in read-only mode against content seeded upstream), run against pullthrough in
//! front of the real upstream (Debian's docker-registry 2.8.2). The suite itself cannot be
//! built here (its Go modules are not reachable).
//!
//! Every check is named after the spec section it checks; a test reports all failing checks
//! at once.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::artifact::{self, SBOM, SIGNATURE};
use common::image::{self, Built};
use common::*;
use sha2::Digest as _;
use std::path::Path;

/// Error codes the spec allows ("Error Codes", code-1 … code-14).
const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// The failed checks of one test, each named after its spec section.
#[derive(Default)]
struct Spec {
    failed: Vec<String>,
    passed: usize,
}

impl Spec {
    fn check(&mut self, section: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(format!("{section}: {detail}"));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, section: &str, got: T, want: T) {
        let ok = got == want;
        self.check(section, ok, format!("got {got:?}, want {want:?}"));
    }

    /// A 4xx answer carries the spec's error JSON with one of its codes.
    fn error_body(&mut self, section: &str, r: &Resp) {
        let code = r.error_code();
        let ok = code.as_deref().is_some_and(|c| SPEC_ERROR_CODES.contains(&c));
        self.check(section, ok, format!("status {} body {:?}", r.status, r.text()));
    }

    fn done(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} spec checks failed:\n  {}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n  ")
        );
    }
}

/// The upstream with `test/conf:v1` (one image), and pullthrough in front of it with the path
/// prefix `lab` (how skopeo and podman mirrors address it; the conformance suite's
/// `OCI_NAMESPACE` is then `lab/test/conf`).
struct Lab {
    registry: Registry,
    proxy: Proxy,
    app: Built,
    src: tempfile::TempDir,
}

async fn lab() -> Lab {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 41, &[40_000, 3000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/conf:v1", None);
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "prefix = \"lab\"")).await;
    Lab { registry, proxy, app, src }
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    net::send(method, url, headers).await.unwrap()
}

fn digest_of(body: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(body))
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_workflow() {
    let lab = lab().await;
    let base = format!("{}/v2/lab/test/conf", lab.proxy.url());
    let top = &lab.app.top;
    let mut spec = Spec::default();
    let accept = [("accept", image::OCI_MANIFEST)];

    // Determining Support (end-1).
    let r = send("GET", &format!("{}/v2/", lab.proxy.url()), &[]).await;
    spec.eq("API › Determining Support: GET /v2/ is 200", r.status, 200);

    // Pull › Pulling manifests (end-3), by tag and by digest.
    let pushed =
        std::fs::read(lab.src.path().join("blobs/sha256").join(top.digest.trim_start_matches("sha256:"))).unwrap();
    for reference in ["v1", top.digest.as_str()] {
        let r = send("GET", &format!("{base}/manifests/{reference}"), &accept).await;
        let s = format!("Pull › Pulling manifests ({reference})");
        spec.eq(&format!("{s}: a GET to an existing manifest MUST be 200"), r.status, 200);
        spec.check(&format!("{s}: MUST provide the expected manifest"), r.body == pushed, "bytes differ");
        spec.eq(
            &format!("{s}: Content-Type is the manifest's type"),
            r.header("content-type"),
            Some(image::OCI_MANIFEST),
        );
        spec.eq(
            &format!("{s}: Docker-Content-Digest matches the body"),
            r.header("docker-content-digest"),
            Some(digest_of(&r.body).as_str()),
        );
        spec.eq(&format!("{s}: the body hashes to the digest"), digest_of(&r.body), top.digest.clone());
    }
    // Pull › Checking if content exists (end-3, HEAD).
    for reference in ["v1", top.digest.as_str()] {
        let r = send("HEAD", &format!("{base}/manifests/{reference}"), &accept).await;
        let s = format!("Pull › Checking if content exists in the registry (manifest {reference})");
        spec.eq(&format!("{s}: HEAD to an existing manifest MUST be 200"), r.status, 200);
        spec.eq(&format!("{s}: Docker-Content-Digest"), r.header("docker-content-digest"), Some(top.digest.as_str()));
        spec.eq(
            &format!("{s}: Content-Length is the manifest's size"),
            r.header("content-length"),
            Some(top.size.to_string().as_str()),
        );
        spec.check(&format!("{s}: HEAD has no body"), r.body.is_empty(), format!("{} bytes", r.body.len()));
    }
    // Not found: a tag that does not exist, one that cannot exist (the suite's
    // `.INVALID_MANIFEST_NAME`), and a digest nobody pushed.
    let zero = format!("sha256:{}", "0".repeat(64));
    for reference in ["nope", ".INVALID_MANIFEST_NAME", zero.as_str()] {
        for method in ["GET", "HEAD"] {
            let r = send(method, &format!("{base}/manifests/{reference}"), &accept).await;
            let s = format!("Pull › Pulling manifests: {method} of a missing manifest ({reference})");
            spec.eq(&format!("{s} MUST be 404"), r.status, 404);
            if method == "GET" {
                spec.eq(&format!("{s}: code MANIFEST_UNKNOWN"), r.error_code().as_deref(), Some("MANIFEST_UNKNOWN"));
            }
        }
    }

    // Pull › Pulling blobs (end-2).
    for layer in lab.app.layers.iter() {
        let url = format!("{base}/blobs/{}", layer.digest);
        let r = send("GET", &url, &[]).await;
        let s = format!("Pull › Pulling blobs ({})", layer.digest);
        spec.eq(&format!("{s}: a GET to an existing blob MUST be 200"), r.status, 200);
        spec.eq(&format!("{s}: MUST provide the expected blob"), digest_of(&r.body), layer.digest.clone());
        spec.eq(
            &format!("{s}: Docker-Content-Digest MUST match the body"),
            r.header("docker-content-digest"),
            Some(layer.digest.as_str()),
        );
        let r = send("HEAD", &url, &[]).await;
        let s = format!("Pull › Checking if content exists in the registry (blob {})", layer.digest);
        spec.eq(&format!("{s}: HEAD to an existing blob MUST be 200"), r.status, 200);
        spec.eq(
            &format!("{s}: Content-Length is the blob's size"),
            r.header("content-length"),
            Some(layer.size.to_string().as_str()),
        );
        spec.eq(&format!("{s}: Docker-Content-Digest"), r.header("docker-content-digest"), Some(layer.digest.as_str()));
    }
    // Range (RFC 9110), which a registry SHOULD support.
    let layer = &lab.app.layers[0];
    let whole = send("GET", &format!("{base}/blobs/{}", layer.digest), &[]).await;
    let part = send("GET", &format!("{base}/blobs/{}", layer.digest), &[("range", "bytes=10-19")]).await;
    let s = "Pull › Pulling blobs: Range per RFC 9110";
    spec.eq(&format!("{s}: 206 Partial Content"), part.status, 206);
    spec.eq(
        &format!("{s}: Content-Range"),
        part.header("content-range"),
        Some(format!("bytes 10-19/{}", layer.size).as_str()),
    );
    spec.check(&format!("{s}: the requested bytes"), part.body[..] == whole.body[10..20], "bytes differ");
    let r =
        send("GET", &format!("{base}/blobs/{}", layer.digest), &[("range", &format!("bytes={}-", layer.size))]).await;
    spec.eq(&format!("{s}: a range past the end is 416"), r.status, 416);
    spec.eq(
        &format!("{s}: 416 names the size"),
        r.header("content-range"),
        Some(format!("bytes */{}", layer.size).as_str()),
    );

    // A blob addressed by sha512 (the newer suite's check): served, and 404 when missing.
    let bytes = image::pseudo_random(4242, 5000);
    let hex: String = sha2::Sha512::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let d512 = format!("sha512:{hex}");
    artifact::upload_blob(&lab.registry.url(), "test/conf", &d512, &bytes).await;
    let r = send("GET", &format!("{base}/blobs/{d512}"), &[]).await;
    let s = "Pull › Pulling blobs (sha512)";
    spec.eq(&format!("{s}: a GET to an existing blob MUST be 200"), r.status, 200);
    spec.check(&format!("{s}: MUST provide the expected blob"), r.body[..] == bytes[..], "bytes differ");
    spec.eq(
        &format!("{s}: Docker-Content-Digest MUST match the body"),
        r.header("docker-content-digest"),
        Some(d512.as_str()),
    );
    let zero512 = format!("sha512:{}", "0".repeat(128));

    // Missing blobs.
    for method in ["GET", "HEAD"] {
        let r = send(method, &format!("{base}/blobs/{zero512}"), &[]).await;
        spec.eq(&format!("Pull › Pulling blobs: {method} of a missing sha512 blob MUST be 404"), r.status, 404);
        let r = send(method, &format!("{base}/blobs/{zero}"), &[]).await;
        let s = format!("Pull › Pulling blobs: {method} of a missing blob");
        spec.eq(&format!("{s} MUST be 404"), r.status, 404);
        if method == "GET" {
            spec.eq(&format!("{s}: code BLOB_UNKNOWN"), r.error_code().as_deref(), Some("BLOB_UNKNOWN"));
        }
    }

    // Error Codes: 4xx bodies are the spec's JSON with its codes. The suite's own check PUTs
    // a manifest under a malformed digest and accepts 400 or 404.
    let r = send("PUT", &format!("{base}/manifests/sha256:totallywrong"), &[]).await;
    spec.check("Error Codes: PUT to a malformed digest is 400 or 404", r.status == 400 || r.status == 404, r.status);
    spec.error_body("Error Codes: a 4xx body MUST be the error JSON with a spec code", &r);
    let bad = [
        format!("{base}/manifests/nope"),
        format!("{base}/manifests/.INVALID_MANIFEST_NAME"),
        format!("{base}/blobs/{zero}"),
        format!("{base}/blobs/sha256:abc"),
        format!("{}/v2/lab/test/none/tags/list", lab.proxy.url()),
        format!("{}/v2/lab/Bad/manifests/v1", lab.proxy.url()),
    ];
    for url in &bad {
        let r = send("GET", url, &[]).await;
        spec.error_body(&format!("Error Codes: {url}"), &r);
    }
    drop(lab.registry);
    spec.done();
}

/// Push `desc` of `layout` (named by `layout_tag`) as `name:tag`, with every platform.
fn push_as(layout: &Path, layout_tag: &str, registry: &Registry, name_tag: &str) {
    push(layout, layout_tag, &registry.addr.to_string(), name_tag, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_discovery_listing_tags() {
    let lab = lab().await;
    // Tags whose push order, upstream order and lexical order all differ.
    let extra = ["v10", "latest", "Beta", "1.0", "v2", "_rc", "alpha-1"];
    // Tagged with PUTs of the manifest already pushed (skopeo's `oci:` names refuse `_rc`).
    let top = &lab.app.top;
    let bytes =
        std::fs::read(lab.src.path().join("blobs/sha256").join(top.digest.trim_start_matches("sha256:"))).unwrap();
    for t in extra {
        artifact::put_manifest(&lab.registry.url(), "test/conf", t, image::OCI_MANIFEST, &bytes).await;
    }
    let mut want: Vec<String> = extra.iter().map(|s| s.to_string()).chain(["v1".to_string()]).collect();
    want.sort();
    let base = format!("{}/v2/lab/test/conf/tags/list", lab.proxy.url());
    let tags_of = |r: &Resp| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut spec = Spec::default();

    // The upstream itself ignores `n` (why pullthrough pages on its own): shown, not assumed.
    let direct = send("GET", &format!("{}/v2/test/conf/tags/list?n=2", lab.registry.url()), &[]).await;
    let upstream_pages = tags_of(&direct).len() == 2;

    let r = send("GET", &base, &[]).await;
    let s = "Content Discovery › Listing Tags (end-8a)";
    spec.eq(&format!("{s}: MUST be 200"), r.status, 200);
    spec.eq(&format!("{s}: every tag, in lexical order"), tags_of(&r), want.clone());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    spec.eq(&format!("{s}: name is the repository asked for"), v["name"].as_str(), Some("lab/test/conf"));
    spec.eq(&format!("{s}: JSON"), r.header("content-type"), Some("application/json"));

    // n: exactly n while more remain, a Link to the next page; following every Link yields
    // the whole list once.
    let s = "Content Discovery › Listing Tags (end-8b): n";
    let mut url = format!("{base}?n=3");
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = send("GET", &url, &[]).await;
        spec.eq(&format!("{s}: MUST be 200"), r.status, 200);
        let page = tags_of(&r);
        seen.extend(page.clone());
        pages.push(page.len());
        match r.header("link") {
            Some(link) => {
                spec.check(
                    &format!("{s}: Link is RFC 5988 with rel=\"next\""),
                    link.ends_with("rel=\"next\"") && link.starts_with("</v2/lab/test/conf/tags/list?"),
                    link,
                );
                let target = link.trim_start_matches('<').split('>').next().unwrap_or("");
                url = format!("{}{target}", lab.proxy.url());
            }
            None => break,
        }
    }
    spec.eq(&format!("{s}: n results per page while more remain"), pages.clone(), vec![3, 3, 2]);
    spec.eq(&format!("{s}: the pages together are the list, in order"), seen, want.clone());

    let r = send("GET", &format!("{base}?n=0"), &[]).await;
    spec.eq("Content Discovery › Listing Tags: n=0 MUST be an empty list", tags_of(&r), Vec::<String>::new());
    spec.eq("Content Discovery › Listing Tags: n=0 MUST NOT include a Link", r.header("link"), None);
    let r = send("GET", &format!("{base}?n={}", want.len()), &[]).await;
    spec.eq("Content Discovery › Listing Tags: n = all is the whole list", tags_of(&r), want.clone());
    spec.eq("Content Discovery › Listing Tags: no Link when nothing remains", r.header("link"), None);

    // last: the tags after it, with or without n.
    let r = send("GET", &format!("{base}?last={}", want[2]), &[]).await;
    spec.eq("Content Discovery › Listing Tags: last alone: every tag after it", tags_of(&r), want[3..].to_vec());
    let r = send("GET", &format!("{base}?n=2&last={}", want[2]), &[]).await;
    spec.eq("Content Discovery › Listing Tags: n and last: up to n tags after last", tags_of(&r), want[3..5].to_vec());

    // A repository that does not exist.
    let r = send("GET", &format!("{}/v2/lab/test/none/tags/list", lab.proxy.url()), &[]).await;
    spec.eq("Content Discovery › Listing Tags: a missing repository is 404", r.status, 404);
    spec.eq("Content Discovery › Listing Tags: code NAME_UNKNOWN", r.error_code().as_deref(), Some("NAME_UNKNOWN"));
    spec.check("precondition: the upstream ignores n (else this test proves less)", !upstream_pages, direct.text());
    spec.done();
}

#[tokio::test(flavor = "multi_thread")]
async fn content_discovery_listing_referrers() {
    let lab = lab().await;
    let layout = lab.src.path();
    let top = lab.app.top.clone();
    // A signature listed in the fallback tag's index (what a pushing client keeps on a registry
    // without the referrers API), and an SBOM whose client did not keep the index.
    let sig_ann = [("org.opencontainers.image.created", "2026-01-01T00:00:00Z")];
    let (sig, _) = artifact::referrer(layout, &top, SIGNATURE, b"signature bytes", &sig_ann);
    let (sbom, sbom_bytes) = artifact::referrer(layout, &top, SBOM, b"{\"sbom\":1}", &[]);
    let sig_entry = artifact::entry(&sig, SIGNATURE, &sig_ann);
    let (_, fallback) = artifact::index(layout, std::slice::from_ref(&sig_entry));
    image::finish_layout(layout, &[(&sig, "sig"), (&sbom, "sbom")]);
    push_as(layout, "sig", &lab.registry, "test/conf:sig");
    push_as(layout, "sbom", &lab.registry, "test/conf:sbom");
    // skopeo 1.9 will not write an index of artifacts with --preserve-digests: PUT it as a
    // pushing client does.
    let tag = artifact::fallback_tag(&top.digest);
    artifact::put_manifest(&lab.registry.url(), "test/conf", &tag, image::OCI_INDEX, &fallback).await;

    let base = format!("{}/v2/lab/test/conf", lab.proxy.url());
    let manifests = |r: &Resp| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["manifests"].as_array().cloned().unwrap_or_default()
    };
    let mut spec = Spec::default();
    let s = "Content Discovery › Listing Referrers (end-12a)";

    // The upstream has no referrers API: the fallback tag's index stands in for it.
    let direct = send("GET", &format!("{}/v2/test/conf/referrers/{}", lab.registry.url(), top.digest), &[]).await;
    spec.eq("precondition: the upstream has no referrers API", direct.status, 404);
    let r = send("GET", &format!("{base}/referrers/{}", top.digest), &[]).await;
    spec.eq(&format!("{s}: MUST be 200"), r.status, 200);
    spec.eq(
        &format!("{s}: Content-Type MUST be the image index type"),
        r.header("content-type"),
        Some(image::OCI_INDEX),
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    spec.eq(
        &format!("{s}: an image index"),
        (v["schemaVersion"].as_u64(), v["mediaType"].as_str()),
        (Some(2), Some(image::OCI_INDEX)),
    );
    spec.eq(
        &format!("{s}: the fallback tag's referrers (Enabling the Referrers API, 1.)"),
        manifests(&r),
        vec![sig_entry.clone()],
    );

    // Once the SBOM was pulled through the cache, it is listed too, described as the spec says.
    let pulled = send("GET", &format!("{base}/manifests/{}", sbom.digest), &[]).await;
    assert_eq!(pulled.body, sbom_bytes);
    let r = send("GET", &format!("{base}/referrers/{}", top.digest), &[]).await;
    let sbom_entry = artifact::entry(&sbom, SBOM, &[]);
    spec.eq(
        &format!("{s}: cached manifests with that subject are listed"),
        manifests(&r),
        vec![sig_entry.clone(), sbom_entry.clone()],
    );

    // end-12b: artifactType filter, and the header that says it was applied.
    let r = send("GET", &format!("{base}/referrers/{}?artifactType={SBOM}", top.digest), &[]).await;
    let s12b = "Content Discovery › Listing Referrers (end-12b): artifactType";
    spec.eq(&format!("{s12b}: only that type"), manifests(&r), vec![sbom_entry.clone()]);
    spec.eq(
        &format!("{s12b}: OCI-Filters-Applied MUST name the filter"),
        r.header("oci-filters-applied"),
        Some("artifactType"),
    );
    let r = send("GET", &format!("{base}/referrers/{}", top.digest), &[]).await;
    spec.eq(&format!("{s}: no OCI-Filters-Applied without a filter"), r.header("oci-filters-applied"), None);

    // No referrers: an empty list, never a 404.
    let r = send("GET", &format!("{base}/referrers/{}", lab.app.layers[0].digest), &[]).await;
    spec.eq(&format!("{s}: MUST NOT be 404 with no referrers"), r.status, 200);
    spec.eq(&format!("{s}: no referrers is an empty manifest list"), manifests(&r), Vec::<serde_json::Value>::new());
    // Invalid digest: 400.
    let r = send("GET", &format!("{base}/referrers/sha256:abc"), &[]).await;
    spec.eq(&format!("{s}: a digest with invalid syntax MUST be 400"), r.status, 400);
    spec.error_body(&format!("{s}: 400 body"), &r);
    spec.done();
}
