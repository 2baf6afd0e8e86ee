//! Names, tags, digests, references and image references: parsing never panics, and what
//! parses displays back to the same text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullthrough::oci::{Digest, ImageRef, Reference, RepoName, Tag, TagsQuery};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
        assert!(!n.components().any(|c| c == ".." || c.is_empty()));
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
    let _ = s.parse::<ImageRef>();
    let _ = TagsQuery::parse(s).map(|q| q.to_query());
});
