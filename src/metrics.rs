//! Prometheus metrics for `GET /metrics`, fed by the event bus, the HTTP
//! layer and scrape-time database reads; and the per-branch build
//! statistics of the repository API.
//!
//! Counters and histograms count from the daemon's start, as Prometheus
//! expects; queue depth and running builds are read from the database at
//! each scrape, so they are exact even across restarts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::store::{SqlResultExt, StoreError};

/// Finished builds the statistics look at, per branch and per repository.
pub const STATS_WINDOW: u32 = 20;

/// Bucket bounds of build durations, in seconds: a second to three hours
/// (the default `build_timeout_secs`).
const DURATION_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 10800.0,
];

/// Bucket bounds of queue waits, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
];

/// The HTTP route label of requests no route matched (bounded cardinality:
/// raw paths are never labels).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route whose open responses count as SSE subscribers.
const EVENTS_ROUTE: &str = "/api/events";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    status: String,
    failure_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    kind: String,
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric of the daemon; cheap to share behind the `App`.
pub struct Metrics {
    registry: Registry,
    builds_finished: Family<FinishedLabels, Counter>,
    queued: Gauge,
    running: Gauge,
    build_duration: HistogramFamily<StatusLabels>,
    queue_wait: Histogram,
    log_bytes: Counter,
    http_requests: Family<HttpLabels, Counter>,
    sse_subscribers: Gauge,
    notifications: Family<NotifyLabels, Counter>,
    cache_pushes: Family<ResultLabels, Counter>,
    cache_pushes_pending: Gauge,
    cache_served_bytes: Counter,
    unauthorized: Counter,
    /// When a refused request was last logged, and how many were refused
    /// since without a line of their own.
    unauthorized_logged: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

/// At most one log line per this period about requests refused for want of
/// the token: a client may send thousands, and each would be a line.
pub const UNAUTHORIZED_LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// All metrics registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("procurator");
        let builds_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "builds_finished",
            "Builds that reached a final status, by status and failure kind (none when not failed)",
            builds_finished.clone(),
        );
        // Every status and failure kind exists from the start, at zero, so
        // that rates and alerts see the series before the first build.
        let failed = crate::diagnosis::FailureKind::ALL.map(|kind| ("failed", kind.as_str()));
        for (status, failure_kind) in [("success", "none"), ("cancelled", "none")]
            .into_iter()
            .chain(failed)
        {
            let _ = builds_finished.get_or_create(&FinishedLabels {
                status: status.into(),
                failure_kind: failure_kind.into(),
            });
        }
        let queued = Gauge::default();
        registry.register(
            "builds_queued",
            "Builds waiting in the queue (read from the database at scrape time)",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "builds_running",
            "Builds running now (read from the database at scrape time)",
            running.clone(),
        );
        let build_duration: HistogramFamily<StatusLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "build_duration",
            "Duration of the last attempt of finished builds, by status",
            Unit::Seconds,
            build_duration.clone(),
        );
        let queue_wait = Histogram::new(WAIT_BUCKETS);
        registry.register_with_unit(
            "build_queue_wait",
            "Time from queuing a build to its first start",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let log_bytes = Counter::default();
        registry.register_with_unit(
            "build_log",
            "Log bytes written by the attempts of finished builds",
            Unit::Bytes,
            log_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route pattern and response status",
            http_requests.clone(),
        );
        let sse_subscribers = Gauge::default();
        registry.register(
            "sse_subscribers",
            "Open /api/events streams",
            sse_subscribers.clone(),
        );
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by kind (webhook, command) and result (delivered, failed, dropped)",
            notifications.clone(),
        );
        let cache_pushes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_pushes",
            "Attempts to push a build's outputs to a binary cache, by result (pushed; retry: \
             failed, tried again later; failed: given up)",
            cache_pushes.clone(),
        );
        for result in ["pushed", "retry", "failed"] {
            let _ = cache_pushes.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
        let cache_pushes_pending = Gauge::default();
        registry.register(
            "cache_pushes_pending",
            "Pushes to binary caches waiting for their first or next attempt (read from the \
             database at scrape time)",
            cache_pushes_pending.clone(),
        );
        let cache_served_bytes = Counter::default();
        registry.register_with_unit(
            "cache_served",
            "Compressed NAR bytes served from /nix-cache/",
            Unit::Bytes,
            cache_served_bytes.clone(),
        );
        let unauthorized = Counter::default();
        registry.register(
            "http_unauthorized",
            "Requests refused with 401 (no token, or a wrong one)",
            unauthorized.clone(),
        );
        Metrics {
            unauthorized,
            unauthorized_logged: std::sync::Mutex::new((None, 0)),
            registry,
            builds_finished,
            queued,
            running,
            build_duration,
            queue_wait,
            log_bytes,
            http_requests,
            sse_subscribers,
            notifications,
            cache_pushes,
            cache_pushes_pending,
            cache_served_bytes,
        }
    }

    /// Counts a request refused with 401 and logs it, at most once per
    /// [`UNAUTHORIZED_LOG_PERIOD`] with the number refused since the last
    /// line.
    pub fn unauthorized(&self, method: &Method, path: &str) {
        self.unauthorized.inc();
        let mut logged = self.unauthorized_logged.lock().expect("unauthorized log");
        let now = std::time::Instant::now();
        if logged
            .0
            .is_some_and(|last| now.duration_since(last) < UNAUTHORIZED_LOG_PERIOD)
        {
            logged.1 += 1;
            return;
        }
        let unlogged = std::mem::take(&mut logged.1);
        logged.0 = Some(now);
        drop(logged);
        tracing::warn!(
            %method,
            path = %path.escape_debug(),
            unlogged_since_last = unlogged,
            "unauthorised request refused (at most one such line every 10 s; \
             procurator_http_unauthorized_total counts them all)"
        );
    }

    /// Counts a finished build (the data of a `build.finished` event) and
    /// the log bytes of its attempts.
    pub fn build_finished(&self, build: &Value, log_bytes: u64) {
        let status = build["status"].as_str().unwrap_or("unknown").to_string();
        let failure_kind = build["failure_kind"]
            .as_str()
            .filter(|_| status == "failed")
            .unwrap_or("none")
            .to_string();
        self.builds_finished
            .get_or_create(&FinishedLabels {
                status: status.clone(),
                failure_kind,
            })
            .inc();
        if let Some(ms) = build["duration_ms"].as_i64() {
            self.build_duration
                .get_or_create(&StatusLabels { status })
                .observe(ms.max(0) as f64 / 1000.0);
        }
        self.log_bytes.inc_by(log_bytes);
    }

    /// Records the queue wait of a started build (the data of a
    /// `build.started` event); only first attempts count, since a retry
    /// waits for its backoff on purpose.
    pub fn build_started(&self, build: &Value) {
        if build["attempt"].as_i64() != Some(1) {
            return;
        }
        if let (Some(created), Some(started)) =
            (build["created_ms"].as_i64(), build["started_ms"].as_i64())
        {
            self.queue_wait
                .observe((started - created).max(0) as f64 / 1000.0);
        }
    }

    /// Counts one notification outcome.
    pub fn notification(&self, kind: &str, result: &str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts an attempt to push to a binary cache: `pushed`, `retry` or
    /// `failed`.
    pub fn cache_push(&self, result: &str) {
        self.cache_pushes
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts the compressed bytes of a NAR served in full.
    pub fn cache_served(&self, bytes: u64) {
        self.cache_served_bytes.inc_by(bytes);
    }

    fn http_request(&self, method: &Method, route: &str, status: u16) {
        let method = match *method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS => method.as_str(),
            _ => "other",
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The exposition: OpenMetrics when the scraper asks for it, else the
    /// Prometheus text format 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> (&'static str, String) {
        let mut text = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
                .expect("writing to a String cannot fail");
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
                .expect("writing to a String cannot fail");
            (
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                text,
            )
        }
    }
}

