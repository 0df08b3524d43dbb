//! Startup and shutdown of the daemon: everything `serve` does, in order,
//! with readiness reported only once all of it stands.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::{self, App, AppError};
use crate::build::process::Tools;
use crate::config::Config;
use crate::events::Events;
use crate::http::auth::{LocalPeer, Token};
use crate::ops::instance::{OwnSocket, StateLock};
use crate::repos::RepoFiles;
use crate::repos::install::HookTarget;
use crate::storage::logs::LogStore;
use crate::storage::store::Store;

/// How often old logs are pruned.
const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

/// Repositories scanned at once at startup.
const STARTUP_SCANS: usize = 8;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A directory, the database, the token or a listener could not be set up.
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> ServeError + '_ {
    move |e| ServeError::Setup(format!("{context}: {e}"))
}

impl From<AppError> for ServeError {
    fn from(error: AppError) -> Self {
        ServeError::Setup(error.to_string())
    }
}

/// Runs the daemon until `shutdown` is cancelled, then stops gracefully.
/// `tcp` is an already-bound listener (tests bind port 0); otherwise
/// `bind_address` is bound.
pub async fn serve(
    config: Config,
    tcp: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // Whatever the daemon inherits (a login shell's 022): what it creates
    // is its own and its group's, directories 0750 and files 0640.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
    let config = Arc::new(config);
    tracing::info!(
        database = %config.database_url.display(),
        bind_address = %config.bind_address,
        repos_path = %config.repos_base_path.display(),
        state_dir = %config.state_dir.display(),
        workers = config.workers,
        "Starting Procurator CI Service"
    );
    // The listener first: a taken port must stop the start before anything
    // (state directory, database, token, reserve) is created.
    let tcp = match tcp {
        Some(listener) => listener,
        None => TcpListener::bind(config.bind_address).await.map_err(|e| {
            ServeError::Setup(format!(
                "cannot listen on {} (bind_address, or PROCURATOR_CI_BIND_ADDRESS in the \
                 environment): {e}",
                config.bind_address
            ))
        })?,
    };
    let address = tcp
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.bind_address.to_string());
    // Before the database is opened: a second daemon on this state
    // directory must not touch its queue.
    let state_dir = config.state_dir.clone();
    let _lock = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&state_dir)
            .map_err(setup(&format!("cannot create {}", state_dir.display())))?;
        StateLock::acquire(&state_dir).map_err(ServeError::Setup)
    })
    .await
    .map_err(setup("startup"))??;
    let app = build_app(config.clone(), shutdown.clone()).await?;
    // Listening before anything is published: recovered orphans and the
    // first builds are counted and notified too.
    crate::ops::metrics::spawn(&app);
    crate::ops::notify::spawn(&app);
    app::prepare_repos(&app).await?;
    crate::ops::forge::sync_declared(&app).await.map_err(|e| {
        ServeError::Setup(format!(
            "cannot record the forges repositories report to: {e}"
        ))
    })?;
    crate::ops::forge::spawn(&app);
    let recovered = app::recover_orphans(&app).await?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "Recovered builds orphaned by an earlier instance"
        );
    }
    let caught_up = catch_up(&app).await?;
    if caught_up > 0 {
        tracing::info!(
            count = caught_up,
            "Queued builds for pushes made while the daemon was away"
        );
    }

    let (unix, socket) = bind_unix(&config.socket_path)?;
    // Said before the first request is answered, so that whoever sees the
    // daemon answer finds the line.
    tracing::info!(
        bind_address = %address,
        socket = %config.socket_path.display(),
        public_url = %config.public_url,
        workers = config.workers,
        "listening on http://{address} (public URL {})",
        config.public_url
    );

    let router = crate::http::api::router(app.clone());
    let stall = Duration::from_secs(config.client_stall_timeout_secs);
    let (cap, nofile) = crate::http::listener::connection_cap(config.max_connections as usize);
    if cap < config.max_connections as usize {
        tracing::warn!(
            max_connections = config.max_connections,
            descriptor_limit = nofile,
            reserved = crate::http::listener::FD_RESERVE,
            connections = cap,
            "The descriptor limit allows fewer connections than max_connections; \
             raise LimitNOFILE (ulimit -n)"
        );
    }
    let gate = crate::http::listener::Gate::new(
        cap,
        config.max_connections_per_peer as usize,
        config.cache_downloads_per_peer as usize,
    );
    let http = tokio::spawn(crate::http::listener::serve(
        tcp,
        stall,
        router.clone(),
        shutdown.clone(),
        Some(gate),
        |_| Extensions::new(),
    ));
    // The hook's socket is not capped: only our user, our group and root
    // can connect.
    let local = tokio::spawn(crate::http::listener::serve(
        unix,
        stall,
        router,
        shutdown.clone(),
        None,
        |_| {
            let mut extensions = Extensions::new();
            extensions.insert(ConnectInfo(LocalPeer));
            extensions
        },
    ));
    let workers = crate::build::worker::spawn(&app);
    tracing::debug!(workers = workers.len(), "Build workers spawned");
    let pusher = crate::cache::push::spawn(&app);
    tokio::spawn(crate::cache::catch_up(app.clone()));
    spawn_retention(app.clone(), shutdown.clone());
    crate::build::preflight::spawn(app.clone());
    spawn_catch_up(app.clone(), shutdown.clone());
    crate::ops::systemd::spawn_watchdog(app.clone(), shutdown.clone());
    crate::ops::systemd::spawn_status(app.clone(), shutdown.clone());
    let status = app.status_line().await.unwrap_or_else(|_| "ready".into());
    crate::ops::systemd::ready(&status);

    shutdown.cancelled().await;
    crate::ops::systemd::stopping();
    tracing::info!("Shutting down: stopping builds and handing them back to the queue");
    let bound = Duration::from_secs(config.shutdown_timeout_secs);
    let drained = tokio::time::timeout(bound, async {
        for worker in workers {
            let _ = worker.await;
        }
        if let Some(pusher) = pusher {
            let _ = pusher.await;
        }
        let _ = http.await;
        let _ = local.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout_secs = config.shutdown_timeout_secs,
            "shutdown timed out; exiting anyway"
        );
    }
    app.store.close();
    socket.remove();
    tracing::info!("Stopped");
    Ok(())
}

