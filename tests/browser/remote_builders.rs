//! Which machine built each check (issue 22), on the page: the checks
//! table names the remote builder of every check while the build runs and
//! once it has ended, and the attempts say where each one built.

use std::time::Duration;

use serde_json::json;

use crate::common::{Builders, Work, daemon_with};
use crate::driver::Browser;
use crate::{one_browser_at_a_time, ticking};

#[test]
fn the_checks_table_names_the_builder_of_each_check_live_and_after() {
    let _one = one_browser_at_a_time();
    let Some(builders) = Builders::start(2) else {
        return;
    };
    let d = daemon_with(&builders.all(), "");
    d.create_repo("farm");
    // The browser first: its start on a loaded machine took longer than
    // the checks ran, and the live state was gone before it looked.
    let browser = Browser::start();
    browser.set_media(false, false);
    let w = Work::clone(&d.repo_path("farm"));
    let commit = w.commit_flake(&[("left", &ticking(12)), ("right", &ticking(12))]);
    w.push(&["HEAD:main"]);
    let id = d.build_of("main", &commit);
    let uris = [builders.uri(0), builders.uri(1)];

    browser.open_fresh(&format!("{}/#/builds/{id}", d.base()));
    // Live: both checks run, each on a builder, and the column says which.
    let live = browser.wait("both checks running on builders", Duration::from_secs(60), |b| {
        let machines = b.js(
            "return [...document.querySelectorAll('table.checks tr[data-check]')]
               .filter((tr) => tr.querySelector('.check-running'))
               .map((tr) => tr.querySelector('.c-machine') ? tr.querySelector('.c-machine').textContent : '');",
            json!([]),
        );
        let machines: Vec<String> = serde_json::from_value(machines).ok()?;
        (machines.len() == 2 && machines.iter().all(|m| !m.is_empty())).then_some(machines)
    });
    for machine in &live {
        assert!(uris.contains(machine), "{live:?} not among {uris:?}");
    }
    let headers = browser.js(
        "return [...document.querySelectorAll('table.checks th')].map((th) => th.textContent);",
        json!([]),
    );
    assert!(
        headers.as_array().unwrap().contains(&json!("Machine")),
        "{headers}"
    );

    let build = d.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    browser.wait("both checks passed", Duration::from_secs(30), |b| {
        (b.visible("tr[data-check='left'] .check-passed")
            && b.visible("tr[data-check='right'] .check-passed"))
        .then_some(())
    });
    for check in ["left", "right"] {
        let shown = browser
            .text(&format!("tr[data-check='{check}'] .c-machine"))
            .unwrap();
        let stored = build["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .unwrap()["machine"]
            .clone();
        assert_eq!(json!(shown), stored, "{build}");
    }
}

/// A build machine that does not answer is named on the page's banner,
/// with ssh's reason, before anyone pushes.
#[test]
fn the_banner_names_a_build_machine_that_does_not_answer() {
    let _one = one_browser_at_a_time();
    let Some(builders) = Builders::start(1) else {
        return;
    };
    let nowhere = format!("ssh-ng://root@{}", crate::common::address());
    let machines = builders.machines(&[
        (builders.uri(0), builders.host_key(0)),
        (nowhere.clone(), builders.host_key(0)),
    ]);
    let d = daemon_with(&machines, "");
    let browser = Browser::start();
    browser.set_media(false, false);
    browser.open_fresh(&format!("{}/#/", d.base()));
    let warning = "#health-banner li[data-code='builder_unreachable']";
    let text = browser.wait("the banner's warning", Duration::from_secs(90), |b| {
        b.text(warning)
    });
    assert!(text.contains(&nowhere), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(
        !text.contains(&format!("{} ", builders.uri(0))),
        "the machine that answers is not named: {text}"
    );
}
