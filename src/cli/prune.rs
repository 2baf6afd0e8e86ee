//! `pullthrough prune`: apply the lifecycle policies now, to the local cache or to the
//! shared tier's tag records, and print what expired.

use super::location::Location;
use super::stdout::outln;

pub fn run(loc: &Location, dry_run: bool, json: bool, shared: bool) -> anyhow::Result<()> {
    let r = loc.resolve()?;
    let pt = super::open::offline(loc, &r, "prune", if dry_run { "reading" } else { "pruning" })?;
    let policies = r.config.upstreams.iter().flat_map(|u| &u.repositories).any(|r| r.lifecycle_policy.is_some());
    if !shared {
        // The bucket's records need no lock: the local cache is not touched. Taken even
        // without policies, so prune answers the same beside a running daemon either way.
        let role = if dry_run { pullthrough::store::Role::Reader } else { pullthrough::store::Role::Pruner };
        pt.store().claim(role)?;
    }
    let report = if !policies {
        pullthrough::core::PruneReport::default()
    } else if shared {
        let pinned = pt.pinned()?;
        let rt = super::runtime()?;
        rt.block_on(pt.apply_lifecycle_shared(&pinned, dry_run))?
    } else {
        pt.apply_lifecycle(dry_run)?
    };
    if json {
        let v = serde_json::json!({"dry_run": dry_run, "policies_configured": policies, "report": report});
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if !policies {
        // Say so, rather than "removed 0 images".
        outln!(
            "no lifecycle policy is configured (lifecycle_policy in an [[upstream.repositories]] section of \
             the config); nothing to prune"
        );
        return Ok(());
    }
    let verb = if dry_run { "would expire" } else { "expired" };
    for e in &report.expired {
        let tags = if e.tags.is_empty() { "untagged".to_string() } else { format!("tags {}", e.tags.join(", ")) };
        outln!("{verb} {}/{}@{} ({tags})", e.upstream, e.repository, e.digest);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    outln!(
        "{verb} {} images, {} blobs, {} ({} bytes)",
        report.expired.len(),
        report.blobs_removed,
        super::human_bytes(report.bytes_freed),
        report.bytes_freed
    );
    Ok(())
}