async fn build_app(
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<Arc<App>, ServeError> {
    // Directories, the database, the token and the repositories' base are
    // all filesystem work: done on the blocking pool.
    let prepared = config.clone();
    let (store, (token, created), repos, cache, isolation) =
        tokio::task::spawn_blocking(move || {
            let config = prepared;
            for dir in [
                &config.state_dir,
                &config.logs_dir(),
                &config.home_dir(),
                &config.cache_dir,
            ] {
                std::fs::create_dir_all(dir)
                    .map_err(setup(&format!("cannot create {}", dir.display())))?;
            }
            close_to_others(&config.state_dir)?;
            let store = Store::open(&config.database_url).map_err(setup("database"))?;
            let token = Token::load(
                config.api_token_file.as_deref(),
                &config.generated_token_file(),
            )
            .map_err(setup("api token"))?;
            let executable =
                std::env::current_exe().map_err(setup("cannot find our own executable"))?;
            let repos = RepoFiles::new(
                config.repos_base_path.clone(),
                Tools::new(config.home_dir(), config.cache_dir.clone()),
                HookTarget {
                    executable,
                    socket: config.socket_path.clone(),
                },
            )
            .map_err(setup("repositories"))?;
            let cache =
                crate::cache::Cache::load(&config).map_err(setup("cache_secret_key_file"))?;
            let isolation = crate::build::isolation::Isolation::probe(&config);
            Ok::<_, ServeError>((store, token, repos, cache, isolation))
        })
        .await
        .map_err(setup("startup"))??;
    if let Some(cache) = &cache {
        tracing::info!(public_key = %cache.key.public(), "Binary cache signing key loaded");
    }
    if created {
        tracing::info!(path = %token.source.display(), "Generated an API token (send it as `Authorization: Bearer <token>`)");
    } else {
        tracing::info!(path = %token.source.display(), "Using the API token");
    }
    Ok(Arc::new(App {
        logs: Arc::new(LogStore::new(config.logs_dir(), config.log_max_bytes)),
        config,
        store,
        repos,
        events: Events::new(),
        token,
        wake: Notify::new(),
        forge_wake: Notify::new(),
        running: Mutex::new(Default::default()),
        progress: Default::default(),
        shutdown,
        metrics: crate::ops::metrics::Metrics::new(),
        preflight: Mutex::new(Default::default()),
        cache,
        views: Default::default(),
        isolation,
        upstreams: Default::default(),
    }))
}

/// Queues builds for pushes made while the daemon was away. Each
/// repository's scan waits mostly on a git process, so several run at once:
/// with 100 repositories this is most of the time to readiness.
async fn catch_up(app: &Arc<App>) -> Result<usize, AppError> {
    use futures_util::{StreamExt, TryStreamExt};
    let repos = app.list_repos().await?;
    let queued: Vec<usize> = futures_util::stream::iter(repos)
        .map(|repo| async move { app.scan(Some(&repo.name)).await.map(|q| q.len()) })
        .buffer_unordered(STARTUP_SCANS)
        .try_collect()
        .await?;
    Ok(queued.iter().sum())
}

/// Takes group write and every access by others off the state directory
/// made by an earlier version under a permissive umask: with reads private,
/// its database and logs are not for every local user.
fn close_to_others(dir: &std::path::Path) -> Result<(), ServeError> {
    let mode = std::fs::metadata(dir)
        .map_err(setup(&format!("cannot examine {}", dir.display())))?
        .permissions()
        .mode();
    if mode & 0o027 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o027 & 0o7777))
            .map_err(setup(&format!("cannot restrict {}", dir.display())))?;
    }
    Ok(())
}

