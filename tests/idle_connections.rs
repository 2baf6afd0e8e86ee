//! Idle and silent connections (issue 12): closed after `[server] idle_timeout`, over
//! HTTP/1.1 and HTTP/2, while a transfer slower than the timeout is not idle and completes.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy with extra `[server]` lines and the given `[access]`/`[[upstream]]` sections.
async fn proxy_with_server(server_toml: &str, rest_toml: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Proxy::write_config(dir.path(), "", rest_toml);
    let text = std::fs::read_to_string(&cfg).unwrap().replacen("[cache]", &format!("{server_toml}\n[cache]"), 1);
    std::fs::write(&cfg, text).unwrap();
    Proxy::launch(dir, &cfg, |c| c).await
}

/// Read until the peer closes (EOF or reset), bounded by `limit`: the time it took, or
/// `None` if the connection was still open at the limit.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_idle_connections_are_closed_but_slow_transfers_are_not() {
    let fake = FakeUpstream::start().await;
    // 10 pieces 300 ms apart: about 3 s, longer than the idle timeout.
    let slow = pseudo_random(21, 200_000);
    let slow_digest = format!("sha256:{}", sha256_hex(&slow));
    fake.set_blob(&slow_digest, slow, Fault::Slow { chunk: 20_000, delay_ms: 300 });
    let proxy = proxy_with_server(
        "idle_timeout = \"2s\"",
        &format!("[access]\nmax_connections_per_client = 5\n{}", upstream_toml("fake.test", &fake.url(), "")),
    )
    .await;

    // Five sockets that never send a byte take every slot of this client address...
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Accepted after the five (the listen queue is first in, first out).
    let mut locked_out = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _ = locked_out.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), locked_out.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "a sixth connection was served while five were held");

    // ...until the idle timeout closes them: read sees EOF, and a new client gets in.
    for s in &mut silent {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        assert!(closed_within(s, left).await.is_some(), "a silent connection was still open after 10 s");
    }
    assert!(opened.elapsed() >= Duration::from_millis(1500), "closed before the idle timeout");
    wait_until(
        "a new client to be served",
        Duration::from_secs(5),
        async || matches!(get(&format!("{}/v2/", proxy.url()), &[]).await, Ok(r) if r.status == 200),
    )
    .await;

    // An HTTP/1.1 keep-alive connection idle after a request is closed too (hyper alone
    // would wait 30 s).
    let mut ka = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    ka.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), ka.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = closed_within(&mut ka, Duration::from_secs(8)).await.expect("idle keep-alive connection left open");
    assert!(t >= Duration::from_millis(1500), "keep-alive connection closed after {t:?}");

    // An HTTP/2 (h2c) connection that sends its preface and settings, then nothing.
    let mut h2 = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    assert!(closed_within(&mut h2, Duration::from_secs(8)).await.is_some(), "idle HTTP/2 connection left open");

    // A transfer that takes longer than the idle timeout is not idle, and completes.
    let (status, _, hex) =
        get_hashed(&format!("{}/v2/r/blobs/{slow_digest}?ns=fake.test", proxy.url()), &[]).await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, slow_digest));
    wait_log(&proxy.proc, "closing an idle connection").await;
}
