//! The web page in a real headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver, plain HTTP on loopback), against the real daemon
//! with real pushes and real `nix flake check`.
//!
//! Screenshots of every view go to `target/browser-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::{Daemon, Work, branch_names, free_port, passing};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

// ------------------------------------------------------------ WebDriver

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// chromedriver and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    /// Every browser console entry read so far.
    console: Vec<Value>,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Finds chromedriver and chromium, installing Debian's packages when they
/// are missing and we may.
fn chromium() -> (PathBuf, PathBuf) {
    let found = || {
        let driver = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| which("chromedriver"));
        let browser = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| which("chromium"))
            .or_else(|| which("chromium-browser"));
        driver.zip(browser)
    };
    if let Some(both) = found() {
        return both;
    }
    eprintln!("chromium or chromedriver missing: installing Debian's chromium and chromium-driver");
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        install();
    }
    found().expect("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
}

impl Browser {
    fn start() -> Browser {
        let (driver_bin, chromium_bin) = chromium();
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent: agent(),
            _profile: profile,
            console: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .agent
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_bin,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                    "--disable-extensions", "--window-size=1280,900",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 30000, "pageLoad": 30000, "implicit": 0},
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// A WebDriver command; returns `value`, panicking on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|(status, value)| panic!("webdriver {method} {path}: {status} {value}"))
    }

    /// A WebDriver command; returns `value`, or the status and error value.
    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, Value)> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let result = match body {
            Some(b) => self.agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 300 {
            return Err((status, value["value"].clone()));
        }
        Ok(value["value"].clone())
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page.
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks the element matching `css`, finding it again if the page
    /// replaced it in between (rows are re-rendered on live updates).
    fn click(&self, css: &str) {
        // Into the middle first: the page's sticky bar covers the top edge,
        // where WebDriver would scroll it.
        self.js(
            "const el = document.querySelector(arguments[0]); \
             if (el) el.scrollIntoView({ block: 'center', inline: 'nearest' });",
            json!([css]),
        );
        for _ in 0..20 {
            let el = self.find(css);
            match self.try_call(
                "POST",
                &self.s(&format!("/element/{el}/click")),
                Some(json!({})),
            ) {
                Ok(_) => return,
                Err((_, e)) if e["error"] == "stale element reference" => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((status, e)) => panic!("click {css}: {status} {e}"),
            }
        }
        panic!("{css} kept being replaced");
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/clear")),
            Some(json!({})),
        );
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Text of the first element matching `css`, or None.
    fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;",
            json!([css]),
        )
        .as_str()
        .map(String::from)
    }

    fn visible(&self, css: &str) -> bool {
        self.js(
            "const el = document.querySelector(arguments[0]); \
             return !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;",
            json!([css]),
        ) == true
    }

    fn hash(&self) -> String {
        self.js("return location.hash;", json!([]))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `probe` until it returns Some, for at most `timeout`.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.text("body").unwrap_or_default();
                let console =
                    self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
                panic!(
                    "timed out waiting for {what}; page at {} shows:\n{body}\nconsole: {console:#}",
                    self.hash()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_visible(&self, css: &str) {
        self.wait(css, Duration::from_secs(20), |b| {
            b.visible(css).then_some(())
        });
    }

    fn cdp(&self, cmd: &str, params: Value) {
        self.call(
            "POST",
            &self.s("/goog/cdp/execute"),
            Some(json!({"cmd": cmd, "params": params})),
        );
    }

    /// Writes a PNG of the viewport.
    fn screenshot(&self, name: &str) -> PathBuf {
        // Let animations settle; the passing toast would hide the page.
        std::thread::sleep(Duration::from_millis(300));
        self.js("document.getElementById('toast').hidden = true;", json!([]));
        let data = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(data.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Reads (and keeps) the console entries logged since the last read.
    fn read_console(&mut self) -> Vec<Value> {
        let entries = self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
        let entries = entries.as_array().cloned().unwrap_or_default();
        self.console.extend(entries.iter().cloned());
        entries
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .join("browser-screenshots")
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// --------------------------------------------------------------- helpers

/// A string that makes a derivation new, so nix really builds it.
fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

/// A check that prints `tick 1` … `tick n` a second apart, then passes.
fn ticking(n: u32) -> String {
    format!(
        "echo start {}; for i in {}; do echo tick $i; /bin/sleep 1; done; echo ok > $out",
        nonce(),
        (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    )
}

/// A check printing `lines` numbered lines, an `error:` line in place of
/// line `error_at`, then failing.
fn long_failing(lines: u64, error_at: u64) -> String {
    format!(
        "echo start {}; i=0; while [ $i -lt {lines} ]; do \
         if [ $i -eq {error_at} ]; then echo \"error: deliberate at line $i\"; \
         else echo \"long line $i\"; fi; i=$((i+1)); done; exit 1",
        nonce()
    )
}

/// The number of the rendered log line ending in `text`, when it is in view.
fn line_with(browser: &Browser, text: &str) -> Option<u64> {
    browser
        .js(
            "const log = document.querySelector('.log'); const box = log.getBoundingClientRect(); \
             const el = [...log.querySelectorAll('.ln')].find((e) => e.innerText.endsWith(arguments[0])); \
             if (!el) return null; const r = el.getBoundingClientRect(); \
             return r.bottom > box.top && r.top < box.bottom ? Number(el.dataset.n) : null;",
            json!([text]),
        )
        .as_u64()
}

/// Installs recorders in the page: statuses each build row was shown with,
/// CSP violations, and a marker that a reload would lose.
const RECORDERS: &str = r#"
window.__marker = "no reload since";
window.__seen = {};
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
const record = (node) => {
  if (!(node instanceof Element)) return;
  const rows = node.matches("li.build-row") ? [node] : [...node.querySelectorAll("li.build-row")];
  for (const row of rows) {
    const seen = (window.__seen[row.dataset.id] = window.__seen[row.dataset.id] || []);
    if (seen[seen.length - 1] !== row.dataset.status) seen.push(row.dataset.status);
  }
};
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) record(n);
}).observe(document.body, { childList: true, subtree: true });
"#;

fn seen(browser: &Browser, id: i64) -> Vec<String> {
    let v = browser.js(
        "return window.__seen[arguments[0]] || [];",
        json!([id.to_string()]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn log_text(browser: &Browser) -> String {
    browser.text(".log-lines").unwrap_or_default()
}

fn pill(browser: &Browser) -> String {
    browser.text(".build-head .pill").unwrap_or_default()
}

// ------------------------------------------------------------------ test

/// The tests here share one machine's cores: one browser at a time, so that
/// the figures one of them measures are not the other's load.
static ONE_BROWSER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_browser_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn the_page_live_in_chromium() {
    let _one = one_browser_at_a_time();
    let mut d = Daemon::start("");
    let token = d.token();
    d.create_repo("demo");
    let w = Work::clone(&d.repo_path("demo"));

    // Builds that exist before the page is opened: one passing, one failing.
    w.commit_flake(&[("hello", &passing(&format!("hi {}", nonce())))]);
    w.push(&["HEAD:main"]);
    let failing = format!(
        "echo start {}; echo tick 1; echo 'error: the widget is broken' >&2; exit 1",
        nonce()
    );
    let gadget = passing(&format!("gadget {}", nonce()));
    w.commit_flake(&[("widget", &failing), ("gadget", &gadget)]);
    w.push(&["HEAD:broken"]);
    let before = d.builds();
    assert_eq!(before.len(), 2, "{before:?}");
    for b in &before {
        d.wait_final(b["id"].as_i64().unwrap());
    }
    let failed_id = before.iter().find(|b| b["branch"] == "broken").unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(d.build(failed_id)["status"], "failed");

    let mut browser = Browser::start();
    let base = d.base();

    // The console is really collected: a sentinel error shows up.
    browser.goto(&format!("{base}/"));
    browser.js("console.error('sentinel-' + 'console-check');", json!([]));
    let sentinel = browser.read_console();
    assert!(
        sentinel.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sentinel-console-check")),
        "console entries are readable: {sentinel:?}"
    );
    browser.console.clear();

    // ---- Home: the existing builds are listed.
    browser.wait("the two existing builds", Duration::from_secs(20), |b| {
        (b.js(
            "return document.querySelectorAll('li.build-row').length;",
            json!([]),
        ) == 2)
            .then_some(())
    });
    assert!(browser.visible(&format!(
        "li.build-row[data-id='{failed_id}'][data-status='failed']"
    )));
    browser.wait("the live indicator", Duration::from_secs(20), |b| {
        (b.text("#live").as_deref() == Some("Live")).then_some(())
    });
    browser.js(RECORDERS, json!([]));

    // ---- A push after the page loaded appears without a reload, and goes
    // queued → running → success live.
    w.commit_flake(&[("slow", &ticking(4))]);
    w.push(&["HEAD:main"]);
    let pushed = d.builds()[0]["id"].as_i64().unwrap();
    browser.wait(
        "the pushed build to show running",
        Duration::from_secs(60),
        |b| {
            let s = seen(b, pushed);
            s.contains(&"running".to_string()).then_some(())
        },
    );
    assert!(
        browser.visible(&format!("li.build-row[data-id='{pushed}'] .ticking")),
        "running duration ticks"
    );
    browser.screenshot("builds");
    browser.wait(
        "the pushed build to succeed",
        Duration::from_secs(90),
        |b| (seen(b, pushed).last().map(String::as_str) == Some("success")).then_some(()),
    );
    assert_eq!(
        seen(&browser, pushed),
        ["queued", "running", "success"],
        "statuses shown live"
    );
    let title = browser.js("return document.title;", json!([]));
    assert!(
        title.as_str().unwrap().contains(&format!("#{pushed}")),
        "title names the latest build: {title}"
    );

    // ---- Opening a running build streams its log lines as they come.
    w.commit_flake(&[("slow", &ticking(8))]);
    w.push(&["HEAD:slow"]);
    let running = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(running, Duration::from_secs(60), |b| {
        b["status"] == "running"
    });
    let row = format!("li.build-row[data-id='{running}'] a");
    browser.wait("the new row", Duration::from_secs(20), |b| {
        b.visible(&row).then_some(())
    });
    browser.click(&row);
    browser.wait("the build view", Duration::from_secs(20), |b| {
        (b.hash() == format!("#/builds/{running}") && b.visible(".build-head")).then_some(())
    });
    let (partial, seen_tick) = browser.wait(
        "a partial log of the running build",
        Duration::from_secs(60),
        |b| {
            let log = log_text(b);
            let last = (1..=8).rev().find(|i| log.contains(&format!("tick {i}")))?;
            (last < 6 && pill(b) == "Running").then_some((log, last))
        },
    );
    assert!(!partial.contains("tick 8"), "{partial}");
    let title = browser.js("return document.title;", json!([]));
    assert!(
        title.as_str().unwrap().starts_with('▶'),
        "title shows running: {title}"
    );
    let favicon = browser.js("return document.getElementById('favicon').href;", json!([]));
    assert!(
        favicon.as_str().unwrap().starts_with("data:image/svg+xml"),
        "{favicon}"
    );
    browser.screenshot("build-running");
    browser.wait("more log lines", Duration::from_secs(30), |b| {
        log_text(b)
            .contains(&format!("tick {}", seen_tick + 1))
            .then_some(())
    });
    browser.wait("the running build to pass", Duration::from_secs(60), |b| {
        (pill(b) == "Passed" && log_text(b).contains("tick 8")).then_some(())
    });
    let log = log_text(&browser);
    assert_eq!(log.matches("tick 3").count(), 1, "each line once: {log}");
    assert_eq!(
        browser.js("return window.__marker;", json!([])),
        "no reload since",
        "everything above happened without a reload"
    );

    // ---- A deep link survives a reload; the first error is highlighted
    // with a link to it.
    browser.goto(&format!("{base}/#/builds/{failed_id}"));
    browser.js(RECORDERS, json!([]));
    browser.wait_visible(".error-link");
    let first = browser.text(".ln.first-error").unwrap();
    assert!(first.contains("error:"), "{first}");
    browser.click(".error-link");
    browser.wait("the error line targeted", Duration::from_secs(10), |b| {
        (b.hash().starts_with(&format!("#/builds/{failed_id}?line="))
            && b.visible(".ln.target.first-error"))
        .then_some(())
    });
    assert_eq!(pill(&browser), "Failed");
    // The failure in the taxonomy's words: its title, the failed check and
    // a one-line hint.
    assert_eq!(
        browser
            .text(".problem[data-kind='check'] .problem-title")
            .as_deref(),
        Some("A check failed")
    );
    assert_eq!(
        browser.text(".problem .problem-summary").as_deref(),
        Some("failed checks: widget")
    );
    assert!(
        browser
            .text(".problem .problem-hint")
            .is_some_and(|h| h.contains("nix build .#checks")),
        "the hint says how to reproduce"
    );

    // ---- Per-check results: the failed check is listed, and one click
    // shows its part of the log.
    browser.wait_visible("tr[data-check='widget'] .check-failed");
    assert!(browser.visible("tr[data-check='gadget'] .check-passed"));
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('table.checks tbody tr').length;",
            json!([])
        ),
        2,
        "one row per check"
    );
    browser.click("button[data-check-jump='widget']");
    browser.wait(
        "the check's part of the log",
        Duration::from_secs(10),
        |b| {
            let target = b.text(".ln.target")?;
            (b.hash().starts_with(&format!("#/builds/{failed_id}?line="))
                && target.starts_with("building '")
                && target.contains("widget"))
            .then_some(())
        },
    );
    browser.screenshot("build-failed");

    // ---- Rebuild asks for the token; a wrong one is refused visibly.
    browser.click("#rebuild");
    browser.wait_visible("#token-dialog[open] #token-input");
    browser.type_into("#token-input", "certainly-not-the-token");
    browser.click("#token-save");
    browser.wait("the wrong-token error", Duration::from_secs(10), |b| {
        b.visible("#token-dialog[open] #token-error")
            .then(|| b.text("#token-error"))
            .flatten()
            .filter(|t| t.contains("the API token is wrong"))
    });
    browser.screenshot("token-dialog");
    let builds_before = d.builds().len();
    assert_eq!(builds_before, 4, "the wrong token queued nothing");
    browser.type_into("#token-input", &token);
    browser.click("#token-save");
    let rebuilt = browser.wait("the rebuild's page", Duration::from_secs(20), |b| {
        let hash = b.hash();
        let id: i64 = hash.strip_prefix("#/builds/")?.parse().ok()?;
        (id != failed_id).then_some(id)
    });
    let rebuilt_json = d.build(rebuilt);
    assert_eq!(rebuilt_json["rebuild_of"], failed_id, "{rebuilt_json}");
    assert_eq!(rebuilt_json["trigger"], "rebuild");
    browser.wait(
        "the rebuild to fail again, live",
        Duration::from_secs(90),
        |b| (pill(b) == "Failed" && b.visible(".ln.first-error")).then_some(()),
    );
    let stored = browser.js(
        "return localStorage.getItem('procurator-ci.token');",
        json!([]),
    );
    assert_eq!(stored, token.as_str(), "the token is kept");

    // ---- Cancelling from the page: the build says the page did it, and an
    // interruption someone asked for is no "first error".
    w.commit_flake(&[("long", &ticking(300))]);
    w.push(&["HEAD:cancel-me"]);
    let to_cancel = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(to_cancel, Duration::from_secs(60), |b| {
        b["status"] == "running"
    });
    browser.goto(&format!("{base}/#/builds/{to_cancel}"));
    browser.wait(
        "a tick of the build to cancel",
        Duration::from_secs(60),
        |b| log_text(b).contains("tick 1").then_some(()),
    );
    browser.click("#cancel");
    browser.wait_visible("dialog.confirm-dialog[open] #confirm-yes");
    browser.click("#confirm-yes");
    browser.wait("the cancelled build", Duration::from_secs(60), |b| {
        (pill(b) == "Cancelled" && b.visible(".problem[data-kind='cancelled']")).then_some(())
    });
    assert_eq!(
        browser.text(".problem .problem-summary").as_deref(),
        Some("cancelled from the web page")
    );
    assert!(
        !browser.visible(".error-link"),
        "no first error for a cancel"
    );
    let cancelled = d.build(to_cancel);
    assert_eq!(
        cancelled["diagnosis"]["cancelled_by"], "page",
        "{cancelled}"
    );
    assert_eq!(cancelled["checks"][0]["status"], "not_built", "{cancelled}");
    browser.screenshot("build-cancelled");

    // ---- A build that tested nothing says so.
    std::fs::write(w.path().join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
    w.commit("no checks");
    w.push(&["HEAD:nothing"]);
    let empty = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_final(empty);
    browser.goto(&format!("{base}/#/builds/{empty}"));
    browser.wait(
        "the notice of a build that tested nothing",
        Duration::from_secs(20),
        |b| {
            b.text(".problem.notice .notice-text")
                .filter(|t| t == "no checks for x86_64-linux: nothing was tested")
        },
    );
    assert_eq!(pill(&browser), "Passed");

    // ---- Repositories: the server's message for a bad name; creation.
    browser.click("a[data-nav='repos']");
    browser.wait_visible(".repo-card[data-repo='demo']");
    let (status, refusal) = d.post("/api/repos", &json!({"name": "bad..name"}));
    assert_eq!(status, 400);
    let message = refusal["error"]["message"].as_str().unwrap().to_string();
    browser.type_into("#repo-name", "bad..name");
    browser.click("#repo-create");
    browser.wait("the server's refusal", Duration::from_secs(10), |b| {
        (b.visible("#repo-error") && b.text("#repo-error").as_deref() == Some(message.as_str()))
            .then_some(())
    });
    browser.screenshot("repos");
    browser.type_into("#repo-name", "from-the-browser");
    browser.type_into("#repo-description", "Created from the web page");
    browser.click("#repo-create");
    browser.wait("the new repository's page", Duration::from_secs(20), |b| {
        (b.hash() == "#/repos/from-the-browser"
            && b.text("h1").as_deref() == Some("from-the-browser"))
        .then_some(())
    });
    let (status, created) = d.get("/api/repos/from-the-browser");
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["description"], "Created from the web page");

    browser.goto(&format!("{base}/#/repos/demo"));
    browser.wait("branch statistics", Duration::from_secs(20), |b| {
        let broken = b.text("tr[data-branch='broken'] .stat-rate")?;
        let main = b.text("tr[data-branch='main'] .stat-rate")?;
        (broken.starts_with("0% of ") && main.starts_with("100% of ")).then_some(())
    });
    browser.wait("the demo repository with its badge", Duration::from_secs(20), |b| {
        (b.js(
            "const img = document.querySelector('img.badge'); return !!img && img.complete && img.naturalWidth > 0;",
            json!([]),
        ) == true)
            .then_some(())
    });
    let snippet = browser.js(
        "return document.getElementById('badge-markdown').value;",
        json!([]),
    );
    assert!(
        snippet
            .as_str()
            .unwrap()
            .contains("/api/repos/demo/badge.svg?branch=main"),
        "{snippet}"
    );
    let branches = browser.text("table.branches").unwrap();
    assert!(
        branches.contains("broken") && branches.contains("slow"),
        "{branches}"
    );
    browser.screenshot("repo");

    // ---- Back and forward between views.
    browser.click("a[data-nav='repos']");
    browser.wait_visible(".repo-card[data-repo='demo']");
    browser.call("POST", &browser.s("/back"), Some(json!({})));
    browser.wait("back to the repository", Duration::from_secs(10), |b| {
        (b.hash() == "#/repos/demo" && b.visible("table.branches")).then_some(())
    });
    browser.call("POST", &browser.s("/forward"), Some(json!({})));
    browser.wait("forward to the list", Duration::from_secs(10), |b| {
        (b.hash() == "#/repos" && b.visible(".repo-card")).then_some(())
    });

    // ---- Filters live in the URL; back undoes one.
    browser.click("a[data-nav='builds']");
    browser.wait_visible("li.build-row");
    browser.click("#filter-status option[value='failed']");
    browser.wait("only failed builds", Duration::from_secs(10), |b| {
        let statuses = b.js(
            "return [...document.querySelectorAll('li.build-row')].map(r => r.dataset.status);",
            json!([]),
        );
        (b.hash() == "#/?status=failed" && statuses == json!(["failed", "failed"])).then_some(())
    });
    browser.call("POST", &browser.s("/back"), Some(json!({})));
    browser.wait("the unfiltered list again", Duration::from_secs(10), |b| {
        let rows = b.js(
            "return document.querySelectorAll('li.build-row').length;",
            json!([]),
        );
        // Five builds, the cancelled one and the one that tested nothing.
        (b.hash() == "#/" && rows == 7).then_some(())
    });

    // ---- The daemon restarts: the page reconnects and catches up with what
    // it missed (a push while the daemon was down, queued at its start).
    browser.wait("the live indicator", Duration::from_secs(20), |b| {
        (b.text("#live").as_deref() == Some("Live")).then_some(())
    });
    browser.js(RECORDERS, json!([]));
    d.stop();
    browser.wait(
        "the page to notice the daemon is gone",
        Duration::from_secs(20),
        |b| (b.text("#live").as_deref() != Some("Live")).then_some(()),
    );
    let missed = w.commit_flake(&[("after", &passing(&format!("after a restart {}", nonce())))]);
    w.push(&["HEAD:main"]);
    d.spawn();
    let caught_up = d.builds()[0].clone();
    assert_eq!(
        caught_up["commit"],
        missed.as_str(),
        "queued at the start: {caught_up}"
    );
    let caught_up = caught_up["id"].as_i64().unwrap();
    browser.wait(
        "the missed build, without a reload",
        Duration::from_secs(60),
        |b| {
            (b.visible(&format!("li.build-row[data-id='{caught_up}']"))
                && b.text("#live").as_deref() == Some("Live"))
            .then_some(())
        },
    );
    assert_eq!(
        browser.js("return window.__marker;", json!([])),
        "no reload since"
    );
    d.wait_final(caught_up);

    // ---- Older builds load as the list is scrolled (pages of 50).
    let commit = d.build(caught_up)["commit"].as_str().unwrap().to_string();
    let mut many = Vec::new();
    let pages: Vec<String> = (0..52).map(|i| format!("page-{i}")).collect();
    common::create_branches(
        &d.repo_path("demo"),
        pages.iter().map(|p| (p.as_str(), commit.as_str())),
    );
    for page in &pages {
        let (status, b) = d.post(
            "/api/builds",
            &json!({"repo": "demo", "branch": page, "commit": commit}),
        );
        // 200 when the periodic scan queued the new branch first.
        assert!(matches!(status, 200 | 201), "{b}");
        many.push(b["id"].as_i64().unwrap());
    }
    for id in &many {
        d.post(&format!("/api/builds/{id}/cancel"), &json!({}));
    }
    for id in &many {
        d.wait_final(*id);
    }
    let total = d.builds().len();
    assert!(total > 50, "more than a page: {total}");
    browser.goto(&format!("{base}/#/"));
    browser.wait(
        "every build, page by page, as the list scrolls",
        Duration::from_secs(30),
        |b| {
            let ids = b.js(
                "window.scrollTo(0, document.body.scrollHeight); \
             return [...document.querySelectorAll('li.build-row')].map(r => Number(r.dataset.id));",
                json!([]),
            );
            let ids: Vec<i64> = ids.as_array()?.iter().filter_map(Value::as_i64).collect();
            (ids.len() == total).then_some(ids)
        },
    );
    let ids = browser.js(
        "return [...document.querySelectorAll('li.build-row')].map(r => Number(r.dataset.id));",
        json!([]),
    );
    let ids: Vec<i64> = ids
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no duplicates: {ids:?}"
    );
    assert!(browser.visible(".end-note"), "the end of the list is said");
    browser.js("window.scrollTo(0, 0);", json!([]));

    // ---- Dark and phone-width renderings.
    browser.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    browser.goto(&format!("{base}/#/"));
    browser.wait_visible("li.build-row");
    browser.screenshot("builds-dark");
    browser.goto(&format!("{base}/#/builds/{failed_id}"));
    browser.wait_visible(".ln.first-error");
    browser.screenshot("build-dark");
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    browser.goto(&format!("{base}/#/"));
    browser.wait_visible("li.build-row");
    let overflow = browser.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "no sideways scrolling on a phone: {overflow}"
    );
    browser.screenshot("builds-phone");
    browser.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
    );
    browser.goto(&format!("{base}/#/builds/{running}"));
    browser.wait_visible(".log .ln");
    browser.screenshot("build-phone");
    browser.cdp("Emulation.clearDeviceMetricsOverride", json!({}));

    let csp = browser.js("return window.__csp || [];", json!([]));
    assert_eq!(csp, json!([]), "CSP violations");

    // ---- A long log: 60,000 lines with the first error deep inside. The
    // page renders only the part near what is visible, numbers every line
    // right, and still jumps to the error, to any place and to the end.
    const LINES: u64 = 60_000;
    const ERROR_AT: u64 = 41_234;
    w.commit_flake(&[("long", &long_failing(LINES, ERROR_AT))]);
    w.push(&["HEAD:long"]);
    let long = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(long, Duration::from_secs(120), |b| b["status"] == "failed");
    browser.goto(&format!("{base}/#/builds/{long}"));
    let last_line = format!("long line {}", LINES - 1);
    let (last_n, error_n) = browser.wait(
        "the long log to arrive, followed to its end",
        Duration::from_secs(60),
        |b| {
            let last = line_with(b, &last_line)?;
            let link = b.text(".error-link")?;
            let error_n: u64 = link.strip_prefix("First error: line ")?.parse().ok()?;
            Some((last, error_n))
        },
    );
    // Line numbers across the chunks that were never rendered.
    assert_eq!(last_n - error_n, LINES - 1 - ERROR_AT, "line numbers");
    let rendered = || {
        browser
            .js(
                "return document.querySelectorAll('.log .ln').length;",
                json!([]),
            )
            .as_u64()
            .unwrap()
    };
    assert!(rendered() < 2_000, "{} lines in the page", rendered());
    browser.click(".error-link");
    browser.wait(
        "the deep error line targeted",
        Duration::from_secs(10),
        |b| {
            let target = b.text(".ln.target.first-error")?;
            (b.visible(".ln.target.first-error")
                && target.contains(&format!("error: deliberate at line {ERROR_AT}")))
            .then_some(())
        },
    );
    assert_eq!(
        browser.js(
            "return Number(document.querySelector('.ln.target').dataset.n);",
            json!([])
        ),
        error_n
    );
    // Any place: the middle of the log renders with the right numbers.
    browser.js(
        "const log = document.querySelector('.log'); log.scrollTop = log.scrollHeight / 2;",
        json!([]),
    );
    let (n, text) = browser.wait("the middle of the log", Duration::from_secs(10), |b| {
        let v = b.js(
            "const log = document.querySelector('.log'); const box = log.getBoundingClientRect(); \
             const mid = box.top + box.height / 2; \
             const el = [...log.querySelectorAll('.ln')].find((e) => { \
               const r = e.getBoundingClientRect(); return r.top <= mid && r.bottom >= mid; }); \
             return el ? [Number(el.dataset.n), el.innerText] : null;",
            json!([]),
        );
        Some((v[0].as_u64()?, v[1].as_str()?.to_string()))
    });
    let k: u64 = text
        .rsplit("long line ")
        .next()
        .and_then(|k| k.trim().parse().ok())
        .unwrap_or_else(|| panic!("the middle shows {text:?}"));
    assert!((10_000..50_000).contains(&k), "the middle shows line {k}");
    assert_eq!(last_n - n, LINES - 1 - k, "{text:?} is numbered {n}");
    assert!(rendered() < 2_000, "{} lines in the page", rendered());
    browser.js(
        "[...document.querySelectorAll('button')].find((b) => b.textContent.startsWith('Jump to end')).click();",
        json!([]),
    );
    browser.wait("the end again", Duration::from_secs(10), |b| {
        line_with(b, &last_line).filter(|n| *n == last_n)
    });
    browser.screenshot("build-long-log");

    // ---- With `public_read = false` the page asks for the token before
    // showing anything, then shows builds live (over its fetch stream).
    let private = Daemon::start("public_read = false");
    private.create_repo("secret");
    let pw = Work::clone(&private.repo_path("secret"));
    browser.goto(&format!("{}/", private.base()));
    browser.wait_visible("#token-dialog[open] #token-input");
    let shown = browser.js(
        "return document.querySelector('.build-list, .repo-list') === null;",
        json!([]),
    );
    assert_eq!(shown, true, "nothing is shown before the token");
    browser.screenshot("private-token");
    browser.type_into("#token-input", &private.token());
    browser.click("#token-save");
    browser.wait("the empty builds list", Duration::from_secs(20), |b| {
        (b.visible(".builds-view .empty") && b.text("#live").as_deref() == Some("Live"))
            .then_some(())
    });
    browser.js(RECORDERS, json!([]));
    pw.commit_flake(&[("quick", &passing(&format!("private {}", nonce())))]);
    pw.push(&["HEAD:main"]);
    let (_, listed) = private.request("GET", "/api/builds", None, Some(&private.token()));
    let secret_build = listed["builds"][0]["id"].as_i64().unwrap();
    browser.wait(
        "the private build to pass, live",
        Duration::from_secs(60),
        |b| (seen(b, secret_build).last().map(String::as_str) == Some("success")).then_some(()),
    );
    assert_eq!(
        browser.js("return window.__marker;", json!([])),
        "no reload since"
    );
    let csp = browser.js("return window.__csp || [];", json!([]));
    assert_eq!(csp, json!([]), "CSP violations");

    // The raw log, which a plain link cannot fetch with the token.
    browser.click(&format!("li.build-row[data-id='{secret_build}'] a"));
    browser.wait_visible(".raw-link");
    let home = browser.call("GET", &browser.s("/window"), None);
    browser.click(".raw-link");
    let tab = browser.wait("the raw log's tab", Duration::from_secs(10), |b| {
        let handles = b.call("GET", &b.s("/window/handles"), None);
        handles.as_array()?.iter().find(|h| **h != home).cloned()
    });
    browser.call(
        "POST",
        &browser.s("/window"),
        Some(json!({ "handle": tab })),
    );
    browser.wait("the raw log's text", Duration::from_secs(10), |b| {
        b.text("body")
            .filter(|t| t.contains("quick> private"))
            .map(|_| ())
    });
    browser.call("DELETE", &browser.s("/window"), None);
    browser.call(
        "POST",
        &browser.s("/window"),
        Some(json!({ "handle": home })),
    );

    // ---- With the token already stored, a new visit opens its read session
    // before its event stream: live at once, no refused stream. (The
    // browser's cookies go first: a new browser session has none.)
    browser.call("DELETE", &browser.s("/cookie"), None);
    browser.goto(&format!("{}/", private.base()));
    browser.wait("live with the stored token", Duration::from_secs(20), |b| {
        (b.visible(".builds-view") && b.text("#live").as_deref() == Some("Live")).then_some(())
    });
    let (_, metrics) = private.request_text("GET", "/metrics", None, Some(&private.token()));
    assert!(
        !metrics.contains("route=\"/api/events\",status=\"401\""),
        "the event stream was refused: {metrics}"
    );

    // ---- No console errors and no CSP violations, except the refusals the
    // steps above asked for.
    browser.read_console();
    let expected = [
        format!(
            "/api/builds/{failed_id}/rebuild - Failed to load resource: the server responded with a status of 401"
        ),
        "/api/repos - Failed to load resource: the server responded with a status of 400"
            .to_string(),
        format!(
            "{}/api/repos - Failed to load resource: the server responded with a status of 401",
            private.base()
        ),
    ];
    let problems: Vec<&Value> = browser
        .console
        .iter()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !expected.iter().any(|x| m.contains(x.as_str()))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "console errors or warnings: {problems:#?}"
    );
    for x in &expected {
        assert!(
            browser.console.iter().any(|e| e["message"]
                .as_str()
                .unwrap_or_default()
                .contains(x.as_str())),
            "the console shows the refused request {x}: {:#?}",
            browser.console
        );
    }
}

