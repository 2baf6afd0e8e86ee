//! `Range` on blobs follows RFC 9110 §14.2 (issue 12): one range is a 206, several ranges or
//! another unit the whole blob, an unsatisfiable range a 416.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::fake::{FakeUpstream, Fault};
use common::image::pseudo_random;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn range_requests_follow_rfc_9110() {
    let fake = FakeUpstream::start().await;
    let bytes = pseudo_random(22, 50_000);
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fake.set_blob(&digest, bytes.clone(), Fault::Good);
    let proxy = Proxy::start(&upstream_toml("fake.test", &fake.url(), "")).await;
    let url = format!("{}/v2/r/blobs/{digest}?ns=fake.test", proxy.url());

    // Several ranges, or a unit other than bytes: the whole blob, 200, no Content-Range.
    for range in ["bytes=0-0,2-3", "bytes=0-0, 2-3, -5", "items=0-1"] {
        let r = get(&url, &[("range", range)]).await.unwrap();
        assert_eq!(r.status, 200, "{range}: {}", r.text());
        assert_eq!(r.body.as_ref(), bytes.as_slice(), "{range}");
        assert_eq!(r.header("content-range"), None, "{range}");
    }
    // One range: 206.
    let r = get(&url, &[("range", "bytes=2-3")]).await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (206, &bytes[2..4]));
    assert_eq!(r.header("content-range"), Some("bytes 2-3/50000"));
    // Invalid byte ranges keep their answers.
    for range in ["bytes=5-1", "bytes=0-1,x", "bytes=a-b"] {
        let r = get(&url, &[("range", range)]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (400, Some("RANGE_INVALID")), "{range}");
    }
    let r = get(&url, &[("range", "bytes=50000-")]).await.unwrap();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */50000"));
}
