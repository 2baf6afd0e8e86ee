//! Configuration text: parsing and validation never panic (errors are values).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = pullthrough::config::Config::parse(s, "fuzz");
    }
});
