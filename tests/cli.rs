//! The command line as an operator meets it: the embedded default, config validation, and
//! start-up cleaning of interrupted fills.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

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
    std::fs::write(cache.join("tmp").join("0123.99-1.tmp"), b"partial fill").unwrap();
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
    // The default cache dir is the XDG one, and the interrupted fill is gone.
    assert!(cache.join("blobs").is_dir());
    assert!(list_files(&cache.join("tmp")).is_empty());
    // Default upstreams are configured; anything else is refused.
    let r = get(&format!("{url}/v2/x/manifests/latest?ns=registry.example"), &[]).await.unwrap();
    assert_eq!(r.status, 403);
    drop(proc);
}
