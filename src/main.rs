//! The `pullthrough` command line.
//!
//! Every subcommand that uses the cache takes the same `--config`/`--cache-dir` options
//! ([`cli::location`]) and says on stderr, in one line, which cache and configuration it
//! works on; `pullthrough doctor` ([`cli::doctor`]) checks a configuration end to end.

mod cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cli::location::{ConfigArg, Location, Resolved};
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
        #[command(flatten)]
        loc: Location,
        /// Address to listen on, overriding [server] listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin address (metrics, health), overriding [server] admin_listen.
        #[arg(long, value_name = "ADDR")]
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

/// Log lines queued for stderr at most before logging waits (a few hundred bytes each).
const LOG_QUEUE_LINES: usize = 8192;

fn main() -> std::process::ExitCode {
    cli::memory::tune();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.log_level()));
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
        Command::Serve { loc, listen, admin_listen, advertise } => serve(&loc, listen, admin_listen, advertise),
        Command::CheckConfig { loc } => check_config(&loc),
        Command::Doctor { loc } => cli::doctor::run(&loc).and_then(|ok| {
            anyhow::ensure!(ok, "some checks failed (see above)");
            Ok(())
        }),
        Command::DefaultConfig => {
            print!("{}", pullthrough::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Prune { loc, dry_run, json, shared } => prune(&loc, dry_run, json, shared),
        Command::Ls { loc, json } => ls(&loc, json),
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
            let how = PrefetchOptions {
                platforms: platforms_arg(platforms, all_platforms),
                pin,
                with_referrers,
                concurrency,
            };
            prefetch(images, file, &how, &loc, &progress)
        }
        Command::Export { images, out, loc, progress } => export(&images, &out, &loc, &progress),
        Command::Import { path, as_repo, loc, progress } => import(&path, as_repo.as_deref(), &loc, &progress),
    };
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

fn check_config(loc: &Location) -> anyhow::Result<()> {
    let r = loc.resolve()?;
    let what = match &loc.config.config {
        Some(p) => p.display().to_string(),
        None => "embedded default config".to_string(),
    };
    println!("{what}: ok ({} upstreams, cache dir {})", r.config.upstreams.len(), r.cache_dir.display());
    Ok(())
}

/// `pullthrough serve`: load the configuration, then run the daemon until SIGTERM/SIGINT.
fn serve(
    loc: &Location,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    advertise: Option<String>,
) -> anyhow::Result<()> {
    let Resolved { config: mut cfg, cache_dir, .. } = loc.resolve()?;
    if let Some(a) = advertise {
        override_advertise(&mut cfg, a)?;
    }
    let addrs = (listen.unwrap_or(cfg.server.listen), admin_listen.or(cfg.server.admin_listen));
    let rt = cli::runtime()?;
    rt.block_on(async move {
        let app = open_app(&cfg, &cache_dir).await?;
        let listeners = listeners(&cfg, addrs).await?;
        tracing::info!(
            listen = %listeners.main.local_addr()?,
            tls = listeners.tls.is_some(),
            admin = ?listeners.admin.as_ref().and_then(|a| a.local_addr().ok()),
            cache_dir = %cache_dir.display(),
            config = %loc.config.describe(),
            upstreams = cfg.upstreams.len(),
            version = env!("CARGO_PKG_VERSION"),
            "pullthrough serving"
        );
        start_background(&app, &cfg);
        let drained =
            pullthrough::http::serve(listeners, app.clone(), shutdown_signal(), cfg.server.shutdown_grace).await;
        wind_down(&app, drained).await;
        Ok(())
    })
}

/// `--advertise`: this node's address for its cluster peers, instead of the config's.
fn override_advertise(cfg: &mut pullthrough::config::Config, advertise: String) -> anyhow::Result<()> {
    let Some(c) = cfg.cluster.as_mut() else {
        anyhow::bail!("--advertise needs a [cluster] section in the configuration");
    };
    let ok = advertise
        .parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    anyhow::ensure!(ok, "--advertise {advertise:?} is not a base URL like http://10.0.0.7:5000");
    c.advertise = advertise;
    Ok(())
}

