//! The README holds to the product (issue 28): every metric family it names is in a fresh
//! daemon's `/metrics`, and /metrics has none it does not name; its example configuration
//! agrees with the embedded default wherever both set a key.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::*;
use std::collections::BTreeSet;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Every `pullthrough_…` name the README mentions.
fn readme_metrics() -> BTreeSet<String> {
    readme()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pullthrough_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_metric_families_are_exactly_those_of_a_fresh_daemon() {
    let proxy = Proxy::start(&upstream_toml("r.test", "http://127.0.0.1:9", "")).await;
    let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await.unwrap().text();
    let scraped: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let documented = readme_metrics();
    assert!(documented.len() >= 40, "{documented:?}");
    let missing: Vec<_> = documented.difference(&scraped).collect();
    let undocumented: Vec<_> = scraped.difference(&documented).collect();
    assert!(missing.is_empty(), "documented, absent from /metrics at start: {missing:?}");
    assert!(undocumented.is_empty(), "in /metrics, not in the README: {undocumented:?}");
    // Zero-valued from the start where the label values are known: the configured upstream.
    for series in [
        "pullthrough_stale_manifest_serves_total{upstream=\"r.test\"} 0",
        "pullthrough_fill_verification_failures_total{upstream=\"r.test\"} 0",
        "pullthrough_corruptions_found_total{found_by=\"scrub\"} 0",
        "pullthrough_peer_requests_total{direction=\"made\",result=\"failed_over\"} 0",
    ] {
        assert!(text.lines().any(|l| l == series), "no {series:?} in\n{text}");
    }
}

/// The README's example configuration (the first TOML block under "Configuration").
fn readme_config() -> toml::Value {
    let text = readme();
    let section = text.find("\n## Configuration\n").unwrap();
    let start = section + text[section..].find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + text[start..].find("```").unwrap();
    text[start..end].parse().unwrap()
}

#[test]
fn the_readmes_example_configuration_agrees_with_the_embedded_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullthrough")).arg("default-config").output().unwrap();
    let default: toml::Value = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    let example = readme_config();
    let docker_hub = |c: &toml::Value| {
        c["upstream"].as_array().unwrap().iter().find(|u| u["host"].as_str() == Some("docker.io")).unwrap().clone()
    };
    let mut compared = 0;
    for (a, b) in [(&example["server"], &default["server"]), (&docker_hub(&example), &docker_hub(&default))] {
        for (key, value) in a.as_table().unwrap() {
            if let Some(d) = b.get(key) {
                assert_eq!(value, d, "README and config/default.toml disagree on {key}");
                compared += 1;
            }
        }
    }
    assert!(compared >= 6, "only {compared} keys compared");
}
