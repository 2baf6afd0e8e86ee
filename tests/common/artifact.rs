//! OCI 1.1 artifacts written into OCI image layouts: manifests with a `subject` (shaped like
//! a notation signature or an SBOM attached with ORAS), and the referrers index that pushing
//! clients keep under the fallback tag `sha256-<hex>` on registries without the referrers API.

use super::image::{Desc, OCI_INDEX, OCI_MANIFEST};
use super::sha256_hex;
use serde_json::json;
use std::path::Path;

/// The empty config of artifacts without one (image-spec 1.1).
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
pub const SIGNATURE: &str = "application/vnd.example.signature.v1";
pub const SBOM: &str = "application/vnd.example.sbom.v1";

/// Write `bytes` as a blob of the layout.
pub fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Desc {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    Desc { media_type: media_type.into(), digest: format!("sha256:{hex}"), size: bytes.len() as u64 }
}

/// An artifact manifest of `artifact_type` about `subject`: the empty config, one layer of
/// `payload`, `annotations`. Returns the manifest's descriptor and its bytes.
pub fn referrer(
    layout: &Path,
    subject: &Desc,
    artifact_type: &str,
    payload: &[u8],
    annotations: &[(&str, &str)],
) -> (Desc, Vec<u8>) {
    let config = blob(layout, EMPTY_CONFIG, b"{}");
    let layer = blob(layout, &format!("{artifact_type}+payload"), payload);
    let annotations: serde_json::Map<String, serde_json::Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.json(),
        "layers": [layer.json()],
        "subject": subject.json(),
        "annotations": annotations,
    });
    let bytes = m.to_string().into_bytes();
    (blob(layout, OCI_MANIFEST, &bytes), bytes)
}

/// The referrers-list entry for a referrer, as the spec has clients and registries write it.
pub fn entry(desc: &Desc, artifact_type: &str, annotations: &[(&str, &str)]) -> serde_json::Value {
    let mut e = desc.json();
    e["artifactType"] = json!(artifact_type);
    if !annotations.is_empty() {
        let a: serde_json::Map<String, serde_json::Value> =
            annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        e["annotations"] = json!(a);
    }
    e
}

/// An image index listing `entries`: the fallback tag's content, or a referrers API answer.
pub fn index(layout: &Path, entries: &[serde_json::Value]) -> (Desc, Vec<u8>) {
    let bytes = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string().into_bytes();
    (blob(layout, OCI_INDEX, &bytes), bytes)
}

/// The fallback tag for a subject digest: `sha256-<hex>`.
pub fn fallback_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// One request with a body to a registry (plain HTTP): `(status, Location)`.
async fn send_body(method: &str, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let fut = async {
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let _ = resp.into_body().collect().await;
        (status, location)
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), fut).await.expect("registry answered in time")
}

/// Upload a blob under `digest` (any algorithm the registry accepts) with a monolithic
/// upload: what skopeo cannot do for sha512.
pub async fn upload_blob(registry: &str, name: &str, digest: &str, bytes: &[u8]) {
    let (status, location) =
        send_body("POST", &format!("{registry}/v2/{name}/blobs/uploads/"), "application/octet-stream", Vec::new())
            .await;
    assert_eq!(status, 202, "upload start");
    let location = location.expect("upload location");
    let url = if location.starts_with("http") { location } else { format!("{registry}{location}") };
    let sep = if url.contains('?') { '&' } else { '?' };
    let (status, _) =
        send_body("PUT", &format!("{url}{sep}digest={digest}"), "application/octet-stream", bytes.to_vec()).await;
    assert_eq!(status, 201, "upload of {digest}");
}

/// Put a manifest under `reference` (a tag or its digest).
pub async fn put_manifest(registry: &str, name: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let (status, _) =
        send_body("PUT", &format!("{registry}/v2/{name}/manifests/{reference}"), media_type, bytes.to_vec()).await;
    assert_eq!(status, 201, "manifest {reference}");
}