/// The service on its cache directory, which it claims as the daemon (shared with the CLI:
/// see the store's module doc for the lock rules).
async fn open_app(
    cfg: &pullthrough::config::Config,
    cache_dir: &Path,
) -> anyhow::Result<std::sync::Arc<pullthrough::http::App>> {
    let app = pullthrough::build_app(cfg, cache_dir)?;
    let store = app.pull.store().clone();
    pullthrough::store::blocking(move || store.claim(pullthrough::store::Role::Daemon).map_err(std::io::Error::other))
        .await?;
    Ok(app)
}

/// The client listener (with TLS when configured, its certificate reloaded on change) and
/// the admin listener, bound.
async fn listeners(
    cfg: &pullthrough::config::Config,
    (listen, admin_listen): (SocketAddr, Option<SocketAddr>),
) -> anyhow::Result<pullthrough::http::Listeners> {
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
    Ok(pullthrough::http::Listeners { main, admin, tls })
}

/// What runs beside the requests: upstream token refresh, housekeeping (eviction,
/// lifecycle), the integrity scrub, and the `[[prefetch]]` images, now and every
/// `prefetch_interval`.
fn start_background(app: &std::sync::Arc<pullthrough::http::App>, cfg: &pullthrough::config::Config) {
    app.pull.start_background();
    pullthrough::core::spawn_housekeeping(
        app.pull.clone(),
        cfg.cache.housekeeping_interval,
        cfg.cache.lifecycle_interval,
    );
    pullthrough::core::integrity::spawn_scrub(app.pull.clone());
    let pull = app.pull.clone();
    cli::memory::spawn_release_idle(move || pull.fills_in_flight() == 0);
    let prefetch = pullthrough::settings::prefetch_list(&cfg.prefetch);
    pullthrough::core::spawn_prefetch(app.pull.clone(), prefetch, cfg.cache.prefetch_interval);
}

/// After the listeners closed: let the fills of finished clients commit, send the last
/// events, write pull times, and remove temp files of fills cut short.
async fn wind_down(app: &pullthrough::http::App, drained: bool) {
    // If every client finished, let their verified fills commit (fsync + rename), briefly.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while drained && app.pull.fills_in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Events of the last moments (fills that just committed) to the webhooks, briefly.
    pullthrough::events::flush(std::time::Duration::from_secs(5)).await;
    // Pull times gathered in memory since the last housekeeping tick.
    let pull = app.pull.clone();
    let _ = pullthrough::store::blocking(move || Ok(pull.flush_pulls())).await;
    // Fills cut short by the shutdown leave temp files; remove them now rather than at the
    // next start.
    let removed = app.pull.store().clean_temp().unwrap_or(0);
    tracing::info!(removed_temp_files = removed, "stopped");
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

/// The cache service for an offline command on an existing cache directory, having said
/// which one (`command` `verb`s it) on stderr.
fn offline(loc: &Location, command: &str, verb: &str) -> anyhow::Result<(pullthrough::core::PullThrough, Resolved)> {
    let r = loc.resolve()?;
    loc.announce(command, verb, &r);
    anyhow::ensure!(
        r.cache_dir.is_dir(),
        "cache directory {} does not exist; pass --cache-dir or --config",
        r.cache_dir.display()
    );
    Ok((pullthrough::build_pull_through(&r.config, &r.cache_dir)?, r))
}

/// The cache service for a command that writes to the cache, creating the directory.
fn writer(loc: &Location, command: &str) -> anyhow::Result<pullthrough::core::PullThrough> {
    let r = loc.resolve()?;
    loc.announce(command, "writing to", &r);
    let dir = &r.cache_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let pt = pullthrough::build_pull_through(&r.config, dir)?;
    pt.store().claim(pullthrough::store::Role::Writer)?;
    Ok(pt)
}

impl Command {
    /// The log level without RUST_LOG: lower for a command whose progress is on show.
    fn log_level(&self) -> &'static str {
        match self {
            Command::Prefetch { progress, .. }
            | Command::Export { progress, .. }
            | Command::Import { progress, .. } => progress.log_level(),
            _ => "info",
        }
    }
}

