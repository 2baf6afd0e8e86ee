//! The command line as an operator meets it: the embedded default, config validation,
//! start-up cleaning of interrupted fills, and the CLI working on a cache the daemon is using.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

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
    let mut cmd = pullthrough();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("XDG_CACHE_HOME", home.path().join("xdg"));
    let proc = Proc::spawn(cmd, home.path().join("log"));
    // The address this daemon logged it bound.
    let mut addr = None;
    wait_until("the default-config daemon to serve", Duration::from_secs(20), async || {
        addr = serving_addrs(&proc.log_text()).map(|(listen, _)| listen);
        addr.is_some()
    })
    .await;
    let url = format!("http://{}", addr.unwrap());
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
    wait_log(&proxy.proc, "removed temp files of processes that stopped").await;
}

/// Subcommands listed by `pullthrough --help`.
fn subcommands() -> Vec<String> {
    let out = pullthrough().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = help.split("Commands:").nth(1).expect("a Commands: section");
    let section = section.split("\n\n").next().unwrap();
    section.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| *c != "help").map(str::to_string).collect()
}

/// The entries of a help section (`Options:`, `Arguments:`), each with its help text (empty
/// when it has none): on the entry's line after two spaces, or on the lines below it.
fn help_entries(help: &str, section: &str) -> Vec<(String, String)> {
    let Some(body) = help.split(&format!("\n{section}\n")).nth(1) else { return Vec::new() };
    // Up to the next section header (entries may hold blank lines in long help).
    let lines: Vec<&str> = body.lines().take_while(|l| l.is_empty() || l.starts_with(' ')).collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let indent = l.len() - l.trim_start().len();
        // Entries start within the first columns ("  -c, --config", "      --cache-dir");
        // help on lines of their own is indented further.
        let is_entry = |l: &str, indent: usize| indent <= 6 && l.trim_start().starts_with(['-', '<', '[']);
        if !is_entry(l, indent) {
            continue; // a continuation of the entry above
        }
        let entry = l.trim_start();
        let (spec, same_line) = match entry.split_once("  ") {
            Some((spec, text)) => (spec.to_string(), text.trim().to_string()),
            None => (entry.to_string(), String::new()),
        };
        let below: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|n| n.trim().is_empty() || n.len() - n.trim_start().len() > 6)
            .map(|n| n.trim())
            .collect();
        out.push((spec, format!("{same_line} {}", below.join(" ")).trim().to_string()));
    }
    out
}

#[test]
fn every_option_of_every_subcommand_has_help_text() {
    let subs = subcommands();
    for want in ["serve", "check-config", "doctor", "prune", "prefetch", "export", "import", "ls", "hosts-toml"] {
        assert!(subs.iter().any(|s| s == want), "{want} missing from {subs:?}");
    }
    let mut config_help = std::collections::BTreeSet::new();
    let mut cache_dir_help = std::collections::BTreeSet::new();
    for sub in &subs {
        let out = pullthrough().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let options = help_entries(&help, "Options:");
        assert!(options.iter().any(|(s, _)| s.contains("--help")), "{sub}: options not parsed:\n{help}");
        for (spec, text) in options.iter().chain(help_entries(&help, "Arguments:").iter()) {
            assert!(!text.is_empty(), "`pullthrough {sub}`: {spec} has no help text:\n{help}");
            if spec.contains("--config") {
                config_help.insert(text.clone());
            }
            if spec.contains("--cache-dir") {
                cache_dir_help.insert(text.clone());
            }
        }
        // Every subcommand that reads a configuration takes --config, and those that use
        // the cache --cache-dir, from the one shared group.
        if sub != "default-config" {
            assert!(options.iter().any(|(s, _)| s.contains("--config")), "{sub} has no --config");
        }
        if !["default-config", "hosts-toml", "registries-conf"].contains(&sub.as_str()) {
            assert!(options.iter().any(|(s, _)| s.contains("--cache-dir")), "{sub} has no --cache-dir");
        }
    }
    assert_eq!(config_help.len(), 1, "--config is described differently: {config_help:?}");
    assert_eq!(cache_dir_help.len(), 1, "--cache-dir is described differently: {cache_dir_help:?}");
}

