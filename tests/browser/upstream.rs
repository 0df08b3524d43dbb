//! A mirrored repository's page (issue 23): the upstream card shows its
//! state and the webhook URL, a failing upstream its error, a fork's pull
//! request waits with an approve button that builds it untrusted, and the
//! build's page says it is untrusted.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::common::{self, Daemon, Work, git};
use crate::driver::Browser;
use crate::one_browser_at_a_time;

#[test]
fn a_mirrored_repositorys_page_shows_its_upstream_and_approves_forks() {
    let _one = one_browser_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("app.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let work = Work::clone(&bare);
    work.commit_flake(&[("check", &common::ok_script())]);
    work.push(&["HEAD:refs/heads/main"]);
    let fork = work.commit_flake(&[("check", &common::ok_script())]);
    work.push(&["HEAD:refs/pull/9/head"]);
    let secret = root.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let dead = common::free_port();
    let d = Daemon::start(&format!(
        "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n\
         [repos.app]\nupstream = \"file://{}\"\npoll_interval_secs = 0\nwebhook_secret_file = \"{}\"\n\
         [repos.down]\nupstream = \"git://127.0.0.1:{dead}/down.git\"\npoll_interval_secs = 1\n",
        bare.display(),
        secret.display()
    ));
    let body = json!({"action": "opened", "number": 9, "pull_request": {"number": 9,
        "head": {"repo": {"full_name": "stranger/app"}}, "base": {"repo": {"full_name": "team/app"}}}})
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s").unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let agent = common::agent_with_timeout(Duration::from_secs(10));
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}/api/repos/app/webhook", d.base()))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "b-1")
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .body(body)
        .unwrap();
    assert_eq!(agent.run(request).unwrap().status(), 202);

    let browser = Browser::start();
    let base = d.base();
    browser.goto(&format!("{base}/"));
    browser.js(
        "localStorage.setItem('procurator-ci.token', arguments[0]);",
        json!([d.token()]),
    );

    // A fresh load reads the stored token.
    browser.goto(&format!("{base}/?token#/repos/app"));
    browser.wait("the upstream card", Duration::from_secs(20), |b| {
        b.text(".upstream-card")
            .filter(|t| t.contains("ok") && t.contains("#9"))
    });
    let card = browser.text(".upstream-card").unwrap();
    assert!(
        card.contains(&format!("file://{}", bare.display())),
        "{card}"
    );
    assert!(card.contains("webhooks only"), "{card}");
    let hook = browser.js(
        "return document.querySelector('#webhook-url').value;",
        json!([]),
    );
    assert_eq!(hook, format!("{base}/api/repos/app/webhook").as_str());
    browser.screenshot("upstream-awaiting-approval");
    browser.click("button.approve-pull[data-number='9']");
    let id = browser.wait("the approved build", Duration::from_secs(20), |_| {
        d.builds()
            .iter()
            .find(|b| b["commit"] == fork.as_str() && b["branch"] == "refs/pull/9/head")
            .and_then(|b| b["id"].as_i64())
    });
    browser.wait("the card without #9", Duration::from_secs(20), |b| {
        b.text(".upstream-card").filter(|t| !t.contains("#9"))
    });

    browser.goto(&format!("{base}/#/builds/{id}"));
    browser.wait_visible(".tag.untrusted");
    browser.screenshot("upstream-untrusted-build");

    // A failing upstream says so, with git's error.
    browser.goto(&format!("{base}/#/repos/down"));
    browser.wait("the failing upstream", Duration::from_secs(30), |b| {
        b.text(".upstream-card .upstream-failing")
            .filter(|t| t.contains("failing"))
    });
    let card = browser.text(".upstream-card").unwrap();
    assert!(card.contains("git ls-remote failed"), "{card}");
    // The page's health banner names it (a fresh load reads health).
    browser.goto(&format!("{base}/?again#/repos/down"));
    browser.wait("the health banner", Duration::from_secs(20), |b| {
        b.text("#health-banner")
            .filter(|t| t.contains("upstream of repository down"))
    });
    browser.screenshot("upstream-failing");
}
