//! The systemd lifecycle: readiness, status, watchdog and stopping, over
//! `NOTIFY_SOCKET`. Without it every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Tells systemd the daemon is ready, with a first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// When systemd's watchdog is on, pings it at half its interval, but only
/// while the runtime and both database paths (a read and the writer thread)
/// answer: a wedged daemon stops pinging and gets restarted.
pub fn spawn_watchdog(app: Arc<App>, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            let probe = async {
                app.store
                    .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                    .await?;
                app.store.write(|_| Ok(())).await
            };
            match tokio::time::timeout(period.max(Duration::from_millis(100)), probe).await {
                Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "database check failed; withholding the watchdog ping")
                }
                Err(_) => {
                    tracing::error!("database check timed out; withholding the watchdog ping")
                }
            }
        }
    });
}

/// Keeps the status line in step with the queue: recomputed after every
/// build event, at most a few times a second.
pub fn spawn_status(app: Arc<App>, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut events = app.events.listen();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = events.recv() => {
                    if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = stop.cancelled() => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            events = events.resubscribe();
            if let Ok(line) = app.status_line().await {
                status(&line);
            }
        }
    });
}
