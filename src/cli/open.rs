//! The cache service a command works on: opened read-only on an existing cache directory,
//! or as a writer that creates it and takes the writers' lock.

use super::location::{Location, Resolved};
use anyhow::Context as _;

/// The cache service for an offline command on an existing cache directory, having said
/// which one (`command` `verb`s it) on stderr.
pub fn offline(
    loc: &Location,
    r: &Resolved,
    command: &str,
    verb: &str,
) -> anyhow::Result<pullthrough::core::PullThrough> {
    loc.announce(command, verb, r);
    anyhow::ensure!(
        r.cache_dir.is_dir(),
        "cache directory {} does not exist; pass --cache-dir or --config",
        r.cache_dir.display()
    );
    pullthrough::build_pull_through(&r.config, &r.cache_dir)
}

/// The cache service for a command that writes to the cache, creating the directory.
pub fn writer(loc: &Location, r: &Resolved, command: &str) -> anyhow::Result<pullthrough::core::PullThrough> {
    loc.announce(command, "writing to", r);
    let dir = &r.cache_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let pt = pullthrough::build_pull_through(&r.config, dir)?;
    pt.store().claim(pullthrough::store::Role::Writer)?;
    Ok(pt)
}

/// The images a command names, routed over the configured upstreams as a client's
/// repository path is: `nginx`, `library/app:v2`, `docker-hub/nginx`, `ghcr.io/org/app:1`.
pub fn images(r: &Resolved, written: &[String]) -> anyhow::Result<Vec<pullthrough::oci::ImageRef>> {
    Ok(written.iter().map(|w| pullthrough::settings::route_image(&r.config.upstreams, w)).collect::<Result<_, _>>()?)
}
