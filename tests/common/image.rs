//! Deterministic test images written as OCI image layouts: real tar+gzip layers of seeded
//! pseudo-random bytes, a config with matching diff_ids, manifests, and multi-arch indexes.

use super::sha256_hex;
use serde_json::json;
use std::path::Path;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A blob written into a layout.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    pub fn json(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What was built: the top-level descriptor (manifest or index), all blob digests, and the
/// layer descriptors.
pub struct Built {
    pub top: Desc,
    pub layers: Vec<Desc>,
    pub all: Vec<String>,
}

/// xorshift64*: deterministic bytes without a dependency.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Desc {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    Desc { media_type: media_type.into(), digest: format!("sha256:{hex}"), size: bytes.len() as u64 }
}

/// A gzip'd tar holding one file of `size` pseudo-random bytes; returns (layer, diff_id).
fn layer(layout: &Path, seed: u64, size: usize) -> (Desc, String) {
    let data = pseudo_random(seed, size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, format!("data-{seed}.bin"), &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    // Level 0 for big layers: the point is moving bytes, not compressing noise.
    let level = if size > 1 << 20 { flate2::Compression::none() } else { flate2::Compression::fast() };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    (write_blob(layout, "application/vnd.oci.image.layer.v1.tar+gzip", &gz), diff_id)
}

/// One single-platform image manifest with layers of the given sizes.
pub fn manifest(layout: &Path, seed: u64, layer_sizes: &[usize], arch: &str) -> Built {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let (l, d) = layer(layout, seed * 1000 + i as u64, *size);
        layers.push(l);
        diff_ids.push(d);
    }
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = write_blob(layout, "application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.json(),
        "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
    });
    let top = write_blob(layout, OCI_MANIFEST, m.to_string().as_bytes());
    let mut all: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    all.push(config.digest.clone());
    all.push(top.digest.clone());
    Built { top, layers, all }
}

/// A multi-arch index over one manifest per architecture.
pub fn index(layout: &Path, seed: u64, layer_sizes: &[usize], arches: &[&str]) -> Built {
    let mut entries = Vec::new();
    let mut all = Vec::new();
    let mut layers = Vec::new();
    for (i, arch) in arches.iter().enumerate() {
        let b = manifest(layout, seed + i as u64 * 7919, layer_sizes, arch);
        let mut e = b.top.json();
        e["platform"] = json!({"architecture": arch, "os": "linux"});
        entries.push(e);
        all.extend(b.all);
        layers.extend(b.layers);
    }
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let top = write_blob(layout, OCI_INDEX, idx.to_string().as_bytes());
    all.push(top.digest.clone());
    Built { top, layers, all }
}

/// Write `index.json` and `oci-layout`, naming each (descriptor, tag).
pub fn finish_layout(layout: &Path, tagged: &[(&Desc, &str)]) {
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let manifests: Vec<_> = tagged
        .iter()
        .map(|(d, tag)| {
            let mut v = d.json();
            v["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
            v
        })
        .collect();
    std::fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string(),
    )
    .unwrap();
}
