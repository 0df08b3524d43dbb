//! Prometheus metrics for `GET /metrics`, fed by the event bus, the HTTP
//! layer and scrape-time database reads; and the per-branch build
//! statistics of the repository API.
//!
//! Counters and histograms count from the daemon's start, as Prometheus
//! expects; queue depth and running builds are read from the database at
//! each scrape, so they are exact even across restarts.
//!
//! Here: the metrics, what records them, and the feed from the event bus.
//! `http` serves the scrape and counts requests; `stats` computes the
//! build statistics.

use std::sync::Arc;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;

mod http;
mod stats;

pub use http::{count_requests, handler};
pub use stats::{BuildStats, Finished, STATS_WINDOW, finished_builds, finished_per_branch};

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
struct MachineLabels {
    machine: String,
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
    machine_attempts: Family<MachineLabels, Counter>,
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
        let failed =
            crate::build::diagnosis::FailureKind::ALL.map(|kind| ("failed", kind.as_str()));
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
        let machine_attempts = Family::<MachineLabels, Counter>::default();
        registry.register(
            "machine_attempts",
            "Attempts of builds that built on a machine (a remote builder's URI, or local), by \
             machine and result (success, a failure kind, cancelled, interrupted)",
            machine_attempts.clone(),
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
            machine_attempts,
        }
    }

    /// Counts an attempt that built on `machine`, ended with `result`.
    pub fn machine_attempt(&self, machine: &str, result: &str) {
        self.machine_attempts
            .get_or_create(&MachineLabels {
                machine: machine.to_string(),
                result: result.to_string(),
            })
            .inc();
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
