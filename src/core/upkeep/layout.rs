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

use crate::core::progress::{Counted, Event, Progress};
use crate::core::pull::PullThrough;
use crate::oci::media::{self};
use crate::oci::{manifest, Algorithm, Digest, Hasher, ImageRef, Reference, Tag};
use crate::store::{ImageRecord, TagRecord};
use crate::upstream::Route;
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

/// Hash a file with `algorithm` in 1 MiB reads, reporting them. Blocking.
fn hash_file(path: &Path, algorithm: Algorithm, progress: &dyn Progress) -> io::Result<(Digest, u64)> {
    let mut f = Counted { inner: std::fs::File::open(path)?, progress };
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
            Reference::Digest(d) => Ok(self.store().contains(d).then(|| d.clone())),
            Reference::Tag(t) => Ok(self.store().get_tag(route.upstream.host(), &route.name, t)?.map(|r| r.digest)),
        }
    }

    /// Write cached images as an OCI layout in directory `out`. Every blob an exported
    /// manifest needs must be cached; an index's children that are not cached (platforms
    /// never pulled) are left out of the layout. The cached referrers of each image (what
    /// `prefetch --with-referrers` fetched: signatures, SBOMs) go along as images named by
    /// digest, and its cached cosign tags by tag, so `import` restores them and the site
    /// serves them offline. Each image is an item of `progress`, its blobs' sizes its bytes.
    /// Blocking.
    pub fn export_layout(&self, images: &[ImageRef], out: &Path, progress: &dyn Progress) -> io::Result<usize> {
        std::fs::create_dir_all(out.join("blobs").join("sha256"))?;
        let mut unique = HashSet::new();
        let all = self.with_referrers(images)?;
        let images: Vec<&ImageRef> = all.iter().filter(|i| unique.insert(i.to_string())).collect();
        let shared_tag =
            |t: &Tag| images.iter().filter(|i| matches!(&i.reference, Reference::Tag(x) if x == t)).count() > 1;
        progress.event(Event::Planned { items: images.len(), bytes: None });
        let mut entries = Vec::new();
        let mut written = HashSet::new();
        for image in images.iter().copied() {
            let name = image.to_string();
            progress.event(Event::Started { name: &name });
            match self.export_image(image, out, &mut written, progress) {
                Ok(mut entry) => {
                    if let Reference::Tag(t) = &image.reference {
                        let ref_name = if shared_tag(t) { image.to_string() } else { t.to_string() };
                        entry.annotations.insert(REF_ANNOTATION.to_string(), ref_name);
                    }
                    entries.push(entry);
                    progress.event(Event::Finished { name: &name });
                }
                // The run ends here: the caller reports the error, once.
                Err(e) => return Err(e),
            }
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
        std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index).map_err(io::Error::other)?)?;
        std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(written.len())
    }

    /// `images` and, after them, the cached referrers and cosign tags of each.
    fn with_referrers(&self, images: &[ImageRef]) -> io::Result<Vec<ImageRef>> {
        let store = &self.store();
        let mut all = images.to_vec();
        for image in images {
            let (Ok(route), Some(top)) = (self.route_image(image), self.cached_digest(image)?) else { continue };
            for (d, _) in crate::core::referrers::local_referrers(store, route.upstream.host(), &route.name, &top)? {
                all.push(ImageRef { reference: Reference::Digest(d), ..image.clone() });
            }
            for t in crate::oci::referrers::cosign_tags(&top) {
                if store.get_tag(route.upstream.host(), &route.name, &t)?.is_some() {
                    all.push(ImageRef { reference: Reference::Tag(t), ..image.clone() });
                }
            }
        }
        Ok(all)
    }

    /// Write one cached image's blobs into the layout `out` (those not `written` already);
    /// its index entry (without the tag's `ref.name`, which depends on the other images).
    fn export_image(
        &self,
        image: &ImageRef,
        out: &Path,
        written: &mut HashSet<Digest>,
        progress: &dyn Progress,
    ) -> io::Result<Descriptor> {
        let store = &self.store();
        let top = self
            .cached_digest(image)?
            .ok_or_else(|| io::Error::other(format!("{image} is not in the cache; pull or prefetch it first")))?;
        let (bytes, mt) = store
            .read_manifest(&top, media::MAX_MANIFEST_BYTES)?
            .ok_or_else(|| io::Error::other(format!("manifest {top} of {image} is not in the cache")))?;
        let media_type = media::manifest_type(mt.as_deref(), &bytes);
        // Everything reachable that is cached; a missing child manifest is an uncached
        // platform, a missing config or layer of a cached manifest is an error.
        let mut stack = vec![top.clone()];
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if store.is_manifest(&d) {
                if let Some((b, _)) = store.read_manifest(&d, media::MAX_MANIFEST_BYTES)? {
                    let is_index = !manifest::index_children(&b).is_empty();
                    stack.extend(manifest::references(&b).into_iter().filter(|r| !is_index || store.contains(r)));
                }
            } else if !store.contains(&d) {
                return Err(io::Error::other(format!(
                    "blob {d} of {image} is not cached; prefetch the image before exporting it"
                )));
            }
            if written.insert(d.clone()) {
                let dest = blob_path(out, &d);
                let src = store.blob_path(&d);
                // blobs/sha512 exists only when a sha512 blob is exported.
                if let Some(dir) = dest.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                if std::fs::hard_link(&src, &dest).is_err() {
                    std::fs::copy(&src, &dest)?;
                }
                progress.bytes(std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0));
            }
        }
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(NAME_ANNOTATION.to_string(), image.to_string());
        Ok(Descriptor { media_type, digest: top.to_string(), size: bytes.len() as u64, annotations })
    }

    /// Import an OCI layout directory. `default_repo` (`registry/repo`) names entries that
    /// carry only a tag (as `skopeo copy … oci:DIR:TAG` writes them). Every entry's name and
    /// upstream are checked before anything is imported. Each image is all or nothing: every
    /// blob is verified before any is stored, and its tag record is written last. Each image
    /// is an item of `progress`; its bytes are those read from the layout (to verify, and
    /// again to store what the cache lacks). Blocking.
    pub fn import_layout(
        &self,
        layout: &Path,
        default_repo: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<ImportReport, ImportError> {
        let index = read_index(layout)?;
        let mut images = Vec::new();
        for entry in &index.manifests {
            if let Some(image) = entry_image(entry, default_repo)? {
                let route = self.route_image(&image).map_err(|e| ImportError::Layout(format!("{image}: {e}")))?;
                let top: Digest =
                    entry.digest.parse().map_err(|_| ImportError::Layout(format!("bad digest {:?}", entry.digest)))?;
                images.push((image, route, top, entry.media_type.clone()));
            }
        }
        progress.event(Event::Planned { items: images.len(), bytes: None });
        let mut report = ImportReport::default();
        for (image, route, top, media_type) in &images {
            let name = image.to_string();
            progress.event(Event::Started { name: &name });
            let imported = self.import_image(layout, image, route, (top, media_type), progress);
            match imported {
                Ok((blobs, bytes)) => {
                    report.blobs += blobs;
                    report.bytes += bytes;
                    report.images.push(name.clone());
                    progress.event(Event::Finished { name: &name });
                }
                // The run ends here: the caller reports the error, once.
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Import one image of a layout: its blobs verified, then stored, then its records.
    /// The blobs it references and the bytes written.
    fn import_image(
        &self,
        layout: &Path,
        image: &ImageRef,
        route: &Route,
        (top, top_type): (&Digest, &str),
        progress: &dyn Progress,
    ) -> Result<(usize, u64), ImportError> {
        let blobs = walk_layout(layout, image, top, top_type, progress)?;
        let unverified: Vec<&(Digest, Option<String>, u64)> = blobs.iter().filter(|(_, mt, _)| mt.is_none()).collect();
        let to_write: u64 = unverified.iter().filter(|(d, _, _)| !self.store().contains(d)).map(|(_, _, n)| n).sum();
        // Every blob is read to verify it (manifests already were), and those the cache
        // lacks again to store them.
        progress.event(Event::Sized { bytes: blobs.iter().map(|(_, _, n)| n).sum::<u64>() + to_write });
        for (d, _, _) in unverified {
            verify_blob(layout, d, image, progress)?;
        }
        let mut bytes = 0;
        for (d, mt, _) in &blobs {
            bytes += self.store_blob(layout, d, mt.as_deref(), image, progress)?;
        }
        let top_type = blobs.iter().find(|(d, _, _)| d == top).and_then(|(_, m, _)| m.clone()).unwrap_or_default();
        self.write_records(route, &image.reference, top, top_type)?;
        Ok((blobs.len(), bytes))
    }

    /// Store one verified blob of a layout (a manifest with its media type when `mt` is
    /// set), unless the cache has it; the bytes written.
    fn store_blob(
        &self,
        layout: &Path,
        d: &Digest,
        mt: Option<&str>,
        image: &ImageRef,
        progress: &dyn Progress,
    ) -> Result<u64, ImportError> {
        let path = blob_path(layout, d);
        if let Some(mt) = mt {
            let bytes = std::fs::read(&path)?;
            let media_type = media::manifest_type(Some(mt), &bytes);
            self.store().put_manifest(d, &media_type, &bytes)?;
            return Ok(bytes.len() as u64);
        }
        if self.store().contains(d) {
            return Ok(0);
        }
        let mut t = self.store().begin(d)?;
        let mut f = Counted { inner: std::fs::File::open(&path)?, progress };
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
        let n = t.written();
        self.store().commit(t, h.finish(), None).map_err(|e| match e {
            crate::store::CommitError::Io(e) => ImportError::Io(e),
            other => {
                ImportError::Corrupt { digest: d.to_string(), actual: other.to_string(), image: image.to_string() }
            }
        })?;
        Ok(n)
    }

    /// The image's record, and its tag's when it was imported by tag: written last, so an
    /// image is listed only once all of it is stored.
    fn write_records(&self, route: &Route, reference: &Reference, top: &Digest, media_type: String) -> io::Result<()> {
        let host = route.upstream.host();
        let now = SystemTime::now();
        self.store().put_image(
            host,
            &route.name,
            top,
            &ImageRecord { media_type: media_type.clone(), cached_at: now, pulled_at: now },
        )?;
        if let Reference::Tag(tag) = reference {
            self.store().put_tag(
                host,
                &route.name,
                tag,
                &TagRecord { digest: top.clone(), media_type, checked_at: now },
            )?;
        }
        Ok(())
    }
}

/// A layout's index.json.
fn read_index(layout: &Path) -> Result<Index, ImportError> {
    let index_path = layout.join("index.json");
    let text = std::fs::read(&index_path)
        .map_err(|e| ImportError::Layout(format!("{}: {e} (is this an OCI image layout?)", index_path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| ImportError::Layout(format!("{} is not an OCI index: {e}", index_path.display())))
}

/// The image an index entry names: its containerd name, or `default_repo` with its tag;
/// `None` for an entry with neither (nothing to call it by).
fn entry_image(entry: &Descriptor, default_repo: Option<&str>) -> Result<Option<ImageRef>, ImportError> {
    let name = match (entry.annotations.get(NAME_ANNOTATION), entry.annotations.get(REF_ANNOTATION), default_repo) {
        (Some(n), _, _) => n.clone(),
        (None, Some(tag), Some(repo)) => format!("{repo}:{tag}"),
        (None, Some(tag), None) => {
            return Err(ImportError::Layout(format!(
                "layout entry {tag:?} has no image name; pass --as registry/repository"
            )))
        }
        (None, None, _) => return Ok(None),
    };
    name.parse().map(Some).map_err(|e: crate::oci::ImageRefError| ImportError::Layout(e.to_string()))
}

/// Everything an image of a layout references, manifests first verified (their contents
/// say what else to read): (digest, media type if a manifest, size). An index child the
/// layout does not carry is a platform left out; any other missing blob is an error.
fn walk_layout(
    layout: &Path,
    image: &ImageRef,
    top: &Digest,
    top_type: &str,
    progress: &dyn Progress,
) -> Result<Vec<(Digest, Option<String>, u64)>, ImportError> {
    let mut blobs = Vec::new();
    let mut stack = vec![(top.clone(), Some(top_type.to_string()))];
    let mut seen = HashSet::new();
    while let Some((d, mt)) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let path = blob_path(layout, &d);
        let size = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            // An index child (platform) the layout does not carry.
            _ if mt.is_some() && d != *top => continue,
            _ => return Err(ImportError::Layout(format!("blob {d} of {image} is missing from the layout"))),
        };
        if mt.is_some() {
            verify_blob(layout, &d, image, progress)?;
            let bytes = std::fs::read(&path)?;
            let child_set: HashSet<Digest> = manifest::index_children(&bytes).into_iter().map(|(c, _)| c).collect();
            for r in manifest::references(&bytes) {
                let child_mt = child_set.contains(&r).then(String::new);
                stack.push((r, child_mt));
            }
        }
        blobs.push((d, mt, size));
    }
    Ok(blobs)
}

/// Check that a blob of the layout hashes to its digest, reporting the bytes read.
fn verify_blob(layout: &Path, d: &Digest, image: &ImageRef, progress: &dyn Progress) -> Result<(), ImportError> {
    let (actual, _) = hash_file(&blob_path(layout, d), d.algorithm(), progress)?;
    if actual != *d {
        return Err(ImportError::Corrupt {
            digest: d.to_string(),
            actual: actual.to_string(),
            image: image.to_string(),
        });
    }
    Ok(())
}
