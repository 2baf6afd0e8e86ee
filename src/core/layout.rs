//! OCI image layouts in and out of the cache: `export` writes cached images as a standard
//! layout (index.json + blobs/sha256, and blobs/sha512 for sha512 content), which skopeo and
//! umoci read; `import` loads such a layout (ours, or one `skopeo copy … oci:DIR` wrote) with
//! every blob verified, so a site with no upstream at all serves those images under their
//! original names.
//!
//! Index entries carry the full image name in `io.containerd.image.name` (containerd's
//! convention) and the tag in `org.opencontainers.image.ref.name` (the OCI one, which is
//! what skopeo's `oci:DIR:TAG` selects). Two exported images that share a tag would be
//! indistinguishable that way, so each of them carries its full name
//! (`registry/repository:tag`, a valid `ref.name` too: `oci:DIR:registry/repository:tag`).

use super::pull::PullThrough;
use crate::oci::media::{self};
use crate::oci::{manifest, Algorithm, Digest, Hasher, ImageRef, Reference, Tag};
use crate::store::{ImageRecord, TagRecord};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Layout(String),
    #[error("blob {digest} in the layout does not match its digest (it hashes to {actual}); nothing of {image} was imported")]
    Corrupt { digest: String, actual: String, image: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Debug, Serialize, Default)]
pub struct ImportReport {
    pub images: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

fn blob_path(layout: &Path, d: &Digest) -> PathBuf {
    layout.join("blobs").join(d.algorithm().as_str()).join(d.hex())
}

/// Hash a file with `algorithm` in 1 MiB reads. Blocking.
fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            return Ok((h.finish(), n));
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
}

impl PullThrough {
    /// The cached top-level manifest digest of an image (tags resolved via their records).
    /// An image whose registry is not a configured upstream is an error that says so.
    pub fn cached_digest(&self, image: &ImageRef) -> io::Result<Option<Digest>> {
        let route = self.route_image(image).map_err(|e| io::Error::other(format!("{image}: {e}")))?;
        match &image.reference {
            Reference::Digest(d) => Ok(self.store.cas.contains(d).then(|| d.clone())),
            Reference::Tag(t) => {
                Ok(self.store.records.get_tag(route.upstream.host(), &route.name, t)?.map(|r| r.digest))
            }
        }
    }