/// How `prefetch` fetches each image.
struct PrefetchOptions {
    platforms: pullthrough::core::Platforms,
    pin: bool,
    with_referrers: bool,
    concurrency: usize,
}

/// The platforms `--platform`/`--all-platforms` ask for; by default this machine's.
fn platforms_arg(platforms: Vec<String>, all_platforms: bool) -> pullthrough::core::Platforms {
    if all_platforms {
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
    }
}

/// The images named on the command line and in `--file` (one a line, # comments).
fn prefetch_list(mut images: Vec<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<pullthrough::oci::ImageRef>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        images.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    anyhow::ensure!(!images.is_empty(), "name at least one image (or --file)");
    Ok(images.iter().map(|i| i.parse()).collect::<Result<_, _>>()?)
}

/// Why one image of a prefetch failed; the run goes on with the next.
enum ImageFailure {
    Image(pullthrough::core::CoreError),
    Referrers(pullthrough::core::CoreError),
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The whole cause chain: a core error keeps its cause as its source.
            ImageFailure::Image(e) => write!(f, "{}", pullthrough::error_text::error_chain(e)),
            ImageFailure::Referrers(e) => write!(f, "referrers: {}", pullthrough::error_text::error_chain(e)),
        }
    }
}

fn prefetch(
    images: Vec<String>,
    file: Option<PathBuf>,
    how: &PrefetchOptions,
    loc: &Location,
    progress: &cli::progress::ProgressArgs,
) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Event, Progress as _};
    let refs = prefetch_list(images, file)?;
    let pt = writer(loc, "prefetch")?;
    let rt = cli::runtime()?;
    let reporter = progress.reporter("prefetch");
    reporter.event(Event::Planned { items: refs.len(), bytes: None });
    let (mut failed, mut retryable) = (0, 0);
    rt.block_on(async {
        pt.start_background();
        for (i, r) in refs.iter().enumerate() {
            let name = r.to_string();
            reporter.event(Event::Started { name: &name });
            match prefetch_one(&pt, r, (i + 1, refs.len()), how, &reporter).await? {
                Ok(()) => reporter.event(Event::Finished { name: &name }),
                Err(f) => {
                    failed += 1;
                    // Failures another run could get past (the upstream was unreachable, a
                    // transfer broke off), as opposed to definite answers (not found, refused).
                    let (ImageFailure::Image(e) | ImageFailure::Referrers(e)) = &f;
                    retryable += usize::from(may_pass_next_time(e));
                    reporter.event(Event::Failed { name: &name, error: &f });
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Pull times of images this run pulled more than once (see core::pulls).
    pt.flush_pulls();
    let n = refs.len();
    let fetched = human_bytes(reporter.total_bytes());
    reporter.finish(
        &format!("prefetched {} of {n} images, {fetched} fetched", n - failed),
        serde_json::json!({"command": "prefetch", "images": n, "failed": failed}),
    );
    anyhow::ensure!(retryable == 0, "{failed} of {n} images failed; run again to resume (cached blobs are kept)");
    anyhow::ensure!(
        failed == 0,
        "{failed} of {n} images failed (see above: the upstream does not have them, or refused access)"
    );
    Ok(())
}

/// Prefetch one image (`i` of `n`), pin it and fetch its referrers as asked, and report the
/// result. The outer error ends the run; the inner one is this image's alone.
async fn prefetch_one(
    pt: &pullthrough::core::PullThrough,
    r: &pullthrough::oci::ImageRef,
    (i, n): (usize, usize),
    how: &PrefetchOptions,
    reporter: &cli::progress::Reporter,
) -> anyhow::Result<Result<(), ImageFailure>> {
    use pullthrough::core::progress::Progress as _;
    let rep = match pt.prefetch_with(r, &how.platforms, how.concurrency, reporter).await {
        Ok(rep) => rep,
        Err(e) => return Ok(Err(ImageFailure::Image(e))),
    };
    let fetched = human_bytes(rep.fetched_bytes);
    reporter.result(
        &format!(
            "[{i}/{n}] {} {} — {} manifests, {} blobs, {fetched} fetched",
            rep.image, rep.digest, rep.manifests, rep.blobs
        ),
        serde_json::json!({"command": "prefetch", "index": i, "items": n, "report": rep}),
    );
    let digest: pullthrough::oci::Digest = rep.digest.parse()?;
    if how.pin {
        let pinned =
            pullthrough::oci::ImageRef { reference: pullthrough::oci::Reference::Digest(digest.clone()), ..r.clone() };
        pt.add_pin(&pinned)?;
    }
    if how.with_referrers {
        let reps = match pt.prefetch_referrers(r, &digest, how.concurrency).await {
            Ok(reps) => reps,
            Err(e) => return Ok(Err(ImageFailure::Referrers(e))),
        };
        let (blobs, bytes) = (reps.iter().map(|x| x.blobs).sum::<usize>(), reps.iter().map(|x| x.fetched_bytes).sum());
        // Fetched without a progress of their own (small: signatures, SBOMs): counted now,
        // so the run's total is every byte fetched.
        reporter.bytes(bytes);
        reporter.result(
            &format!("      + {} referrers, {blobs} blobs, {} fetched", reps.len(), human_bytes(bytes)),
            serde_json::json!({"command": "prefetch", "index": i, "items": n, "referrers": reps}),
        );
    }
    Ok(Ok(()))
}

/// Whether running a failed prefetch again may succeed: the upstream was unavailable, a
/// transfer or the cache failed; not when the upstream answered no.
fn may_pass_next_time(e: &pullthrough::core::CoreError) -> bool {
    e.is_transient()
}

fn export(images: &[String], out: &Path, loc: &Location, progress: &cli::progress::ProgressArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!images.is_empty(), "name at least one image to export");
    let refs: Vec<pullthrough::oci::ImageRef> = images.iter().map(|i| i.parse()).collect::<Result<_, _>>()?;
    let (pt, _) = offline(loc, "export", "reading")?;
    let reporter = progress.reporter("export");
    let is_tar = out.extension().is_some_and(|e| e == "tar");
    let dir = if is_tar { tempfile_dir(out)? } else { out.to_path_buf() };
    let written = pt.export_layout(&refs, &dir, &reporter).map_err(anyhow::Error::from).and_then(|n| {
        if is_tar {
            write_tar(&dir, out, &reporter)?;
        }
        Ok(n)
    });
    if is_tar {
        let _ = std::fs::remove_dir_all(&dir); // the staging directory, not --out
    }
    let n = match written {
        Ok(n) => n,
        Err(e) => return Err(reporter.abort(e)),
    };
    reporter.finish(
        &format!("exported {} images ({n} blobs) to {}", refs.len(), out.display()),
        serde_json::json!({"command": "export", "images": refs.len(), "blobs": n, "out": out}),
    );
    Ok(())
}

/// Write the staged layout `dir` as the tar file `out`, as one more item of the run.
fn write_tar(dir: &Path, out: &Path, reporter: &cli::progress::Reporter) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Counted, Event, Progress as _};
    let name = out.display().to_string();
    reporter.event(Event::Planned { items: 1, bytes: None });
    reporter.event(Event::Started { name: &name });
    reporter.event(Event::Sized { bytes: tree_bytes(dir) });
    let written = (|| {
        let f = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut tar = tar::Builder::new(Counted { inner: std::io::BufWriter::new(f), progress: reporter });
        tar.append_dir_all(".", dir)?;
        tar.into_inner()?.inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if written.is_ok() {
        reporter.event(Event::Finished { name: &name });
    }
    written
}

/// The bytes of the files under `dir` (for a progress estimate: unreadable entries count 0).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// A fresh directory beside `target`, for staging.
fn tempfile_dir(target: &Path) -> anyhow::Result<PathBuf> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".pullthrough-stage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn import(
    path: &Path,
    as_repo: Option<&str>,
    loc: &Location,
    progress: &cli::progress::ProgressArgs,
) -> anyhow::Result<()> {
    let pt = writer(loc, "import")?;
    let reporter = progress.reporter("import");
    let (layout, staged) = if path.is_file() {
        // In this process's own temp directory: nobody else removes it while we run.
        let stage = tempfile_dir(&pt.store().temp_dir().join("import"))?;
        if let Err(e) = unpack_tar(path, &stage, &reporter) {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(reporter.abort(e));
        }
        (stage.clone(), Some(stage))
    } else {
        (path.to_path_buf(), None)
    };
    let result = pt.import_layout(&layout, as_repo, &reporter);
    if let Some(s) = staged {
        let _ = std::fs::remove_dir_all(s);
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(reporter.abort(e.into())),
    };
    for i in &report.images {
        reporter.result(&format!("imported {i}"), serde_json::json!({"command": "import", "image": i}));
    }
    // Blobs already in the cache are verified but not written again: the count is of every
    // blob the images reference, the bytes of what was written.
    reporter.finish(
        &format!(
            "{} images, {} blobs verified; {} written to the cache (blobs it had already are not written again)",
            report.images.len(),
            report.blobs,
            human_bytes(report.bytes)
        ),
        serde_json::json!({"command": "import", "images": report.images.len(), "blobs": report.blobs,
                           "written_bytes": report.bytes}),
    );
    Ok(())
}

/// Unpack the tar file `path` into `stage`, as the first item of an import's run.
fn unpack_tar(path: &Path, stage: &Path, reporter: &cli::progress::Reporter) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Counted, Event, Progress as _};
    let name = path.display().to_string();
    reporter.event(Event::Planned { items: 1, bytes: None });
    reporter.event(Event::Started { name: &name });
    let unpacked = (|| {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        reporter.event(Event::Sized { bytes: f.metadata()?.len() });
        let read = Counted { inner: std::io::BufReader::new(f), progress: reporter };
        tar::Archive::new(read).unpack(stage).with_context(|| format!("{} is not a tar archive", path.display()))
    })();
    if unpacked.is_ok() {
        reporter.event(Event::Finished { name: &name });
    }
    unpacked
}

