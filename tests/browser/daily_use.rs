//! The page for daily use: every view light and dark, desktop and phone,
//! accessible and fitting; paging branches, confirmations, and a huge log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Daemon, Work, branch_names, passing};
use crate::driver::{Browser, screenshot_dir};
use crate::{axe_source, nonce, one_browser_at_a_time, ticking};

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
