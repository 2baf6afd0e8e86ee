//! Manifest media types, and the client's `Accept` list.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest kinds this proxy asks upstream for, always all of them: what is cached must
/// serve every client, whatever subset that client happens to accept.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest accepted from upstream. Manifests are buffered (they are small JSON),
/// so this bounds memory per request; 4 MiB is what distribution itself allows.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The media types a client accepts, merged from every `Accept` header line (skopeo sends
/// one line per type; containerd sends one comma-separated line).
#[derive(Debug, Default, Clone)]
pub struct AcceptList(Vec<String>);

impl AcceptList {
    pub fn from_header_values<'a>(values: impl Iterator<Item = &'a str>) -> AcceptList {
        let mut types = Vec::new();
        for v in values {
            for item in v.split(',') {
                // Drop parameters such as ";q=0.5": the proxy does not negotiate by weight.
                let t = item.split(';').next().unwrap_or("").trim();
                if !t.is_empty() {
                    types.push(t.to_ascii_lowercase());
                }
            }
        }
        AcceptList(types)
    }

    /// Whether a manifest of `media_type` may be served. An empty list or a wildcard accepts
    /// anything, as registries do.
    pub fn accepts(&self, media_type: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|t| t == "*/*" || t == "application/*" || t.eq_ignore_ascii_case(media_type))
    }
}

/// A manifest's media type, from its label (a response's or a tier's Content-Type, or the
/// type recorded with it) and its bytes: the label when it names a vendor type (every
/// manifest type does: `application/vnd.…`; `application/json` or S3's
/// `binary/octet-stream` say nothing), else what the bytes say; `None` when neither tells.
pub fn known_manifest_type(label: Option<&str>, body: &[u8]) -> Option<String> {
    label.filter(|t| t.starts_with("application/vnd.")).map(str::to_string).or_else(|| sniff_manifest_type(body))
}

/// [`known_manifest_type`], taken to be an OCI image manifest when neither label nor bytes
/// tell (for content verified by digest, whose type only decides the Content-Type served).
pub fn manifest_type(label: Option<&str>, body: &[u8]) -> String {
    known_manifest_type(label, body).unwrap_or_else(|| OCI_MANIFEST.to_string())
}

/// The media type of a manifest body, for when upstream did not say (or said something
/// generic like `application/json`): its `mediaType` field, else the shape of the document.
pub fn sniff_manifest_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
        #[serde(rename = "fsLayers")]
        fs_layers: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(body).ok()?;
    if let Some(t) = p.media_type {
        return Some(t);
    }
    match (p.schema_version, p.manifests.is_some(), p.layers.is_some(), p.fs_layers.is_some()) {
        (Some(1), _, _, true) => Some(DOCKER_SCHEMA1_SIGNED.to_string()),
        (_, true, _, _) => Some(OCI_INDEX.to_string()),
        (_, _, true, _) => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_repeated_accept_lines() {
        let a = AcceptList::from_header_values(
            [OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json; q=0.9, text/plain"].into_iter(),
        );
        assert!(a.accepts(OCI_MANIFEST));
        assert!(a.accepts(DOCKER_MANIFEST));
        assert!(!a.accepts(OCI_INDEX));
        assert!(AcceptList::default().accepts(OCI_INDEX));
        assert!(AcceptList::from_header_values(["*/*"].into_iter()).accepts(OCI_INDEX));
    }

    #[test]
    fn sniffs_types() {
        assert_eq!(sniff_manifest_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(), Some(OCI_INDEX));
        assert_eq!(
            sniff_manifest_type(br#"{"schemaVersion":2,"mediaType":"x/y","layers":[]}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(sniff_manifest_type(b"not json"), None);
    }

    #[test]
    fn a_vendor_label_wins_else_the_bytes_tell() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(manifest_type(Some(DOCKER_MANIFEST), index), DOCKER_MANIFEST);
        assert_eq!(manifest_type(Some("application/json"), index), OCI_INDEX);
        assert_eq!(manifest_type(Some("binary/octet-stream"), index), OCI_INDEX);
        assert_eq!(manifest_type(None, b"not json"), OCI_MANIFEST);
        assert_eq!(known_manifest_type(Some("text/plain"), b"not json"), None);
    }
}
