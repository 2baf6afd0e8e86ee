//! Referrers (distribution-spec 1.1, "Listing Referrers"): the descriptors of manifests whose
//! `subject` names another manifest, as an OCI image index; the fallback tag that clients
//! keep for registries without the API; and the `artifactType` filter.

use super::digest::Digest;
use super::media::OCI_INDEX;
use super::reference::Tag;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One referrer: a manifest or index in the repository whose `subject` is the digest asked
/// about. Field names and order are the spec's; unknown fields of an upstream's descriptor
/// are dropped (what a client needs is here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referrer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Kept as the upstream wrote it: a referrer may use an algorithm this proxy does not
    /// fetch, and a client still wants to see it.
    pub digest: String,
    pub size: u64,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The tag under which clients keep a referrers index for `subject` on registries without
/// the referrers API (the spec's "referrers tag schema": `<alg>-<ref>`, the hex cut to 64
/// characters, so a sha512 digest too makes a valid tag).
pub fn fallback_tag(subject: &Digest) -> Tag {
    let hex = subject.hex();
    let s = format!("{}-{}", subject.algorithm().as_str(), &hex[..hex.len().min(64)]);
    // Letters, digits and `-` only, 71 characters: always a tag.
    s.parse().expect("<alg>-<64 hex> is a valid tag")
}

/// The tags under which cosign keeps what it attaches to `subject` without OCI 1.1
/// referrers (`sha256-<hex>.sig`, `.att`, `.sbom`): ordinary tags, pulled through unchanged;
/// `prefetch --with-referrers` and `export` carry them along. None for digests whose tag
/// would exceed the tag grammar's 128 characters (sha512).
pub fn cosign_tags(subject: &Digest) -> Vec<Tag> {
    let base = subject.to_string().replacen(':', "-", 1);
    ["sig", "att", "sbom"].iter().filter_map(|s| format!("{base}.{s}").parse().ok()).collect()
}

/// The referrers listed by an image index (an upstream's referrers answer, or a fallback tag's
/// index); `None` when `body` is not an image index.
pub fn parse_index(body: &[u8]) -> Option<Vec<Referrer>> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Vec<serde_json::Value>,
    }
    let index: Index = serde_json::from_slice(body).ok()?;
    if index.media_type.as_deref().is_some_and(|t| t != OCI_INDEX) {
        return None;
    }
    // One malformed entry does not hide the others.
    Some(index.manifests.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect())
}

/// A cached manifest as a referrer, when it has a `subject`: that subject (as written) and
/// the descriptor to list. `artifactType` as the spec says: the manifest's own, else (for an
/// image manifest) its config's media type, else none; annotations copied.
pub fn referrer_of(body: &[u8], media_type: &str, digest: &Digest) -> Option<(String, Referrer)> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        digest: String,
    }
    #[derive(Deserialize)]
    struct Doc {
        subject: Option<Desc>,
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
        config: Option<Desc>,
        annotations: Option<BTreeMap<String, String>>,
    }
    let doc: Doc = serde_json::from_slice(body).ok()?;
    let subject = doc.subject?.digest;
    let artifact_type = doc.artifact_type.filter(|t| !t.is_empty()).or_else(|| {
        // An index has no config: its artifactType stays empty.
        doc.config.and_then(|c| c.media_type).filter(|t| !t.is_empty() && media_type != OCI_INDEX)
    });
    let r = Referrer {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: body.len() as u64,
        artifact_type,
        annotations: doc.annotations.filter(|a| !a.is_empty()),
    };
    Some((subject, r))
}

/// A referrers list: merged from several sources, filtered, rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referrers(Vec<Referrer>);

impl Referrers {
    pub fn new() -> Referrers {
        Referrers::default()
    }

    /// Add `more`, skipping digests already listed (the first source to list one wins).
    pub fn merge(&mut self, more: impl IntoIterator<Item = Referrer>) {
        for r in more {
            if !self.0.iter().any(|have| have.digest == r.digest) {
                self.0.push(r);
            }
        }
    }