#[test]
fn commands_say_which_cache_and_config_they_use() {
    let home = tempfile::tempdir().unwrap();
    let default_cache = home.path().join("xdg").join("pullthrough");
    std::fs::create_dir_all(&default_cache).unwrap();
    let run = |args: &[&str]| {
        let out = pullthrough().args(args).env("XDG_CACHE_HOME", home.path().join("xdg")).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No arguments: ls says it reads the default cache directory, and that it could be told
    // another.
    let (ok, out, err) = run(&["ls"]);
    assert!(ok, "{out}\n{err}");
    let said = format!(
        "ls: reading the default cache directory {} (no --config or --cache-dir given",
        default_cache.display()
    );
    assert!(err.contains(&said), "{err}");
    assert!(err.contains("the embedded default config"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("ls:")).count(), 1, "{err}");
    let other = home.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (ok, _, err) = run(&["ls", "--cache-dir", other.to_str().unwrap()]);
    assert!(ok && err.contains(&format!("reading cache directory {} (--cache-dir)", other.display())), "{err}");

    // A missing config file: its cause, once.
    let (ok, _, err) = run(&["ls", "--config", "/nonexistent/pt.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/pt.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // prune with no lifecycle policy says there is none, rather than "removed 0 images".
    let cfg = home.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[cache]\ndir = \"{}\"\n{}", other.display(), upstream_toml("r.test", "http://127.0.0.1:9", "")),
    )
    .unwrap();
    let (ok, out, err) = run(&["prune", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("no lifecycle policy is configured"), "{out}");
    assert!(!out.contains("removed 0 images"), "{out}");
    assert!(
        err.contains(&format!(
            "prune: pruning cache directory {} ([cache] dir); config {}",
            other.display(),
            cfg.display()
        )),
        "{err}"
    );
    let (ok, out, _) = run(&["prune", "--json", "--config", cfg.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v["policies_configured"] == false, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_suggests_a_second_run_only_when_one_could_help() {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dead_port = DeadPort::new();
    let dead = dead_port.url();
    let ups = format!(
        "{}{}",
        upstream_toml("fake.test", &fake.url(), ""),
        upstream_toml("dead.test", &dead, "connect_timeout = \"2s\"")
    );
    let cfg = Proxy::write_config(dir.path(), "", &ups);
    let prefetch = |image: &str| {
        let mut cmd = pullthrough();
        cmd.args(["prefetch", image, "--config"]).arg(&cfg);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    // The upstream has no such image (404): running again would not help.
    let (ok, err) = prefetch("fake.test/r:missing").await;
    assert!(!ok, "{err}");
    assert!(!err.contains("run again"), "{err}");
    assert!(err.contains("does not have them, or refused access"), "{err}");
    // The upstream is unreachable: it might be back next time, and cached blobs are kept.
    let (ok, err) = prefetch("dead.test/r:v1").await;
    assert!(!ok, "{err}");
    assert!(err.contains("run again to resume"), "{err}");
}

#[test]
fn import_summary_separates_blobs_verified_from_bytes_written() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let built = common::image::manifest(&layout, 71, &[300_000], "amd64");
    common::image::finish_layout(&layout, &[(&built.top, "v1")]);
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("r.test", "http://127.0.0.1:9", ""));
    let import = || {
        let out = pullthrough()
            .args(["import", layout.to_str().unwrap(), "--as", "r.test/app", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        text.lines().last().unwrap().to_string()
    };
    let written = |line: &str| -> f64 {
        // "1 images, 3 blobs verified; 293.1 KiB written to the cache (…)"
        let amount = line.split("; ").nth(1).unwrap().split(" written").next().unwrap();
        let (n, unit) = amount.split_once(' ').unwrap();
        let scale = match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            other => panic!("unit {other}"),
        };
        n.parse::<f64>().unwrap() * scale
    };
    let first = import();
    assert!(first.starts_with("1 images, 3 blobs verified; "), "{first}");
    assert!(written(&first) > 290_000.0, "{first}");
    // Again: the same three blobs verified, but the layer is not written a second time.
    let second = import();
    assert!(second.starts_with("1 images, 3 blobs verified; "), "{second}");
    assert!(written(&second) < 10_000.0, "{second}");
}
