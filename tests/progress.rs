//! Progress of the long commands as an operator and a script see it: indicatif bars on a
//! terminal (a pseudo-terminal from util-linux `script`), plain lines when stderr is a pipe,
//! JSON lines with `--json` whose byte counts are what was fetched, and nothing with
//! `--quiet`. Images come from a real docker-registry; only the slow transfer that makes
//! periodic lines certain comes from the fake upstream.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::{pseudo_random, Built};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pullthrough");

/// A docker-registry holding `lab.test/test/big:v1` (an 8 MiB and a 4 MiB layer) and
/// `lab.test/test/small:v1`, and a config for it; the built images.
struct Lab {
    _registry: Registry,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    big: Built,
    small: Built,
}

impl Lab {
    async fn start() -> Lab {
        let registry = Registry::start(None).await;
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        let big = common::image::manifest(&layout, 91, &[8 << 20, 4 << 20], "amd64");
        let small = common::image::manifest(&layout, 92, &[100_000], "amd64");
        common::image::finish_layout(&layout, &[(&big.top, "big"), (&small.top, "small")]);
        let host = registry.addr.to_string();
        push(&layout, "big", &host, "test/big:v1", None);
        push(&layout, "small", &host, "test/small:v1", None);
        let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("lab.test", &registry.url(), ""));
        Lab { _registry: registry, dir, cfg, big, small }
    }

    /// A config like this one's on a cache of its own (for import into a fresh cache).
    fn second_config(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let text = std::fs::read_to_string(&self.cfg).unwrap();
        let cfg = d.join("pullthrough.toml");
        std::fs::write(
            &cfg,
            text.replace(&self.dir.path().join("cache").display().to_string(), &d.join("cache").display().to_string()),
        )
        .unwrap();
        cfg
    }
}

/// The bytes of an image's config and layers (every blob but the manifest): what a
/// prefetch into an empty cache fetches.
fn blob_bytes(lab: &Lab, b: &Built) -> u64 {
    let blobs = lab.dir.path().join("layout").join("blobs").join("sha256");
    b.all
        .iter()
        .filter(|d| **d != b.top.digest)
        .map(|d| std::fs::metadata(blobs.join(d.trim_start_matches("sha256:"))).unwrap().len())
        .sum()
}

/// Run the binary with `args` (then `--config cfg`), stdout and stderr piped, bounded.
fn run(args: &[&str], cfg: &Path) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(120))
}

/// The same under a pseudo-terminal: `script` runs it with stdout and stderr on a pty and
/// copies what the terminal got (both streams, escape codes and all) to its own stdout.
fn run_on_terminal(args: &[&str], cfg: &Path) -> String {
    let mut cmd = vec![BIN.to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd.push("--config".into());
    cmd.push(cfg.display().to_string());
    let line = cmd.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let child = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        // A terminal of a known size, and one that is not "dumb".
        .env("TERM", "xterm")
        .env("COLUMNS", "120")
        .env("LINES", "40")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run script (util-linux): {e}"));
    let out = wait_bounded(child, Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?} on a terminal failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Wait for a child at most `limit` (reading its output meanwhile), killing it by its
/// PID past that.
fn wait_bounded(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("still running after {limit:?}");
        }
    }
}

/// indicatif's bar: 30 cells of `=`, `>` and space between brackets.
fn has_bar(text: &str) -> bool {
    text.match_indices('[').any(|(i, _)| {
        let cells = text[i + 1..].chars().take(31).collect::<Vec<_>>();
        cells.len() == 31 && cells[30] == ']' && cells[..30].iter().all(|c| matches!(c, '=' | '>' | ' '))
    })
}

/// A bare carriage return (not the pty's `\r\n`): a line drawn over.
fn redraws(text: &str) -> bool {
    text.as_bytes().windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{text}")))
        .collect()
}

