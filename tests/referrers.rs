//! The referrers API through the cache (`GET /v2/<name>/referrers/<digest>`): from an upstream
//! that has the API (our fake: Debian's registry has none), and from the real docker-registry
//! through the fallback tag plus what the cache holds; remembered for the tag TTL, served stale
//! when the upstream is down, and kept to the repository it was found in.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::artifact::{self, SBOM, SIGNATURE};
use common::fake::{FakeUpstream, Fault};
use common::image::{self, Desc};
use common::*;
use std::time::Duration;

fn manifests(r: &Resp) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["manifests"].as_array().cloned().unwrap_or_else(|| panic!("not an index: {} {}", r.status, r.text()))
}

fn desc(seed: &str) -> Desc {
    Desc {
        media_type: image::OCI_MANIFEST.into(),
        digest: format!("sha256:{}", sha256_hex(seed.as_bytes())),
        size: 400,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_referrers_api_is_served_filtered_remembered_for_the_ttl_and_stale() {
    let fake = FakeUpstream::start().await;
    let subject = format!("sha256:{}", sha256_hex(b"subject"));
    let sig = artifact::entry(&desc("sig"), SIGNATURE, &[("k", "v")]);
    let sbom = artifact::entry(&desc("sbom"), SBOM, &[]);
    // An upstream's answer may carry fields a client does not need; they are dropped, the
    // descriptors otherwise kept as listed.
    let mut sig_extra = sig.clone();
    sig_extra["urls"] = serde_json::json!([]);
    let listing =
        serde_json::json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [sig_extra, sbom]});
    // The fake serves by the last path segment: `/v2/<name>/referrers/<subject>` here.
    fake.set_blob(&subject, listing.to_string().into_bytes(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("api.test", &fake.url(), "tag_ttl = \"1s\"")).await;
    let url = |q: &str| format!("{}/v2/team/app/referrers/{subject}?ns=api.test{q}", proxy.url());
    let asked = || fake.hits(&format!("/referrers/{subject}"));

    let r = get(&url(""), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(image::OCI_INDEX));
    assert_eq!(manifests(&r), vec![sig.clone(), sbom.clone()]);
    assert_eq!(r.header("oci-filters-applied"), None);
    let r = get(&url(&format!("&artifactType={SBOM}")), &[]).await.unwrap();
    assert_eq!(manifests(&r), vec![sbom.clone()]);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let r = get(&url("&artifactType=application/vnd.none"), &[]).await.unwrap();
    assert_eq!((r.status, manifests(&r)), (200, vec![]));
    // Within the TTL, one upstream request for all three; the fallback tag was never needed.
    assert_eq!(asked(), 1, "referrers asked upstream again within the TTL");
    assert_eq!(fake.hits(&format!("/manifests/{}", artifact::fallback_tag(&subject))), 0);

    // After it, asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(manifests(&get(&url(""), &[]).await.unwrap()), vec![sig.clone(), sbom.clone()]);
    assert_eq!(asked(), 2);

    // A subject the upstream knows nothing of (404 from the API and the fallback tag): an
    // empty index, not an error.
    let other = format!("sha256:{}", sha256_hex(b"other"));
    let r = get(&format!("{}/v2/team/app/referrers/{other}?ns=api.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, manifests(&r)), (200, vec![]));
    assert_eq!(
        fake.hits(&format!("/manifests/{}", artifact::fallback_tag(&other))),
        1,
        "the fallback tag was not tried"
    );

    // A sha512 subject: its fallback tag is the hex cut to 64 characters (the spec's schema).
    let long = format!("sha512:{}", "ab".repeat(64));
    let r = get(&format!("{}/v2/team/app/referrers/{long}?ns=api.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((r.status, manifests(&r)), (200, vec![]));
    assert_eq!(fake.hits(&format!("/manifests/sha512-{}", "ab".repeat(32))), 1);

    // The upstream goes away: past the TTL the last answer is served, and counted as stale.
    drop(fake);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&url(""), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(manifests(&r), vec![sig, sbom.clone()]);
    let r = get(&url(&format!("&artifactType={SBOM}")), &[]).await.unwrap();
    assert_eq!(manifests(&r), vec![sbom]);
    // The log writer does not block: the line lands a moment after the response.
    wait_until("the stale serve to be logged", Duration::from_secs(10), async || {
        proxy.proc.log_text().contains("serving the referrers it listed last (stale)")
    })
    .await;
    assert!(proxy.metric("pullthrough_stale_manifest_serves_total{upstream=\"api.test\"}").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_from_a_registry_without_the_api_stay_in_their_repository_and_outlive_it() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let layout = src.path();
    let app = image::manifest(layout, 51, &[20_000], "amd64");
    let (sig, _) = artifact::referrer(layout, &app.top, SIGNATURE, b"sig", &[]);
    let (sbom, _) = artifact::referrer(layout, &app.top, SBOM, b"sbom", &[("format", "spdx")]);
    let sig_entry = artifact::entry(&sig, SIGNATURE, &[]);
    let (_, fallback) = artifact::index(layout, std::slice::from_ref(&sig_entry));
    image::finish_layout(layout, &[(&app.top, "v1"), (&sig, "sig"), (&sbom, "sbom")]);
    let addr = registry.addr.to_string();
    // The same image in two repositories; its signature (and fallback tag) only in team/app.
    push(layout, "v1", &addr, "team/app:v1", None);
    push(layout, "v1", &addr, "team/other:v1", None);
    push(layout, "sig", &addr, "team/app:sig", None);
    push(layout, "sbom", &addr, "team/app:sbom", None);
    push(layout, "sbom", &addr, "team/other:sbom", None);
    let tag = artifact::fallback_tag(&app.top.digest);
    // skopeo 1.9 will not write an index of artifacts with --preserve-digests: PUT it as a
    // pushing client does.
    artifact::put_manifest(&registry.url(), "team/app", &tag, image::OCI_INDEX, &fallback).await;

    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "tag_ttl = \"1s\"")).await;
    let p = proxy.url();
    let referrers = |repo: &str| format!("{p}/v2/{repo}/referrers/{}?ns=lab.test", app.top.digest);
    let fallback_gets = || registry.count_gets(&format!("/v2/team/app/manifests/{tag}"));

    let before = fallback_gets();
    assert_eq!(manifests(&get(&referrers("team/app"), &[]).await.unwrap()), vec![sig_entry.clone()]);
    assert_eq!(manifests(&get(&referrers("team/app"), &[]).await.unwrap()), vec![sig_entry.clone()]);
    // The registry logs a request a moment after answering it.
    wait_until("the fallback tag GET to be logged", Duration::from_secs(10), async || fallback_gets() > before).await;
    assert_eq!(fallback_gets() - before, 1, "the fallback tag was fetched again within the TTL");
    // Past the TTL, a HEAD finds the tag unchanged: no second GET (Docker Hub counts GETs).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(manifests(&get(&referrers("team/app"), &[]).await.unwrap()), vec![sig_entry.clone()]);
    assert_eq!(fallback_gets() - before, 1, "an unchanged fallback tag was fetched again");
    let needle = format!("\"HEAD /v2/team/app/manifests/{tag} HTTP");
    let heads = || {
        let log = registry.proc.log_text();
        log.lines().filter(|l| l.contains(&needle) && l.contains("pullthrough/")).count()
    };
    wait_until("the fallback tag to be revalidated with HEAD", Duration::from_secs(10), async || heads() >= 2).await;

    // The SBOM pulled through team/other: listed there, and not in team/app, where nobody
    // pulled it through this cache (and no index lists it).
    let r = get(&format!("{p}/v2/team/other/manifests/{}?ns=lab.test", sbom.digest), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let sbom_entry = artifact::entry(&sbom, SBOM, &[("format", "spdx")]);
    assert_eq!(manifests(&get(&referrers("team/other"), &[]).await.unwrap()), vec![sbom_entry.clone()]);
    assert_eq!(manifests(&get(&referrers("team/app"), &[]).await.unwrap()), vec![sig_entry.clone()]);

    // The registry goes away: both repositories keep their lists.
    drop(registry.stop());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&referrers("team/app"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(manifests(&r), vec![sig_entry]);
    assert_eq!(manifests(&get(&referrers("team/other"), &[]).await.unwrap()), vec![sbom_entry]);
    wait_until("the stale serve to be logged", Duration::from_secs(10), async || {
        proxy.proc.log_text().contains("(stale)")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_cross_the_air_gap_with_their_digests() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let layout = src.path();
    let app = image::manifest(layout, 61, &[30_000], "amd64");
    let (sig, sig_bytes) = artifact::referrer(layout, &app.top, SIGNATURE, b"cosign-ish signature", &[("k", "v")]);
    let (sbom, sbom_bytes) = artifact::referrer(layout, &app.top, SBOM, b"{\"spdx\":true}", &[]);
    let entries = [artifact::entry(&sig, SIGNATURE, &[("k", "v")]), artifact::entry(&sbom, SBOM, &[])];
    let (_, fallback) = artifact::index(layout, &entries);
    image::finish_layout(layout, &[(&app.top, "v1"), (&sig, "sig"), (&sbom, "sbom")]);
    let addr = registry.addr.to_string();
    for t in ["v1", "sig", "sbom"] {
        push(layout, t, &addr, &format!("team/app:{t}"), None);
    }
    let tag = artifact::fallback_tag(&app.top.digest);
    artifact::put_manifest(&registry.url(), "team/app", &tag, image::OCI_INDEX, &fallback).await;
    // And a cosign-style signature: no `subject`, found by its tag `sha256-<hex>.sig`.
    let cosign = image::manifest(layout, 62, &[100], "amd64");
    let cosign_bytes =
        std::fs::read(layout.join("blobs/sha256").join(cosign.top.digest.trim_start_matches("sha256:"))).unwrap();
    image::finish_layout(layout, &[(&cosign.top, "cosign")]);
    push(layout, "cosign", &addr, &format!("team/app:{tag}.sig"), None);

    // Connected site: prefetch with referrers, export.
    let online = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;
    let (ok, out, err) = online.cli(&["prefetch", "--with-referrers", "lab.test/team/app:v1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ 3 referrers"), "{out}");
    let work = tempfile::tempdir().unwrap();
    let export = work.path().join("export");
    let (ok, out, err) = online.cli(&["export", "lab.test/team/app:v1", "--out", export.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    drop(online);
    drop(registry);

    // Air-gapped site: an empty cache, offline, the layout imported.
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", "http://127.0.0.1:9", ""));
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[cache]", "offline = true\n[cache]");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullthrough"))
        .args(["import", export.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let site = Proxy::launch(dir, &cfg, |c| c).await;
    let p = site.url();

    // The same referrers, with the same digests, and the manifests and blobs behind them
    // byte for byte: a signature verified at the connected site verifies here.
    let r = get(&format!("{p}/v2/team/app/referrers/{}?ns=lab.test", app.top.digest), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut got = manifests(&r);
    got.sort_by_key(|e| e["digest"].as_str().map(str::to_string));
    let mut want = entries.to_vec();
    want.sort_by_key(|e| e["digest"].as_str().map(str::to_string));
    assert_eq!(got, want);
    for (d, bytes) in [(&sig, &sig_bytes), (&sbom, &sbom_bytes)] {
        let m = get(&format!("{p}/v2/team/app/manifests/{}?ns=lab.test", d.digest), &[]).await.unwrap();
        assert_eq!((m.status, &m.body[..]), (200, &bytes[..]), "{}", d.digest);
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        let layer = v["layers"][0]["digest"].as_str().unwrap();
        let (status, _, hex) = get_hashed(&format!("{p}/v2/team/app/blobs/{layer}?ns=lab.test"), &[]).await.unwrap();
        assert_eq!((status, format!("sha256:{hex}")), (200, layer.to_string()));
    }
    let r = get(&format!("{p}/v2/team/app/manifests/{tag}.sig?ns=lab.test"), &[]).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &cosign_bytes[..]), "the cosign signature did not cross");
    assert_eq!(r.header("docker-content-digest"), Some(cosign.top.digest.as_str()));
    let r = get(&format!("{p}/v2/team/app/referrers/{}?ns=lab.test&artifactType={SIGNATURE}", app.top.digest), &[])
        .await
        .unwrap();
    assert_eq!(manifests(&r), vec![entries[0].clone()]);
}