    /// Only the referrers of `artifact_type`.
    pub fn filter_artifact_type(&mut self, artifact_type: &str) {
        self.0.retain(|r| r.artifact_type.as_deref() == Some(artifact_type));
    }

    /// Drop the referrers `keep` refuses (e.g. digests on a deny-list).
    pub fn retain(&mut self, keep: impl Fn(&Referrer) -> bool) {
        self.0.retain(|r| keep(r));
    }

    pub fn as_slice(&self) -> &[Referrer] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The image index the referrers API answers with.
    pub fn to_index(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Index<'a> {
            #[serde(rename = "schemaVersion")]
            schema_version: u32,
            #[serde(rename = "mediaType")]
            media_type: &'static str,
            manifests: &'a [Referrer],
        }
        serde_json::to_vec(&Index { schema_version: 2, media_type: OCI_INDEX, manifests: &self.0 })
            .expect("referrers serialize")
    }
}

impl FromIterator<Referrer> for Referrers {
    fn from_iter<I: IntoIterator<Item = Referrer>>(iter: I) -> Referrers {
        let mut r = Referrers::new();
        r.merge(iter);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn fallback_tag_follows_the_schema() {
        let d: Digest = S.parse().unwrap();
        assert_eq!(fallback_tag(&d).as_str(), S.replace(':', "-"));
        let cosign: Vec<String> = cosign_tags(&d).iter().map(|t| t.to_string()).collect();
        assert_eq!(cosign, ["sig", "att", "sbom"].map(|s| format!("{}.{s}", S.replace(':', "-"))));
        let long: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert!(cosign_tags(&long).is_empty());
        assert_eq!(fallback_tag(&long).as_str(), format!("sha512-{}", "ab".repeat(32)));
    }

    #[test]
    fn describes_a_manifest_with_a_subject() {
        let d = Digest::of_bytes(b"x");
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.sig","digest":"{S}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{S}","size":1}},"annotations":{{"a":"b"}}}}"#
        );
        let (subject, r) = referrer_of(m.as_bytes(), "application/vnd.oci.image.manifest.v1+json", &d).unwrap();
        assert_eq!(subject, S);
        assert_eq!(r.artifact_type.as_deref(), Some("application/vnd.example.sig"));
        assert_eq!(r.size, m.len() as u64);
        assert_eq!(r.annotations.unwrap()["a"], "b");
        // Its own artifactType wins over the config's media type.
        let m2 = m.replacen("{\"schemaVersion\":2,", "{\"schemaVersion\":2,\"artifactType\":\"x/y\",", 1);
        let (_, r) = referrer_of(m2.as_bytes(), "application/vnd.oci.image.manifest.v1+json", &d).unwrap();
        assert_eq!(r.artifact_type.as_deref(), Some("x/y"));
        // No subject: not a referrer.
        assert!(referrer_of(br#"{"schemaVersion":2,"layers":[]}"#, OCI_INDEX, &d).is_none());
        assert!(referrer_of(b"not json", OCI_INDEX, &d).is_none());
    }

    #[test]
    fn merges_filters_and_renders() {
        let r = |d: &str, t: Option<&str>| Referrer {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d.into(),
            size: 1,
            artifact_type: t.map(str::to_string),
            annotations: None,
        };
        let mut all: Referrers = [r("sha256:a", Some("x/sig")), r("sha256:b", None)].into_iter().collect();
        all.merge([r("sha256:a", Some("other")), r("sha256:c", Some("x/sbom"))]);
        assert_eq!(all.as_slice().len(), 3);
        assert_eq!(all.as_slice()[0].artifact_type.as_deref(), Some("x/sig"));
        let index = all.to_index();
        assert_eq!(parse_index(&index).unwrap(), all.as_slice());
        all.filter_artifact_type("x/sbom");
        assert_eq!(all.as_slice(), [r("sha256:c", Some("x/sbom"))]);
        let empty = Referrers::new().to_index();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        );
        // Not an index: no referrers from it.
        assert!(parse_index(br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#).is_none());
        assert!(parse_index(b"{}").is_none());
    }
}
