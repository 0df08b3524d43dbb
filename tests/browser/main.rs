//! The web page in a real headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver, plain HTTP on loopback), against the real daemon
//! with real pushes and real `nix flake check`.
//!
//! Screenshots of every view go to `target/browser-screenshots/`.

#[path = "../common/mod.rs"]
mod common;

mod binary_cache;
mod check_progress;
mod daily_use;
mod driver;
#[path = "../forge/fake.rs"]
mod fake;
mod forge_statuses;
mod live;
mod newcomer;
mod remote_builders;
mod upstream;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use driver::{Browser, screenshot_dir};

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

/// The tests here share one machine's cores: one browser at a time, so that
/// the figures one of them measures are not the other's load.
static ONE_BROWSER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_browser_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
