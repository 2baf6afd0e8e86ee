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
        /// How the other cluster nodes reach this one, overriding [cluster] advertise
        /// (in a DaemonSet: "http://$(POD_IP):5000", which Kubernetes expands).
        #[arg(long)]
        advertise: Option<String>,
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
        /// Apply the policies to the shared tier's tag records ([shared.s3]) instead of the
        /// local cache.
        #[arg(long)]
        shared: bool,
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
    /// Fetch images into the cache ahead of need (works on the cache directory; the daemon
    /// may be running).
    Prefetch {
        /// Images: registry/repository:tag or registry/repository@sha256:…
        images: Vec<String>,
        /// A file with one image a line (# comments allowed).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Platforms of multi-platform images to fetch (repeatable); default: this machine's.
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Fetch every platform.
        #[arg(long, conflicts_with = "platforms")]
        all_platforms: bool,
        /// Never evict or expire these images.
        #[arg(long)]
        pin: bool,
        /// Blobs fetched at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Write cached images as an OCI image layout (a directory, or a .tar file).
    Export {
        images: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Load an OCI image layout (directory or .tar) into the cache, verifying every blob.
    Import {
        path: PathBuf,
        /// registry/repository for entries that carry only a tag (skopeo's oci:DIR:TAG).
        #[arg(long = "as")]
        as_repo: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
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

/// Log lines queued for stderr at most before logging waits (a few hundred bytes each).
const LOG_QUEUE_LINES: usize = 8192;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Log lines (the request log among them) go to stderr from a thread of their own: a
    // request pays an in-memory queue push, not a write to a pipe or terminal. The queue is
    // bounded (LOG_QUEUE_LINES) and not lossy: when stderr cannot keep up, logging waits for
    // room rather than dropping lines, so no request line is lost and the queue's memory
    // stays small. The guard flushes the queue when it is dropped, before `main` returns.
    let (writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("pullthrough-log")
        .finish(std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Command::Serve { config, listen, cache_dir, admin_listen, advertise } => {
            serve(config.as_deref(), listen, cache_dir, admin_listen, advertise)
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
        Command::Prune { config, cache_dir, dry_run, json, shared } => {
            prune(config.as_deref(), cache_dir, dry_run, json, shared)
        }
        Command::Ls { config, cache_dir, json } => ls(config.as_deref(), cache_dir, json),
        Command::HostsToml { config, mirror, out } => hosts_toml(config.as_deref(), &mirror, &out),
        Command::Prefetch { images, file, platforms, all_platforms, pin, concurrency, config, cache_dir } => {
            prefetch(images, file, platforms, all_platforms, pin, concurrency, config.as_deref(), cache_dir)
        }
        Command::Export { images, out, config, cache_dir } => export(&images, &out, config.as_deref(), cache_dir),
        Command::Import { path, as_repo, config, cache_dir } => {
            import(&path, as_repo.as_deref(), config.as_deref(), cache_dir)
        }
    };
    // Every queued log line out before the final message.
    drop(log_guard);
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
    advertise: Option<String>,
) -> anyhow::Result<()> {
    let mut cfg = load(config)?;
    if let Some(a) = advertise {
        let Some(c) = cfg.cluster.as_mut() else {
            anyhow::bail!("--advertise needs a [cluster] section in the configuration");
        };
        let ok = a
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        anyhow::ensure!(ok, "--advertise {a:?} is not a base URL like http://10.0.0.7:5000");
        c.advertise = a;
    }
    let listen = listen.unwrap_or(cfg.server.listen);
    let admin_listen = admin_listen.or(cfg.server.admin_listen);
    let cache_dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = pullthrough::build_app(&cfg, &cache_dir)?;
        // Shared with the CLI: see the store's module doc for the lock rules.
        let store = app.pull.store().clone();
        pullthrough::store::blocking(move || {
            store.claim(pullthrough::store::Role::Daemon).map_err(std::io::Error::other)
        })
        .await?;
        let tls = match (&cfg.server.tls_cert, &cfg.server.tls_key) {
            (Some(cert), Some(key)) => {
                let reloading = pullthrough::http::tls::ReloadingCert::new(cert, key)?;
                reloading.spawn_watcher();
                Some(pullthrough::http::tls::server_config(
                    reloading,
                    cfg.server.tls_client_ca.as_deref(),
                    cfg.server.tls_client_auth_required,
                )?)
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
        let drained =
            pullthrough::http::serve(listeners, app.clone(), shutdown_signal(), cfg.server.shutdown_grace).await;
        // If every client finished, let their verified fills commit (fsync + rename), briefly.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while drained && app.pull.fills_in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Pull times gathered in memory since the last housekeeping tick.
        let pull = app.pull.clone();
        let _ = pullthrough::store::blocking(move || Ok(pull.flush_pulls())).await;
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

#[allow(clippy::too_many_arguments)]
fn prefetch(
    mut images: Vec<String>,
    file: Option<PathBuf>,
    platforms: Vec<String>,
    all_platforms: bool,
    pin: bool,
    concurrency: usize,
    config: Option<&Path>,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        images.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    anyhow::ensure!(!images.is_empty(), "name at least one image (or --file)");
    let refs: Vec<pullthrough::oci::ImageRef> = images.iter().map(|i| i.parse()).collect::<Result<_, _>>()?;
    let platforms = if all_platforms {
        pullthrough::core::Platforms::All
    } else if platforms.is_empty() {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        pullthrough::core::Platforms::Only(vec![format!("linux/{arch}")])
    } else {
        pullthrough::core::Platforms::Only(platforms)
    };
    let cfg = load(config)?;
    let dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let pt = pullthrough::build_pull_through(&cfg, &dir)?;
    pt.store().claim(pullthrough::store::Role::Writer)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut failed = 0;
    rt.block_on(async {
        pt.start_background();
        for (i, r) in refs.iter().enumerate() {
            match pt.prefetch(r, &platforms, concurrency).await {
                Ok(rep) => {
                    println!(
                        "[{}/{}] {} {} — {} manifests, {} blobs, {} fetched",
                        i + 1,
                        refs.len(),
                        rep.image,
                        rep.digest,
                        rep.manifests,
                        rep.blobs,
                        human_bytes(rep.fetched_bytes)
                    );
                    if pin {
                        let pinned = pullthrough::oci::ImageRef {
                            reference: pullthrough::oci::Reference::Digest(rep.digest.parse()?),
                            ..r.clone()
                        };
                        pt.add_pin(&pinned)?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("[{}/{}] {r}: {e}", i + 1, refs.len());
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Pull times of images this run pulled more than once (see core::pulls).
    pt.flush_pulls();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} images failed; run again to resume (cached blobs are kept)",
        refs.len()
    );
    Ok(())
}

fn export(images: &[String], out: &Path, config: Option<&Path>, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(!images.is_empty(), "name at least one image to export");
    let refs: Vec<pullthrough::oci::ImageRef> = images.iter().map(|i| i.parse()).collect::<Result<_, _>>()?;
    let pt = offline(config, cache_dir)?;
    let is_tar = out.extension().is_some_and(|e| e == "tar");
    let dir = if is_tar { tempfile_dir(out)? } else { out.to_path_buf() };
    let n = match pt.export_layout(&refs, &dir) {
        Ok(n) => n,
        Err(e) => {
            if is_tar {
                let _ = std::fs::remove_dir_all(&dir); // the staging directory, not --out
            }
            return Err(e.into());
        }
    };
    if is_tar {
        let f = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut tar = tar::Builder::new(f);
        tar.append_dir_all(".", &dir)?;
        tar.finish()?;
        std::fs::remove_dir_all(&dir)?;
    }
    println!("exported {} images ({n} blobs) to {}", refs.len(), out.display());
    Ok(())
}

/// A fresh directory beside `target`, for staging.
fn tempfile_dir(target: &Path) -> anyhow::Result<PathBuf> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".pullthrough-stage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn import(path: &Path, as_repo: Option<&str>, config: Option<&Path>, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let pt = pullthrough::build_pull_through(&cfg, &dir)?;
    pt.store().claim(pullthrough::store::Role::Writer)?;
    let (layout, staged) = if path.is_file() {
        // In this process's own temp directory: nobody else removes it while we run.
        let stage = tempfile_dir(&pt.store().temp_dir().join("import"))?;
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        tar::Archive::new(f).unpack(&stage).with_context(|| format!("{} is not a tar archive", path.display()))?;
        (stage.clone(), Some(stage))
    } else {
        (path.to_path_buf(), None)
    };
    let result = pt.import_layout(&layout, as_repo);
    if let Some(s) = staged {
        let _ = std::fs::remove_dir_all(s);
    }
    let report = result?;
    for i in &report.images {
        println!("imported {i}");
    }
    println!("{} images, {} blobs, {}", report.images.len(), report.blobs, human_bytes(report.bytes));
    Ok(())
}

fn prune(
    config: Option<&Path>,
    cache_dir: Option<PathBuf>,
    dry_run: bool,
    json: bool,
    shared: bool,
) -> anyhow::Result<()> {
    let pt = offline(config, cache_dir)?;
    let report = if shared {
        // The bucket's records only: the local cache is not touched, so no lock is needed.
        let pinned = pt.pinned()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(pt.apply_lifecycle_shared(&pinned, dry_run))?
    } else {
        let role = if dry_run { pullthrough::store::Role::Reader } else { pullthrough::store::Role::Pruner };
        pt.store().claim(role)?;
        pt.apply_lifecycle(dry_run)?
    };
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