fn events<'a>(lines: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|v| v["event"] == event).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_gets_bars_that_redraw_with_rate_and_eta() {
    let lab = Lab::start().await;
    let images = ["lab.test/test/big:v1", "lab.test/test/small:v1"];
    let out = run_on_terminal(&["prefetch", images[0], images[1]], &lab.cfg);
    assert!(out.contains("ETA"), "no ETA on the terminal:\n{out:?}");
    assert!(out.contains("[1/2] lab.test/test/big:v1") && out.contains("[2/2] lab.test/test/small:v1"), "{out:?}");
    assert!(has_bar(&out), "no bar drawn:\n{out:?}");
    assert!(out.contains("MiB/s") || out.contains("KiB/s"), "no rate:\n{out:?}");
    assert!(redraws(&out) && out.contains("\x1b["), "the bars were not redrawn in place:\n{out:?}");
    // The results are there too, once each, bars or not.
    assert_eq!(out.matches("prefetched 2 of 2 images").count(), 1, "{out:?}");

    // export to a tar (the tar is an item with a size) and import it into another cache.
    let tar = lab.dir.path().join("images.tar");
    let out = run_on_terminal(&["export", images[0], images[1], "--out", tar.to_str().unwrap()], &lab.cfg);
    assert!(out.contains("ETA") && redraws(&out), "export showed no bars:\n{out:?}");
    assert!(out.contains("exported 2 images"), "{out:?}");
    let site = lab.second_config("site");
    let out = run_on_terminal(&["import", tar.to_str().unwrap()], &site);
    assert!(out.contains("ETA") && redraws(&out), "import showed no bars:\n{out:?}");
    assert!(out.contains("[2/3] lab.test/test/big:v1"), "the tar is the first of three items:\n{out:?}");
    assert!(out.contains("2 images, 7 blobs verified"), "{out:?}");

    // --quiet on a terminal: no bars, no escape codes, no per-image lines; the summary.
    let quiet = lab.second_config("quiet");
    let out = run_on_terminal(&["prefetch", "--quiet", images[0]], &quiet);
    assert!(!out.contains("ETA") && !out.contains("\x1b[") && !redraws(&out), "--quiet drew progress:\n{out:?}");
    assert!(!out.contains("[1/1]"), "{out:?}");
    assert!(out.contains("prefetched 1 of 1 images"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_gets_plain_lines_at_each_images_start_and_end() {
    let lab = Lab::start().await;
    let out = run(&["prefetch", "lab.test/test/big:v1", "lab.test/test/small:v1"], &lab.cfg);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "prefetch: [1/2] lab.test/test/big:v1: started",
        "prefetch: [1/2] lab.test/test/big:v1: done, 12.",
        "prefetch: [2/2] lab.test/test/small:v1: started",
        "prefetch: [2/2] lab.test/test/small:v1: done, ",
    ] {
        assert!(stderr.contains(want), "no {want:?} in\n{stderr}");
    }
    assert!(!stderr.contains('\x1b') && !stderr.contains('\r'), "escape codes in a pipe:\n{stderr:?}");
    assert!(!stdout.contains('\x1b') && !stdout.contains('\r'), "{stdout:?}");
    // Results on stdout, progress on stderr.
    assert!(stdout.contains("[1/2] lab.test/test/big:v1 sha256:"), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("prefetched 2 of 2 images, 12."), "{stdout}");
    assert!(!stdout.contains("started"), "{stdout}");

    // import from a directory: the same kind of lines.
    let dir = lab.dir.path().join("export");
    let out = run(&["export", "lab.test/test/small:v1", "--out", dir.to_str().unwrap()], &lab.cfg);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("export: [1/1] lab.test/test/small:v1: done, "), "{}", text(&out.stderr));
    let out = run(&["import", dir.to_str().unwrap()], &lab.second_config("site"));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("import: [1/1] lab.test/test/small:v1: done, "), "{stderr}");
    assert!(!stderr.contains('\x1b') && !stderr.contains('\r'), "{stderr:?}");
}

