//! The egress proxy, with Debian's squid as the site's proxy. The upstream registry is
//! named `registry.squid.test`, a name only squid resolves (its `hosts_file`): a pull that
//! succeeds went through squid, and squid's access log shows the tunnels. `NO_PROXY`
//! bypasses it; a proxy that is down, or that wants credentials (407), fails the pull with
//! an error that names the proxy and what to set.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image;
use common::moto::{self, Moto};
use common::squid::{Squid, HIDDEN};
use common::*;
use std::process::Command;

/// The lab: a registry with one image, reachable by pullthrough only through squid.
struct Lab {
    registry: Registry,
    img: image::Built,
    _src: tempfile::TempDir,
}

async fn lab(seed: u64, creds: Option<(&str, &str)>) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let yaml = creds.map(|(u, p)| htpasswd_yaml(dir.path(), u, p)).unwrap_or_default();
    let registry = Registry::start_in(dir, &yaml).await;
    let src = tempfile::tempdir().unwrap();
    let img = image::manifest(src.path(), seed, &[300_000, 900_000], "amd64");
    image::finish_layout(src.path(), &[(&img.top, "v1")]);
    let push_creds = creds.map(|(u, p)| format!("{u}:{p}"));
    push(src.path(), "v1", &registry.addr.to_string(), "team/app:v1", push_creds.as_deref());
    Lab { registry, img, _src: src }
}

/// The registry under the name only squid resolves.
fn hidden_url(lab: &Lab) -> String {
    format!("http://{HIDDEN}:{}", lab.registry.addr.port())
}

