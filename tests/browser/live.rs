//! The page live: builds listed and followed without a reload, logs
//! streamed, failures explained, rebuild and cancel, repositories, history
//! and filters, a daemon restart, paging, dark and phone widths, a long log
//! and private reads.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Daemon, Work, passing};
use crate::driver::Browser;
use crate::{
    RECORDERS, line_with, log_text, long_failing, nonce, one_browser_at_a_time, pill, seen, ticking,
};

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
    // Not a plain green "Passed" (issue 24).
    assert_eq!(pill(&browser), "Passed, nothing tested");

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
