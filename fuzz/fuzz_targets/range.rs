//! Range headers: parsing never panics, and a resolved range always lies inside the blob.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullthrough::http::range::RangeRequest;

fuzz_target!(|input: (&str, u64)| {
    let (header, len) = input;
    if let Ok(RangeRequest::Single(r)) = RangeRequest::parse(header) {
        if let Some((start, end)) = r.resolve(len) {
            assert!(start < end && end <= len);
        }
    }
});
