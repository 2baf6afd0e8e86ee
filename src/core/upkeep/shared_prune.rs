//! Lifecycle policies over the shared tier's tag records (`pullthrough prune --shared`).
//!
//! The bucket holds tag answers and content; content is bounded by an S3 lifecycle rule on
//! the prefix (README, "Shared tier"). What only pullthrough can do is apply each
//! repository's ECR-style policy to the tag records, so that an expired tag is no longer
//! answered cluster-wide from the bucket. A record knows when the upstream last confirmed
//! it, not when it was first cached, so that time stands for both "pushed" and "pulled".
//! Content objects are left to the bucket's lifecycle rule: they are shared across
//! repositories and cheap to refetch.

use super::housekeeping::{ExpiredImage, PruneReport};
use crate::core::error::{CoreError, SharedOp};
use crate::core::lifecycle::{self, Image};
use crate::core::pull::PullThrough;
use crate::oci::{Digest, RepoName};
use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

impl PullThrough {
    /// Apply every repository's lifecycle policy to the shared tier's tag records, sparing
    /// `pinned` digests (`pinned()`); with `dry_run`, report without deleting. An error when
    /// no shared tier is configured.
    pub async fn apply_lifecycle_shared(
        &self,
        pinned: &HashSet<Digest>,
        dry_run: bool,
    ) -> Result<PruneReport, CoreError> {
        let Some(shared) = self.shared() else {
            return Err(CoreError::NoSharedTier);
        };
        let entries = shared
            .tag_records()
            .await
            .map_err(|source| CoreError::Shared { what: SharedOp::ListTagRecords, source })?;
        // (upstream, repository) → digest → its image as lifecycle rules see it.
        let mut repos: BTreeMap<(String, RepoName), BTreeMap<Digest, Image>> = BTreeMap::new();
        for e in &entries {
            let img = repos
                .entry((e.upstream.clone(), e.name.clone()))
                .or_default()
                .entry(e.record.digest.clone())
                .or_insert_with(|| Image {
                    digest: e.record.digest.clone(),
                    tags: Vec::new(),
                    pushed_at: e.record.checked_at,
                    pulled_at: e.record.checked_at,
                });
            img.tags.push(e.tag.to_string());
            img.pushed_at = img.pushed_at.min(e.record.checked_at);
            img.pulled_at = img.pulled_at.max(e.record.checked_at);
        }
        let now = SystemTime::now();
        let mut report = PruneReport::default();
        for ((up, name), images) in repos {
            let Some(policy) = self.manifests().policies().lifecycle(&up, &name).cloned() else {
                continue;
            };
            let images: Vec<Image> = images.into_values().collect();
            for d in lifecycle::evaluate(&policy, &images, now) {
                if pinned.contains(&d) {
                    continue;
                }
                let img = images.iter().find(|i| i.digest == d).expect("evaluate returns given digests");
                if !dry_run {
                    for t in &img.tags {
                        let Ok(tag) = t.parse() else { continue };
                        shared
                            .remove_tag(&up, &name, &tag)
                            .await
                            .map_err(|source| CoreError::Shared { what: SharedOp::DeleteTagRecord, source })?;
                    }
                }
                report.expired.push(ExpiredImage {
                    upstream: up.clone(),
                    repository: name.to_string(),
                    digest: d.to_string(),
                    tags: img.tags.clone(),
                });
            }
        }
        Ok(report)
    }
}
