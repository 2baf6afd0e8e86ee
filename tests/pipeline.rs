//! The blob pipeline (issue 14): followers of a running fill take its chunks from memory, a
//! follower that falls behind the in-memory window continues from the temp file, one
//! upstream GET serves them all; the uncached relay reads through the same verifying reader.
//! The fake upstream supplies the slowness and the bad bytes no real registry produces on
//! demand.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// A client with a 64 KiB receive buffer that reads the response head and its first bytes,
/// then stops reading until `resume()` is true, then reads the rest: the proxy's stream for
/// it falls behind the fill. Returns (status line, body length, sha256 hex).
async fn lagging_get(addr: std::net::SocketAddr, path: &str, resume: impl Fn() -> bool) -> (String, u64, String) {
    use sha2::Digest as _;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: pt\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let status = String::from_utf8_lossy(&head[..head.iter().position(|b| *b == b'\r').unwrap()]).into_owned();
    let mut h = sha2::Sha256::new();
    h.update(&head[body_start..]);
    let mut n = (head.len() - body_start) as u64;
    let started = Instant::now();
    while !resume() {
        assert!(started.elapsed() < Duration::from_secs(60), "the other client never got far enough");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        let got = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.expect("body stalled").unwrap();
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    (status, n, h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_take_a_running_fill_from_memory_and_a_laggard_from_the_temp_file() {
    const SIZE: usize = 32 * MIB;
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(14, SIZE);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    // About 2 s for the whole blob: the fill is still running while the laggard catches up.
    fake.set_blob(&digest, bytes, Fault::Slow { chunk: 256 * 1024, delay_ms: 15 });
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "read_timeout = \"10s\"")).await;
    let path = format!("/v2/some/repo/blobs/{digest}?ns=fake.test");

    // The fast client streams and hashes, noting how far it got and when its first bytes came.
    let fast_got = Arc::new(AtomicU64::new(0));
    let fast = tokio::spawn({
        let (url, got) = (format!("{}{path}", proxy.url()), fast_got.clone());
        async move {
            use http_body_util::BodyExt;
            use sha2::Digest as _;
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let started = Instant::now();
            let resp = client.get(url.parse().unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let (mut h, mut first) = (sha2::Sha256::new(), None);
            while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame()).await.unwrap() {
                if let Ok(d) = frame.unwrap().into_data() {
                    first.get_or_insert(started.elapsed());
                    h.update(&d);
                    got.fetch_add(d.len() as u64, Ordering::SeqCst);
                }
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            (status, hex, first.unwrap(), started.elapsed())
        }
    });
    // The laggard joins at once, then stops reading until the fast one is 7/8 through.
    wait_until("the fill to start", Duration::from_secs(10), async || fast_got.load(Ordering::SeqCst) > 0).await;
    let laggard = lagging_get(proxy.addr, &path, || fast_got.load(Ordering::SeqCst) >= (SIZE * 7 / 8) as u64).await;

    let (status, hex, first, total) = fast.await.unwrap();
    assert_eq!((status, format!("sha256:{hex}")), (200, digest.clone()), "the fast client got wrong bytes");
    assert!(first * 4 < total, "the first bytes came only at {first:?} of {total:?}: not streamed while filling");
    assert!(laggard.0.contains(" 200 "), "{}", laggard.0);
    assert_eq!(
        (laggard.1, format!("sha256:{}", laggard.2)),
        (SIZE as u64, digest.clone()),
        "the laggard got wrong bytes"
    );

    let gets = fake.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with(&digest)).count();
    assert_eq!(gets, 1, "one upstream GET serves every follower");
    // The fast client kept up: (nearly) all its bytes came from memory, none re-read from
    // disk; the laggard read the temp file while the fill was still running.
    let memory = proxy.metric("pullthrough_follow_bytes_total{from=\"memory\"}").await;
    let fill_file = proxy.metric("pullthrough_follow_bytes_total{from=\"fill_file\"}").await;
    assert!(memory >= (SIZE * 3 / 4) as f64, "only {memory} bytes served from memory");
    assert!(fill_file > 0.0, "the laggard did not read the temp file (memory {memory})");
    assert!(fill_file < SIZE as f64, "{fill_file} bytes re-read from the temp file: more than the laggard's share");
    proxy.wait_cached(&digest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncached_relay_breaks_off_on_bad_bytes_and_serves_good_ones() {
    const SIZE: usize = 4 * MIB;
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(15, SIZE);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes, Fault::FlipBit);
    // A blob larger than the whole budget is relayed, never cached.
    let proxy =
        Proxy::start_with("max_size = \"1MiB\"", &upstream_toml("fake.test", &fake.url(), "read_timeout = \"5s\""))
            .await;
    let url = format!("{}/v2/some/repo/blobs/{digest}?ns=fake.test", proxy.url());
    match get_hashed(&url, &[]).await {
        Err(_) => {}
        Ok((status, n, _)) => panic!("a corrupt relayed blob completed: status {status}, {n} bytes"),
    }
    wait_log(&proxy.proc, "uncached blob relay failed").await;
    wait_log(&proxy.proc, "failed verification").await;

    fake.set_fault(&digest, Fault::Good);
    let (status, n, hex) = get_hashed(&url, &[]).await.unwrap();
    assert_eq!((status, n, format!("sha256:{hex}")), (200, SIZE as u64, digest.clone()));
    assert!(proxy.cached_blobs().is_empty(), "a relayed blob was cached");
}
