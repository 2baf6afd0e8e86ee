//! The `pullthrough` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pullthrough::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "pullthrough", version, about = "A pull-through caching proxy for container images")]
struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML). Without it, the embedded default is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding [server] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Cache directory, overriding [cache] dir.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Admin address (metrics, health), overriding [server] admin_listen.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate a configuration file and exit (non-zero, with the reason, if invalid).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Apply lifecycle policies now: print the images expired and the bytes freed.
    Prune {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Report what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write containerd hosts.toml files (one per configured upstream) that use this mirror.
    HostsToml {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The mirror's URL as nodes reach it, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        mirror: String,
        /// Output directory (containerd's config_path, e.g. /etc/containerd/certs.d).
        #[arg(long)]
        out: PathBuf,
    },
    /// List cached images: repositories, tags, digests, sizes, last pull.
    Ls {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Command::Serve { config, listen, cache_dir, admin_listen } => {
            serve(config.as_deref(), listen, cache_dir, admin_listen)
        }
        Command::CheckConfig { config } => Config::load(&config).map_err(Into::into).map(|c| {
            println!(
                "{}: ok ({} upstreams, cache dir {})",
                config.display(),
                c.upstreams.len(),
                c.cache.dir().display()
            );
        }),
        Command::DefaultConfig => {
            print!("{}", pullthrough::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Prune { config, cache_dir, dry_run, json } => prune(config.as_deref(), cache_dir, dry_run, json),
        Command::Ls { config, cache_dir, json } => ls(config.as_deref(), cache_dir, json),
        Command::HostsToml { config, mirror, out } => hosts_toml(config.as_deref(), &mirror, &out),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(
    config: Option<&Path>,
    listen: Option<SocketAddr>,
    cache_dir: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let listen = listen.unwrap_or(cfg.server.listen);
    let admin_listen = admin_listen.or(cfg.server.admin_listen);
    let cache_dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = pullthrough::build_app(&cfg, &cache_dir)?;
        let tls = match (&cfg.server.tls_cert, &cfg.server.tls_key) {
            (Some(cert), Some(key)) => {
                let reloading = pullthrough::http::tls::ReloadingCert::new(cert, key)?;
                reloading.spawn_watcher();
                Some(pullthrough::http::tls::server_config(reloading))
            }
            _ => None,
        };
        let bind = |addr: SocketAddr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({what}); choose another address"))
        };
        let main = bind(listen, "client listener").await?;
        let admin = match admin_listen {
            Some(a) => Some(bind(a, "admin listener").await?),
            None => None,
        };
        tracing::info!(
            listen = %main.local_addr()?,
            tls = tls.is_some(),
            admin = ?admin.as_ref().and_then(|a| a.local_addr().ok()),
            cache_dir = %cache_dir.display(),
            upstreams = cfg.upstreams.len(),
            version = env!("CARGO_PKG_VERSION"),
            "pullthrough serving"
        );
        app.pull.start_background();
        pullthrough::core::spawn_housekeeping(
            app.pull.clone(),
            cfg.cache.housekeeping_interval,
            cfg.cache.lifecycle_interval,
        );
        let listeners = pullthrough::http::Listeners { main, admin, tls };
        pullthrough::http::serve(listeners, app.clone(), shutdown_signal(), cfg.server.shutdown_grace).await;
        // Fills cut short by the shutdown leave temp files; remove them now rather than at
        // the next start.
        let removed = app.pull.store().clean_temp().unwrap_or(0);
        tracing::info!(removed_temp_files = removed, "stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The cache service for an offline command, on the configured (or given) cache dir.
fn offline(config: Option<&Path>, cache_dir: Option<PathBuf>) -> anyhow::Result<pullthrough::core::PullThrough> {
    let cfg = load(config)?;
    let dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    anyhow::ensure!(dir.is_dir(), "cache directory {} does not exist; pass --cache-dir or --config", dir.display());
    pullthrough::build_pull_through(&cfg, &dir)
}

fn prune(config: Option<&Path>, cache_dir: Option<PathBuf>, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let pt = offline(config, cache_dir)?;
    let report = pt.apply_lifecycle(dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"dry_run": dry_run, "report": report}))?);
        return Ok(());
    }
    let verb = if dry_run { "would expire" } else { "expired" };
    for e in &report.expired {
        let tags = if e.tags.is_empty() { "untagged".to_string() } else { format!("tags {}", e.tags.join(", ")) };
        println!("{verb} {}/{}@{} ({tags})", e.upstream, e.repository, e.digest);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} images, {} blobs, {} ({} bytes)",
        report.expired.len(),
        report.blobs_removed,
        human_bytes(report.bytes_freed),
        report.bytes_freed
    );
    Ok(())
}

fn ls(config: Option<&Path>, cache_dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let pt = offline(config, cache_dir)?;
    let images = pt.list_images()?;
    let index = &pt.store().cas.index;
    if json {
        let v = serde_json::json!({"images": images, "blobs": index.len(), "bytes": index.total()});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<16} {:<32} {:<20} {:<19} {:>10}  LAST PULLED", "UPSTREAM", "REPOSITORY", "TAGS", "DIGEST", "SIZE");
    for i in &images {
        let tags = if i.tags.is_empty() { "<none>".to_string() } else { i.tags.join(",") };
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(i.pulled_at))
            .unwrap_or_default();
        println!(
            "{:<16} {:<32} {:<20} {:<19} {:>10}  {} ago",
            i.upstream,
            i.repository,
            tags,
            &i.digest[..19.min(i.digest.len())],
            human_bytes(i.size),
            humantime::format_duration(std::time::Duration::from_secs(ago.as_secs()))
        );
    }
    println!("{} images; {} blobs, {} in the cache", images.len(), index.len(), human_bytes(index.total()));
    Ok(())
}

fn human_bytes(b: u64) -> String {
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

fn hosts_toml(config: Option<&Path>, mirror: &str, out: &Path) -> anyhow::Result<()> {
    let uri: http::Uri = mirror.parse().with_context(|| format!("--mirror {mirror:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
        "--mirror must be an http:// or https:// URL, e.g. http://127.0.0.1:5000"
    );
    let cfg = load(config)?;
    for p in pullthrough::hosts_toml::write_all(&cfg, mirror, out)
        .with_context(|| format!("cannot write under {}", out.display()))?
    {
        println!("{}", p.display());
    }
    Ok(())
}
