//! The command line as the README promises it to an operator (issue 28): output into a
//! closed pipe ends a command quietly; images are named on the command line and in the
//! configuration as clients name them, and an unknown registry is named as such; `verify`
//! and `import` exit non-zero while anything is left undone, and `import` keeps the good
//! images; commands log only warnings unless asked; refusals say what a valid value looks
//! like.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pullthrough"));
    // The level is the command's own choice unless asked: no RUST_LOG from the caller.
    c.env_remove("RUST_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A configuration in `dir` with its cache at `dir/cache` and `rest` (upstreams, pins).
fn config(dir: &Path, cache_toml: &str, rest: &str) -> PathBuf {
    let cfg = dir.join("pullthrough.toml");
    let cache = dir.join("cache");
    std::fs::write(&cfg, format!("[cache]\ndir = \"{}\"\nmin_free = \"0\"\n{cache_toml}\n{rest}", cache.display()))
        .unwrap();
    cfg
}

fn run(cfg: &Path, args: &[&str]) -> Output {
    bin().args(args).arg("--config").arg(cfg).output().unwrap()
}

/// A docker-registry holding `test/app:v1` and `test/app:v2` (one image) and `test/other:v1`.
struct Lab {
    registry: Registry,
    app: Built,
    other: Built,
    _src: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Lab {
        let registry = Registry::start(None).await;
        let src = tempfile::tempdir().unwrap();
        let app = image::manifest(src.path(), 281, &[20_000], "amd64");
        let other = image::manifest(src.path(), 282, &[30_000], "amd64");
        image::finish_layout(src.path(), &[(&app.top, "a"), (&other.top, "b")]);
        let at = registry.addr.to_string();
        push(src.path(), "a", &at, "test/app:v1", None);
        push(src.path(), "a", &at, "test/app:v2", None);
        push(src.path(), "b", &at, "test/other:v1", None);
        Lab { registry, app, other, _src: src }
    }

    fn host(&self) -> String {
        self.registry.addr.to_string()
    }

    /// The registry as the default upstream, with a prefix.
    fn upstream(&self) -> String {
        upstream_toml(&self.host(), &self.registry.url(), "prefix = \"lab\"\ndefault = true")
    }
}

/// The cached images as `upstream/repository:tag` (one entry per tag), sorted.
fn cached(cfg: &Path) -> Vec<String> {
    let out = run(cfg, &["ls", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            let (up, repo) = (i["upstream"].as_str().unwrap(), i["repository"].as_str().unwrap());
            i["tags"].as_array().unwrap().iter().map(move |t| format!("{up}/{repo}:{}", t.as_str().unwrap()))
        })
        .collect();
    names.sort();
    names
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &upstream_toml("r.test", "http://127.0.0.1:9", ""));
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    let cfg = cfg.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["default-config"],
        &["ls", "--config", cfg],
        &["ls", "--json", "--config", cfg],
        &["check-config", "--config", cfg],
    ];
    for args in commands {
        // The reader is gone before the command starts: its first write meets a closed pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin().args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        // As a shell reports coreutils ended by SIGPIPE.
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_named_on_the_command_line_as_clients_name_them() {
    let lab = Lab::start().await;
    let (host, dir) = (lab.host(), tempfile::tempdir().unwrap());
    let cfg = config(dir.path(), "", &lab.upstream());
    // The registry host (with its port), the prefix, the default upstream.
    for name in [format!("{host}/test/app:v1"), "lab/test/other:v1".to_string(), "test/app:v2".to_string()] {
        let out = run(&cfg, &["prefetch", "-q", &name]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    let want: Vec<String> =
        ["test/app:v1", "test/app:v2", "test/other:v1"].iter().map(|n| format!("{host}/{n}")).collect();
    assert_eq!(cached(&cfg), want);
    let layout = dir.path().join("layout");
    let out = run(&cfg, &["export", "-q", "lab/test/app:v2", "test/other:v1", "--out", layout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A registry nobody configured is named, with what is configured; the upstream is not
    // blamed, nor asked.
    let asked = || lab.registry.proc.log_text().matches("\"GET /v2/").count();
    let before = asked();
    let out_dir = layout.to_str().unwrap();
    for command in ["prefetch", "export"] {
        let args =
            |image| if command == "prefetch" { vec![command, image] } else { vec![command, image, "--out", out_dir] };
        let out = run(&cfg, &args("ghcr.io/org/app:1"));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{command}: {err}");
        let named =
            format!("registry \"ghcr.io\" is not a configured upstream; configured: {host} (prefix lab, default)");
        assert!(err.contains(&named), "{command}: {err}");
        assert!(!err.contains("the upstream does not have"), "{command}: {err}");
        // Uppercase is no repository name: refused as such, not lowercased into a registry.
        let out = run(&cfg, &args("Library/app:v1"));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{command}: {err}");
        assert!(err.contains("\"Library/app\" is not a valid repository name") && err.contains("lowercase"), "{err}");
        assert!(!err.contains("registry \"library\""), "{err}");
    }
    assert_eq!(asked(), before, "the upstream was asked");

    // Pins and [[prefetch]] take the same names; an unknown registry is named with its key.
    let pinned = config(
        dir.path(),
        "pins = [\"lab/test/app:v1\"]",
        &format!("{}\n[[prefetch]]\nimage = \"test/other:v1\"\npin = true\n", lab.upstream()),
    );
    let out = run(&pinned, &["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bad = config(dir.path(), "pins = [\"lab/test/app:v1\", \"ghcr.io/org/app:1\"]", &lab.upstream());
    let out = run(&bad, &["check-config"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cache.pins[1]") && err.contains("registry \"ghcr.io\" is not a configured upstream"),
        "{err}"
    );
}

/// The cache file of `digest` under `cache/blobs`.
fn blob_file(cache: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    let rel = list_files(&cache.join("blobs")).into_iter().find(|f| f.ends_with(hex)).expect("the blob is cached");
    cache.join("blobs").join(rel)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_stays_non_zero_until_the_corruption_is_repaired() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &lab.upstream());
    let out = run(&cfg, &["prefetch", "-q", "test/app:v1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = blob_file(&dir.path().join("cache"), &lab.app.layers[0].digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    // Found and quarantined: non-zero. Run again, nothing repaired: still non-zero.
    for run_no in 1..=2 {
        let out = run(&cfg, &["verify", "-q"]);
        assert_eq!(out.status.code(), Some(1), "run {run_no}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            text(&out.stderr).contains("1 corrupt files were quarantined and are not back"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = run(&cfg, &["verify", "-q", "--repair"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&cfg, &["verify", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_keeps_the_good_images_and_names_the_bad_one() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &lab.upstream());
    let out = run(&cfg, &["prefetch", "-q", "test/other:v1", "test/app:v1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let layout = dir.path().join("layout");
    // The bad image first: the good one after it is imported all the same.
    let out = run(&cfg, &["export", "-q", "test/other:v1", "test/app:v1", "--out", layout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let victim = layout.join("blobs/sha256").join(lab.other.layers[0].digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap(); // may be a hard link into the cache
    bytes[1000] ^= 1;
    std::fs::write(&victim, bytes).unwrap();

    let site_dir = tempfile::tempdir().unwrap();
    let site = config(site_dir.path(), "", &lab.upstream());
    let out = run(&site, &["import", layout.to_str().unwrap()]);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    let host = lab.host();
    assert_eq!(err.matches("does not match its digest").count(), 1, "{err}");
    assert!(err.contains(&format!("1 of 2 images were not imported: {host}/test/other:v1")), "{err}");
    assert!(stdout.contains(&format!("imported {host}/test/app:v1")), "{stdout}");
    assert_eq!(cached(&site), vec![format!("{host}/test/app:v1")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_log_only_warnings_unless_asked() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &lab.upstream());
    let out = run(&cfg, &["prefetch", "-q", "test/app:v1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for args in [&["ls"][..], &["ls", "--json"], &["prefetch", "--json", "test/app:v1"], &["prefetch", "test/app:v1"]] {
        let out = run(&cfg, args);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(!err.contains("INFO") && !err.contains("cache index rebuilt"), "{args:?}: {err}");
    }
    let out = run(&cfg, &["ls", "--verbose"]);
    assert!(text(&out.stderr).contains("cache index rebuilt"), "{}", text(&out.stderr));
}

#[test]
fn refusals_say_what_a_valid_value_looks_like() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream_toml("r.test", "http://127.0.0.1:9", "");
    let cases = [
        ("[server]\nshutdown_grace = 30\n", "write it as a string with a unit, like \"30s\""),
        ("[server]\nlisten = \"localhost:5000\"\n", "for localhost write \"127.0.0.1:5000\""),
        ("[server]\nadmin_listen = \"proxy.internal:5001\"\n", "e.g. \"0.0.0.0:5001\""),
        ("[server]\nidle_timeout = \"1h30\"\n", "did you mean \"1h30m\"?"),
    ];
    for (i, (server, needle)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&f, format!("{server}{up}")).unwrap();
        let out = bin().args(["check-config", "--config"]).arg(&f).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{server:?} accepted");
        assert!(err.contains(needle), "{server:?}: {err}");
    }
    let out = bin().args(["serve", "--listen", "localhost:5000"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("\"127.0.0.1:5000\""), "{}", text(&out.stderr));
    // "M" is MB, as the README says.
    let f = dir.path().join("m.toml");
    std::fs::write(&f, format!("[cache]\nmemory = \"64M\"\n{up}")).unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
