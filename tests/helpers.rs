//! Docker credential helpers: `credHelpers` and `credsStore` in a Docker config.json run
//! `docker-credential-<name> get` (here a script on the daemon's PATH) against a real
//! docker-registry with htpasswd auth. The answer is kept while the registry accepts it, the
//! helper runs again after a refusal, and a missing helper is named.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::*;
use std::path::Path;

/// A helper script that logs each server it is asked for and answers user `u` with the
/// password in `dir/password`.
fn helper_script(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("docker-credential-pttest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread server\necho \"$server\" >> {log}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"u\",\"Secret\":\"%s\"}}' \"$server\" \"$(cat {pw})\"\n",
            log = dir.join("helper.log").display(),
            pw = dir.join("password").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn helper_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cred_helpers_and_creds_store_run_the_helper_and_again_after_a_refusal() {
    let lab = tempfile::tempdir().unwrap();
    let reg_dir = tempfile::tempdir().unwrap();
    let yaml = htpasswd_yaml(reg_dir.path(), "u", "pw-first-91a");
    let registry = Registry::start_at(reg_dir, free_port(), &yaml).await;
    let layout = lab.path().join("layout");
    let img = common::image::manifest(&layout, 91, &[20_000], "amd64");
    common::image::finish_layout(&layout, &[(&img.top, "v1")]);
    push(&layout, "v1", &registry.addr.to_string(), "team/app:v1", Some("u:pw-first-91a"));

    let bin = helper_script(lab.path());
    std::fs::write(lab.path().join("password"), "pw-first-91a").unwrap();
    let docker_config = |name: &str, json: &str| {
        let p = lab.path().join(name);
        std::fs::write(&p, json).unwrap();
        format!("[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n", p.display())
    };
    let upstreams = [
        upstream_toml(
            "helper.test",
            &registry.url(),
            &docker_config("helpers.json", r#"{"credHelpers": {"helper.test": "pttest"}}"#),
        ),
        upstream_toml(
            "store.test",
            &registry.url(),
            &docker_config("store.json", r#"{"credsStore": "pttest", "auths": {"store.test": {}}}"#),
        ),
        upstream_toml(
            "missing.test",
            &registry.url(),
            &docker_config("missing.json", r#"{"credHelpers": {"missing.test": "not-installed-pt"}}"#),
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstreams);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let proxy = Proxy::launch(dir, &cfg, |mut c| {
        c.env("PATH", path);
        c
    })
    .await;
    let tags = |host: &str| format!("{}/v2/team/app/tags/list?ns={host}", proxy.url());

    // credHelpers: the helper is asked for the registry's host, once; its answer is kept.
    let r = get(&tags("helper.test"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(helper_calls(lab.path()), ["helper.test"]);
    let m = get(&format!("{}/v2/team/app/manifests/v1?ns=helper.test", proxy.url()), &[]).await.unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    let r = get(&tags("helper.test"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(helper_calls(lab.path()).len(), 1, "the helper ran again while its answer was accepted");

    // The registry's password changes (and so does the helper's answer): the kept answer is
    // refused, the helper runs once more, and the request succeeds.
    let (reg_dir, port) = registry.stop();
    let yaml = htpasswd_yaml(reg_dir.path(), "u", "pw-second-7f3a");
    let registry = Registry::start_at(reg_dir, port, &yaml).await;
    std::fs::write(lab.path().join("password"), "pw-second-7f3a").unwrap();
    let r = get(&tags("helper.test"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(helper_calls(lab.path()), ["helper.test", "helper.test"]);

    // credsStore: the same helper, asked for the auths key.
    let r = get(&tags("store.test"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(helper_calls(lab.path()).last().map(String::as_str), Some("store.test"));

    // A helper that is not installed: the pull fails, and the log names it.
    let r = get(&tags("missing.test"), &[]).await.unwrap();
    assert!(r.status >= 400, "{} {}", r.status, r.text());
    wait_log(&proxy.proc, "docker-credential-not-installed-pt is not on PATH").await;
    let log = proxy.proc.log_text();
    assert!(!log.contains("pw-second-7f3a"), "the password reached the log");
    drop(registry);
}
