//! Self-healing integrity (issue 18, item 3), with Debian's docker-registry as the upstream
//! and skopeo as the client: a byte flipped in a cached file is reported by `verify` and
//! fixed by `verify --repair` (beside the running daemon), found by the daemon's background
//! scrub, and with `verify_on_read` never served as a complete download.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::image::{self, Built};
use common::webhook::Receiver;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

struct Lab {
    registry: Registry,
    proxy: Proxy,
    app: Built,
    _src: tempfile::TempDir,
}

/// An image (a 3 MiB layer, a small one, a config) in docker-registry as `test/app:v1`, a
/// proxy in front of it (`[cache]` settings from `cache_toml`, more sections in `extra`),
/// and the image pulled through the proxy with skopeo, so everything is cached.
async fn lab(cache_toml: &str, extra: &str) -> Lab {
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 18, &[3 << 20, 200_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    push(src.path(), "v1", &registry.addr.to_string(), "test/app:v1", None);
    let upstream = upstream_toml("lab.test", &registry.url(), "prefix = \"lab\"");
    let proxy = Proxy::start_with(cache_toml, &format!("{upstream}{extra}")).await;
    let (_out, pulled) = skopeo_pull(&format!("docker://{}/lab/test/app:v1", proxy.addr), &[]);
    assert_eq!(pulled, sorted_unique(&app.all));
    for d in &app.all {
        proxy.wait_cached(d).await;
    }
    Lab { registry, proxy, app, _src: src }
}

impl Lab {
    fn big_layer(&self) -> String {
        self.app.layers[0].digest.clone()
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/lab/test/app/blobs/{digest}", self.proxy.url())
    }

    /// Upstream GETs of a blob so far.
    fn upstream_gets(&self, digest: &str) -> usize {
        self.registry.count_gets(&format!("/v2/test/app/blobs/{digest}"))
    }
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn cached_path(proxy: &Proxy, digest: &str) -> PathBuf {
    let h = hex(digest);
    proxy.cache.join("blobs/sha256").join(&h[..2]).join(h)
}

fn quarantined_path(proxy: &Proxy, digest: &str) -> PathBuf {
    proxy.cache.join("quarantine/sha256").join(hex(digest))
}

/// Flip one byte in the middle of a cached file, in place (as a failing disk would).
fn flip_byte(proxy: &Proxy, digest: &str) {
    let path = cached_path(proxy, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    assert_ne!(sha256_hex(&std::fs::read(&path).unwrap()), hex(digest));
}

/// The cached file exists and hashes to its digest.
fn assert_intact(proxy: &Proxy, digest: &str) {
    let bytes = std::fs::read(cached_path(proxy, digest)).unwrap_or_else(|e| panic!("{digest} not cached: {e}"));
    assert_eq!(sha256_hex(&bytes), hex(digest), "cached {digest} is not intact");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_corruption_and_repair_fetches_it_again() {
    let lab = lab("", "").await;
    let layer = lab.big_layer();
    flip_byte(&lab.proxy, &layer);

    // `verify` beside the running daemon: reported with path, expected and actual digests,
    // quarantined, and a non-zero exit.
    let (ok, out, err) = lab.proxy.cli(&["verify"]);
    assert!(!ok, "verify passed a corrupt cache:\n{out}\n{err}");
    let line = out.lines().find(|l| l.starts_with("corrupt:")).unwrap_or_else(|| panic!("no report:\n{out}\n{err}"));
    assert!(line.contains(&cached_path(&lab.proxy, &layer).display().to_string()), "{line}");
    assert!(line.contains(&format!("expected {layer}")) && line.contains("actual sha256:"), "{line}");
    assert!(out.contains("1 corrupt"), "{out}");
    assert!(err.contains("verify --repair"), "{err}");
    assert!(quarantined_path(&lab.proxy, &layer).is_file() && !cached_path(&lab.proxy, &layer).exists());
    // The rest is intact, and a second pass finds nothing new; it still fails while the
    // quarantined blob is not repaired.
    let (ok, out, err) = lab.proxy.cli(&["verify"]);
    assert!(!ok && out.contains("0 corrupt; 1 quarantined earlier and not cached again"), "{out}\n{err}");

    // `--repair` fetches what is quarantined from the upstream, verified.
    let before = lab.upstream_gets(&layer);
    let (ok, out, err) = lab.proxy.cli(&["verify", "--repair"]);
    assert!(ok, "repair failed:\n{out}\n{err}");
    assert!(out.contains(&format!("repaired: {layer} from lab.test/test/app")), "{out}\n{err}");
    assert_eq!(lab.upstream_gets(&layer), before + 1);
    assert_intact(&lab.proxy, &layer);
    // The daemon serves the right bytes, from the cache.
    let (status, _, got) = get_hashed(&lab.blob_url(&layer), &[]).await.unwrap();
    assert_eq!((status, got.as_str()), (200, hex(&layer)));
    assert_eq!(lab.upstream_gets(&layer), before + 1);

    // A manifest and a config rotting at once: `verify --repair` alone finds and fixes both
    // (the manifest first: the config is vouched for through it).
    let (manifest, config) = (lab.app.top.digest.clone(), lab.app.all[lab.app.all.len() - 2].clone());
    flip_byte(&lab.proxy, &manifest);
    flip_byte(&lab.proxy, &config);
    let (ok, out, err) = lab.proxy.cli(&["verify", "--repair"]);
    assert!(ok, "repair failed:\n{out}\n{err}");
    assert!(out.contains("2 corrupt, 2 repaired"), "{out}\n{err}");
    assert!(out.contains("(manifest)") && out.contains(&format!("repaired: {manifest}")), "{out}");
    assert_intact(&lab.proxy, &manifest);
    assert_intact(&lab.proxy, &config);
    // `--rate` paces the pass: the cache's 3.4 MiB at 2 MiB/s take well over a second.
    let started = std::time::Instant::now();
    let (ok, out, err) = lab.proxy.cli(&["verify", "--rate", "2MiB/s"]);
    assert!(ok && out.contains("0 corrupt"), "{out}\n{err}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "not paced: {:?}", started.elapsed());
    // A real client pulls the whole image again, every digest verified by skopeo.
    let (_out, pulled) = skopeo_pull(&format!("docker://{}/lab/test/app:v1", lab.proxy.addr), &[]);
    assert_eq!(pulled, sorted_unique(&lab.app.all));
}

#[tokio::test(flavor = "multi_thread")]
async fn background_scrub_finds_and_quarantines_a_flipped_byte() {
    let hook = Receiver::start().await;
    let events = format!("[[events.webhook]]\nurl = \"{}\"\nkinds = [\"blob.corrupt\"]\n", hook.url());
    let lab = lab("scrub_rate = \"64MiB/s\"", &events).await;
    let layer = lab.big_layer();
    let before = lab.upstream_gets(&layer);
    flip_byte(&lab.proxy, &layer);

    // Passes run back to back (at least a second apart); the cache is 3.5 MiB.
    wait_until("the scrub to quarantine the corrupt layer", Duration::from_secs(20), async || {
        quarantined_path(&lab.proxy, &layer).is_file()
    })
    .await;
    assert!(!cached_path(&lab.proxy, &layer).exists());
    assert_eq!(lab.proxy.metric("pullthrough_corruptions_found_total{found_by=\"scrub\"}").await, 1.0);
    assert!(lab.proxy.metric("pullthrough_scrub_bytes_total").await >= (3 << 20) as f64);
    wait_log(&lab.proxy.proc, "cached file does not match its digest; quarantined").await;
    // One `blob.corrupt` event, naming the digest and what found it.
    hook.wait_for(1, "the blob.corrupt event").await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let data = hits[0].json();
    assert_eq!(hits[0].header("ce-type"), "io.pullthrough.blob.corrupt");
    assert_eq!(data["digest"], layer.as_str(), "{data}");
    assert!(data["cause"].as_str().unwrap().contains("found by scrub"), "{data}");

    // The next request fills it again from the upstream, verified.
    let (status, _, got) = get_hashed(&lab.blob_url(&layer), &[]).await.unwrap();
    assert_eq!((status, got.as_str()), (200, hex(&layer)));
    assert_eq!(lab.upstream_gets(&layer), before + 1);
    lab.proxy.wait_cached(&layer).await;
    assert_intact(&lab.proxy, &layer);
    // Other files were left alone.
    for d in &lab.app.all {
        assert_intact(&lab.proxy, d);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_on_read_never_completes_a_corrupt_download() {
    let lab = lab("verify_on_read = true", "").await;
    let layer = lab.big_layer();
    let before = lab.upstream_gets(&layer);
    // An intact blob is served whole and verified.
    let (status, _, got) = get_hashed(&lab.blob_url(&layer), &[]).await.unwrap();
    assert_eq!((status, got.as_str()), (200, hex(&layer)));
    flip_byte(&lab.proxy, &layer);

    // Clients at once: each either sees a broken transfer, or (starting after the file was
    // quarantined) the right bytes from a fresh fill. Never a complete corrupt download.
    let url = lab.blob_url(&layer);
    let clients: Vec<_> = (0..4).map(|_| tokio::spawn(get_hashed_owned(url.clone()))).collect();
    let mut broken = 0;
    for c in clients {
        match c.await.unwrap() {
            Err(_) => broken += 1,
            Ok((status, n, got)) => assert_eq!((status, got.as_str()), (200, hex(&layer)), "{n} bytes"),
        }
    }
    assert!(broken >= 1, "no client saw the corrupt blob fail");
    wait_until("the corrupt layer to be quarantined", Duration::from_secs(10), async || {
        quarantined_path(&lab.proxy, &layer).is_file()
    })
    .await;
    assert_eq!(lab.proxy.metric("pullthrough_corruptions_found_total{found_by=\"read\"}").await, 1.0);

    // The next pull gets the right bytes, fetched again from the upstream.
    let (status, _, got) = get_hashed(&lab.blob_url(&layer), &[]).await.unwrap();
    assert_eq!((status, got.as_str()), (200, hex(&layer)));
    assert!(lab.upstream_gets(&layer) > before);
    lab.proxy.wait_cached(&layer).await;
    assert_intact(&lab.proxy, &layer);
}

async fn get_hashed_owned(url: String) -> Result<(u16, u64, String), String> {
    get_hashed(&url, &[]).await
}
