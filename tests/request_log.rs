//! The request log (issue 12): it names the upstream of forwarded errors and times the whole
//! body, not just the head.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault, Gate};
use common::image::pseudo_random;
use common::*;
use std::time::Duration;

/// The `request` log lines of a text log that contain all of `needles`.
fn request_lines<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(" request ") && needles.iter().all(|n| l.contains(n))).collect()
}

/// The numeric value of `key=` in a text log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .trim_matches('"')
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_log_names_upstreams_of_errors_and_times_the_whole_body() {
    let fake = FakeUpstream::start().await;
    let slow = pseudo_random(24, 100_000);
    let slow_digest = format!("sha256:{}", sha256_hex(&slow));
    // Held half-way for a second the test measures out: the body's time, not the head's.
    let gate = Gate::default();
    fake.set_blob(&slow_digest, slow, Fault::Hold { at: 50_000, gate: gate.clone() });
    let dead_port = DeadPort::new();
    let dead = dead_port.url();
    let proxy = Proxy::start(&format!(
        "{}{}",
        upstream_toml("fake.test", &fake.url(), ""),
        upstream_toml("dead.test", &dead, "connect_timeout = \"1s\"")
    ))
    .await;
    let p = proxy.url();
    assert_eq!(get(&format!("{p}/v2/x/manifests/nope?ns=fake.test"), &[]).await.unwrap().status, 404);
    assert_eq!(get(&format!("{p}/v2/x/manifests/v1?ns=dead.test"), &[]).await.unwrap().status, 503);
    let blob_url = format!("{p}/v2/r/blobs/{slow_digest}?ns=fake.test");
    let pending = tokio::spawn(async move { get_hashed(&blob_url, &[]).await });
    wait_until("the blob to be held half-way", Duration::from_secs(10), async || gate.reached() == 1).await;
    // A sleep as the premise (at least this long between the head and the last byte), not
    // as synchronisation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.open();
    let (status, ..) = pending.await.unwrap().unwrap();
    assert_eq!(status, 200);
    // The line is written when the body ends, just after the client has its last byte.
    let mut log = String::new();
    wait_until("the blob's log line", Duration::from_secs(5), async || {
        log = proxy.proc.log_text();
        !request_lines(&log, &["kind=\"blob\"", "status=200"]).is_empty()
    })
    .await;

    let l404 = request_lines(&log, &["status=404", "nope"]);
    assert!(l404.len() == 1 && l404[0].contains("upstream=\"fake.test\""), "{log}");
    let l503 = request_lines(&log, &["status=503"]);
    assert!(l503.len() == 1 && l503[0].contains("upstream=\"dead.test\""), "{log}");
    let blob = request_lines(&log, &["kind=\"blob\"", "status=200"])[0];
    // At least a second between the head (sent before the gate) and the last byte (after
    // it): `ms` covers it, `headers_ms` does not.
    let (headers_ms, ms) = (field(blob, "headers_ms"), field(blob, "ms"));
    assert!(ms >= 1000 && headers_ms <= ms - 1000, "headers_ms={headers_ms} ms={ms}: {blob}");
    assert_eq!(field(blob, "bytes"), 100_000, "{blob}");
    assert!(blob.contains("body=\"complete\""), "{blob}");
}
