//! The binary cache on the page: a push that fails and recovers, and what
//! other machines need in nix.settings.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Daemon, Work, passing};
use crate::driver::Browser;
use crate::nonce;

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

/// Issue 25: a push target with credentials is drawn with them masked, in
/// its text and in its attributes; the page has nothing else to show.
#[test]
fn no_credentials_on_the_page() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("page.secret");
    let secret = common::run_ok(
        Command::new("nix")
            .args(["key", "generate-secret", "--key-name", "page-2"])
            .env("NIX_CONFIG", common::NIX_CONFIG),
    );
    std::fs::write(&key, secret).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let closed = common::free_port();
    let d = Daemon::start(&format!(
        "cache_secret_key_file = \"{}\"\n\
         cache_push = [\"http://page-user:page-s3cret@127.0.0.1:{closed}/\"]\n",
        key.display()
    ));
    d.create_repo("masked");
    let w = Work::clone(&d.repo_path("masked"));
    w.commit_flake(&[("out", &passing(&format!("masked {}", nonce())))]);
    w.push(&["HEAD:main"]);
    let id = d.builds()[0]["id"].as_i64().unwrap();
    d.wait_build(id, Duration::from_secs(120), |b| {
        b["cache"]["pushes"][0]["error"].is_string()
    });

    let browser = Browser::start();
    browser.goto(&format!("{}/#/builds/{id}", d.base()));
    let masked = format!("http://***@127.0.0.1:{closed}/");
    browser.wait("the failing push", Duration::from_secs(20), |b| {
        b.text(".cache-card [data-push-status='pending'] code")
            .filter(|t| *t == masked)
    });
    let page = browser.js("return document.documentElement.outerHTML;", json!([]));
    let page = page.as_str().unwrap();
    assert!(page.contains(&format!("data-push=\"{masked}\"")), "{page}");
    for secret in ["page-user", "page-s3cret"] {
        assert!(!page.contains(secret), "the page shows {secret}: {page}");
    }
}
