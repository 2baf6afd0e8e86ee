//! `pullthrough serve`: the daemon. Load the configuration, claim the cache directory, bind
//! the listeners, start the background work, serve until SIGTERM/SIGINT, and wind down.

use super::location::{Location, Resolved};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;

/// `pullthrough serve`: load the configuration, then run the daemon until SIGTERM/SIGINT.
pub fn run(
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
    let rt = super::runtime()?;
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
        start_background(&app, &cfg)?;
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
fn start_background(
    app: &std::sync::Arc<pullthrough::http::App>,
    cfg: &pullthrough::config::Config,
) -> anyhow::Result<()> {
    app.pull.start_background();
    pullthrough::core::spawn_housekeeping(
        app.pull.clone(),
        cfg.cache.housekeeping_interval,
        cfg.cache.lifecycle_interval,
    );
    pullthrough::core::integrity::spawn_scrub(app.pull.clone());
    let pull = app.pull.clone();
    super::memory::spawn_release_idle(move || pull.fills_in_flight() == 0);
    let prefetch = pullthrough::settings::prefetch_list(cfg)?;
    pullthrough::core::spawn_prefetch(app.pull.clone(), prefetch, cfg.cache.prefetch_interval);
    Ok(())
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