/// Decrements the SSE gauge when the stream it rides along with ends.
struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`.
pub async fn handler(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.store.read(crate::queue::counts).await {
        Ok((queued, running)) => {
            app.metrics.queued.set(queued);
            app.metrics.running.set(running);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue counts for /metrics"),
    }
    match app.store.read(crate::cache::pending_pushes).await {
        Ok(pending) => {
            app.metrics.cache_pushes_pending.set(pending);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count pending pushes for /metrics"),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, text) = app.metrics.encode(openmetrics);
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Middleware counting HTTP requests by route pattern (`MatchedPath`, never
/// the raw path) and status; responses of `/api/events` count as SSE
/// subscribers while their body is open.
pub async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status();
    app.metrics.http_request(
        &method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        status.as_u16(),
    );
    if route.as_deref() == Some(EVENTS_ROUTE) && status.is_success() {
        let gauge = app.metrics.sse_subscribers.clone();
        gauge.inc();
        let guard = SubscriberGuard(gauge);
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &guard;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    response
}

/// Feeds the build metrics from the event bus until shutdown. Subscribes
/// before returning, so nothing published afterwards is missed.
pub fn spawn(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let mut events = app.events.listen();
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = app.shutdown.cancelled() => return,
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "metrics fell behind the event bus; some builds are not counted"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if event.kind != "build.started" && event.kind != "build.finished" {
                continue;
            }
            let Ok(build) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if event.kind == "build.started" {
                app.metrics.build_started(&build);
                continue;
            }
            let log_bytes = match event.build {
                Some(id) => match app.build(id).await {
                    Ok(detail) => detail
                        .attempts
                        .iter()
                        .map(|a| a.log_bytes.max(0) as u64)
                        .sum(),
                    Err(e) => {
                        tracing::warn!(build_id = id, error = %e, "cannot read a finished build's attempts for metrics");
                        0
                    }
                },
                None => 0,
            };
            app.metrics.build_finished(&build, log_bytes);
        }
    })
}

/// Success rate and median duration over the last finished builds.
/// Cancelled builds say nothing about a branch's health and are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BuildStats {
    /// Finished builds looked at (successes and failures, at most
    /// `STATS_WINDOW`).
    pub builds: u32,
    pub successes: u32,
    /// `successes / builds`; `null` without builds.
    pub success_rate: Option<f64>,
    /// Median of their durations; `null` without builds.
    pub median_duration_ms: Option<i64>,
}

impl BuildStats {
    /// The statistics of `finished`.
    pub fn of(finished: &[Finished]) -> BuildStats {
        let builds = finished.len() as u32;
        let successes = finished.iter().filter(|f| f.success).count() as u32;
        let mut durations: Vec<i64> = finished.iter().filter_map(|f| f.duration_ms).collect();
        durations.sort_unstable();
        let median_duration_ms = match durations.len() {
            0 => None,
            n if n % 2 == 1 => Some(durations[n / 2]),
            n => Some((durations[n / 2 - 1] + durations[n / 2]) / 2),
        };
        BuildStats {
            builds,
            successes,
            success_rate: (builds > 0).then(|| f64::from(successes) / f64::from(builds)),
            median_duration_ms,
        }
    }
}

/// A finished build as the statistics count it (a success or a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub id: i64,
    pub success: bool,
    pub duration_ms: Option<i64>,
}

fn finished_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Finished> {
    let status: String = r.get(at + 1)?;
    Ok(Finished {
        id: r.get(at)?,
        success: status == "success",
        duration_ms: r.get(at + 2)?,
    })
}

/// The last `window` finished builds of `repo`, of one `branch` or of all of
/// them, newest first. Reads at most `window` rows, newest first from the
/// `(repo_name, branch, id)` or `(repo_name, id)` index.
pub fn finished_builds(
    conn: &Connection,
    repo: &str,
    branch: Option<&str>,
    window: u32,
) -> Result<Vec<Finished>, StoreError> {
    let map = |r: &rusqlite::Row<'_>| finished_row(r, 0);
    match branch {
        Some(branch) => conn
            .prepare_cached(
                "SELECT id, status, finished_at - started_at FROM builds \
                 WHERE repo_name = ?1 AND branch = ?2 AND status IN ('success', 'failed') \
                 ORDER BY id DESC LIMIT ?3",
            )
            .db()?
            .query_map(params![repo, branch, window], map)
            .db()?
            .collect::<Result<Vec<_>, _>>()
            .db(),
        None => conn
            .prepare_cached(
                "SELECT id, status, finished_at - started_at FROM builds \
                 WHERE repo_name = ?1 AND status IN ('success', 'failed') \
                 ORDER BY id DESC LIMIT ?2",
            )
            .db()?
            .query_map(params![repo, window], map)
            .db()?
            .collect::<Result<Vec<_>, _>>()
            .db(),
    }
}

/// The last `?2` finished builds of each branch of repository `?1`.
const BRANCH_WINDOWS: &str = "SELECT branch, id, status, duration FROM ( \
       SELECT branch, id, status, finished_at - started_at AS duration, \
              row_number() OVER (PARTITION BY branch ORDER BY id DESC) AS newest \
       FROM builds \
       WHERE repo_name = ?1 AND status IN ('success', 'failed')) \
     WHERE newest <= ?2";

/// The last `window` finished builds of every branch of `repo` (in no
/// particular order), in one query whatever the number of branches (read once when the
/// daemon loads a repository's view). Numbers the rows of each branch newest
/// first from the `(repo_name, branch, id)` index and keeps the first
/// `window`. Branches without finished builds are absent.
pub fn finished_per_branch(
    conn: &Connection,
    repo: &str,
    window: u32,
) -> Result<HashMap<String, Vec<Finished>>, StoreError> {
    let mut stmt = conn.prepare_cached(BRANCH_WINDOWS).db()?;
    let rows = stmt
        .query_map(params![repo, window], |r| {
            Ok((r.get::<_, String>(0)?, finished_row(r, 1)?))
        })
        .db()?;
    let mut per_branch: HashMap<String, Vec<Finished>> = HashMap::new();
    for row in rows {
        let (branch, finished) = row.db()?;
        per_branch.entry(branch).or_default().push(finished);
    }
    Ok(per_branch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        conn
    }

    fn build_stats(conn: &Connection, repo: &str, branch: Option<&str>, window: u32) -> BuildStats {
        BuildStats::of(&finished_builds(conn, repo, branch, window).unwrap())
    }

    fn insert(conn: &Connection, branch: &str, status: &str, duration: Option<i64>) {
        let (started, finished) = match duration {
            Some(d) => (Some(1000), Some(1000 + d)),
            None => (None, Some(1000)),
        };
        conn.execute(
            "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, max_retries, \
             created_at, started_at, finished_at) VALUES ('demo', '/x', 'c', ?1, ?2, 0, 0, ?3, ?4)",
            params![branch, status, started, finished],
        )
        .unwrap();
    }

    #[test]
    fn stats_leave_out_cancelled_and_live_builds() {
        let conn = db();
        insert(&conn, "main", "success", Some(100));
        insert(&conn, "main", "failed", Some(300));
        insert(&conn, "main", "cancelled", None);
        insert(&conn, "main", "success", Some(200));
        insert(&conn, "main", "success", Some(900));
        insert(&conn, "main", "running", None);
        insert(&conn, "dev", "failed", Some(50));
        let main = build_stats(&conn, "demo", Some("main"), STATS_WINDOW);
        assert_eq!(main.builds, 4);
        assert_eq!(main.successes, 3);
        assert_eq!(main.success_rate, Some(0.75));
        assert_eq!(main.median_duration_ms, Some(250));
        let all = build_stats(&conn, "demo", None, STATS_WINDOW);
        assert_eq!((all.builds, all.successes), (5, 3));
        assert_eq!(all.median_duration_ms, Some(200));
        let none = build_stats(&conn, "demo", Some("gone"), STATS_WINDOW);
        assert_eq!(none, BuildStats::default());
        let value = serde_json::to_value(&none).unwrap();
        assert!(value["success_rate"].is_null() && value["median_duration_ms"].is_null());
    }

    #[test]
    fn stats_look_at_the_newest_window_only() {
        let conn = db();
        for _ in 0..5 {
            insert(&conn, "main", "failed", Some(10_000));
        }
        for _ in 0..STATS_WINDOW {
            insert(&conn, "main", "success", Some(10));
        }
        let stats = build_stats(&conn, "demo", Some("main"), STATS_WINDOW);
        assert_eq!(stats.builds, STATS_WINDOW);
        assert_eq!(stats.success_rate, Some(1.0));
        assert_eq!(stats.median_duration_ms, Some(10));
    }

    #[test]
    fn branch_windows_agree_with_one_query_per_branch() {
        let conn = db();
        for i in 0..(STATS_WINDOW as i64 + 7) {
            insert(
                &conn,
                "main",
                if i % 3 == 0 { "failed" } else { "success" },
                Some(i * 10),
            );
        }
        insert(&conn, "main", "cancelled", None);
        insert(&conn, "main", "running", None);
        insert(&conn, "dev", "failed", Some(50));
        insert(&conn, "dev", "success", Some(70));
        insert(&conn, "idle", "queued", None);
        let all = finished_per_branch(&conn, "demo", STATS_WINDOW).unwrap();
        for branch in ["main", "dev", "idle"] {
            let one = finished_builds(&conn, "demo", Some(branch), STATS_WINDOW).unwrap();
            assert_eq!(
                all.get(branch).cloned().unwrap_or_default(),
                one,
                "{branch}"
            );
        }
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all["main"].len(), STATS_WINDOW as usize);
    }

    #[test]
    fn branch_windows_read_the_branch_index() {
        let conn = db();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {BRANCH_WINDOWS}"))
            .unwrap()
            .query_map(params!["demo", STATS_WINDOW], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|l| l.contains("USING INDEX builds_by_repo_branch (repo_name=?)")),
            "{plan:?}"
        );
    }

    #[test]
    fn exposition_has_the_series_in_both_formats() {
        let metrics = Metrics::new();
        metrics.build_finished(
            &json!({"status": "failed", "failure_kind": "check", "duration_ms": 1500}),
            42,
        );
        metrics.build_finished(
            &json!({"status": "cancelled", "failure_kind": null, "duration_ms": null}),
            0,
        );
        metrics.build_started(&json!({"attempt": 1, "created_ms": 1000, "started_ms": 3000}));
        metrics.build_started(&json!({"attempt": 2, "created_ms": 1000, "started_ms": 9000}));
        metrics.http_request(&Method::GET, "/api/builds/{id}", 200);
        metrics.notification("webhook", "delivered");
        let (content_type, text) = metrics.encode(false);
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        for line in [
            "procurator_builds_finished_total{status=\"failed\",failure_kind=\"check\"} 1",
            "procurator_builds_finished_total{status=\"cancelled\",failure_kind=\"none\"} 1",
            "procurator_build_duration_seconds_sum{status=\"failed\"} 1.5",
            "procurator_build_duration_seconds_count{status=\"failed\"} 1",
            "procurator_build_queue_wait_seconds_sum 2.0",
            "procurator_build_queue_wait_seconds_count 1",
            "procurator_build_log_bytes_total 42",
            "procurator_http_requests_total{method=\"GET\",route=\"/api/builds/{id}\",status=\"200\"} 1",
            "procurator_notifications_total{kind=\"webhook\",result=\"delivered\"} 1",
            "procurator_builds_queued 0",
            "procurator_sse_subscribers 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        let (content_type, text) = metrics.encode(true);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
