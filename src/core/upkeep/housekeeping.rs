//! Keeping the cache in shape: eviction to the budget, lifecycle policies, pins, removing
//! the temp files of processes that died, writing the pull times and last-use times gathered
//! in memory (every tick, and before a lifecycle pass or `ls` reads them), and the inventory
//! `ls` prints. The blocking passes here run on blocking threads (background tasks) or in
//! the CLI; none is on a request's path.

use crate::core::lifecycle::{self, Image};
use crate::core::pull::PullThrough;
use crate::oci::{manifest, media, Digest, Reference, RepoName};
use crate::store::EvictionReport;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a lifecycle pass expired (or, dry, would expire) and what that frees.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub expired: Vec<ExpiredImage>,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

#[derive(Debug, Serialize)]
pub struct ExpiredImage {
    pub upstream: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
}

/// One image in the cache, for `ls`.
#[derive(Debug, Serialize)]
pub struct CachedImage {
    pub upstream: String,
    pub repository: String,
    pub tags: Vec<String>,
    pub digest: String,
    pub media_type: String,
    /// Bytes of this image (manifest, config, layers, children) present in the cache.
    pub size: u64,
    pub cached_at: u64,
    pub pulled_at: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The images of one repository: tag and image records merged by digest, child manifests
/// of an index folded into their parent (they are not images of their own).
fn repo_images(pt: &PullThrough, up: &str, name: &RepoName) -> io::Result<Vec<(Image, String)>> {
    let store = pt.store();
    let mut by_digest: HashMap<Digest, (Image, String)> = HashMap::new();
    for (d, rec) in store.images(up, name)? {
        by_digest.insert(
            d.clone(),
            (Image { digest: d, tags: vec![], pushed_at: rec.cached_at, pulled_at: rec.pulled_at }, rec.media_type),
        );
    }
    for (tag, rec) in store.tags(up, name)? {
        let e = by_digest.entry(rec.digest.clone()).or_insert_with(|| {
            (
                Image {
                    digest: rec.digest.clone(),
                    tags: vec![],
                    pushed_at: rec.checked_at,
                    pulled_at: rec.checked_at,
                },
                rec.media_type.clone(),
            )
        });
        e.0.tags.push(tag.to_string());
    }
    let mut children = HashSet::new();
    for (img, mt) in by_digest.values() {
        if mt == media::OCI_INDEX || mt == media::DOCKER_LIST {
            if let Some((bytes, _)) = store.read_manifest(&img.digest, media::MAX_MANIFEST_BYTES)? {
                children.extend(manifest::index_children(&bytes).into_iter().map(|(d, _)| d));
            }
        }
    }
    Ok(by_digest.into_values().filter(|(i, _)| !children.contains(&i.digest) || !i.tags.is_empty()).collect())
}

impl PullThrough {
    /// Every blob the pins keep: pinned manifests (tags resolved through their records)
    /// and all they reference. Blocking.
    pub fn pinned(&self) -> io::Result<HashSet<Digest>> {
        let mut roots = Vec::new();
        let from_file = self.pins_file()?;
        for pin in self.pins().iter().chain(&from_file) {
            let Some(up) = self.upstreams().by_host(&pin.host) else {
                continue;
            };
            let name = up.normalize(pin.name.clone());
            match &pin.reference {
                Reference::Digest(d) => roots.push(d.clone()),
                Reference::Tag(t) => {
                    if let Some(rec) = self.store().get_tag(up.host(), &name, t)? {
                        roots.push(rec.digest);
                    }
                }
            }
        }
        self.store().closure(roots)
    }

