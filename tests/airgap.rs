//! Air-gapped and edge sites: prefetch (with platform selection and pins), export to an OCI
//! layout, import into a proxy that has no reachable upstream (offline mode), and pulls
//! from it with skopeo and containerd.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image::{self, Built};
use common::*;

struct Source {
    registry: Registry,
    app: Built,
    multi: Built,
    _src: tempfile::TempDir,
}

async fn source() -> Source {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 71, &[300_000, 80_000], "amd64");
    let multi = image::index(src.path(), 72, &[120_000], &["amd64", "arm64"]);
    image::finish_layout(src.path(), &[(&app.top, "v1"), (&multi.top, "m1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "m1", &registry.addr.to_string(), "test/multi:m1", None);
    Source { registry, app, multi, _src: src }
}

/// A proxy whose only upstream is unreachable and which never tries it.
async fn offline_proxy() -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", "http://127.0.0.1:9", "prefix = \"lab\""));
    set_offline(&cfg);
    Proxy::launch(dir, &cfg, |c| c).await
}

fn set_offline(cfg: &std::path::Path) {
    let text = std::fs::read_to_string(cfg).unwrap().replace("[cache]", "offline = true\n[cache]");
    std::fs::write(cfg, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn export_import_and_serve_offline_to_skopeo_and_containerd() {
    let src = source().await;
    let online = Proxy::start(&upstream_toml("lab.test", &src.registry.url(), "prefix = \"lab\"")).await;
    let (ok, out, err) = online.cli(&["prefetch", "--all-platforms", "lab.test/test/app:v1", "lab.test/test/multi:m1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("[2/2]"), "{out}");

    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("images.tar");
    let (ok, out, err) =
        online.cli(&["export", "lab.test/test/app:v1", "lab.test/test/multi:m1", "--out", tarball.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    // The export is a layout skopeo reads, byte for byte what was pushed.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    tar::Archive::new(std::fs::File::open(&tarball).unwrap()).unpack(&unpacked).unwrap();
    let copy = work.path().join("copy");
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        &format!("oci:{}:m1", unpacked.display()),
        &format!("oci:{}:m1", copy.display()),
    ]);
    assert_eq!(layout_digests(&copy), sorted_unique(&src.multi.all));

    // A second site: no reachable upstream, offline mode.
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", "http://127.0.0.1:9", "prefix = \"lab\""));
    set_offline(&cfg);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullthrough"))
        .args(["import", tarball.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported lab.test/test/app:v1"));
    let site = Proxy::launch(dir, &cfg, |c| c).await;

    for (name, built) in [("test/app:v1", &src.app), ("test/multi:m1", &src.multi)] {
        let dest = work.path().join(name.replace(['/', ':'], "_"));
        let from = format!("docker://{}/lab/{name}", site.addr);
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &from,
            &format!("oci:{}:x", dest.display()),
        ]);
        assert_eq!(layout_digests(&dest), sorted_unique(&built.all), "{name}");
    }

    // containerd, through hosts.toml pointing at the offline site.
    let hosts = work.path().join("certs.d");
    let (ok, _, err) = site.cli(&["hosts-toml", "--mirror", &site.url(), "--out", hosts.to_str().unwrap()]);
    assert!(ok, "{err}");
    let ctrd = start_containerd(&work.path().join("ctrd")).await;
    let pulled = ctrd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--snapshotter",
        "native",
        "lab.test/test/app:v1",
    ]);
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
    let bytes = ctrd.ctr(&["content", "get", &src.app.layers[0].digest]).stdout;
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), src.app.layers[0].digest);

    // What the site never had is a clear 503 naming offline mode, not a 404.
    let r = get(&format!("{}/v2/lab/test/other/manifests/v1", site.url()), &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("offline mode"), "{}", r.text());
    let ready = get(&format!("http://{}/readyz", site.admin), &[]).await.unwrap();
    assert!(ready.text().contains("\"lab.test\":\"offline\""), "{}", ready.text());
    assert_eq!(site.metric("pullthrough_upstream_up{upstream=\"lab.test\"}").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layout_written_by_skopeo_imports_under_a_given_name() {
    let src = source().await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/test/app:v1", src.registry.addr),
        &format!("oci:{}:v1", layout.display()),
    ]);
    let site = offline_proxy().await;
    // Without a name, the import refuses and says how to give one.
    let (ok, _, err) = site.cli(&["import", layout.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("--as"), "{err}");
    let (ok, out, err) = site.cli(&["import", layout.to_str().unwrap(), "--as", "lab.test/test/app"]);
    assert!(ok, "{out}{err}");
    let site = site.restart().await; // the daemon indexes the imported blobs at start
    let m = get(&format!("{}/v2/lab/test/app/manifests/v1", site.url()), &[]).await.unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.header("docker-content-digest"), Some(src.app.top.digest.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_is_refused_and_nothing_is_half_imported() {
    let src = source().await;
    let online = Proxy::start(&upstream_toml("lab.test", &src.registry.url(), "")).await;
    let (ok, _, err) = online.cli(&["prefetch", "lab.test/test/app:v1"]);
    assert!(ok, "{err}");
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("export");
    let (ok, _, err) = online.cli(&["export", "lab.test/test/app:v1", "--out", out_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Flip one bit of the second layer.
    let victim = &src.app.layers[1].digest;
    let path = out_dir.join("blobs/sha256").join(victim.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::remove_file(&path).unwrap(); // may be a hard link into the source cache
    std::fs::write(&path, bytes).unwrap();

    let site = offline_proxy().await;
    let before = list_files(&site.cache.join("blobs"));
    let (ok, _, err) = site.cli(&["import", out_dir.to_str().unwrap()]);
    assert!(!ok, "a corrupt layout was imported");
    assert!(err.contains(victim), "the error does not name the bad blob: {err}");
    assert_eq!(list_files(&site.cache.join("blobs")), before, "part of the image was imported");
    let (_, ls, _) = site.cli(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(v["images"].as_array().unwrap().len(), 0, "{ls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_of_one_platform_stores_only_that_platform_and_pins_it() {
    let src = source().await;
    let proxy = Proxy::start(&upstream_toml("lab.test", &src.registry.url(), "")).await;
    let (ok, out, err) = proxy.cli(&["prefetch", "--platform", "linux/arm64", "--pin", "lab.test/test/multi:m1"]);
    assert!(ok, "{out}{err}");
    // index.rs built amd64 first, arm64 second: layers[0] is amd64's, layers[1] arm64's.
    let (amd64_layer, arm64_layer) = (&src.multi.layers[0].digest, &src.multi.layers[1].digest);
    let cached = |d: &str| proxy.cached_blobs().iter().any(|p| p.ends_with(d.trim_start_matches("sha256:")));
    assert!(cached(&src.multi.top.digest), "the index is cached");
    assert!(cached(arm64_layer), "the arm64 layer is cached");
    assert!(!cached(amd64_layer), "the amd64 layer was fetched too");
    let pins = std::fs::read_to_string(proxy.cache.join("pins")).unwrap();
    assert_eq!(pins.trim(), format!("lab.test/test/multi@{}", src.multi.top.digest));
    // Prefetching again fetches nothing new (resumable, idempotent).
    let (ok, out, _) = proxy.cli(&["prefetch", "--platform", "linux/arm64", "lab.test/test/multi:m1"]);
    assert!(ok);
    assert!(out.contains("0 B fetched"), "{out}");
}
