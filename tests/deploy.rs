//! deploy/ stays true to the code: the ConfigMap's config validates, the committed
//! hosts.toml files are what `hosts-toml` generates, the dashboard only names metrics that
//! exist, and the Dockerfile runs as non-root. (Schemas: `deploy/check`, run by .ci/run.)

mod common;

use common::list_files;
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

#[test]
fn dashboard_names_only_real_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/pullthrough-dashboard.json").unwrap()).unwrap();
    let names = pullthrough::metrics::METRICS.names();
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("pullthrough_") {
                    let base = format!("pullthrough_{}", name.trim_end_matches("_bucket"));
                    assert!(names.contains(&base), "dashboard uses unknown metric {word}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references checked");
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let d = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(d.lines().filter(|l| l.starts_with("FROM ")).count() >= 2);
    let user = d.lines().rev().find(|l| l.starts_with("USER ")).expect("USER set");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(d.contains("--locked"));
}
