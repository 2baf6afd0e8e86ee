//! The command line's own parts, beside `main.rs` (which declares the subcommands and
//! dispatches): one file per command (`serve`, `prefetch`, `export`, `import`, `verify`,
//! `prune`, `ls`, `doctor`, `check_config`, `node_config` for hosts-toml and registries-conf), where a command finds its
//! configuration and cache ([`location`]) and opens it ([`open`]), the log setup
//! ([`logging`]), and the progress the long commands show ([`progress`]). The library knows
//! nothing of these.

pub mod check_config;
pub mod doctor;
pub mod export;
pub mod import;
pub mod location;
pub mod logging;
pub mod ls;
pub mod memory;
pub mod node_config;
pub mod open;
pub mod prefetch;
pub mod progress;
pub mod prune;
pub mod serve;
pub mod stdout;
pub mod verify;

use std::path::{Path, PathBuf};

/// The async runtime every command runs on. Worker stacks of 8 MiB, not tokio's 2: a
/// request's future chain (http, core, upstream auth, hyper) is polled on one stack, and
/// unoptimised builds lay its frames out large: a bearer-token manifest miss measured
/// 2.09 MB of stack (gdb, debug build) and overflowed. Only touched pages cost memory.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(8 << 20).build()
}

/// An error and its causes on one line, each cause once (see `error_text::error_chain`).
pub fn error_text(e: &anyhow::Error) -> String {
    pullthrough::error_text::error_chain(e.as_ref())
}

/// A byte count for people: "512 B", "1.5 MiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A fresh directory beside `target`, for staging.
pub fn stage_dir(target: &Path) -> anyhow::Result<PathBuf> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".pullthrough-stage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_text_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(pullthrough::config::ConfigError::Read { path: "/x.toml".into(), source: io });
        assert_eq!(super::error_text(&e), "cannot read config file /x.toml: No such file or directory (os error 2)");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_text(&e), "outer: inner");
    }
}
