//! deploy/ stays true to the code: the ConfigMap's config validates, the committed
//! hosts.toml files are what `hosts-toml` generates, the dashboard names only metrics that
//! exist and queries every family a running daemon exports, and the Dockerfile builds a lean
//! image that runs as non-root. (Schemas: `deploy/check`, run by .ci/run.)

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::list_files;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pullthrough"))
}

#[test]
fn configmap_config_passes_check_config() {
    for f in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/shared-tier/configmap.yaml",
        "deploy/kubernetes/cluster/configmap.yaml",
    ] {
        check_configmap(f);
    }
}

fn check_configmap(file: &str) {
    let yaml = std::fs::read_to_string(file).unwrap();
    let start = yaml.find("pullthrough.toml: |").expect("configmap holds pullthrough.toml");
    let toml: String = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[[upstream]]"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, toml).unwrap();
    // The cluster token comes from the Secret in the DaemonSet.
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&f)
        .env("PULLTHROUGH_CLUSTER_TOKEN", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shared_tier_daemonset_differs_from_the_plain_one_only_where_it_must() {
    let plain = std::fs::read_to_string("deploy/kubernetes/daemonset.yaml").unwrap();
    let shared = std::fs::read_to_string("deploy/kubernetes/shared-tier/daemonset.yaml").unwrap();
    let body = |s: &str| s.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>();
    let (p, s) = (body(&plain), body(&shared));
    let added: Vec<&String> = s.iter().filter(|l| !p.contains(l)).collect();
    assert!(p.iter().all(|l| s.contains(l)), "the shared-tier DaemonSet dropped lines of the plain one");
    assert!(added.iter().any(|l| l.contains("serviceAccountName: pullthrough")), "{added:?}");
    assert!(added.iter().any(|l| l.contains("name: pullthrough-s3")), "{added:?}");
    let cm = std::fs::read_to_string("deploy/kubernetes/shared-tier/configmap.yaml").unwrap();
    assert!(cm.contains("[shared.s3]"));
}

#[test]
fn cluster_daemonset_advertises_its_pod_address_and_reads_the_token_from_a_secret() {
    let ds = std::fs::read_to_string("deploy/kubernetes/cluster/daemonset.yaml").unwrap();
    assert!(ds.contains("\"--advertise\", \"http://$(POD_IP):5000\""), "advertise from the downward API");
    assert!(ds.contains("fieldPath: status.podIP"));
    assert!(ds.contains("name: pullthrough-cluster"));
    let cm = std::fs::read_to_string("deploy/kubernetes/cluster/configmap.yaml").unwrap();
    let svc = std::fs::read_to_string("deploy/kubernetes/cluster/service-peers.yaml").unwrap();
    assert!(svc.contains("clusterIP: None"), "a headless Service");
    assert!(cm.contains("peers_dns = \"pullthrough-peers.kube-system.svc.cluster.local:5000\""));
}

#[test]
fn committed_hosts_toml_match_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        bin().args(["hosts-toml", "--mirror", "http://127.0.0.1:5000", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let committed = Path::new("deploy/containerd/certs.d");
    let files = list_files(dir.path());
    assert_eq!(files, list_files(committed), "regenerate deploy/containerd/certs.d with `pullthrough hosts-toml`");
    for f in files {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&f)).unwrap(),
            std::fs::read_to_string(committed.join(&f)).unwrap(),
            "{f} is stale"
        );
    }
}

/// Every metric name in the dashboard's panel queries (histogram `_bucket` series named by
/// their family).
fn dashboard_metrics() -> BTreeSet<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/pullthrough-dashboard.json").unwrap()).unwrap();
    let mut used = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("pullthrough_") {
                    used.insert(format!("pullthrough_{}", name.trim_end_matches("_bucket")));
                }
            }
        }
    }
    used
}

#[test]
fn dashboard_names_only_real_metrics() {
    let names = pullthrough::metrics::METRICS.names();
    let used = dashboard_metrics();
    for word in &used {
        assert!(names.contains(word), "dashboard uses unknown metric {word}");
    }
    assert!(used.len() >= 15, "only {} metric names checked", used.len());
}

/// The metric families a running daemon exposes on its admin listener's `/metrics`.
fn scraped_families() -> BTreeSet<String> {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (common::free_port(), common::free_port());
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"{}\"\n\
             min_free = \"0\"\n[[upstream]]\nhost = \"r.test\"\nurl = \"http://127.0.0.1:9\"\n",
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.arg("serve").arg("--config").arg(&cfg);
    let _daemon = common::Proc::spawn(cmd, dir.path().join("log"));
    let started = std::time::Instant::now();
    loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", admin)).and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        if let Ok(text) = got.as_ref() {
            if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200") {
                return text
                    .lines()
                    .filter_map(|l| l.strip_prefix("# TYPE "))
                    .filter_map(|l| l.split(' ').next())
                    .map(str::to_string)
                    .collect();
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no /metrics: {got:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn dashboard_covers_every_metric_family() {
    let used = dashboard_metrics();
    let mut families: BTreeSet<String> = pullthrough::metrics::METRICS.names().into_iter().collect();
    let scraped = scraped_families();
    assert!(scraped.contains("pullthrough_build_info"), "{scraped:?}");
    families.extend(scraped.into_iter().filter(|f| f.starts_with("pullthrough_")));
    let missing: Vec<&String> = families.iter().filter(|f| !used.contains(*f)).collect();
    assert!(missing.is_empty(), "no dashboard panel queries {missing:?}: add panels to deploy/grafana");
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let d = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(d.lines().filter(|l| l.starts_with("FROM ")).count() >= 2);
    let user = d.lines().rev().find(|l| l.starts_with("USER ")).expect("USER set");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(d.contains("--locked"));
    // The final stage: a distroless base (CA certificates, no shell) and only the binary and
    // an empty cache directory copied in; nothing runs in it (there is no shell to run).
    let last = &d[d.rfind("\nFROM ").expect("a final stage")..];
    let base = last.lines().nth(1).unwrap();
    assert!(base.starts_with("FROM gcr.io/distroless/") && base.ends_with(":nonroot"), "{base}");
    assert!(!last.lines().any(|l| l.starts_with("RUN ")), "the final stage runs commands");
    let copies: Vec<&str> = last.lines().filter(|l| l.starts_with("COPY ")).collect();
    assert!(copies.iter().all(|l| l.contains("--from=build ") && l.contains(" /out/")), "{copies:?}");
    assert!(last.contains("ENTRYPOINT [\"/usr/local/bin/pullthrough\"]"));
}

#[test]
fn release_profile_ships_no_debug_info() {
    let toml: toml::Value = std::fs::read_to_string("Cargo.toml").unwrap().parse().unwrap();
    let release = &toml["profile"]["release"];
    // Panics still name file and line: that is in the panic message, not in debug info.
    assert_eq!(release.get("debug").and_then(|v| v.as_bool()), Some(false), "{release:?}");
    assert_eq!(release.get("strip").and_then(|v| v.as_str()), Some("symbols"), "{release:?}");
}
