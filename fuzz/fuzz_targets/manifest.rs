//! Manifests and indexes from upstreams, Accept lists, and lifecycle policies: parsing and
//! evaluation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullthrough::oci::{manifest, media};

fuzz_target!(|data: &[u8]| {
    let _ = media::sniff_manifest_type(data);
    let _ = manifest::references(data);
    let _ = manifest::index_children(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let a = media::AcceptList::from_header_values(s.split('\n'));
        let _ = a.accepts(media::OCI_INDEX);
    }
    if let Ok(p) = serde_json::from_slice::<pullthrough::core::lifecycle::Policy>(data) {
        if p.validate().is_ok() {
            let now = std::time::SystemTime::now();
            let images: Vec<_> = (0u8..4)
                .map(|i| pullthrough::core::lifecycle::Image {
                    digest: format!("sha256:{}", format!("{i:02x}").repeat(32)).parse().unwrap(),
                    tags: if i % 2 == 0 { vec![format!("v{i}")] } else { vec![] },
                    pushed_at: now,
                    pulled_at: now,
                })
                .collect();
            let _ = pullthrough::core::lifecycle::evaluate(&p, &images, now);
        }
    }
});