/// pullthrough with `upstreams` and the proxy environment `env` (everything else removed).
async fn pullthrough(upstreams: &str, env: &[(&str, String)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", upstreams);
    let env = env.to_vec();
    Proxy::launch(dir, &cfg, move |mut c: Command| {
        for v in
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
        {
            c.env_remove(v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_and_containerd_pull_through_squid() {
    let lab = lab(41, None).await;
    let squid = Squid::start(None).await;
    let mut proxy =
        pullthrough(&upstream_toml("lab.test", &hidden_url(&lab), ""), &[("HTTP_PROXY", squid.url())]).await;

    let (_out, got) = skopeo_pull(&format!("docker://{}/lab.test/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));

    // containerd, through pullthrough's generated hosts.toml, on a second image name (a tag
    // pullthrough must ask the upstream about again).
    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    let (ok, _, err) = proxy.cli(&["hosts-toml", "--mirror", &proxy.url(), "--out", hosts.to_str().unwrap()]);
    assert!(ok, "{err}");
    let ctrd = start_containerd(work.path()).await;
    let out = ctrd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "--snapshotter",
        "native",
        "lab.test/team/app:v1",
    ]);
    assert!(
        out.status.success(),
        "ctr pull failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.proc.log_text()
    );

    // Squid logs a tunnel when it closes: end pullthrough, then read the log. Every request
    // pullthrough made to the registry went through a tunnel squid opened (only squid
    // resolves the name); the registry saw each blob once.
    proxy.proc.kill();
    let target = format!("{HIDDEN}:{}", lab.registry.addr.port());
    squid.wait_tunnels(&target, 1).await;
    assert!(squid.tunnels(&target, 200) >= 1, "{}", squid.access_log());
    for blob in &lab.img.layers {
        assert_eq!(lab.registry.count_gets(&format!("/v2/team/app/blobs/{}", blob.digest)), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_proxy_bypasses_the_proxy() {
    let lab = lab(42, None).await;
    let squid = Squid::start(None).await;
    // The registry by its address, which NO_PROXY names: straight there, squid never asked.
    let env = [("HTTP_PROXY", squid.url()), ("NO_PROXY", "example.org,127.0.0.0/8".to_string())];
    let mut proxy = pullthrough(&upstream_toml("lab.test", &lab.registry.url(), ""), &env).await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/lab.test/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    proxy.proc.kill();
    let log = squid.access_log();
    assert!(!log.contains("CONNECT"), "a request went through squid despite NO_PROXY:\n{log}");

    // Without NO_PROXY the same upstream goes through squid (which reaches 127.0.0.1 too).
    let mut proxy = pullthrough(&upstream_toml("lab.test", &lab.registry.url(), ""), &env[..1]).await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/lab.test/team/app:v1", proxy.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    proxy.proc.kill();
    squid.wait_tunnels(&lab.registry.addr.to_string(), 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_is_down_is_named_in_the_error() {
    let lab = lab(43, None).await;
    let dead_port = DeadPort::new();
    let dead = dead_port.url();
    let proxy = pullthrough(&upstream_toml("lab.test", &hidden_url(&lab), ""), &[("http_proxy", dead.clone())]).await;
    let r = get(&format!("{}/v2/lab.test/team/app/manifests/v1", proxy.url()), &[]).await.unwrap();
    assert!(r.status == 502 || r.status == 503, "{} {}", r.status, r.text());
    assert!(r.text().contains(&format!("cannot reach the egress proxy {dead}")), "{}", r.text());

    // doctor (with the same environment) names the proxy in the check and in what to fix.
    let out = Command::new(env!("CARGO_BIN_EXE_pullthrough"))
        .args(["doctor", "--config"])
        .arg(proxy.config_path())
        .env_remove("HTTP_PROXY")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("http_proxy", &dead)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.contains("upstream lab.test")).unwrap_or_default().to_string();
    assert!(line.starts_with("FAIL"), "{stdout}");
    assert!(line.contains(&format!("via the egress proxy {dead}")), "{line}");
    assert!(line.contains(&format!("check that the egress proxy {dead} is up")), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_asking_for_credentials_names_the_setting_then_accepts_them() {
    let lab = lab(44, None).await;
    let squid = Squid::start(Some(("alice", "proxy-pw"))).await;
    let upstream = |proxy: &str| upstream_toml("lab.test", &hidden_url(&lab), proxy);

    // No credentials: squid answers 407; the error names the setting to fix.
    let set = format!("proxy = \"{}\"", squid.url());
    let pt = pullthrough(&upstream(&set), &[]).await;
    let r = get(&format!("{}/v2/lab.test/team/app/manifests/v1", pt.url()), &[]).await.unwrap();
    assert!(r.status == 502 || r.status == 503, "{} {}", r.status, r.text());
    assert!(r.text().contains("407"), "{}", r.text());
    assert!(r.text().contains("proxy_password_env"), "{}", r.text());
    drop(pt);

    // The user in the URL, the password from proxy_password_env: the pull goes through.
    let set = format!("proxy = \"http://alice@127.0.0.1:{}\"\nproxy_password_env = \"PT_PROXY_PW\"", squid.port);
    let pt = pullthrough(&upstream(&set), &[("PT_PROXY_PW", "proxy-pw".to_string())]).await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/lab.test/team/app:v1", pt.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    assert!(!pt.proc.log_text().contains("proxy-pw"), "the proxy password reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn ecr_api_and_registry_through_the_proxy() {
    let lab = lab(45, Some(("AWS", &moto::password()))).await;
    let moto = Moto::start().await;
    let squid = Squid::start(None).await;
    let upstream = upstream_toml(
        "ecr.test",
        &hidden_url(&lab),
        &format!(
            "prefix = \"ecr\"\n[upstream.auth]\nkind = \"ecr\"\nregion = \"us-east-1\"\nregistry_id = \"{}\"\nendpoint_url = \"http://{HIDDEN}:{}\"\n",
            moto::ACCOUNT,
            moto.port
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", &upstream);
    let squid_url = squid.url();
    let mut pt = Proxy::launch(dir, &cfg, move |mut c: Command| {
        moto::credentials(&mut c);
        c.env_remove("NO_PROXY").env_remove("no_proxy").env("HTTP_PROXY", squid_url);
        c
    })
    .await;
    let (_out, got) = skopeo_pull(&format!("docker://{}/ecr/team/app:v1", pt.addr), &[]);
    assert_eq!(got, sorted_unique(&lab.img.all));
    assert!(moto.calls() >= 1, "no GetAuthorizationToken call reached moto");
    pt.proc.kill();
    // Both the ECR API (moto's port) and the registry were reached only through squid.
    squid.wait_tunnels(&format!("{HIDDEN}:{}", lab.registry.addr.port()), 1).await;
    let log = squid.access_log();
    assert!(log.contains(&format!("{HIDDEN}:{}", moto.port)), "the ECR API call did not go through squid:\n{log}");
}