    /// Write cached images as an OCI layout in directory `out`. Every blob an exported
    /// manifest needs must be cached; an index's children that are not cached (platforms
    /// never pulled) are left out of the layout. The cached referrers of each image (what
    /// `prefetch --with-referrers` fetched: signatures, SBOMs) go along as images named by
    /// digest, and its cached cosign tags by tag, so `import` restores them and the site
    /// serves them offline. Blocking.
    pub fn export_layout(&self, images: &[ImageRef], out: &Path) -> io::Result<usize> {
        let store = &self.store;
        std::fs::create_dir_all(out.join("blobs").join("sha256"))?;
        let mut entries = Vec::new();
        let mut written = HashSet::new();
        let mut unique = HashSet::new();
        let mut with_referrers = images.to_vec();
        for image in images {
            let (Ok(route), Some(top)) = (self.route_image(image), self.cached_digest(image)?) else { continue };
            for (d, _) in super::referrers::local_referrers(store, route.upstream.host(), &route.name, &top)? {
                with_referrers.push(ImageRef { reference: Reference::Digest(d), ..image.clone() });
            }
            for t in crate::oci::referrers::cosign_tags(&top) {
                if store.records.get_tag(route.upstream.host(), &route.name, &t)?.is_some() {
                    with_referrers.push(ImageRef { reference: Reference::Tag(t), ..image.clone() });
                }
            }
        }
        let images: Vec<&ImageRef> = with_referrers.iter().filter(|i| unique.insert(i.to_string())).collect();
        let shared_tag =
            |t: &Tag| images.iter().filter(|i| matches!(&i.reference, Reference::Tag(x) if x == t)).count() > 1;
        for image in images.iter().copied() {
            let top = self
                .cached_digest(image)?
                .ok_or_else(|| io::Error::other(format!("{image} is not in the cache; pull or prefetch it first")))?;
            let (bytes, mt) = store
                .cas
                .read_manifest(&top, media::MAX_MANIFEST_BYTES)?
                .ok_or_else(|| io::Error::other(format!("manifest {top} of {image} is not in the cache")))?;
            let media_type =
                mt.or_else(|| media::sniff_manifest_type(&bytes)).unwrap_or_else(|| media::OCI_MANIFEST.into());
            // Everything reachable that is cached; a missing child manifest is an uncached
            // platform, a missing config or layer of a cached manifest is an error.
            let mut stack = vec![top.clone()];
            let mut seen = HashSet::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d.clone()) {
                    continue;
                }
                if store.cas.is_manifest(&d) {
                    if let Some((b, _)) = store.cas.read_manifest(&d, media::MAX_MANIFEST_BYTES)? {
                        let is_index = !manifest::index_children(&b).is_empty();
                        for r in manifest::references(&b) {
                            if is_index && !store.cas.contains(&r) {
                                continue;
                            }
                            stack.push(r);
                        }
                    }
                } else if !store.cas.contains(&d) {
                    return Err(io::Error::other(format!(
                        "blob {d} of {image} is not cached; prefetch the image before exporting it"
                    )));
                }
                if written.insert(d.clone()) {
                    let dest = blob_path(out, &d);
                    let src = store.cas.blob_path(&d);
                    // blobs/sha512 exists only when a sha512 blob is exported.
                    if let Some(dir) = dest.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    if std::fs::hard_link(&src, &dest).is_err() {
                        std::fs::copy(&src, &dest)?;
                    }
                }
            }
            let mut annotations = std::collections::BTreeMap::new();
            annotations.insert(NAME_ANNOTATION.to_string(), image.to_string());
            if let Reference::Tag(t) = &image.reference {
                let ref_name = if shared_tag(t) { image.to_string() } else { t.to_string() };
                annotations.insert(REF_ANNOTATION.to_string(), ref_name);
            }
            entries.push(Descriptor { media_type, digest: top.to_string(), size: bytes.len() as u64, annotations });
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
        std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index).map_err(io::Error::other)?)?;
        std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(written.len())
    }

    /// Import an OCI layout directory. `default_repo` (`registry/repo`) names entries that
    /// carry only a tag (as `skopeo copy … oci:DIR:TAG` writes them). Each image is all or
    /// nothing: every blob is verified before any is stored, and its tag record is written
    /// last. Blocking.
    pub fn import_layout(&self, layout: &Path, default_repo: Option<&str>) -> Result<ImportReport, ImportError> {
        let index_path = layout.join("index.json");
        let text = std::fs::read(&index_path).map_err(|e| {
            ImportError::Layout(format!("{}: {e} (is this an OCI image layout?)", index_path.display()))
        })?;
        let index: Index = serde_json::from_slice(&text)
            .map_err(|e| ImportError::Layout(format!("{} is not an OCI index: {e}", index_path.display())))?;
        let mut report = ImportReport::default();
        for entry in &index.manifests {
            let name =
                match (entry.annotations.get(NAME_ANNOTATION), entry.annotations.get(REF_ANNOTATION), default_repo) {
                    (Some(n), _, _) => n.clone(),
                    (None, Some(tag), Some(repo)) => format!("{repo}:{tag}"),
                    (None, Some(tag), None) => {
                        return Err(ImportError::Layout(format!(
                            "layout entry {tag:?} has no image name; pass --as registry/repository"
                        )))
                    }
                    (None, None, _) => continue,
                };
            let image: ImageRef =
                name.parse().map_err(|e: crate::oci::ImageRefError| ImportError::Layout(e.to_string()))?;
            let route = self.route_image(&image).map_err(|e| ImportError::Layout(format!("{image}: {e}")))?;
            let top: Digest =
                entry.digest.parse().map_err(|_| ImportError::Layout(format!("bad digest {:?}", entry.digest)))?;

            // Collect and verify everything first.
            let mut blobs: Vec<(Digest, Option<String>)> = Vec::new();
            let mut stack = vec![(top.clone(), Some(entry.media_type.clone()))];
            let mut seen = HashSet::new();
            while let Some((d, mt)) = stack.pop() {
                if !seen.insert(d.clone()) {
                    continue;
                }
                let path = blob_path(layout, &d);
                if !path.is_file() {
                    if mt.is_some() && d != top {
                        continue; // an index child (platform) the layout does not carry
                    }
                    return Err(ImportError::Layout(format!("blob {d} of {image} is missing from the layout")));
                }
                let (actual, _) = hash_file(&path, d.algorithm())?;
                if actual != d {
                    return Err(ImportError::Corrupt {
                        digest: d.to_string(),
                        actual: actual.to_string(),
                        image: image.to_string(),
                    });
                }
                let is_manifest = mt.is_some();
                if is_manifest {
                    let bytes = std::fs::read(&path)?;
                    let kids = manifest::index_children(&bytes);
                    let child_set: HashSet<Digest> = kids.iter().map(|(c, _)| c.clone()).collect();
                    for r in manifest::references(&bytes) {
                        let child_mt = child_set.contains(&r).then(String::new);
                        stack.push((r, child_mt));
                    }
                }
                blobs.push((d, mt));
            }
            // Then store: blobs and manifests, records last.
            for (d, mt) in &blobs {
                let path = blob_path(layout, d);
                match mt {
                    Some(mt) => {
                        let bytes = std::fs::read(&path)?;
                        let media_type = Some(mt.clone())
                            .filter(|m| !m.is_empty())
                            .or_else(|| media::sniff_manifest_type(&bytes))
                            .unwrap_or_else(|| media::OCI_MANIFEST.into());
                        self.store.cas.put_manifest(d, &media_type, &bytes)?;
                        report.bytes += bytes.len() as u64;
                    }
                    None if self.store.cas.contains(d) => {}
                    None => {
                        let mut t = self.store.cas.begin(d)?;
                        let mut f = std::fs::File::open(&path)?;
                        let mut h = Hasher::for_digest(d);
                        let mut buf = vec![0u8; 1 << 20];
                        loop {
                            let r = f.read(&mut buf)?;
                            if r == 0 {
                                break;
                            }
                            t.append(&buf[..r])?;
                            h.update(&buf[..r]);
                        }
                        report.bytes += t.written();
                        t.commit(&self.store.cas, h.finish(), None).map_err(|e| match e {
                            crate::store::CommitError::Io(e) => ImportError::Io(e),
                            other => ImportError::Corrupt {
                                digest: d.to_string(),
                                actual: other.to_string(),
                                image: image.to_string(),
                            },
                        })?;
                    }
                }
                report.blobs += 1;
            }
            let host = route.upstream.host().to_string();
            let top_type = blobs.iter().find(|(d, _)| *d == top).and_then(|(_, m)| m.clone()).unwrap_or_default();
            let now = SystemTime::now();
            self.store.records.put_image(
                &host,
                &route.name,
                &top,
                &ImageRecord { media_type: top_type.clone(), cached_at: now, pulled_at: now },
            )?;
            if let Reference::Tag(t) = &image.reference {
                let tag: Tag = t.clone();
                self.store.records.put_tag(
                    &host,
                    &route.name,
                    &tag,
                    &TagRecord { digest: top.clone(), media_type: top_type, checked_at: now },
                )?;
            }
            report.images.push(image.to_string());
        }
        Ok(report)
    }
}
