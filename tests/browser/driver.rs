//! The WebDriver client: chromedriver and one Chromium session, with the
//! commands the tests drive the page by.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::free_port;

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
pub(crate) struct Browser {
    driver: Child,
    pub(crate) base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    /// Every browser console entry read so far.
    pub(crate) console: Vec<Value>,
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
    pub(crate) fn start() -> Browser {
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
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
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

    pub(crate) fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub(crate) fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page.
    pub(crate) fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    pub(crate) fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks the element matching `css`, finding it again if the page
    /// replaced it in between (rows are re-rendered on live updates).
    pub(crate) fn click(&self, css: &str) {
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

    pub(crate) fn type_into(&self, css: &str, text: &str) {
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
    pub(crate) fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;",
            json!([css]),
        )
        .as_str()
        .map(String::from)
    }

    pub(crate) fn visible(&self, css: &str) -> bool {
        self.js(
            "const el = document.querySelector(arguments[0]); \
             return !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;",
            json!([css]),
        ) == true
    }

    pub(crate) fn hash(&self) -> String {
        self.js("return location.hash;", json!([]))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `probe` until it returns Some, for at most `timeout`.
    pub(crate) fn wait<T>(
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

    pub(crate) fn wait_visible(&self, css: &str) {
        self.wait(css, Duration::from_secs(20), |b| {
            b.visible(css).then_some(())
        });
    }

    pub(crate) fn cdp(&self, cmd: &str, params: Value) {
        self.call(
            "POST",
            &self.s("/goog/cdp/execute"),
            Some(json!({"cmd": cmd, "params": params})),
        );
    }

    /// Writes a PNG of the viewport.
    pub(crate) fn screenshot(&self, name: &str) -> PathBuf {
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
    pub(crate) fn read_console(&mut self) -> Vec<Value> {
        let entries = self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
        let entries = entries.as_array().cloned().unwrap_or_default();
        self.console.extend(entries.iter().cloned());
        entries
    }

    /// Runs `script` (a function body; its last argument is the callback)
    /// and waits for its answer.
    pub(crate) fn js_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Loads `url` as a new document (not a same-document hash change).
    pub(crate) fn open_fresh(&self, url: &str) {
        self.goto("about:blank");
        self.goto(url);
    }

    pub(crate) fn set_media(&self, dark: bool, phone: bool) {
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
    pub(crate) fn sideways(&self) -> i64 {
        self.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .as_i64()
        .unwrap()
    }

    /// axe-core's serious and critical violations on the page as it is.
    pub(crate) fn axe(&self, axe_source: &str) -> Vec<Value> {
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
    pub(crate) fn wait_line_in_view(&self, what: &str, css: &str) -> Value {
        self.wait(what, Duration::from_secs(60), |b| {
            let (window, boxed, v) = b.placement(css)?;
            (window && boxed).then_some(v)
        })
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

pub(crate) fn screenshot_dir() -> PathBuf {
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
