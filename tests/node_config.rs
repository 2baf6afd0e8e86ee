//! Nodes that configure themselves: `pullthrough hosts-toml --write` merges the mirror into
//! a node's containerd config directory (keeping what is there), a real containerd pulls
//! through the written file, falls back to the file's `server` with pullthrough stopped, and
//! `--remove` gives the file back as it was. `registries-conf` writes a valid drop-in.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn hosts_toml_write_merges_pulls_falls_back_and_removes_cleanly() {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), 51, &[200_000], "amd64");
    let other = image::manifest(src.path(), 52, &[150_000], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1"), (&other.top, "v2")]);
    push(src.path(), "v1", &registry.addr.to_string(), "team/app:v1", None);
    push(src.path(), "v2", &registry.addr.to_string(), "team/other:v1", None);
    let mut proxy = Proxy::start(&upstream_toml("lab.test", &registry.url(), "")).await;

    // The node already has a file: the real registry as server, and another mirror (down).
    let down = DeadPort::new();
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs.d");
    std::fs::create_dir_all(certs.join("lab.test")).unwrap();
    let file = certs.join("lab.test/hosts.toml");
    let before = format!(
        "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        registry.url(),
        down.url()
    );
    std::fs::write(&file, &before).unwrap();

    let (ok, _, err) = proxy.cli(&["hosts-toml", "--mirror", &proxy.url(), "--write", certs.to_str().unwrap()]);
    assert!(ok, "{err}");
    let merged = std::fs::read_to_string(&file).unwrap();
    let v: toml::Table = toml::from_str(&merged).unwrap();
    assert_eq!(v["server"].as_str(), Some(registry.url().as_str()), "{merged}");
    let hosts: Vec<&String> = v["host"].as_table().unwrap().keys().collect();
    assert_eq!(hosts.len(), 2, "{merged}");
    // The mirror is the first host: containerd tries hosts in the file's order.
    let first = merged.lines().find(|l| l.starts_with("[host.")).unwrap();
    assert_eq!(first, format!("[host.\"{}\"]", proxy.url()), "{merged}");

    // containerd pulls through the mirror the file names first.
    let ctrd = start_containerd(work.path()).await;
    let pull = |image: &str| {
        ctrd.ctr(&["images", "pull", "--hosts-dir", certs.to_str().unwrap(), "--snapshotter", "native", image])
    };
    let out = pull("lab.test/team/app:v1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.proc.log_text().contains("ns=lab.test"), "containerd did not go through the mirror");

    // pullthrough stopped: the same file still works, from the server.
    proxy.proc.kill();
    let direct = || registry.proc.log_text().lines().filter(|l| l.contains("containerd/")).count();
    let direct_before = direct();
    let out = pull("lab.test/team/other:v1");
    assert!(out.status.success(), "no fallback to the server: {}", String::from_utf8_lossy(&out.stderr));
    assert!(direct() > direct_before, "the pull did not reach the server");

    // --remove: the file exactly as it was.
    let (ok, _, err) = proxy.cli(&["hosts-toml", "--remove", "--write", certs.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_toml_remove_deletes_only_files_it_created() {
    let proxy = Proxy::start(&upstream_toml("lab.test", "http://127.0.0.1:1", "")).await;
    let certs = tempfile::tempdir().unwrap();
    let other = certs.path().join("other.test/hosts.toml");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "server = \"https://other.test\"\n").unwrap();
    let dir = certs.path().to_str().unwrap();
    let (ok, _, err) = proxy.cli(&["hosts-toml", "--mirror", &proxy.url(), "--write", dir]);
    assert!(ok, "{err}");
    assert!(certs.path().join("lab.test/hosts.toml").exists());
    let (ok, _, err) = proxy.cli(&["hosts-toml", "--remove", "--write", dir]);
    assert!(ok, "{err}");
    assert!(!certs.path().join("lab.test").exists(), "a file pullthrough created was left behind");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "server = \"https://other.test\"\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_conf_names_a_mirror_per_upstream_with_the_registry_as_prefix() {
    let proxy = Proxy::start(&upstream_toml("lab.test", "https://registry.lab.test", "")).await;
    let (ok, out, err) = proxy.cli(&["registries-conf", "--mirror", "http://127.0.0.1:5000"]);
    assert!(ok, "{err}");
    let v: toml::Table = toml::from_str(&out).unwrap();
    let reg = &v["registry"].as_array().unwrap()[0];
    assert_eq!(reg["prefix"].as_str(), Some("lab.test"));
    assert_eq!(reg["location"].as_str(), Some("registry.lab.test"));
    let mirror = &reg["mirror"].as_array().unwrap()[0];
    assert_eq!(mirror["location"].as_str(), Some("127.0.0.1:5000/lab.test"));
    assert_eq!(mirror["insecure"].as_bool(), Some(true));
}
