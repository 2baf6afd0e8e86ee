//! `pullthrough export` (issue 12): it names the real cause of a failure and gives images
//! that share a tag distinct `ref.name`s.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image;
use common::*;
use std::path::Path;

/// `ref.name` → digest, from an OCI layout's index.json.
fn ref_names(layout: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or("").to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_names_the_real_cause_and_keeps_shared_tags_apart() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "containerd tests run as root (as CI does)");
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 25, &[20_000], "amd64");
    let other = image::manifest(src.path(), 26, &[25_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "a"), (&other.top, "b")]);
    push(src.path(), "a", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "b", &registry.addr.to_string(), "test/other:v1", None);
    push(src.path(), "a", &registry.addr.to_string(), "test/app:v2", None);
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;
    let (ok, out, err) =
        proxy.cli(&["prefetch", "lab.test/test/app:v1", "lab.test/test/other:v1", "lab.test/test/app:v2"]);
    assert!(ok, "{out}{err}");

    // A name no configured registry, prefix or default upstream serves: the error says so,
    // as prefetch's does, with what is configured.
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("x.tar");
    let (ok, _, err) = proxy.cli(&["export", "library/app:2", "--out", tar.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no upstream serves \"library/app\"") && err.contains("configured: lab.test"), "{err}");
    assert!(!err.contains("not in the cache"), "{err}");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "a failed export left {left:?} behind");
    // A configured registry, an uncached tag: that is the cause.
    let (ok, _, err) = proxy.cli(&["export", "lab.test/test/app:9", "--out", tar.to_str().unwrap()]);
    assert!(!ok && err.contains("lab.test/test/app:9 is not in the cache"), "{err}");

    // Two images tagged v1: distinct ref.names, each its full name; a unique tag stays short.
    let dir = work.path().join("layout");
    let images = ["lab.test/test/app:v1", "lab.test/test/other:v1", "lab.test/test/app:v2"];
    let (ok, out, err) = proxy.cli(&[&["export"][..], &images, &["--out", dir.to_str().unwrap()]].concat());
    assert!(ok, "{out}{err}");
    let names = ref_names(&dir);
    assert_eq!(
        names,
        vec![
            ("lab.test/test/app:v1".to_string(), app.top.digest.clone()),
            ("lab.test/test/other:v1".to_string(), other.top.digest.clone()),
            ("v2".to_string(), app.top.digest.clone()),
        ]
    );
    // skopeo selects each by its ref.name.
    for (name, built) in [("lab.test/test/app:v1", &app), ("lab.test/test/other:v1", &other), ("v2", &app)] {
        let copy = work.path().join(format!("copy-{}", name.replace(['/', ':'], "_")));
        skopeo(&[
            "copy",
            "--preserve-digests",
            &format!("oci:{}:{name}", dir.display()),
            &format!("oci:{}:x", copy.display()),
        ]);
        assert_eq!(layout_digests(&copy), sorted_unique(&built.all), "{name}");
    }
    // containerd imports the archive under the full names.
    let (ok, out, err) = proxy.cli(&[&["export"][..], &images, &["--out", tar.to_str().unwrap()]].concat());
    assert!(ok, "{out}{err}");
    let ctrd = start_containerd(&work.path().join("ctrd")).await;
    let imported = ctrd.ctr(&["images", "import", "--snapshotter", "native", tar.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let listed = String::from_utf8_lossy(&ctrd.ctr(&["images", "ls", "-q"]).stdout).into_owned();
    for name in images {
        assert!(listed.lines().any(|l| l == name), "{name} not in:\n{listed}");
    }
}