/// Periodic lines need a transfer that lasts: the fake upstream sends the layer slowly
/// (no real registry does on demand).
#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_gets_a_progress_line_every_interval_during_a_slow_transfer() {
    let fake = FakeUpstream::start().await;
    let layer = pseudo_random(93, 1 << 20);
    let layer_d = format!("sha256:{}", sha256_hex(&layer));
    fake.set_blob(&layer_d, layer, Fault::Slow { chunk: 64 << 10, delay_ms: 60 });
    let config = b"{}".to_vec();
    let config_d = format!("sha256:{}", sha256_hex(&config));
    fake.set_blob(&config_d, config, Fault::Good);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": 1 << 20}],
    })
    .to_string();
    let m_d = format!("sha256:{}", sha256_hex(m.as_bytes()));
    fake.set_blob(&m_d, m.into_bytes(), Fault::Good);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("fake.test", &fake.url(), ""));
    let image = format!("fake.test/r@{m_d}");
    let out = run(&["prefetch", "--progress-interval", "100ms", &image], &cfg);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // ~1 s of transfer: several lines with the bytes so far, the share, the rate and an ETA.
    let periodic: Vec<&str> =
        stderr.lines().filter(|l| l.starts_with("prefetch: [1/1]") && l.contains("ETA")).collect();
    assert!(periodic.len() >= 3, "too few periodic lines:\n{stderr}");
    assert!(periodic.iter().any(|l| l.contains("/1.00 MiB (") && l.contains("%)") && l.contains("/s;")), "{stderr}");
    assert!(!stderr.contains('\x1b') && !stderr.contains('\r'), "{stderr:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_parse_and_count_the_bytes_fetched_and_imported() {
    let lab = Lab::start().await;
    let (big, small) = (blob_bytes(&lab, &lab.big), blob_bytes(&lab, &lab.small));
    let out = run(
        &["prefetch", "--json", "--progress-interval", "20ms", "lab.test/test/big:v1", "lab.test/test/small:v1"],
        &lab.cfg,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let known = ["plan", "start", "progress", "done", "failed", "result", "summary"];
    assert!(lines.iter().all(|v| known.contains(&v["event"].as_str().unwrap_or(""))), "{lines:?}");
    assert_eq!(events(&lines, "plan")[0]["items"], 2);
    let done = events(&lines, "done");
    assert_eq!(done.iter().map(|v| v["bytes"].as_u64().unwrap()).collect::<Vec<_>>(), [big, small], "{lines:?}");
    // The results carry the core's own count of fetched bytes: the same.
    let results = events(&lines, "result");
    let fetched: Vec<u64> = results.iter().map(|v| v["report"]["fetched_bytes"].as_u64().unwrap()).collect();
    assert_eq!(fetched, [big, small], "{lines:?}");
    let summary = events(&lines, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0]["bytes"].as_u64(), summary[0]["failed"].as_u64()), (Some(big + small), Some(0)));
    assert_eq!(lines.last().unwrap()["event"], "summary", "the summary comes last");
    // Progress never counts past what the image has.
    for p in events(&lines, "progress") {
        assert!(p["bytes"].as_u64().unwrap_or(0) <= p["total"].as_u64().unwrap_or(u64::MAX), "{p}");
    }
    assert!(text(&out.stderr).lines().all(|l| !l.contains("started")), "progress went to stderr too");

    // Again: everything is cached, nothing is fetched.
    let out = run(&["prefetch", "--json", "lab.test/test/big:v1"], &lab.cfg);
    let lines = json_lines(&out.stdout);
    assert_eq!(events(&lines, "summary")[0]["bytes"], 0, "{lines:?}");

    // Export, then import into an empty cache: every blob read to verify, and again to
    // write; written_bytes is every blob, manifests included.
    let dir = lab.dir.path().join("export");
    let out = run(
        &["export", "--json", "lab.test/test/big:v1", "lab.test/test/small:v1", "--out", dir.to_str().unwrap()],
        &lab.cfg,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(events(&lines, "summary")[0]["blobs"], 7, "{lines:?}");
    let manifests = lab.big.top.size + lab.small.top.size;
    assert_eq!(events(&lines, "summary")[0]["bytes"], big + small + manifests, "{lines:?}");
    let out = run(&["import", "--json", dir.to_str().unwrap()], &lab.second_config("site"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let summary = events(&lines, "summary")[0];
    assert_eq!(summary["written_bytes"], big + small + manifests, "{lines:?}");
    assert_eq!(summary["bytes"], 2 * (big + small) + manifests, "{lines:?}");
    assert_eq!(events(&lines, "result").len(), 2, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_prints_errors_and_the_summary_only() {
    let lab = Lab::start().await;
    let out = run(&["prefetch", "--quiet", "lab.test/test/big:v1", "lab.test/test/small:v1"], &lab.cfg);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("prefetched 2 of 2 images, 12."), "{stdout}");
    // stderr: only the line saying which cache and config (every command has it).
    assert!(stderr.lines().all(|l| l.starts_with("prefetch: writing to cache directory")), "{stderr}");

    let dir = lab.dir.path().join("export");
    let out = run(&["export", "-q", "lab.test/test/small:v1", "--out", dir.to_str().unwrap()], &lab.cfg);
    assert_eq!(text(&out.stdout).lines().count(), 1, "{}", text(&out.stdout));
    assert!(!text(&out.stderr).contains("[1/1]"), "{}", text(&out.stderr));
    let out = run(&["import", "-q", dir.to_str().unwrap()], &lab.second_config("site"));
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>().len(), 1, "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("imported lab.test"), "{}", text(&out.stdout));

    // An error still shows, naming the image.
    let out = run(&["prefetch", "--quiet", "lab.test/test/small:v1", "lab.test/test/nope:v1"], &lab.cfg);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("[2/2] lab.test/test/nope:v1: "), "{stderr}");
    assert!(!stderr.contains("[1/2]"), "{stderr}");
    assert!(text(&out.stdout).starts_with("prefetched 1 of 2 images"), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_import_says_why_once_and_json_ends_with_a_failed_line() {
    let lab = Lab::start().await;
    let out = run(&["prefetch", "-q", "lab.test/test/small:v1"], &lab.cfg);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = lab.dir.path().join("export");
    let out = run(&["export", "-q", "lab.test/test/small:v1", "--out", dir.to_str().unwrap()], &lab.cfg);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One bit of the layer flipped: the import stops, and says so.
    let layer = dir.join("blobs/sha256").join(lab.small.layers[0].digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&layer).unwrap();
    std::fs::remove_file(&layer).unwrap(); // a hard link to the cache's copy: leave that alone
    bytes[1000] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let site = lab.second_config("site");
    let out = run(&["import", dir.to_str().unwrap()], &site);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("does not match its digest").count(), 1, "{stderr}");
    let out = run(&["import", "--json", dir.to_str().unwrap()], &site);
    assert!(!out.status.success());
    let lines = json_lines(&out.stdout);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "failed", "{lines:?}");
    assert!(last["error"].as_str().unwrap().contains("does not match its digest"), "{last}");
    assert!(events(&lines, "summary").is_empty(), "{lines:?}");
}
