//! The `pullthrough` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pullthrough::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "pullthrough",
    version,
    about = "A pull-through caching proxy for container images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
    /// Validate a configuration file and exit (non-zero, with the reason, if invalid).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    })
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            cache_dir,
        } => serve(config.as_deref(), listen, cache_dir),
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<&Path>, listen: Option<SocketAddr>, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let listen = listen.unwrap_or(cfg.server.listen);
    let cache_dir = cache_dir.unwrap_or_else(|| cfg.cache.dir());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = pullthrough::build_app(&cfg, &cache_dir)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}; choose another address with --listen"))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            cache_dir = %cache_dir.display(),
            upstreams = cfg.upstreams.len(),
            version = env!("CARGO_PKG_VERSION"),
            "pullthrough serving"
        );
        pullthrough::http::serve(listener, app, shutdown_signal(), cfg.server.shutdown_grace).await;
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
