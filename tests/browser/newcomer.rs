//! What a newcomer sees first (issue 24): `#/builds` is the builds list, a
//! build that tested nothing is not a plain green "Passed", every flake
//! output is listed, copied log text carries no invisible characters, the
//! token dialog names the real token file, a deleted repository's build
//! offers no Rebuild, and a repository's headline is its default branch.

use std::time::Duration;

use serde_json::json;

use crate::common::{self, Daemon, Work};
use crate::driver::Browser;
use crate::{nonce, one_browser_at_a_time};

#[test]
fn what_a_newcomer_sees_is_true() {
    let _one = one_browser_at_a_time();
    let d = Daemon::start("");
    let token = d.token();

    // A flake like nixpkgs.lib: only `lib`; it passes having tested nothing.
    d.create_repo("nixlib");
    let lw = Work::clone(&d.repo_path("nixlib"));
    std::fs::write(
        lw.path().join("flake.nix"),
        format!(
            "{{\n  description = \"{}\";\n  outputs = {{ self }}: {{ lib = {{ id = x: x; }}; }};\n}}\n",
            nonce()
        ),
    )
    .unwrap();
    let lib_commit = lw.commit("lib only");
    lw.push(&["HEAD:main"]);
    let untested = d.build_of("main", &lib_commit);
    assert_eq!(d.wait_final(untested)["nothing_tested"], true);

    // A repository whose default branch is trunk: it passes there, and a
    // feature branch fails after it.
    let body = json!({"name": "lib2", "default_branch": "trunk"}).to_string();
    let (status, _) = d.request("POST", "/api/repos", Some(&body), Some(&token));
    assert_eq!(status, 201);
    let tw = Work::clone(&d.repo_path("lib2"));
    let passed = common::build_one(&d, &tw, "trunk", &common::ok_script());
    assert_eq!(passed["status"], "success");
    let passed = passed["id"].as_i64().unwrap();
    common::build_one(&d, &tw, "feature", &common::failing_script());

    // nix's error has blank lines (between the message and its place).
    d.create_repo("broken");
    let bw = Work::clone(&d.repo_path("broken"));
    std::fs::write(
        bw.path().join("flake.nix"),
        format!(
            "{{\n  description = \"{}\";\n  outputs = {{ self }}: {{ checks.x86_64-linux.a = nope; }};\n}}\n",
            nonce()
        ),
    )
    .unwrap();
    let broken_commit = bw.commit("undefined variable");
    bw.push(&["HEAD:main"]);
    let broken = d.build_of("main", &broken_commit);
    assert_eq!(d.wait_final(broken)["status"], "failed");

    // A repository deleted after its build.
    d.create_repo("gone");
    let gw = Work::clone(&d.repo_path("gone"));
    let gone = common::build_one(&d, &gw, "main", &common::ok_script());
    let gone = gone["id"].as_i64().unwrap();
    let (status, _) = d.request("DELETE", "/api/repos/gone?confirm=gone", None, Some(&token));
    assert_eq!(status, 204);

    let browser = Browser::start();
    let base = d.base();

    // `#/builds` is the builds list, not "Nothing here".
    browser.goto(&format!("{base}/#/builds"));
    let row = format!("li.build-row[data-id='{untested}']");
    browser.wait(
        "the builds list at #/builds",
        Duration::from_secs(20),
        |b| b.visible(&row).then_some(()),
    );
    assert_ne!(browser.text("h1").as_deref(), Some("Nothing here"));
    // Passed, nothing tested: its own look, not the green "Passed".
    let untested_pill = browser.text(&format!("{row} .pill")).unwrap();
    assert_eq!(untested_pill, "Passed, nothing tested");
    let class = browser.js(
        "return document.querySelector(arguments[0]).className;",
        json!([format!("{row} .pill")]),
    );
    assert!(
        class.as_str().unwrap().contains("status-untested"),
        "{class}"
    );
    let tested_pill = browser
        .text(&format!("li.build-row[data-id='{passed}'] .pill"))
        .unwrap();
    assert_eq!(tested_pill, "Passed");

    // Its page lists `lib`, not "The flake has no outputs".
    browser.goto(&format!("{base}/#/builds/{untested}"));
    browser.wait("the outputs", Duration::from_secs(20), |b| {
        b.text(".outputs-card dl.outputs")
            .filter(|t| t.contains("lib"))
    });
    let outputs = browser.text(".outputs-card").unwrap();
    assert!(!outputs.contains("no outputs"), "{outputs}");
    assert_eq!(
        browser.text(".build-head .pill").as_deref(),
        Some("Passed, nothing tested")
    );

    // The token dialog names the real token file.
    browser.click("#token-button");
    browser.wait_visible("#token-dialog[open] #token-file");
    let file = d.state().join("api-token");
    assert_eq!(
        browser.text("#token-file").as_deref(),
        Some(file.display().to_string().as_str())
    );
    browser.click("#token-cancel");

    // Copying the log copies no U+200B (a blank line keeps its row).
    browser.goto(&format!("{base}/#/builds/{broken}"));
    browser.wait("the log", Duration::from_secs(20), |b| {
        b.text(".log-lines")
            .filter(|t| t.contains("undefined variable"))
    });
    let copied = browser.js(
        "const lines = document.querySelector('.log-lines'); \
         const range = document.createRange(); range.selectNodeContents(lines); \
         const selection = window.getSelection(); selection.removeAllRanges(); \
         selection.addRange(range); \
         const blank = [...lines.querySelectorAll('.ln')].filter(l => l.textContent === ''); \
         return { text: selection.toString(), blank: blank.length, \
                  height: blank.length ? blank[0].getBoundingClientRect().height : 0 };",
        json!([]),
    );
    let text = copied["text"].as_str().unwrap();
    assert!(text.contains("undefined variable 'nope'"), "{text}");
    assert!(
        !text.contains('\u{200b}'),
        "U+200B in the copied log: {text:?}"
    );
    assert!(
        copied["blank"].as_u64().unwrap() >= 1,
        "no blank line: {copied}"
    );
    assert!(copied["height"].as_f64().unwrap() > 10.0, "{copied}");

    // A deleted repository's build offers no Rebuild.
    browser.goto(&format!("{base}/#/builds/{gone}"));
    browser.wait_visible("#repo-gone");
    assert!(!browser.visible("#rebuild"));

    // The repository's headline is its default branch, not the one built last.
    browser.goto(&format!("{base}/#/repos/lib2"));
    browser.wait_visible(".repo-head img.badge");
    let alt = browser.js(
        "return document.querySelector('.repo-head img.badge').alt;",
        json!([]),
    );
    assert_eq!(alt, "Build status of trunk");
    browser.screenshot("newcomer-repo");
}
