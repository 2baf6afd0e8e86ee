//! `pullthrough hosts-toml`: write containerd hosts.toml files that use this mirror, one per
//! configured upstream.

use super::location::ConfigArg;
use super::stdout::outln;
use anyhow::Context as _;
use std::path::Path;

pub fn run(config: &ConfigArg, mirror: &str, out: &Path) -> anyhow::Result<()> {
    let uri: http::Uri = mirror.parse().with_context(|| format!("--mirror {mirror:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
        "--mirror must be an http:// or https:// URL, e.g. http://127.0.0.1:5000"
    );
    let cfg = config.load()?;
    eprintln!("hosts-toml: writing to {}; {}", out.display(), config.describe());
    for p in pullthrough::hosts_toml::write_all(&cfg, mirror, out)
        .with_context(|| format!("cannot write under {}", out.display()))?
    {
        outln!("{}", p.display());
    }
    Ok(())
}
