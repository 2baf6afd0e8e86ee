//! Reachability: which blobs the kept images reference, following manifests and indexes.

use super::Store;
use crate::oci::{manifest, media, Digest};
use std::collections::HashSet;
use std::io;

impl Store {
    /// `roots` and everything they reference, transitively. Blocking.
    pub fn closure(&self, roots: impl IntoIterator<Item = Digest>) -> io::Result<HashSet<Digest>> {
        let mut seen = HashSet::new();
        let mut stack: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) || !self.cas.is_manifest(&d) {
                continue;
            }
            if let Some((bytes, _)) = self.cas.read_manifest(&d, media::MAX_MANIFEST_BYTES)? {
                stack.extend(manifest::references(&bytes).into_iter().filter(|r| !seen.contains(r)));
            }
        }
        Ok(seen)
    }

    /// The manifest digests every tag and image record names: what keeps blobs referenced.
    /// Blocking.
    pub fn record_roots(&self) -> io::Result<Vec<Digest>> {
        let mut roots = Vec::new();
        for (up, name) in self.records.repositories()? {
            roots.extend(self.records.tags(&up, &name)?.into_iter().map(|(_, r)| r.digest));
            roots.extend(self.records.images(&up, &name)?.into_iter().map(|(d, _)| d));
        }
        Ok(roots)
    }
}