/// Binds the hook's socket, replacing a stale one, readable and writable by
/// our user and group only. A socket another process still listens on is
/// not stale (another daemon with its own state directory may share a
/// `socket_path`): the start is refused.
fn bind_unix(path: &std::path::Path) -> Result<(UnixListener, OwnSocket), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::Setup(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::Setup(format!(
                "{} is the socket of a running daemon (socket_path, or \
                 PROCURATOR_CI_SOCKET_PATH in the environment); give this one another socket_path",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(setup(&format!("cannot remove stale {}", path.display())))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(setup(&format!("cannot create {}", dir.display())))?;
    }
    let listener =
        UnixListener::bind(path).map_err(setup(&format!("cannot listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(setup(
        &format!("cannot set permissions of {}", path.display()),
    ))?;
    let own =
        OwnSocket::created(path).map_err(setup(&format!("cannot examine {}", path.display())))?;
    Ok((listener, own))
}

/// Queues, every `scan_interval_secs`, builds of branch heads that were
/// pushed but never built: a push whose hook could not reach the daemon (it
/// was overloaded, restarting, or the socket was gone) is built within that
/// time while the daemon runs, not only at its next start.
fn spawn_catch_up(app: Arc<App>, stop: CancellationToken) {
    tokio::spawn(async move {
        let period = Duration::from_secs(app.config.scan_interval_secs);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            match catch_up(&app).await {
                Ok(0) => {}
                Ok(count) => tracing::warn!(
                    count,
                    "Queued builds for pushes whose hook did not reach the daemon"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot look for unbuilt pushes"),
            }
        }
    });
}

fn spawn_retention(app: Arc<App>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RETENTION_PERIOD);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            let days = app.config.log_retention_days;
            match crate::storage::logs::prune(
                &app.store,
                &app.logs,
                days,
                crate::build::queue::now_ms(),
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, days, "Deleted expired build logs"),
                Err(e) => tracing::warn!(error = %e, "cannot prune old logs"),
            }
        }
    });
}
