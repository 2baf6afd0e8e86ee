//! Where a command finds its configuration and its cache directory: one set of options
//! shared by every subcommand, and the one line each command prints (to stderr) to say
//! what it uses, so an operator never wonders which cache `ls` just read.

use pullthrough::config::Config;
use std::path::{Path, PathBuf};

/// `--config`: shared by every subcommand that reads a configuration.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// Configuration file (TOML). Without it, the embedded default is used (print it with
    /// `pullthrough default-config`).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--config` and `--cache-dir`: shared by every subcommand that uses the cache.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Location {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Cache directory, overriding [cache] dir of the configuration (default:
    /// $XDG_CACHE_HOME/pullthrough, else ~/.cache/pullthrough).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Where the cache directory in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSource {
    /// `--cache-dir`.
    Flag,
    /// `[cache] dir` of the configuration file.
    Config,
    /// Neither: the default (XDG cache directory).
    Default,
}

/// A configuration and the cache directory a command works on.
pub struct Resolved {
    pub config: Config,
    pub cache_dir: PathBuf,
    pub source: DirSource,
}

impl ConfigArg {
    /// The configuration file, validated (every image it names routes to an upstream), or
    /// the embedded default.
    pub fn load(&self) -> anyhow::Result<Config> {
        let config = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::embedded(),
        };
        pullthrough::settings::check_images(&config).map_err(|e| {
            let origin = self.config.as_deref().map_or("embedded default config".into(), |p| p.display().to_string());
            anyhow::Error::new(e).context(origin)
        })?;
        Ok(config)
    }

    /// "config /etc/pullthrough.toml", or says the embedded default is used.
    pub fn describe(&self) -> String {
        match &self.config {
            Some(p) => format!("config {}", p.display()),
            None => "the embedded default config (no --config)".to_string(),
        }
    }
}

impl Location {
    /// Load the configuration and pick the cache directory: `--cache-dir`, else the
    /// configuration's, else the default.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let config = self.config.load()?;
        let (cache_dir, source) = match (&self.cache_dir, &config.cache.dir) {
            (Some(d), _) => (d.clone(), DirSource::Flag),
            (None, Some(d)) => (d.clone(), DirSource::Config),
            (None, None) => (config.cache.dir(), DirSource::Default),
        };
        Ok(Resolved { config, cache_dir, source })
    }

    /// The one line a command prints to stderr before it starts: what it `verb`s (e.g.
    /// "reading", "writing to") and with which configuration.
    pub fn announce(&self, command: &str, verb: &str, r: &Resolved) {
        eprintln!("{}", self.announcement(command, verb, &r.cache_dir, r.source));
    }

    fn announcement(&self, command: &str, verb: &str, dir: &Path, source: DirSource) -> String {
        let whence = match source {
            DirSource::Flag => " (--cache-dir)",
            DirSource::Config => " ([cache] dir)",
            DirSource::Default if self.config.config.is_none() => {
                " (no --config or --cache-dir given; pass one to use another)"
            }
            DirSource::Default => " (the config sets no [cache] dir)",
        };
        let default = if source == DirSource::Default { "the default " } else { "" };
        format!("{command}: {verb} {default}cache directory {}{whence}; {}", dir.display(), self.config.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_the_directory_and_where_it_came_from() {
        let none = Location::default();
        let line = none.announcement("ls", "reading", Path::new("/c"), DirSource::Default);
        assert_eq!(
            line,
            "ls: reading the default cache directory /c (no --config or --cache-dir given; pass one to use \
             another); the embedded default config (no --config)"
        );
        let flag = Location { config: ConfigArg { config: Some("/e/p.toml".into()) }, cache_dir: Some("/d".into()) };
        let line = flag.announcement("prune", "pruning", Path::new("/d"), DirSource::Flag);
        assert_eq!(line, "prune: pruning cache directory /d (--cache-dir); config /e/p.toml");
    }
}
