//! Request paths and methods: routing never panics, and every accepted name and digest is
//! valid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullthrough::http::router::{route, Endpoint};

fuzz_target!(|input: (u8, &str)| {
    let (m, path) = input;
    let method = [http::Method::GET, http::Method::HEAD, http::Method::PUT, http::Method::POST][m as usize % 4].clone();
    if let Ok(ep) = route(&method, path) {
        match ep {
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => {
                assert!(!name.as_str().contains(".."));
            }
            Endpoint::Base => {}
        }
    }
});
