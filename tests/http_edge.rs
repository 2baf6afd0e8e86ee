//! The HTTP edge's two single decisions (issue 13, item 5): a HEAD is answered by the GET's
//! path with the body dropped in one place, and access is checked once on the way in,
//! before any handler (and so any upstream request) runs.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::FakeUpstream;
use common::net::send;
use common::*;
use std::time::Duration;

const NS: &str = "?ns=fake.test";

/// Request headers of one case.
type Headers = Vec<(&'static str, &'static str)>;

/// Every kind of answer (OK, partial, not satisfiable, not found, bad request, not allowed):
/// HEAD has the GET's status and headers, and no body. hyper sends no body for a HEAD
/// whatever the handler built, so the request log says whether the proxy dropped it: a body
/// left for hyper is never read and ends "abandoned", a dropped one is "complete" at 0 bytes.
#[tokio::test(flavor = "multi_thread")]
async fn head_is_the_get_answer_without_its_body() {
    let fake = FakeUpstream::start().await;
    let (manifest, layer) = fake.put_image("r", "v1", 3);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let p = proxy.url();
    // Cache the layer first: a HEAD of an uncached blob asks the upstream for its size
    // instead of filling it, which is its own (tested) path.
    let r = send("GET", &format!("{p}/v2/r/blobs/{layer}{NS}"), &[]).await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 10_000));
    let missing = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(String, Headers, u16)> = vec![
        (format!("{p}/v2/"), vec![], 200),
        (format!("{p}/v2/r/manifests/v1{NS}"), vec![], 200),
        (format!("{p}/v2/r/manifests/{manifest}{NS}"), vec![], 200),
        (format!("{p}/v2/r/blobs/{layer}{NS}"), vec![], 200),
        (format!("{p}/v2/r/blobs/{layer}{NS}"), vec![("range", "bytes=10-19")], 206),
        (format!("{p}/v2/r/blobs/{layer}{NS}"), vec![("range", "bytes=20000-")], 416),
        (format!("{p}/v2/r/blobs/{layer}{NS}"), vec![("range", "bytes=x")], 400),
        (format!("{p}/v2/r/blobs/{missing}{NS}"), vec![], 404),
        (format!("{p}/v2/r/referrers/{manifest}{NS}"), vec![], 200),
        (format!("{p}/v2/r/blobs/sha256:abc{NS}"), vec![], 400),
        (format!("{p}/v2/_catalog"), vec![], 404),
    ];
    for (url, headers, status) in &cases {
        let get = send("GET", url, headers).await.unwrap();
        let head = send("HEAD", url, headers).await.unwrap();
        assert_eq!(get.status, *status, "GET {url} {headers:?}: {}", get.text());
        assert_eq!(head.status, get.status, "HEAD {url} {headers:?}");
        assert!(head.body.is_empty(), "HEAD {url} {headers:?} sent {} body bytes", head.body.len());
        for h in ["content-type", "content-length", "content-range", "docker-content-digest", "etag", "allow"] {
            assert_eq!(head.header(h), get.header(h), "{h} of HEAD {url} {headers:?}");
        }
        if let Some(n) = get.header("content-length") {
            assert_eq!(get.body.len().to_string(), n, "GET {url} {headers:?}: body and Content-Length");
        }
    }
    let heads = async || {
        let log = proxy.proc.log_text();
        log.lines()
            .filter(|l| l.contains("method=HEAD") && l.contains(" request"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until("a log line per HEAD", Duration::from_secs(10), async || heads().await.len() == cases.len()).await;
    for line in heads().await {
        assert!(line.contains(" bytes=0 ") && line.contains("body=\"complete\""), "{line}");
    }
}

/// A deny-listed digest is refused (403) for every endpoint that names it, by GET and HEAD,
/// before the upstream is asked anything; a tag that resolves to it is refused too.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_digest_is_refused_on_the_way_in() {
    let fake = FakeUpstream::start().await;
    let (manifest, layer) = fake.put_image("r", "v1", 4);
    let access = format!("[access]\ndeny = [\"{manifest}\", \"{layer}\"]\n");
    let proxy = Proxy::start(&format!("{access}\n{}", upstream_toml("fake.test", &fake.url(), ""))).await;
    let p = proxy.url();
    for url in [
        format!("{p}/v2/r/blobs/{layer}{NS}"),
        format!("{p}/v2/r/manifests/{manifest}{NS}"),
        format!("{p}/v2/r/referrers/{manifest}{NS}"),
    ] {
        for method in ["GET", "HEAD"] {
            let r = send(method, &url, &[]).await.unwrap();
            assert_eq!(r.status, 403, "{method} {url}");
            if method == "GET" {
                assert_eq!(r.error_code().as_deref(), Some("DENIED"), "{method} {url}");
            }
        }
    }
    let seen = fake.seen();
    assert!(seen.is_empty(), "the upstream was asked before the deny-list was checked: {:?}", seen.len());
    // The tag is not denied, its answer is: checked once the tag resolved.
    let r = send("GET", &format!("{p}/v2/r/manifests/v1{NS}"), &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")), "{}", r.text());
}
