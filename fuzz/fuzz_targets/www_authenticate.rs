//! WWW-Authenticate challenges from upstreams: parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for c in pullthrough::upstream::challenge::parse_challenges(s) {
            assert!(!c.scheme.is_empty());
        }
    }
});
