//! A real containerd (Debian's, started by the test as root with its own root, state and
//! socket, CRI disabled) pulls an image through pullthrough using hosts.toml files that
//! `pullthrough hosts-toml` generated: requests carry `?ns=`, the content equals the
//! upstream's, and the image unpacks.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image;
use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_through_generated_hosts_toml() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "containerd tests run as root (as CI does)");

    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 91, &[400_000, 1_500_000], "amd64");
    let multi = image::index(src.path(), 92, &[200_000], &["amd64", "arm64"]);
    image::finish_layout(src.path(), &[(&img.top, "v1"), (&multi.top, "m1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/app:v1", None);
    push(src.path(), "m1", &registry.addr.to_string(), "test/multi:v1", None);
    let proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;

    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    let (ok, _, err) = proxy.cli(&["hosts-toml", "--mirror", &proxy.url(), "--out", hosts.to_str().unwrap()]);
    assert!(ok, "{err}");
    let ctrd = start_containerd(work.path()).await;

    // The single-platform image needs both layers; of the index, only the amd64 (first)
    // manifest's layer: containerd pulls its own platform.
    for (image_ref, built, wanted) in [("lab.test/test/app:v1", &img, 2), ("lab.test/test/multi:v1", &multi, 1)] {
        let out =
            ctrd.ctr(&["images", "pull", "--hosts-dir", hosts.to_str().unwrap(), "--snapshotter", "native", image_ref]);
        assert!(
            out.status.success(),
            "ctr pull {image_ref} failed:\n{}\n{}\nproxy log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            proxy.proc.log_text()
        );
        // The image unpacked (native snapshotter), so every layer matched its diff_id.
        let images = String::from_utf8_lossy(&ctrd.ctr(&["images", "ls"]).stdout).into_owned();
        assert!(images.contains(image_ref), "{images}");
        assert!(images.contains(&built.top.digest), "{images}");
        // The content store holds this platform's blobs, byte-identical to the upstream's.
        let content = String::from_utf8_lossy(&ctrd.ctr(&["content", "ls", "-q"]).stdout).into_owned();
        for layer in built.layers.iter().take(wanted) {
            assert!(content.contains(&layer.digest), "{} missing from containerd's content store", layer.digest);
            let bytes = ctrd.ctr(&["content", "get", &layer.digest]).stdout;
            assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), layer.digest);
        }
    }

    // Everything went through the mirror, with ?ns=, and never straight to the registry.
    let log = proxy.proc.log_text();
    assert!(log.contains("ns=lab.test"), "no request carried ns=lab.test:\n{log}");
    assert!(log.contains("kind=\"manifest\""), "{log}");
    assert!(log.contains("kind=\"blob\""));
    let direct = registry.proc.log_text().lines().filter(|l| l.contains("containerd/")).count();
    assert_eq!(direct, 0, "containerd fell back to the registry directly");
    assert!(
        proxy.metric("pullthrough_cache_requests_total{kind=\"blob\",result=\"miss\",upstream=\"lab.test\"}").await
            >= 3.0
    );
}