// ------------------------------------------------------ the page for daily use

impl Browser {
    /// Runs `script` (a function body; its last argument is the callback)
    /// and waits for its answer.
    fn js_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Loads `url` as a new document (not a same-document hash change).
    fn open_fresh(&self, url: &str) {
        self.goto("about:blank");
        self.goto(url);
    }

    fn set_media(&self, dark: bool, phone: bool) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" }}]}),
        );
        let (width, height) = if phone { (390, 844) } else { (1400, 900) };
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": if phone { 2 } else { 1 }, "mobile": phone}),
        );
    }

    /// How far the page scrolls sideways (0 when it fits).
    fn sideways(&self) -> i64 {
        self.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .as_i64()
        .unwrap()
    }

    /// axe-core's serious and critical violations on the page as it is.
    fn axe(&self, axe_source: &str) -> Vec<Value> {
        if self.js("return typeof window.axe;", json!([])) != "object" {
            self.js(axe_source, json!([]));
        }
        let found = self.js_async(
            "const done = arguments[arguments.length - 1]; \
             axe.run(document, { resultTypes: ['violations'] }).then((r) => done(r.violations.filter( \
               (v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ id: v.id, impact: v.impact, \
               help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ': ' + n.failureSummary) })))) \
             .catch((e) => done([{ id: 'axe-failed', help: String(e) }]));",
            json!([]),
        );
        found.as_array().cloned().unwrap_or_default()
    }

    /// Where the element matching `css` is: inside the window's viewport,
    /// and inside the log's box.
    fn placement(&self, css: &str) -> Option<(bool, bool, Value)> {
        let v = self.js(
            "const el = document.querySelector(arguments[0]); if (!el) return null; \
             const r = el.getBoundingClientRect(); const box = document.querySelector('.log').getBoundingClientRect(); \
             return { top: r.top, bottom: r.bottom, height: innerHeight, boxTop: box.top, boxBottom: box.bottom, \
               n: Number(el.dataset.n), \
               window: r.top >= 0 && r.bottom <= innerHeight && r.height > 0, \
               box: r.top >= box.top - 1 && r.bottom <= box.bottom + 1 };",
            json!([css]),
        );
        if v.is_null() {
            return None;
        }
        Some((v["window"] == true, v["box"] == true, v))
    }

    /// Waits until `css` (a log line) is visible in the window and the log.
    fn wait_line_in_view(&self, what: &str, css: &str) -> Value {
        self.wait(what, Duration::from_secs(60), |b| {
            let (window, boxed, v) = b.placement(css)?;
            (window && boxed).then_some(v)
        })
    }
}

