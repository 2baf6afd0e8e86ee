//! Criterion micro-benchmarks of the hot pieces: the fill pipeline's hash+write of a blob
//! into the store, and parsing of what arrives with every request (path routing, digests,
//! names, Range headers, Accept lists, WWW-Authenticate challenges).
//!
//! `cargo bench --bench hot_paths`

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pullthrough::oci::media::AcceptList;
use pullthrough::oci::{Digest, RepoName};
use pullthrough::store::{SpaceBudget, Store};
use std::hint::black_box;

fn hash_and_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), SpaceBudget::unlimited()).unwrap();
    let mut g = c.benchmark_group("fill");
    for size in [1usize << 20, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| ((i * 2654435761usize) >> 13) as u8).collect();
        let digest = Digest::of_bytes(&data);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("hash_write_commit", size), &data, |b, data| {
            b.iter(|| {
                let mut t = store.begin(&digest).unwrap();
                let mut h = pullthrough::oci::Sha256Hasher::new();
                for chunk in data.chunks(256 * 1024) {
                    t.append(chunk).unwrap();
                    h.update(chunk);
                }
                store.commit(t, h.finish(), Some(data.len() as u64)).unwrap();
                store.remove_blob(&digest).unwrap();
            })
        });
        g.bench_with_input(BenchmarkId::new("sha256_only", size), &data, |b, data| {
            b.iter(|| black_box(Digest::of_bytes(data)))
        });
    }
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    c.bench_function("parse_digest", |b| b.iter(|| black_box(d).parse::<Digest>().unwrap()));
    c.bench_function("parse_repo_name", |b| b.iter(|| black_box("org/team/some-app_x").parse::<RepoName>().unwrap()));
    let accept = [
        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
    ];
    c.bench_function("accept_list", |b| {
        b.iter(|| {
            AcceptList::from_header_values(black_box(accept).into_iter())
                .accepts("application/vnd.oci.image.index.v1+json")
        })
    });
    let challenge = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
    c.bench_function("www_authenticate", |b| {
        b.iter(|| pullthrough::upstream::challenge::parse_challenges(black_box(challenge)))
    });
}

criterion_group!(benches, hash_and_write, parsing);
criterion_main!(benches);
