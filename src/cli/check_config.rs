//! `pullthrough check-config`: validate a configuration file (or the embedded default) and
//! say what it configures.

use super::location::Location;
use super::stdout::outln;

pub fn run(loc: &Location) -> anyhow::Result<()> {
    let r = loc.resolve()?;
    let what = match &loc.config.config {
        Some(p) => p.display().to_string(),
        None => "embedded default config".to_string(),
    };
    outln!("{what}: ok ({} upstreams, cache dir {})", r.config.upstreams.len(), r.cache_dir.display());
    Ok(())
}