fn prune(loc: &Location, dry_run: bool, json: bool, shared: bool) -> anyhow::Result<()> {
    let (pt, r) = offline(loc, "prune", if dry_run { "reading" } else { "pruning" })?;
    let policies = r.config.upstreams.iter().flat_map(|u| &u.repositories).any(|r| r.lifecycle_policy.is_some());
    if !shared {
        // The bucket's records need no lock: the local cache is not touched. Taken even
        // without policies, so prune answers the same beside a running daemon either way.
        let role = if dry_run { pullthrough::store::Role::Reader } else { pullthrough::store::Role::Pruner };
        pt.store().claim(role)?;
    }
    let report = if !policies {
        pullthrough::core::PruneReport::default()
    } else if shared {
        let pinned = pt.pinned()?;
        let rt = cli::runtime()?;
        rt.block_on(pt.apply_lifecycle_shared(&pinned, dry_run))?
    } else {
        pt.apply_lifecycle(dry_run)?
    };
    if json {
        let v = serde_json::json!({"dry_run": dry_run, "policies_configured": policies, "report": report});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if !policies {
        // Say so, rather than "removed 0 images".
        println!(
            "no lifecycle policy is configured (lifecycle_policy in an [[upstream.repositories]] section of \
             the config); nothing to prune"
        );
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

fn ls(loc: &Location, json: bool) -> anyhow::Result<()> {
    let (pt, _) = offline(loc, "ls", "reading")?;
    let images = pt.list_images()?;
    let stats = pt.store().stats();
    if json {
        let v = serde_json::json!({"images": images, "blobs": stats.blobs, "bytes": stats.bytes});
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
    println!("{} images; {} blobs, {} in the cache", images.len(), stats.blobs, human_bytes(stats.bytes));
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
