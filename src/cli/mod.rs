//! The command line's own parts, beside `main.rs` (which declares the subcommands): where a
//! command finds its configuration and cache ([`location`]), `pullthrough doctor`
//! ([`doctor`]), and the progress the long commands show ([`progress`]). The library knows
//! nothing of these.

pub mod doctor;
pub mod location;
pub mod memory;
pub mod node_config;
pub mod progress;
pub mod verify;

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
