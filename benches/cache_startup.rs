//! Start-up with a large cache: how long `Store::open` (index rebuild from disk, temp
//! cleanup) takes with 100,000 cached blobs. Target: under 2 s.
//!
//! `cargo bench --bench cache_startup [-- N]`. Blobs are generated directly on disk (names
//! are valid digests; contents are not checked at start, which is the point: start-up
//! must not hash the cache). When run as root it also measures with a cold page cache.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

use pullthrough::store::{SpaceBudget, Store};
use std::io::Write;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs = dir.path().join("blobs/sha256");
    let t = Instant::now();
    for i in 0..n {
        let hex = format!("{:064x}", (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1);
        let shard = blobs.join(&hex[..2]);
        if i < 256 || !shard.exists() {
            std::fs::create_dir_all(&shard).unwrap();
        }
        let mut f = std::fs::File::create(shard.join(&hex)).unwrap();
        f.write_all(&[b'x'; 512]).unwrap();
    }
    eprintln!("generated {n} blobs in {:?}", t.elapsed());

    let mut results = Vec::new();
    for run in 0..3 {
        let t = Instant::now();
        let store = Store::open(dir.path(), SpaceBudget::unlimited()).expect("open store");
        let took = t.elapsed();
        assert_eq!(store.stats().blobs, n);
        results.push(took);
        println!("warm run {run}: ready with {n} blobs in {took:?}");
    }
    let drop_caches = std::fs::write("/proc/sys/vm/drop_caches", "3");
    if drop_caches.is_ok() {
        let t = Instant::now();
        let store = Store::open(dir.path(), SpaceBudget::unlimited()).expect("open store");
        println!("cold run: ready with {} blobs in {:?}", store.stats().blobs, t.elapsed());
    } else {
        println!("cold run: skipped (cannot drop the page cache without root)");
    }
    results.sort();
    println!("median warm start-up: {:?} for {n} blobs (target < 2 s)", results[1]);
}