/// axe-core from the npm registry, installed once under `target/npm`.
fn axe_source() -> String {
    let dir = screenshot_dir().parent().unwrap().join("npm");
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("axe-core@4.10.3")
            .status()
            .expect("npm is needed for axe-core: apt-get install npm");
        assert!(status.success(), "npm install axe-core failed");
    }
    std::fs::read_to_string(file).unwrap()
}

/// A check printing `lines` lines of about 100 bytes (an error at
/// `error_at`), then failing.
fn huge_failing(lines: u64, error_at: u64) -> String {
    format!(
        "echo start {}; i=0; while [ $i -lt {lines} ]; do \
         if [ $i -eq {error_at} ]; then echo \"error: deep in the huge log at $i\"; \
         else echo \"huge line $i ................................................................................\"; fi; \
         i=$((i+1)); done; exit 1",
        nonce()
    )
}

/// The branches the repository view's table lists, in its order.
fn branch_rows(browser: &Browser) -> Vec<String> {
    let names = browser.js(
        "return [...document.querySelectorAll('table.branches tbody tr')].map(r => r.dataset.branch);",
        json!([]),
    );
    serde_json::from_value(names).unwrap()
}

#[test]
fn the_page_for_daily_use() {
    let _one = one_browser_at_a_time();
    let axe_source = axe_source();
    let d = Daemon::start("");
    let token = d.token();
    d.create_repo("daily");
    d.create_repo("doomed");
    let w = Work::clone(&d.repo_path("daily"));
    let subject = "Add the widget check";
    let body = "The widget is checked on every push,\nwith its own error.";
    std::fs::write(
        w.path().join("flake.nix"),
        common::flake(&[
            ("fine", &passing(&format!("fine {}", nonce()))),
            (
                "widget",
                &format!(
                    "echo start {}; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo \"widget line $i\"; done; \
                     printf '\\033[31;1merror:\\033[0m the widget is broken\\n'; exit 1",
                    nonce()
                ),
            ),
        ]),
    )
    .unwrap();
    common::git(w.path(), &["add", "-A"]);
    common::git(
        w.path(),
        &["commit", "-q", "-m", &format!("{subject}\n\n{body}")],
    );
    let commit = common::git(w.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    w.push(&["HEAD:main"]);
    let failing = d.build_of("main", &commit);
    assert_eq!(d.wait_final(failing)["status"], "failed");

    // A build whose retries were spent: nix cannot even start.
    let broken = Daemon::start("nix_bin = \"/nonexistent/nix\"\nmax_retries = 1");
    broken.create_repo("spent");
    let bw = Work::clone(&broken.repo_path("spent"));
    let spent_commit = bw.commit_flake(&[("never", &passing("never"))]);
    bw.push(&["HEAD:main"]);
    let spent = broken.build_of("main", &spent_commit);
    let spent_build = broken.wait_final(spent);
    assert_eq!(spent_build["failure_kind"], "host", "{spent_build}");
    assert_eq!(spent_build["attempt"], 2, "{spent_build}");

    // A repository with more branches than a page: main pushed first, so
    // its build is the oldest and main is not on the first page.
    let wide = Daemon::start("nix_bin = \"/bin/true\"\nscan_interval_secs = 3600");
    wide.create_repo("wide");
    let ww = Work::clone(&wide.repo_path("wide"));
    ww.commit("main");
    ww.push(&["HEAD:main"]);
    ww.commit("wide");
    let refspecs: Vec<String> = (0..130)
        .map(|i| format!("HEAD:refs/heads/w-{i:03}"))
        .collect();
    ww.push(&refspecs.iter().map(String::as_str).collect::<Vec<_>>());
    // Heads the hook had no time for (a loaded machine) are caught up.
    assert_eq!(wide.post("/api/repos/wide/scan", &json!({})).0, 200);
    let (_, first) = wide.get("/api/repos/wide");
    assert_eq!(first["branches_total"], 131, "{first}");
    assert!(!branch_names(&first).contains(&"main".to_string()));

    let mut browser = Browser::start();
    let base = d.base();
    browser.goto(&format!("{base}/"));
    browser.js(
        "localStorage.setItem('procurator-ci.token', arguments[0]);",
        json!([token]),
    );

    // Durations: milliseconds below a second.
    let shown = browser.js_async(
        "const done = arguments[arguments.length - 1]; \
         import('/ui.js').then((m) => done([0, 42, 999, 1500, 65000].map(m.duration)));",
        json!([]),
    );
    assert_eq!(
        shown,
        json!(["0 ms", "42 ms", "999 ms", "1.5 s", "1 min 5 s"])
    );

    // The raw log reads cleanly in the browser.
    browser.goto(&format!("{base}/api/builds/{failing}/logs"));
    let raw = browser.text("body").unwrap();
    assert!(
        raw.contains("widget> error: the widget is broken")
            && !raw.contains('\u{1b}')
            && !raw.contains("[31;1m"),
        "{raw:.2000}"
    );
    assert!(raw.starts_with("nix flake check "), "{raw:.300}");

    // Every view, light and dark, desktop and phone: it fits, axe finds
    // nothing serious, and it says what it should.
    let views: Vec<(&str, String, &str)> = vec![
        ("builds", format!("{base}/#/"), "li.build-row"),
        (
            "build",
            format!("{base}/#/builds/{failing}"),
            "tr[data-check='widget'] .check-failed",
        ),
        ("repo", format!("{base}/#/repos/daily"), "table.branches"),
        (
            "repos",
            format!("{base}/#/repos"),
            ".repo-card[data-repo='daily'] .last-build .pill",
        ),
        (
            "not-found",
            format!("{base}/#/builds/999999"),
            "[data-not-found]",
        ),
        (
            "spent",
            format!("{}/#/builds/{spent}", broken.base()),
            ".duration-total",
        ),
        (
            "wide",
            format!("{}/#/repos/wide", wide.base()),
            "#branches-more",
        ),
    ];
    // Every view is looked at before failing, so one run shows every problem.
    let mut problems = Vec::new();
    for dark in [false, true] {
        for phone in [false, true] {
            browser.set_media(dark, phone);
            let look = format!(
                "{}-{}",
                if dark { "dark" } else { "light" },
                if phone { "phone" } else { "desktop" }
            );
            for (name, url, ready) in &views {
                browser.open_fresh(url);
                browser.wait_visible(ready);
                match *name {
                    "builds" => {
                        let row = browser
                            .text(&format!("li.build-row[data-id='{failing}'] .subject"))
                            .unwrap_or_default();
                        assert_eq!(row, subject, "{look}");
                    }
                    "build" => {
                        assert_eq!(
                            browser.text(".title-line .subject").as_deref(),
                            Some(subject),
                            "{look}"
                        );
                        let message = browser.text(".commit-message").unwrap();
                        assert!(message.contains("with its own error."), "{look}: {message}");
                        let page = browser.text("main").unwrap();
                        assert!(!page.contains("0.0 s"), "{look}: {page}");
                        assert!(
                            browser.visible("tr[data-check='widget'] .check-detail code"),
                            "{look}: the detail shows on every width"
                        );
                    }
                    "repo" => {
                        let table = browser.text("table.branches").unwrap();
                        assert!(table.contains(subject), "{look}: {table}");
                        assert!(browser.visible("#repo-delete"), "{look}");
                    }
                    "repos" => {
                        let card = browser
                            .text(".repo-card[data-repo='daily'] .last-build")
                            .unwrap();
                        assert!(
                            card.contains("Failed") && card.contains(subject),
                            "{look}: {card}"
                        );
                        let never = browser
                            .text(".repo-card[data-repo='doomed'] .last-build")
                            .unwrap();
                        assert_eq!(never, "Never built", "{look}");
                        assert!(browser.visible("#repo-name"), "{look}: the create form");
                    }
                    "not-found" => {
                        let title = browser.text("h1").unwrap();
                        assert!(title.contains("does not exist"), "{look}: {title}");
                        assert!(!browser.visible(".log"), "{look}: no log panel");
                    }
                    "spent" => {
                        let total = browser.text(".duration-total").unwrap();
                        assert!(
                            total.contains("over 2 attempts (the last: "),
                            "{look}: {total}"
                        );
                        let outputs = browser.text(".outputs-card").unwrap();
                        assert!(
                            outputs.contains("Not listed: the build ended"),
                            "{look}: {outputs}"
                        );
                        assert!(!outputs.contains("Not introspected yet"), "{look}");
                    }
                    "wide" => {
                        assert_eq!(
                            browser.text("#branches-more").as_deref(),
                            Some("Show more branches (31 more)"),
                            "{look}"
                        );
                        assert_eq!(branch_rows(&browser).len(), 100, "{look}");
                        assert_eq!(
                            browser.text("#branches-title").as_deref(),
                            Some("Branches (131)"),
                            "{look}"
                        );
                        // The headline is about main, on no page shown.
                        let snippet = browser.js(
                            "return document.getElementById('badge-markdown').value;",
                            json!([]),
                        );
                        assert!(
                            snippet.as_str().unwrap().contains("badge.svg?branch=main"),
                            "{look}: {snippet}"
                        );
                    }
                    _ => unreachable!(),
                }
                if browser.sideways() > 0 {
                    problems.push(format!(
                        "{name} at {look} scrolls sideways by {} px",
                        browser.sideways()
                    ));
                }
                let violations = browser.axe(&axe_source);
                if !violations.is_empty() {
                    problems.push(format!("axe on {name} at {look}: {violations:#?}"));
                }
                browser.screenshot(&format!("daily-{name}-{look}"));
            }

            // Jumping to a line brings it into view: page and log box,
            // from "Show in log", "First error" and `?line=` on first load
            // and later.
            browser.open_fresh(&format!("{base}/#/builds/{failing}?line=5"));
            let v = browser
                .wait_line_in_view(&format!("?line=5 on first load at {look}"), ".ln.target");
            assert_eq!(v["n"], 5, "{look}: {v}");
            browser.js("window.scrollTo(0, 0);", json!([]));
            browser.click("button[data-check-jump='widget']");
            let v = browser.wait_line_in_view(&format!("Show in log at {look}"), ".ln.target");
            let shown = browser.text(".ln.target").unwrap();
            assert!(
                shown.contains("building"),
                "{look}: the check's part starts: {shown} {v}"
            );
            browser.js(
                "window.scrollTo(0, 0); document.querySelector('.log').scrollTop = 0;",
                json!([]),
            );
            browser.click(".error-link");
            browser.wait_line_in_view(&format!("First error at {look}"), ".ln.target.first-error");
            let error = browser.text(".ln.target.first-error").unwrap();
            assert!(
                error.contains("error: the widget is broken"),
                "{look}: {error}"
            );
            browser.js("window.scrollTo(0, 0);", json!([]));
            browser.js(
                &format!("location.hash = '#/builds/{failing}?line=3';"),
                json!([]),
            );
            let v = browser.wait_line_in_view(&format!("?line=3 later at {look}"), ".ln.target");
            assert_eq!(v["n"], 3, "{look}: {v}");
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    browser.set_media(false, false);

    // "Show more branches" lists the next page after the first, each branch
    // once and in the server's order, then goes.
    browser.open_fresh(&format!("{}/#/repos/wide", wide.base()));
    browser.wait_visible("#branches-more");
    browser.click("#branches-more");
    browser.wait(
        "the second page of branches",
        Duration::from_secs(20),
        |b| (branch_rows(b).len() == 131 && !b.visible("#branches-more")).then_some(()),
    );
    let (_, all) = wide.get("/api/repos/wide?branches_limit=1000");
    assert_eq!(branch_rows(&browser), branch_names(&all));
    let focused = browser.js(
        "return document.activeElement.closest('tr')?.dataset.branch ?? null;",
        json!([]),
    );
    assert_eq!(
        focused,
        json!(branch_names(&all)[100]),
        "focus on the first added"
    );

    // Cancelling asks first; "keep it" keeps it.
    w.commit_flake(&[("slow", &ticking(60))]);
    w.push(&["HEAD:slow"]);
    let slow = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(slow, Duration::from_secs(60), |b| b["status"] == "running");
    browser.open_fresh(&format!("{base}/#/builds/{slow}"));
    browser.wait_visible("#cancel");
    browser.click("#cancel");
    browser.wait_visible("dialog.confirm-dialog[open] #confirm-no");
    browser.screenshot("daily-cancel-confirm");
    browser.click("#confirm-no");
    browser.wait("the dialog to close", Duration::from_secs(10), |b| {
        (!b.visible("dialog.confirm-dialog")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.build(slow)["status"], "running", "kept running");
    browser.click("#cancel");
    browser.wait_visible("dialog.confirm-dialog[open] #confirm-yes");
    browser.click("#confirm-yes");
    d.wait_build(slow, Duration::from_secs(60), |b| {
        b["status"] == "cancelled"
    });

    // Deleting a repository needs its name typed.
    browser.open_fresh(&format!("{base}/#/repos/doomed"));
    browser.wait_visible("#repo-delete");
    browser.click("#repo-delete");
    browser.wait_visible("dialog.confirm-dialog[open] #confirm-typed");
    let disabled = |b: &Browser| {
        b.js(
            "return document.getElementById('confirm-yes').disabled;",
            json!([]),
        )
    };
    assert_eq!(disabled(&browser), true);
    browser.type_into("#confirm-typed", "doome");
    assert_eq!(disabled(&browser), true, "a wrong name deletes nothing");
    browser.type_into("#confirm-typed", "doomed");
    assert_eq!(disabled(&browser), false);
    browser.screenshot("daily-delete-confirm");
    browser.click("#confirm-yes");
    browser.wait("the repository list", Duration::from_secs(20), |b| {
        (b.hash() == "#/repos" && d.get("/api/repos/doomed").0 == 404).then_some(())
    });

    // ---- A huge log (about 20 MB) opens at its end at once, loads the rest
    // on demand without moving what is shown, and still jumps anywhere.
    const LINES: u64 = 200_000;
    const ERROR_AT: u64 = 100_000;
    w.commit_flake(&[("huge", &huge_failing(LINES, ERROR_AT))]);
    w.push(&["HEAD:huge"]);
    let huge = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(huge, Duration::from_secs(600), |b| b["status"] == "failed");
    let bytes = d.build(huge)["attempts"][0]["log_bytes"].as_u64().unwrap();
    assert!(bytes > 20_000_000, "{bytes} bytes");
    let (_, tail_headers) = {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .get(format!("{base}/api/builds/{huge}/logs?tail=1"))
            .call()
            .unwrap();
        let h = r.headers().clone();
        (r.into_body().read_to_string().unwrap(), h)
    };
    let error_line: u64 = tail_headers["x-log-first-error-line"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let last_text = format!("huge line {} ", LINES - 1);

    browser.open_fresh(&format!("{base}/#/"));
    browser.wait_visible("li.build-row");
    // The floor, just before: the same bytes fetched by the same browser,
    // not rendered.
    let floor = browser.js_async(
        "const done = arguments[arguments.length - 1]; const id = arguments[0]; \
         (async () => { \
           let t = performance.now(); await (await fetch(`/api/builds/${id}/logs?ansi=1&tail=262144`)).text(); \
           const tail = performance.now() - t; \
           t = performance.now(); await (await fetch(`/api/builds/${id}/logs?ansi=1`)).text(); \
           done([tail, performance.now() - t]); })();",
        json!([huge]),
    );
    browser.js(
        "window.__long = []; \
         new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push([Math.round(e.startTime - window.__t0), e.duration]); }) \
           .observe({ type: 'longtask' }); \
         window.__t0 = performance.now(); window.__shown = null; window.__marker = null; window.__gapAtShown = null; \
         const watch = () => { \
           const log = document.querySelector('.log'); \
           if (log && !window.__shown) { \
             const box = log.getBoundingClientRect(); \
             const ln = [...log.querySelectorAll('.ln')].slice(-40).find((e) => e.textContent.includes(arguments[1])); \
             if (ln) { const r = ln.getBoundingClientRect(); \
               if (r.top >= box.top && r.bottom <= box.bottom) { window.__shown = performance.now() - window.__t0; \
                 window.__gapAtShown = !!document.querySelector('.log-gap'); } } } \
           const link = document.querySelector('.error-link'); \
           if (link && !link.hidden && !window.__marker) window.__marker = performance.now() - window.__t0; \
           if (!window.__shown || !window.__marker) requestAnimationFrame(watch); }; \
         requestAnimationFrame(watch); \
         location.hash = arguments[0];",
        json!([format!("#/builds/{huge}"), last_text]),
    );
    let (shown_ms, marker_ms) =
        browser.wait("the end of the huge log", Duration::from_secs(60), |b| {
            let v = b.js("return [window.__shown, window.__marker];", json!([]));
            Some((v[0].as_f64()?, v[1].as_f64()?))
        });
    assert_eq!(
        browser.js("return window.__gapAtShown;", json!([])),
        true,
        "the end shows before the rest of the log is loaded"
    );
    assert_eq!(
        browser.text(".error-link").unwrap(),
        format!("First error: line {error_line}"),
        "the first error is marked before its line is loaded"
    );
    let rendered = browser.js(
        "return document.querySelectorAll('.log .ln').length;",
        json!([]),
    );
    assert!(
        rendered.as_u64().unwrap() < 2_000,
        "{rendered} lines rendered"
    );
    browser.screenshot("daily-huge-log-end");

    // The rest, on demand; what is shown never moves meanwhile.
    browser.js(
        "const log = document.querySelector('.log'); \
         const last = [...log.querySelectorAll('.ln')].slice(-40).find((e) => e.textContent.includes(arguments[0])); \
         const top0 = last.getBoundingClientRect().top; const y0 = scrollY; \
         window.__moved = 0; window.__loaded = null; \
         const sample = () => { \
           window.__moved = Math.max(window.__moved, Math.abs(last.getBoundingClientRect().top - top0), Math.abs(scrollY - y0)); \
           if (document.querySelector('.log-gap')) requestAnimationFrame(sample); \
           else window.__loaded = performance.now() - window.__t0; }; \
         requestAnimationFrame(sample); \
         document.querySelector('button[data-load-earlier]').click();",
        json!([last_text]),
    );
    let loaded_ms = browser.wait("the whole huge log", Duration::from_secs(120), |b| {
        b.js("return window.__loaded;", json!([])).as_f64()
    });
    let moved = browser
        .js("return window.__moved;", json!([]))
        .as_f64()
        .unwrap();
    assert!(
        moved <= 1.0,
        "the view moved by {moved} px while the log loaded"
    );
    // Long tasks as [start after navigation, duration] in milliseconds.
    let long_tasks = browser.js("return window.__long;", json!([]));
    let longest = long_tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t[1].as_f64())
        .fold(0.0, f64::max);
    browser.click(".error-link");
    let v = browser.wait_line_in_view("the deep first error", ".ln.target.first-error");
    assert_eq!(v["n"], error_line, "{v}");
    assert!(
        browser
            .text(".ln.target")
            .unwrap()
            .contains(&format!("error: deep in the huge log at {ERROR_AT}"))
    );
    // A deep link into the part loaded on demand, on first load.
    browser.open_fresh(&format!("{base}/#/builds/{huge}?line=10"));
    let v = browser.wait_line_in_view("?line=10 of the huge log", ".ln.target");
    assert_eq!(v["n"], 10, "{v}");

    let figures = json!({
        "log_bytes": bytes,
        "end_shown_ms": shown_ms,
        "first_error_marker_ms": marker_ms,
        "whole_log_loaded_ms": loaded_ms,
        "longest_task_ms": longest,
        "long_tasks": long_tasks,
        "floor_tail_fetch_ms": floor[0],
        "floor_whole_fetch_ms": floor[1],
        "view_moved_px": moved,
    });
    eprintln!("huge log figures: {figures}");
    std::fs::create_dir_all(screenshot_dir()).unwrap();
    std::fs::write(screenshot_dir().join("huge-log.json"), figures.to_string()).unwrap();

    // A violation of the page's Content-Security-Policy is logged to the
    // console, so this also sees one.
    browser.read_console();
    let problems: Vec<&Value> = browser
        .console
        .iter()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
        .filter(|e| {
            !e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("999999 - Failed to load resource")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "console errors or warnings: {problems:#?}"
    );
}

#[test]
fn the_binary_cache_on_the_page() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let nix = |args: &[&str], stdin: Option<&Path>| {
        let mut command = Command::new("nix");
        command.args(args).env("NIX_CONFIG", common::NIX_CONFIG);
        if let Some(file) = stdin {
            command.stdin(std::fs::File::open(file).unwrap());
        }
        common::run_ok(&mut command).trim().to_string()
    };
    let key = tmp.path().join("page.secret");
    std::fs::write(
        &key,
        nix(&["key", "generate-secret", "--key-name", "page-1"], None),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = nix(&["key", "convert-secret-to-public"], Some(&key));
    // The push target is down until the regular file in its way goes.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let d = Daemon::start(&format!(
        "cache_serve = true\ncache_secret_key_file = \"{}\"\ncache_push = [\"file://{}/cache\"]\n",
        key.display(),
        blocker.display()
    ));
    d.create_repo("cached");
    let w = Work::clone(&d.repo_path("cached"));
    w.commit_flake(&[("out", &passing(&format!("cached {}", nonce())))]);
    w.push(&["HEAD:main"]);
    let id = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(id, Duration::from_secs(120), |b| {
        b["cache"]["pushes"][0]["attempts"].as_i64() >= Some(1)
    });

    let mut browser = Browser::start();
    browser.goto(&format!("{}/#/builds/{id}", d.base()));
    browser.wait("the failing push", Duration::from_secs(20), |b| {
        b.text(".cache-card [data-push-status='pending'] td:nth-child(2)")
            .filter(|t| t == "Retrying")
    });
    let error = browser
        .text(".cache-card .check-detail code")
        .unwrap_or_default();
    assert!(!error.is_empty(), "the push's error is shown");
    assert!(browser.visible(".cache-card .cache-outputs code"));
    browser.screenshot("build-cache-retrying");

    // The cache comes back: the page shows the push succeed without a
    // reload (the build.cache event).
    std::fs::remove_file(&blocker).unwrap();
    browser.wait("the push to succeed live", Duration::from_secs(60), |b| {
        b.text(".cache-card [data-push-status='pushed'] td:nth-child(2)")
            .filter(|t| t == "Pushed")
    });
    browser.screenshot("build-cache-pushed");

    // Repositories shows what other machines put in nix.settings.
    browser.goto(&format!("{}/#/repos", d.base()));
    browser.wait("the cache's public key", Duration::from_secs(20), |b| {
        let value = b.js(
            "const e = document.getElementById('cache-key'); return e ? e.value : null;",
            json!([]),
        );
        (value.as_str() == Some(public.as_str())).then_some(())
    });
    let url = browser.js(
        "return document.getElementById('cache-url').value;",
        json!([]),
    );
    assert_eq!(
        url.as_str(),
        Some(format!("{}/nix-cache", d.base()).as_str())
    );
    browser.screenshot("repos-cache");

    browser.read_console();
    let problems: Vec<&Value> = browser
        .console
        .iter()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
        .collect();
    assert!(
        problems.is_empty(),
        "console errors or warnings: {problems:#?}"
    );
}

/// What a `.progress` under `css` shows: the bar's value and maximum, the
/// words naming it, and whether it is a progressbar to assistive technology
/// (a `<progress>`, named by `aria-labelledby`).
fn progress_at(browser: &Browser, css: &str) -> Option<(u64, u64, String)> {
    let v = browser.js(
        "const bar = document.querySelector(arguments[0] + ' .progress progress'); if (!bar) return null; \
         const name = document.getElementById(bar.getAttribute('aria-labelledby')); \
         return { value: bar.value, max: bar.max, name: name ? name.textContent : null, \
           shown: bar.getClientRects().length > 0 };",
        json!([css]),
    );
    if v.is_null() || v["shown"] != true {
        return None;
    }
    Some((
        v["value"].as_f64()? as u64,
        v["max"].as_f64()? as u64,
        v["name"].as_str()?.to_string(),
    ))
}

/// Issue 14's live per-check progress: while a build runs, its page's
/// checks table and progress bar and the list's row follow each check,
/// without a reload, at every width and colour scheme.
#[test]
fn live_check_progress_on_the_page() {
    let _one = one_browser_at_a_time();
    let axe_source = axe_source();
    // Every check builds at once, so that each waits on its own gate.
    let d = Daemon::start("nix_extra_args = [\"--max-jobs\", \"4\"]");
    d.create_repo("live");
    let w = Work::clone(&d.repo_path("live"));
    let gates = tempfile::tempdir().unwrap();
    let gated = |name: &str| {
        format!(
            "while [ ! -e {} ]; do /bin/sleep 0.1; done; echo {name} {}; echo ok > $out",
            gates.path().join(name).display(),
            nonce()
        )
    };
    let commit = w.commit_flake(&[
        ("quick", &passing(&format!("quick {}", nonce()))),
        ("first", &gated("first")),
        ("second", &gated("second")),
        ("third", &gated("third")),
    ]);
    w.push(&["HEAD:main"]);
    let id = d.build_of("main", &commit);
    let release = |name: &str| std::fs::write(gates.path().join(name), "").unwrap();
    d.wait_build(id, Duration::from_secs(90), |b| b["progress"]["done"] == 1);

    let browser = Browser::start();
    let base = d.base();
    browser.set_media(false, false);
    browser.open_fresh(&format!("{base}/#/builds/{id}"));
    browser.wait_visible("tr[data-check='first'] .check-running");
    // Opened mid-build: right at once.
    assert_eq!(
        progress_at(&browser, ".checks-card"),
        Some((1, 4, "1 of 4 checks done".into()))
    );
    assert!(browser.visible("tr[data-check='quick'] .check-passed"));
    assert!(browser.visible("tr[data-check='second'] .check-running"));
    // A running check's time ticks.
    let ticking = "tr[data-check='first'] .c-duration [data-since]";
    let before = browser.text(ticking).expect("a ticking duration");
    browser.wait(
        "the running check's time to tick",
        Duration::from_secs(10),
        |b| b.text(ticking).filter(|now| *now != before),
    );
    browser.js("window.sameDocument = true;", json!([]));

    // A check ends: the table and the bar follow, without a reload.
    release("first");
    browser.wait(
        "first passed on the build page",
        Duration::from_secs(60),
        |b| {
            b.visible("tr[data-check='first'] .check-passed")
                .then_some(())
        },
    );
    assert_eq!(
        progress_at(&browser, ".checks-card"),
        Some((2, 4, "2 of 4 checks done".into()))
    );
    let took = browser.text("tr[data-check='first'] .c-duration").unwrap();
    assert!(!took.is_empty(), "a finished check shows its duration");
    assert!(browser.text(ticking).is_none(), "and no longer ticks");
    assert!(browser.visible("tr[data-check='third'] .check-running"));

    // The list shows it, and follows the next one.
    browser.js("location.hash = '#/';", json!([]));
    let row = format!("li.build-row[data-id='{id}']");
    browser.wait("the list's progress", Duration::from_secs(20), |b| {
        progress_at(b, &row).filter(|p| p.0 == 2)
    });
    release("second");
    let shown = browser.wait(
        "the list's progress to move",
        Duration::from_secs(60),
        |b| progress_at(b, &row).filter(|p| p.0 == 3),
    );
    assert_eq!(shown, (3, 4, "3 of 4 checks done".into()));
    let label = browser.js(
        "return document.querySelector(arguments[0] + ' .row-link').getAttribute('aria-label');",
        json!([row]),
    );
    assert!(
        label.as_str().unwrap().contains("3 of 4 checks done"),
        "{label}"
    );
    assert_eq!(
        browser.js("return window.sameDocument === true;", json!([])),
        true,
        "updated live, not reloaded"
    );

    // Every width and scheme, opened mid-build: right, fits, accessible.
    let mut problems = Vec::new();
    for dark in [false, true] {
        for phone in [false, true] {
            browser.set_media(dark, phone);
            let look = format!(
                "{}-{}",
                if dark { "dark" } else { "light" },
                if phone { "phone" } else { "desktop" }
            );
            for (name, url, at) in [
                ("build", format!("{base}/#/builds/{id}"), ".checks-card"),
                ("list", format!("{base}/#/"), row.as_str()),
            ] {
                browser.open_fresh(&url);
                let shown = browser.wait(
                    &format!("progress on the {name} at {look}"),
                    Duration::from_secs(20),
                    |b| progress_at(b, at),
                );
                assert_eq!(
                    shown,
                    (3, 4, "3 of 4 checks done".into()),
                    "{name} at {look}"
                );
                if name == "build" {
                    assert!(
                        browser.visible("tr[data-check='third'] .check-running"),
                        "{look}"
                    );
                    assert!(
                        browser.visible("tr[data-check='second'] .check-passed"),
                        "{look}"
                    );
                }
                if browser.sideways() > 0 {
                    problems.push(format!(
                        "{name} at {look} scrolls sideways by {} px",
                        browser.sideways()
                    ));
                }
                let violations = browser.axe(&axe_source);
                if !violations.is_empty() {
                    problems.push(format!("axe on {name} at {look}: {violations:#?}"));
                }
                browser.screenshot(&format!("live-{name}-{look}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The end: the stored results take over, the bar goes.
    browser.set_media(false, false);
    browser.open_fresh(&format!("{base}/#/builds/{id}"));
    release("third");
    browser.wait(
        "the build to end on the page",
        Duration::from_secs(60),
        |b| {
            b.visible("tr[data-check='third'] .check-passed")
                .then_some(())
        },
    );
    assert_eq!(d.wait_final(id)["status"], "success");
    browser.wait("the bar to go", Duration::from_secs(20), |b| {
        progress_at(b, ".checks-card").is_none().then_some(())
    });
}
