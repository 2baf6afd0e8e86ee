//! The command line as an operator meets it: the embedded default, config validation,
//! start-up cleaning of interrupted fills, and the CLI working on a cache the daemon is using.

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;
use std::process::Command;
use std::time::{Duration, SystemTime};

fn pullthrough() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pullthrough"))
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[upstream]]\nhost = \"r.io\"\nurl = \"ftp://r.io\"\n", "upstream[0].url"),
        ("[[upstream]]\nhost = \"r.io\"\nurl = \"https://r.io\"\ntag_ttl = \"forever\"\n", "tag_ttl"),
        ("[[upstream]]\nhost = \"r.io\"\nurl = \"https://r.io\"\nprefx = \"x\"\n", "prefx"),
        ("[server]\nlisten = \"127.0.0.1:5000\"\n", "no [[upstream]]"),
    ];
    for (i, (toml, needle)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&f, toml).unwrap();
        for sub in ["check-config", "serve"] {
            let out = pullthrough().arg(sub).arg("--config").arg(&f).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{sub} accepted {toml:?}");
            assert!(err.contains(needle), "{sub}: {err:?} does not mention {needle:?}");
        }
    }
    let out = pullthrough().args(["check-config", "--config", "/nonexistent/pt.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pt.toml"));

    // The embedded default, written out, validates.
    let out = pullthrough().arg("default-config").output().unwrap();
    let f = dir.path().join("default.toml");
    std::fs::write(&f, &out.stdout).unwrap();
    let out = pullthrough().arg("check-config").arg("--config").arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 upstreams"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_on_the_embedded_default_and_cleans_leftover_temp_files() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("xdg").join("pullthrough");
    std::fs::create_dir_all(cache.join("tmp")).unwrap();
    // A fill of a version before per-process temp directories, from hours ago…
    let loose = cache.join("tmp").join("0123.99-1.tmp");
    std::fs::write(&loose, b"partial fill").unwrap();
    let hours_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options().write(true).open(&loose).unwrap().set_modified(hours_ago).unwrap();
    // …and one of a process killed mid-fill: its session lock is there, and free.
    let dead = "4242-18f00000000-0";
    std::fs::create_dir_all(cache.join("tmp").join(dead)).unwrap();
    std::fs::write(cache.join("tmp").join(dead).join("ab.4242-1.tmp"), b"partial fill").unwrap();
    std::fs::create_dir_all(cache.join("locks").join("sessions")).unwrap();
    std::fs::write(cache.join("locks").join("sessions").join(dead), b"").unwrap();
    let port = free_port();
    let mut cmd = pullthrough();
    let admin = free_port();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("XDG_CACHE_HOME", home.path().join("xdg"));
    let proc = Proc::spawn(cmd, home.path().join("log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_until(
        "the default-config daemon",
        Duration::from_secs(20),
        async || matches!(get(&format!("{url}/v2/"), &[]).await, Ok(r) if r.status == 200),
    )
    .await;
    let r = get(&format!("{url}/v2/"), &[]).await.unwrap();
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    // The default cache dir is the XDG one, and the interrupted fills are gone.
    assert!(cache.join("blobs").is_dir());
    assert!(list_files(&cache.join("tmp")).is_empty(), "{:?}", list_files(&cache.join("tmp")));
    assert!(!cache.join("locks").join("sessions").join(dead).exists());
    // Default upstreams are configured; anything else is refused.
    let r = get(&format!("{url}/v2/x/manifests/latest?ns=registry.example"), &[]).await.unwrap();
    assert_eq!(r.status, 403);
    drop(proc);
}

/// A manifest (served by digest by the fake) over a config and one layer; its digest.
fn small_image(fake: &FakeUpstream, seed: u64) -> String {
    let mut descs = Vec::new();
    for (i, mt) in
        ["application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"].iter().enumerate()
    {
        let b = pseudo_random(seed + i as u64, 20_000);
        let d = format!("sha256:{}", sha256_hex(&b));
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": b.len()}));
        fake.set_blob(&d, b, Fault::Good);
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descs[0],
        "layers": [descs[1]],
    })
    .to_string();
    let d = format!("sha256:{}", sha256_hex(m.as_bytes()));
    fake.set_blob(&d, m.into_bytes(), Fault::Good);
    d
}

