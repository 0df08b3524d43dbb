//! `GET /metrics` and the build statistics of `GET /api/repos/{name}`
//! against the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, Work, build_one, failing_script, nonce, ok_script};
use serde_json::Value;

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn scrape(daemon: &Daemon, token: Option<&str>) -> (u16, String) {
    daemon.request_text("GET", "/metrics", None, token)
}

/// Scrapes until `series` has `value`; returns the exposition.
fn wait_sample(daemon: &Daemon, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = scrape(daemon, None);
        assert_eq!(status, 200, "{text}");
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_builds_durations_logs_requests_and_subscribers() {
    let daemon = Daemon::start("");
    daemon.create_repo("demo");
    let work = Work::clone(&daemon.repo_path("demo"));
    let good = build_one(&daemon, &work, "main", &ok_script());
    let bad = build_one(&daemon, &work, "main", &failing_script());
    assert_eq!(good["status"], "success");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["failure_kind"], "check");

    let text = wait_sample(
        &daemon,
        "procurator_builds_finished_total{status=\"failed\",failure_kind=\"check\"}",
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            "procurator_builds_finished_total{status=\"success\",failure_kind=\"none\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "procurator_builds_queued"), Some(0.0));
    assert_eq!(sample(&text, "procurator_builds_running"), Some(0.0));
    for (status, b) in [("success", &good), ("failed", &bad)] {
        assert_eq!(
            sample(
                &text,
                &format!("procurator_build_duration_seconds_count{{status=\"{status}\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        let sum = sample(
            &text,
            &format!("procurator_build_duration_seconds_sum{{status=\"{status}\"}}"),
        )
        .unwrap();
        let expected = b["duration_ms"].as_f64().unwrap() / 1000.0;
        assert!((sum - expected).abs() < 1e-6, "{sum} != {expected}");
        assert_eq!(
            sample(
                &text,
                &format!(
                    "procurator_build_duration_seconds_bucket{{le=\"+Inf\",status=\"{status}\"}}"
                )
            )
            .or_else(|| sample(
                &text,
                &format!(
                    "procurator_build_duration_seconds_bucket{{status=\"{status}\",le=\"+Inf\"}}"
                )
            )),
            Some(1.0),
            "{text}"
        );
    }
    assert_eq!(
        sample(&text, "procurator_build_queue_wait_seconds_count"),
        Some(2.0),
        "{text}"
    );
    let waits: f64 = [&good, &bad]
        .iter()
        .map(|b| (b["started_ms"].as_i64().unwrap() - b["created_ms"].as_i64().unwrap()) as f64)
        .sum::<f64>()
        / 1000.0;
    let sum = sample(&text, "procurator_build_queue_wait_seconds_sum").unwrap();
    assert!((sum - waits).abs() < 1e-6, "{sum} != {waits}");
    let log_bytes: i64 = [&good, &bad]
        .iter()
        .flat_map(|b| {
            let detail = daemon.build(b["id"].as_i64().unwrap());
            detail["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["log_bytes"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .sum();
    assert!(log_bytes > 0);
    assert_eq!(
        sample(&text, "procurator_build_log_bytes_total"),
        Some(log_bytes as f64),
        "{text}"
    );

    // Requests are counted by route pattern, never by raw path.
    let before = scrape(&daemon, None).1;
    let missing = nonce("missing");
    assert_eq!(daemon.get(&format!("/api/repos/{missing}")).0, 404);
    assert_eq!(daemon.get("/api/repos/demo").0, 200);
    assert_eq!(daemon.get(&format!("/{missing}")).0, 404);
    assert_eq!(
        daemon
            .request(
                "POST",
                "/api/repos",
                Some("{}"),
                Some("wrong-token-0123456789")
            )
            .0,
        401
    );
    let text = scrape(&daemon, None).1;
    let delta = |series: &str| {
        sample(&text, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0)
    };
    for series in [
        "procurator_http_requests_total{method=\"GET\",route=\"/api/repos/{name}\",status=\"404\"}",
        "procurator_http_requests_total{method=\"GET\",route=\"/api/repos/{name}\",status=\"200\"}",
        "procurator_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
        "procurator_http_requests_total{method=\"POST\",route=\"/api/repos\",status=\"401\"}",
        "procurator_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}",
    ] {
        assert_eq!(delta(series), 1.0, "{series}:\n{text}");
    }
    assert!(!text.contains(&missing), "a raw path became a label");

    // Open event streams are SSE subscribers while they last.
    assert_eq!(sample(&text, "procurator_sse_subscribers"), Some(0.0));
    let streams: Vec<TcpStream> = (0..2).map(|_| open_events(&daemon)).collect();
    wait_sample(&daemon, "procurator_sse_subscribers", 2.0);
    drop(streams);
    wait_sample(&daemon, "procurator_sse_subscribers", 0.0);
}

/// Opens `/api/events` and reads its response head.
fn open_events(daemon: &Daemon) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    stream
}

#[test]
fn metrics_need_the_token_when_reads_are_private() {
    let daemon = Daemon::start("public_read = false");
    let (status, body) = scrape(&daemon, None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = scrape(&daemon, Some("a-wrong-token-of-some-length"));
    assert_eq!(status, 401);
    let token = daemon.token();
    let (status, text) = scrape(&daemon, Some(&token));
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE procurator_builds_finished_total counter"),
        "{text}"
    );
    assert_eq!(sample(&text, "procurator_builds_queued"), Some(0.0));

    // Content negotiation: Prometheus text by default, OpenMetrics on request.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/metrics", daemon.base());
    let plain = agent
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut open = agent
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .call()
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        open.headers()
    );
    let mut text = String::new();
    open.body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn repo_api_has_success_rate_and_median_duration_per_branch() {
    let daemon = Daemon::start("");
    daemon.create_repo("demo");
    let work = Work::clone(&daemon.repo_path("demo"));
    let builds = [
        build_one(&daemon, &work, "main", &ok_script()),
        build_one(&daemon, &work, "main", &failing_script()),
        build_one(&daemon, &work, "main", &ok_script()),
        build_one(&daemon, &work, "main", &ok_script()),
        build_one(&daemon, &work, "dev", &failing_script()),
    ];
    let (status, repo) = daemon.get("/api/repos/demo");
    assert_eq!(status, 200, "{repo}");
    let branch = |name: &str| {
        repo["branches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no branch {name}: {repo}"))
            .clone()
    };
    let median = |builds: &[&Value]| {
        let mut d: Vec<i64> = builds
            .iter()
            .map(|b| b["duration_ms"].as_i64().unwrap())
            .collect();
        d.sort();
        let n = d.len();
        if n % 2 == 1 {
            d[n / 2]
        } else {
            (d[n / 2 - 1] + d[n / 2]) / 2
        }
    };
    let main = branch("main");
    assert_eq!(main["stats"]["builds"], 4, "{main}");
    assert_eq!(main["stats"]["successes"], 3, "{main}");
    assert_eq!(main["stats"]["success_rate"], 0.75, "{main}");
    assert_eq!(
        main["stats"]["median_duration_ms"],
        median(&[&builds[0], &builds[1], &builds[2], &builds[3]]),
        "{main}"
    );
    let dev = branch("dev");
    assert_eq!(dev["stats"]["builds"], 1, "{dev}");
    assert_eq!(dev["stats"]["success_rate"], 0.0, "{dev}");
    assert_eq!(dev["stats"]["median_duration_ms"], builds[4]["duration_ms"]);
    let all = &repo["stats"];
    assert_eq!(all["builds"], 5, "{repo}");
    assert_eq!(all["success_rate"], 0.6, "{repo}");
    assert_eq!(
        all["median_duration_ms"],
        median(&builds.iter().collect::<Vec<_>>()),
        "{repo}"
    );
}
