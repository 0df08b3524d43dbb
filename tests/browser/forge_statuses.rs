//! Commit statuses on the page: a forge that is down, shown retrying with
//! its error, then posted live once it is up (the `build.forge` event).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::common::{self, Daemon, Work, passing};
use crate::driver::Browser;
use crate::fake::{Fake, Kind};
use crate::nonce;

#[test]
fn the_commit_statuses_on_the_page() {
    let token = "page-forge-token-not-shown";
    let d = Daemon::start("");
    let token_file = d.dir.join("forge-token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = common::free_port();
    let (status, repo) = d.post(
        "/api/repos",
        &json!({
            "name": "reported", "forge": "gitea",
            "forge_api_url": format!("http://127.0.0.1:{port}/api/v1"),
            "forge_repo": "team/app", "forge_token_file": token_file,
        }),
    );
    assert_eq!(status, 201, "{repo}");
    let w = Work::clone(&d.repo_path("reported"));
    w.commit_flake(&[("out", &passing(&format!("reported {}", nonce())))]);
    w.push(&["HEAD:main"]);
    let id = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_final(id);

    let browser = Browser::start();
    browser.goto(&format!("{}/#/builds/{id}", d.base()));
    browser.wait("the status retrying", Duration::from_secs(30), |b| {
        b.text(".forge-card [data-forge-context='procurator-ci'] td:nth-child(3)")
            .filter(|t| t == "Retrying")
    });
    let error = browser
        .text(".forge-card [data-forge-context='procurator-ci'] .check-detail code")
        .unwrap_or_default();
    assert!(
        error.contains("refused"),
        "the delivery's error is shown: {error:?}"
    );
    assert!(browser.visible(".forge-card [data-forge-context='procurator-ci/out']"));
    browser.js(
        "document.querySelector('.forge-card').scrollIntoView();",
        json!([]),
    );
    browser.screenshot("build-forge-retrying");

    // The forge comes up: the page shows the statuses posted without a
    // reload.
    let fake = Fake::start(Kind::Gitea, port, "team/app", token);
    browser.wait("the status posted live", Duration::from_secs(60), |b| {
        b.text(".forge-card [data-forge-context='procurator-ci'] td:nth-child(3)")
            .filter(|t| t == "Posted")
    });
    browser.js(
        "document.querySelector('.forge-card').scrollIntoView();",
        json!([]),
    );
    browser.screenshot("build-forge-posted");
    fake.assert_no_violations();
    let page = browser.js("return document.body.innerText;", json!([]));
    assert!(
        !page.to_string().contains(token),
        "the token is on the page"
    );
}