fn gets(fake: &FakeUpstream, digest: &str) -> usize {
    fake.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with(digest)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_on_the_daemons_cache_keep_its_fills_and_records() {
    let fake = FakeUpstream::start().await;
    let slow = pseudo_random(61, 4 << 20);
    let slow_d = format!("sha256:{}", sha256_hex(&slow));
    // About 5 s of transfer: time for six commands to start and finish during it.
    fake.set_blob(&slow_d, slow, Fault::Slow { chunk: 64 * 1024, delay_ms: 80 });
    let image = small_image(&fake, 62);
    let proxy =
        Proxy::start_with("housekeeping_interval = \"200ms\"", &upstream_toml("fake.test", &fake.url(), "")).await;
    let url = format!("{}/v2/r/blobs/{slow_d}?ns=fake.test", proxy.url());
    let client = tokio::spawn({
        let url = url.clone();
        async move { get_hashed(&url, &[]).await }
    });
    wait_until("the fill to be writing its temp file", Duration::from_secs(10), async || {
        !list_files(&proxy.cache.join("tmp")).is_empty()
    })
    .await;

    // While the daemon fills: the offline commands open the same cache.
    let (ok, out, err) = proxy.cli(&["ls"]);
    assert!(ok, "ls failed: {out}\n{err}");
    let (ok, out, err) = proxy.cli(&["prefetch", &format!("fake.test/r@{image}")]);
    assert!(ok, "prefetch failed: {out}\n{err}");
    // prune would delete by policy under the daemon's feet: refused, and says why; a dry
    // run only reads.
    let (ok, _, err) = proxy.cli(&["prune"]);
    assert!(!ok && err.contains("daemon is using"), "prune ran beside the daemon: {err}");
    let (ok, out, err) = proxy.cli(&["prune", "--dry-run"]);
    assert!(ok, "prune --dry-run failed: {out}\n{err}");
    // export reads, import writes (it waits only for a lifecycle pass): both work beside it.
    let layout = tempfile::tempdir().unwrap();
    let tar = layout.path().join("image.tar");
    let (ok, out, err) = proxy.cli(&["export", &format!("fake.test/r@{image}"), "--out", tar.to_str().unwrap()]);
    assert!(ok, "export failed: {out}\n{err}");
    let (ok, out, err) = proxy.cli(&["import", tar.to_str().unwrap()]);
    assert!(ok, "import failed: {out}\n{err}");
    assert!(!client.is_finished(), "the fill ended before the commands ran; make it slower");

    // The fill completes and is committed: the CLI removed none of its files.
    let (status, n, hex) = client.await.unwrap().unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, 4 << 20, slow_d.clone()));
    proxy.wait_cached(&slow_d).await;
    let log = proxy.proc.log_text();
    assert!(!log.contains("could not be committed"), "a fill lost its temp file:\n{log}");
    // So the next pull is a hit: no second upstream transfer.
    let (status, _, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, slow_d.clone()));
    assert_eq!(gets(&fake, &slow_d), 1, "the blob was transferred twice");
    // And what prefetch wrote is served by the daemon, without asking the upstream again.
    let before = fake.seen().len();
    let r = get(&format!("{}/v2/r/manifests/{image}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.seen().len(), before, "the prefetched manifest was fetched again");

    // A process killed mid-fill leaves its temp files; the daemon removes them on its next
    // housekeeping tick, because that process's session lock is free.
    let dead = "4242-18f00000000-7";
    std::fs::create_dir_all(proxy.cache.join("tmp").join(dead)).unwrap();
    std::fs::write(proxy.cache.join("tmp").join(dead).join("x.tmp"), b"partial").unwrap();
    std::fs::write(proxy.cache.join("locks").join("sessions").join(dead), b"").unwrap();
    wait_until("the dead session's temp files to go", Duration::from_secs(10), async || {
        !proxy.cache.join("tmp").join(dead).exists()
    })
    .await;
    assert!(proxy.proc.log_text().contains("removed temp files of processes that stopped"));
}
