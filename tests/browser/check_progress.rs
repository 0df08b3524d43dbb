//! Live per-check progress on the build page and in the list.

use std::time::Duration;

use serde_json::json;

use crate::common::{Daemon, Work, passing};
use crate::driver::Browser;
use crate::{axe_source, nonce, one_browser_at_a_time};

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
