//! The `pullthrough` command line.
//!
//! Every subcommand that uses the cache takes the same `--config`/`--cache-dir` options
//! ([`cli::location`]) and says on stderr, in one line, which cache and configuration it
//! works on; `pullthrough doctor` ([`cli::doctor`]) checks a configuration end to end.

mod cli;

use clap::{Parser, Subcommand};
use cli::location::{ConfigArg, Location};
use cli::logging::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "pullthrough", version, about = "A pull-through caching proxy for container images")]
struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log what the command does at info level. Without it, every command but `serve` logs
    /// only warnings and errors (its results and progress are its output); RUST_LOG, when
    /// set, decides instead.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        loc: Location,
        /// Address to listen on, overriding [server] listen: an IP address and port, e.g.
        /// 127.0.0.1:5000.
        #[arg(long, value_name = "ADDR", value_parser = pullthrough::config::parse_listen)]
        listen: Option<SocketAddr>,
        /// Admin address (metrics, health), overriding [server] admin_listen.
        #[arg(long, value_name = "ADDR", value_parser = pullthrough::config::parse_listen)]
        admin_listen: Option<SocketAddr>,
        /// How the other cluster nodes reach this one, overriding [cluster] advertise
        /// (in a DaemonSet: "http://$(POD_IP):5000", which Kubernetes expands).
        #[arg(long, value_name = "URL")]
        advertise: Option<String>,
    },
    /// Validate a configuration file (without --config: the embedded default) and exit
    /// (non-zero, with the reason, if invalid).
    CheckConfig {
        #[command(flatten)]
        loc: Location,
    },
    /// Check a configuration end to end: the config, the cache directory and its free space,
    /// each upstream and its credentials, ECR tokens, the shared tier, the cluster's peers.
    /// Prints what to fix; exits non-zero if anything failed.
    Doctor {
        #[command(flatten)]
        loc: Location,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Apply lifecycle policies now: print the images expired and the bytes freed.
    Prune {
        #[command(flatten)]
        loc: Location,
        /// Report what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Apply the policies to the shared tier's tag records ([shared.s3]) instead of the
        /// local cache.
        #[arg(long)]
        shared: bool,
    },
    /// Write containerd hosts.toml files (one per configured upstream) that use this mirror.
    HostsToml {
        #[command(flatten)]
        config: ConfigArg,
        /// The mirror's URL as nodes reach it, e.g. http://127.0.0.1:5000.
        #[arg(long, value_name = "URL", required_unless_present = "remove")]
        mirror: Option<String>,
        /// Write fresh files into this directory (containerd's config_path).
        #[arg(long, value_name = "DIR", required_unless_present_any = ["write", "remove"], conflicts_with_all = ["write", "remove"])]
        out: Option<PathBuf>,
        /// Merge into a node's files, keeping what is there (Talos: /etc/cri/conf.d/hosts).
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "/etc/containerd/certs.d")]
        write: Option<PathBuf>,
        /// Take out only what --write wrote (in --write's directory, default /etc/containerd/certs.d).
        #[arg(long)]
        remove: bool,
    },
    /// Write a registries.conf drop-in (CRI-O, podman) that uses this mirror.
    RegistriesConf {
        #[command(flatten)]
        config: ConfigArg,
        /// The mirror's URL as nodes reach it, e.g. http://127.0.0.1:5000.
        #[arg(long, value_name = "URL")]
        mirror: String,
        /// The file to write (e.g. /etc/containers/registries.conf.d/50-pullthrough.conf); default: stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Fetch images into the cache ahead of need (works on the cache directory; the daemon
    /// may be running).
    Prefetch {
        /// Images: registry/repository:tag or registry/repository@sha256:…
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
        /// A file with one image a line (# comments allowed).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Platforms of multi-platform images to fetch (repeatable); default: this machine's.
        #[arg(long = "platform", value_name = "OS/ARCH")]
        platforms: Vec<String>,
        /// Fetch every platform.
        #[arg(long, conflicts_with = "platforms")]
        all_platforms: bool,
        /// Never evict or expire these images.
        #[arg(long)]
        pin: bool,
        /// Also fetch each image's referrers (signatures, SBOMs, attestations: manifests
        /// whose `subject` is the image), so `export` carries them through an air gap.
        #[arg(long)]
        with_referrers: bool,
        /// Blobs fetched at once.
        #[arg(long, default_value_t = 4, value_name = "N")]
        concurrency: usize,
        #[command(flatten)]
        loc: Location,
        #[command(flatten)]
        progress: cli::progress::ProgressArgs,
    },
    /// Write cached images as an OCI image layout (a directory, or a .tar file).
    Export {
        /// Cached images to write: registry/repository:tag or registry/repository@sha256:…
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
        /// Where to write the layout: a directory, or a file ending in .tar.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[command(flatten)]
        loc: Location,
        #[command(flatten)]
        progress: cli::progress::ProgressArgs,
    },
    /// Load an OCI image layout (directory or .tar) into the cache, verifying every blob.
    Import {
        /// The OCI image layout: a directory, or a .tar of one.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// registry/repository for entries that carry only a tag (skopeo's oci:DIR:TAG).
        #[arg(long = "as", value_name = "REGISTRY/REPOSITORY")]
        as_repo: Option<String>,
        #[command(flatten)]
        loc: Location,
        #[command(flatten)]
        progress: cli::progress::ProgressArgs,
    },
    /// Re-hash every cached blob and manifest; report and quarantine those that no longer
    /// match their digest (with --repair, fetch them again). Exits non-zero when corruption
    /// remains. Runs beside a daemon.
    Verify(cli::verify::VerifyArgs),
    /// List cached images: repositories, tags, digests, sizes, last pull.
    Ls {
        #[command(flatten)]
        loc: Location,
        /// Print the list as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    cli::memory::tune();
    let cli = Cli::parse();
    let log_guard = cli::logging::init(cli.log_format, cli.command.log_level(cli.verbose));
    let result = run(cli.command);
    // Every queued log line out before the final message.
    drop(log_guard);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Run one command.
fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { loc, listen, admin_listen, advertise } => {
            cli::serve::run(&loc, listen, admin_listen, advertise)
        }
        Command::CheckConfig { loc } => cli::check_config::run(&loc),
        Command::Doctor { loc } => cli::doctor::run(&loc).and_then(|ok| {
            anyhow::ensure!(ok, "some checks failed (see above)");
            Ok(())
        }),
        Command::DefaultConfig => {
            cli::stdout::write(pullthrough::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Prune { loc, dry_run, json, shared } => cli::prune::run(&loc, dry_run, json, shared),
        Command::Ls { loc, json } => cli::ls::run(&loc, json),
        Command::Verify(args) => cli::verify::run(&args),
        Command::HostsToml { config, mirror, out, write, remove } => {
            let node = write.unwrap_or_else(|| PathBuf::from("/etc/containerd/certs.d"));
            let target = match (out.as_deref(), remove) {
                (Some(o), _) => cli::node_config::Target::Out(o),
                (None, true) => cli::node_config::Target::Remove(&node),
                (None, false) => cli::node_config::Target::Merge(&node),
            };
            cli::node_config::hosts_toml(&config, mirror.as_deref(), target)
        }
        Command::RegistriesConf { config, mirror, out } => {
            cli::node_config::registries_conf(&config, &mirror, out.as_deref())
        }
        Command::Prefetch {
            images,
            file,
            platforms,
            all_platforms,
            pin,
            with_referrers,
            concurrency,
            loc,
            progress,
        } => {
            let how = cli::prefetch::PrefetchOptions {
                platforms: cli::prefetch::platforms_arg(platforms, all_platforms),
                pin,
                with_referrers,
                concurrency,
            };
            cli::prefetch::run(images, file, &how, &loc, &progress)
        }
        Command::Export { images, out, loc, progress } => cli::export::run(&images, &out, &loc, &progress),
        Command::Import { path, as_repo, loc, progress } => {
            cli::import::run(&path, as_repo.as_deref(), &loc, &progress)
        }
    }
}

impl Command {
    /// The log level without RUST_LOG: the daemon logs at info, a command at warn unless
    /// `--verbose` (its output is its results; "cache index rebuilt" is not one of them).
    fn log_level(&self, verbose: bool) -> &'static str {
        match self {
            Command::Serve { .. } => "info",
            _ if verbose => "info",
            _ => "warn",
        }
    }
}
