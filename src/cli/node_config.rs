//! `pullthrough hosts-toml` and `pullthrough registries-conf`: point a node's container
//! runtime at the mirror. `hosts-toml --write` merges into containerd's config directory
//! (the DaemonSet's init container runs it on every node), `--remove` takes out only what it
//! wrote (the cleanup manifest runs it), `--out` writes fresh files.

use super::location::ConfigArg;
use anyhow::Context as _;
use std::path::Path;

fn check_mirror(mirror: &str) -> anyhow::Result<()> {
    let uri: http::Uri = mirror.parse().with_context(|| format!("--mirror {mirror:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
        "--mirror must be an http:// or https:// URL, e.g. http://127.0.0.1:5000"
    );
    Ok(())
}

/// Where `hosts-toml` writes, and how.
pub enum Target<'a> {
    /// Fresh files under this directory.
    Out(&'a Path),
    /// Merged into a node's config directory.
    Merge(&'a Path),
    /// The mirror taken out of a node's config directory.
    Remove(&'a Path),
}

pub fn hosts_toml(config: &ConfigArg, mirror: Option<&str>, target: Target<'_>) -> anyhow::Result<()> {
    let cfg = config.load()?;
    let files = match target {
        Target::Out(out) | Target::Merge(out) => {
            let mirror = mirror.context("--mirror is needed to write hosts.toml files")?;
            check_mirror(mirror)?;
            eprintln!("hosts-toml: writing to {}; {}", out.display(), config.describe());
            match target {
                Target::Out(_) => pullthrough::hosts_toml::write_all(&cfg, mirror, out)
                    .with_context(|| format!("cannot write under {}", out.display()))?,
                _ => pullthrough::hosts_toml::merge_all(&cfg, mirror, out)?,
            }
        }
        Target::Remove(dir) => {
            eprintln!("hosts-toml: removing the mirror from {}; {}", dir.display(), config.describe());
            pullthrough::hosts_toml::unmerge_all(&cfg, dir)?
        }
    };
    for p in files {
        println!("{}", p.display());
    }
    Ok(())
}

pub fn registries_conf(config: &ConfigArg, mirror: &str, out: Option<&Path>) -> anyhow::Result<()> {
    check_mirror(mirror)?;
    let cfg = config.load()?;
    let text = pullthrough::registries_conf::render(&cfg, mirror).map_err(anyhow::Error::msg)?;
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            println!("{}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