    /// Pins recorded by `prefetch --pin`: `<cache>/pins`, one image reference a line.
    /// Blocking.
    pub fn pins_file(&self) -> io::Result<Vec<crate::oci::ImageRef>> {
        let text = match std::fs::read_to_string(self.store().root().join("pins")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Add a pin to `<cache>/pins` (idempotent). Blocking.
    pub fn add_pin(&self, image: &crate::oci::ImageRef) -> io::Result<()> {
        let mut pins = self.pins_file()?;
        if !pins.contains(image) {
            pins.push(image.clone());
            let text: String = pins.iter().map(|p| format!("{p}\n")).collect();
            self.store().write_file("pins", text.as_bytes())?;
        }
        Ok(())
    }

    /// One eviction pass, if the budget needs one. Blocking.
    pub fn evict_now(&self) -> io::Result<EvictionReport> {
        let need = self.store().eviction_need()?;
        if need == 0 {
            return Ok(EvictionReport::default());
        }
        let referenced = self.store().closure(self.store().record_roots()?)?;
        let report = self.store().evict(need, &self.pinned()?, &referenced)?;
        crate::metrics::METRICS.evictions.inc_by(report.removed as u64);
        crate::metrics::METRICS.evicted_bytes.inc_by(report.bytes);
        tracing::info!(removed = report.removed, bytes = report.bytes, need, "evicted least recently used blobs");
        Ok(report)
    }

    /// Remove an expired image's tag and image records (and what memory holds of them).
    fn expire(&self, up: &str, name: &RepoName, img: &Image) -> io::Result<()> {
        for t in &img.tags {
            if let Ok(tag) = t.parse() {
                self.store().remove_tag(up, name, &tag)?;
                self.manifests().forget_tag(up, name, &tag);
            }
        }
        self.store().remove_image(up, name, &img.digest)?;
        self.manifests().forget_pull(up, name, &img.digest);
        let expired = crate::events::Event::new(crate::events::EventKind::Expired);
        crate::events::emit(expired.upstream(up).repository(name).digest(&img.digest).tags(img.tags.clone()));
        Ok(())
    }

    /// Apply every repository's lifecycle policy: expire images (their tag and image
    /// records) and delete the blobs that only expired images referenced. With `dry_run`,
    /// report the same without changing anything. Blocking.
    pub fn apply_lifecycle(&self, dry_run: bool) -> io::Result<PruneReport> {
        // Pull times still in memory count (`sinceImagePulled`).
        self.flush_pulls();
        let now = SystemTime::now();
        let pinned = self.pinned()?;
        let mut report = PruneReport::default();
        let mut kept_roots = Vec::new();
        let mut expired_roots = Vec::new();
        for (up, name) in self.store().repositories()? {
            let images = repo_images(self, &up, &name)?;
            let policy = self.manifests().policies().lifecycle(&up, &name).cloned();
            let expired: HashSet<Digest> = match &policy {
                Some(p) => {
                    let imgs: Vec<Image> = images.iter().map(|(i, _)| i.clone()).collect();
                    lifecycle::evaluate(p, &imgs, now).into_iter().filter(|d| !pinned.contains(d)).collect()
                }
                None => HashSet::new(),
            };
            for (img, _) in images {
                if !expired.contains(&img.digest) {
                    kept_roots.push(img.digest);
                    continue;
                }
                if !dry_run {
                    self.expire(&up, &name, &img)?;
                }
                report.expired.push(ExpiredImage {
                    upstream: up.clone(),
                    repository: name.to_string(),
                    digest: img.digest.to_string(),
                    tags: img.tags.clone(),
                });
                expired_roots.push(img.digest);
            }
        }
        if !expired_roots.is_empty() {
            let keep = self.store().closure(kept_roots.into_iter().chain(pinned))?;
            for d in self.store().closure(expired_roots)? {
                if keep.contains(&d) {
                    continue;
                }
                let size = std::fs::metadata(self.store().blob_path(&d)).map(|m| m.len()).unwrap_or(0);
                if size == 0 && !self.store().contains(&d) {
                    continue;
                }
                if !dry_run {
                    self.store().remove_blob(&d)?;
                    self.manifests().forget_manifest(&d);
                }
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        Ok(report)
    }

    /// Every image in the cache with its tags and size. Blocking.
    pub fn list_images(&self) -> io::Result<Vec<CachedImage>> {
        self.flush_pulls();
        let sizes: HashMap<Digest, u64> = self.store().blobs().into_iter().map(|b| (b.digest, b.size)).collect();
        let mut out = Vec::new();
        for (up, name) in self.store().repositories()? {
            for (mut img, media_type) in repo_images(self, &up, &name)? {
                img.tags.sort();
                let size = self.store().closure([img.digest.clone()])?.iter().filter_map(|d| sizes.get(d)).sum();
                out.push(CachedImage {
                    upstream: up.clone(),
                    repository: name.to_string(),
                    tags: img.tags,
                    digest: img.digest.to_string(),
                    media_type,
                    size,
                    cached_at: unix(img.pushed_at),
                    pulled_at: unix(img.pulled_at),
                });
            }
        }
        out.sort_by(|a, b| (&a.upstream, &a.repository, &a.tags).cmp(&(&b.upstream, &b.repository, &b.tags)));
        Ok(out)
    }
}

/// Fetch the config's `[[prefetch]]` images (each with the platforms wanted) now and every
/// `every`, until the process ends.
pub fn spawn_prefetch(
    pt: Arc<PullThrough>,
    list: Vec<(crate::oci::ImageRef, super::prefetch::Platforms)>,
    every: Duration,
) {
    if list.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            for (image, platforms) in &list {
                match pt.prefetch(image, platforms, 4).await {
                    Ok(r) => {
                        tracing::info!(image = %r.image, digest = %r.digest, blobs = r.blobs, fetched_bytes = r.fetched_bytes, "prefetched")
                    }
                    Err(e) => {
                        tracing::warn!(image = %image, error = %e, "prefetch failed; will retry at the next interval")
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Run eviction (every `interval`, or at once when a fill asks) and lifecycle policies
/// (every `lifecycle_interval`) until the process ends.
pub fn spawn(pt: Arc<PullThrough>, interval: Duration, lifecycle_interval: Duration) {
    let notify = pt.fills().housekeeping.clone();
    let p = pt.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = notify.notified() => {}
            }
            let p = p.clone();
            let r = tokio::task::spawn_blocking(move || {
                p.store().flush_last_use();
                p.flush_pulls();
                // A prefetch or import killed while the daemon runs leaves its temp files.
                match p.store().clean_dead_temp() {
                    Ok(c) if c.sessions > 0 => {
                        tracing::info!(sessions = c.sessions, "removed temp files of processes that stopped")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not clean temp files of stopped processes"),
                }
                p.evict_now()
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "eviction pass failed");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lifecycle_interval).await;
            let p = pt.clone();
            let pass = move || {
                // Not while a prefetch or import adds content (see store::lock): next turn.
                let Some(_pass) = p.store().lifecycle_pass().map_err(io::Error::other)? else {
                    tracing::info!("lifecycle pass skipped: a prefetch or import is writing to the cache");
                    return Ok(PruneReport::default());
                };
                p.apply_lifecycle(false)
            };
            match tokio::task::spawn_blocking(pass).await {
                Ok(Ok(r)) if !r.expired.is_empty() => tracing::info!(
                    images = r.expired.len(),
                    blobs = r.blobs_removed,
                    bytes = r.bytes_freed,
                    "lifecycle policies expired images"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "lifecycle pass failed"),
                _ => {}
            }
        }
    });
}
