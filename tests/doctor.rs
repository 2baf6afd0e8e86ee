//! `pullthrough doctor` against real parts: Debian's docker-registry as the upstream (open,
//! and behind a token server), a dead upstream, and cache directories it cannot use. Each
//! check is one line, `ok`/`FAIL`, and the exit code says whether any failed.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::token::TokenServer;
use common::*;
use std::path::Path;
use std::process::Command;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one line about `what` (e.g. "upstream live.test").
    fn line(&self, what: &str) -> &str {
        let needle = format!("  {what}");
        self.stdout.lines().find(|l| l.contains(&needle)).unwrap_or_else(|| panic!("no line for {what}:\n{self:?}"))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit ok: {}\nstdout:\n{}\nstderr:\n{}", self.ok, self.stdout, self.stderr)
    }
}

/// Run `pullthrough doctor` (off the async threads: a token server may be running on them).
async fn doctor(config: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullthrough"));
    cmd.arg("doctor").arg("--config").arg(config).args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_on_a_real_registry_and_names_a_dead_upstream() {
    let registry = Registry::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let live = upstream_toml("live.test", &registry.url(), "");
    let cfg = Proxy::write_config(dir.path(), "", &live);

    let run = doctor(&cfg, &[]).await;
    assert!(run.ok, "{run:?}");
    assert!(run.line("config").starts_with("ok "), "{run:?}");
    let cache = dir.path().join("cache");
    // Not there yet: serve would create it, in a directory that takes writes.
    assert!(run.line("cache directory").starts_with("ok "), "{run:?}");
    assert!(run.line("cache directory").contains("does not exist yet"), "{run:?}");
    assert!(run.line("free space at").starts_with("ok "), "{run:?}");
    let up = run.line("upstream live.test");
    assert!(up.starts_with("ok ") && up.contains("GET /v2/ answered 200"), "{up}");
    assert!(!run.stdout.contains("FAIL"), "{run:?}");
    assert!(run.stdout.contains("checks passed"), "{run:?}");
    // Says what it checks, and created nothing.
    assert!(run.stderr.contains(&format!("doctor: checking cache directory {}", cache.display())), "{run:?}");
    assert!(!cache.exists());
    assert!(registry.count_gets("/v2/") >= 1, "the registry was not asked");

    // A second upstream nothing listens for.
    let dead_url = format!("http://127.0.0.1:{}", free_port());
    let both = format!("{live}{}", upstream_toml("dead.test", &dead_url, "connect_timeout = \"2s\""));
    let cfg = Proxy::write_config(dir.path(), "", &both);
    let run = doctor(&cfg, &[]).await;
    assert!(!run.ok, "doctor passed with a dead upstream: {run:?}");
    let dead = run.line("upstream dead.test");
    assert!(dead.starts_with("FAIL") && dead.contains(&dead_url), "{dead}");
    assert!(dead.contains("cannot connect") && dead.contains("fix: check url"), "{dead}");
    assert!(run.line("upstream live.test").starts_with("ok "), "{run:?}");
    assert!(run.stdout.contains("1 of "), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_the_token_flow_of_a_bearer_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path()).await;
    let auth = tokens.auth();
    let registry = Registry::start(Some(&auth)).await;
    let cfg = Proxy::write_config(dir.path(), "", &upstream_toml("tok.test", &registry.url(), ""));

    // The registry answers /v2/ with a challenge; doctor fetches a token and is let in.
    let run = doctor(&cfg, &[]).await;
    assert!(run.ok, "{run:?}");
    assert!(run.line("upstream tok.test").contains("answered 200"), "{run:?}");
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1, "no token was fetched");

    // A token endpoint that fails: doctor says so, and what to look at.
    tokens.fail_with.store(500, std::sync::atomic::Ordering::SeqCst);
    let run = doctor(&cfg, &[]).await;
    assert!(!run.ok, "{run:?}");
    let line = run.line("upstream tok.test");
    assert!(line.starts_with("FAIL") && line.contains("token endpoint"), "{line}");
    assert!(line.contains("fix: the registry's token endpoint failed"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fails_on_a_cache_directory_it_cannot_use_and_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    // The upstream is not the point here: offline mode skips it. `min_free` is explicit:
    // the default (10 % of the filesystem) depends on the machine running the test.
    let offline = |min_free: &str| {
        format!(
            "[server]\noffline = true\n[cache]\ndir = \"{}\"\nmin_free = \"{min_free}\"\n{}",
            dir.path().join("cache").display(),
            upstream_toml("r.test", "http://127.0.0.1:9", "")
        )
    };
    let cfg = dir.path().join("offline.toml");
    std::fs::write(&cfg, offline("0")).unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    let run = doctor(&cfg, &[]).await;
    assert!(run.ok, "{run:?}");
    assert!(run.line("upstream r.test").starts_with("skip"), "{run:?}");
    assert!(run.line("cache directory").contains("takes writes"), "{run:?}");
    assert!(run.line("free space at").starts_with("ok "), "{run:?}");

    // No filesystem has all of itself free: asking for 100 % fails, with the fix named.
    let greedy = dir.path().join("greedy.toml");
    std::fs::write(&greedy, offline("100%")).unwrap();
    let run = doctor(&greedy, &[]).await;
    assert!(!run.ok, "{run:?}");
    let line = run.line("free space at");
    assert!(line.starts_with("FAIL") && line.contains("lower [cache] min_free"), "{line}");

    // A file where the directory should be, and a directory below such a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for (cache_dir, says) in [(file.clone(), "is not a directory"), (file.join("cache"), "cannot be created")] {
        let run = doctor(&cfg, &["--cache-dir", cache_dir.to_str().unwrap()]).await;
        assert!(!run.ok, "{run:?}");
        let line = run.line("cache directory");
        assert!(line.starts_with("FAIL") && line.contains(says), "{line}");
        assert!(line.contains("fix: make it a directory"), "{line}");
    }

    // A directory without write permission (root writes anyway: then this case is moot).
    use std::os::unix::fs::PermissionsExt as _;
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_err() {
        let run = doctor(&cfg, &["--cache-dir", ro.to_str().unwrap()]).await;
        assert!(!run.ok, "{run:?}");
        assert!(run.line("cache directory").contains("cannot write to it"), "{run:?}");
    }

    // An invalid config: named, and nothing else is checked.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[upstream]]\nhost = \"r.io\"\nurl = \"ftp://r.io\"\n").unwrap();
    let run = doctor(&bad, &[]).await;
    assert!(!run.ok, "{run:?}");
    let line = run.line("config");
    assert!(line.starts_with("FAIL") && line.contains("upstream[0].url"), "{line}");
    assert!(!run.stdout.contains("upstream r.io"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_ecr_tokens_the_shared_tier_and_cluster_peers() {
    // moto serves both ECR's GetAuthorizationToken and S3; the registry takes its password.
    let moto = common::moto::Moto::start().await;
    let bucket = "pt-doctor";
    let made = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", &format!("{}/{bucket}", moto.url())])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&made.stdout), "200", "cannot create the moto bucket");
    let reg_dir = tempfile::tempdir().unwrap();
    let yaml = htpasswd_yaml(reg_dir.path(), "AWS", &common::moto::password());
    let registry = Registry::start_at(reg_dir, free_port(), &yaml).await;
    // A live peer (a pullthrough daemon) and a dead one.
    let peer = Proxy::start(&upstream_toml("r.test", "http://127.0.0.1:9", "")).await;
    let dead_peer = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = |s3_endpoint: &str| {
        let path = dir.path().join("pullthrough.toml");
        std::fs::write(
            &path,
            format!(
                "[cache]\ndir = \"{cache}\"\nmin_free = \"0\"\n\
                 [shared.s3]\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint_url = \"{s3_endpoint}\"\n\
                 path_style = true\ntimeout = \"2s\"\n\
                 [cluster]\nadvertise = \"http://127.0.0.1:1\"\npeers = [\"{live}\", \"{dead_peer}\", \"http://127.0.0.1:1\"]\n\
                 timeout = \"2s\"\n{up}",
                cache = dir.path().join("cache").display(),
                live = peer.url(),
                up = upstream_toml(
                    "ecr.test",
                    &registry.url(),
                    &format!(
                        "[upstream.auth]\nkind = \"ecr\"\nregion = \"us-east-1\"\nregistry_id = \"{}\"\nendpoint_url = \"{}\"\n",
                        common::moto::ACCOUNT,
                        moto.url()
                    )
                ),
            ),
        )
        .unwrap();
        path
    };
    let run = |cfg: std::path::PathBuf| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullthrough"));
        cmd.arg("doctor").arg("--config").arg(cfg);
        common::moto::credentials(&mut cmd);
        cmd.env("PULLTHROUGH_CLUSTER_TOKEN", "0123456789abcdef0123456789abcdef");
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            Run {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };

    let run1 = run(config(&moto.url())).await;
    assert!(run1.line("ECR token for ecr.test").starts_with("ok "), "{run1:?}");
    let up = run1.line("upstream ecr.test");
    assert!(up.starts_with("ok ") && up.contains("with an ECR token"), "{up}");
    assert!(run1.line("shared tier s3://pt-doctor/").starts_with("ok "), "{run1:?}");
    assert!(run1.line(&format!("cluster peer {}", peer.url())).starts_with("ok "), "{run1:?}");
    // This node itself is not asked.
    assert!(!run1.stdout.contains("cluster peer http://127.0.0.1:1:"), "{run1:?}");
    let dead = run1.line(&format!("cluster peer {dead_peer}"));
    assert!(dead.starts_with("FAIL") && dead.contains("fix: check that the peer runs"), "{dead}");
    assert!(!run1.ok && run1.stdout.contains("1 of "), "only the dead peer should fail: {run1:?}");

    // A shared tier nothing answers for.
    let run2 = run(config(&format!("http://127.0.0.1:{}", free_port()))).await;
    let shared = run2.line("shared tier s3://pt-doctor/");
    assert!(shared.starts_with("FAIL") && shared.contains("fix: check [shared.s3]"), "{shared}");
    assert!(!run2.ok);
}
