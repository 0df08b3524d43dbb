//! The repository view and badges: answered from state kept in memory,
//! current in the next answer, rebuilt at start, gzipped and paged.

use std::time::Duration;

use serde_json::json;

use crate::common::{self, Daemon, Work, branch_names};
use crate::{builds_of, make_executable, recording_git};

#[test]
fn views_and_badges_come_from_known_heads_without_a_git_process_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let bin = recording_git(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut daemon = Daemon::configure(dir.path(), "nix_bin = \"/bin/true\"\n", &[("PATH", &path)]);
    daemon.spawn();
    daemon.create_repo("heads");
    let work = Work::clone(&daemon.repo_path("heads"));
    let first = work.commit("one");
    work.push(&["HEAD:main", "HEAD:refs/heads/side"]);
    let listings = || {
        std::fs::read_to_string(dir.path().join("git-args"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "for-each-ref")
            .count()
    };
    let (status, detail) = daemon.get("/api/repos/heads");
    assert_eq!(status, 200);
    assert_eq!(detail["branches"].as_array().unwrap().len(), 2, "{detail}");
    let before = listings();
    for _ in 0..30 {
        assert_eq!(daemon.get("/api/repos/heads").0, 200);
        let (status, svg) =
            daemon.request_text("GET", "/api/repos/heads/badge.svg?branch=main", None, None);
        assert_eq!(status, 200);
        assert!(svg.contains("build: "), "{svg}");
    }
    assert_eq!(listings(), before, "views and badges started git");
    // A push moves a head: the next view shows it.
    let second = work.commit("two");
    work.push(&["HEAD:main"]);
    let (_, detail) = daemon.get("/api/repos/heads");
    let main = detail["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "main")
        .unwrap()
        .clone();
    assert_eq!(main["commit"], second.as_str(), "{detail}");
    assert_ne!(first, second);
    // A deleted branch is gone from the view (the hook tells the daemon).
    work.push(&[":refs/heads/side"]);
    let (_, detail) = daemon.get("/api/repos/heads");
    let names: Vec<&str> = detail["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main"], "{detail}");
    let (_, svg) = daemon.request_text("GET", "/api/repos/heads/badge.svg?branch=side", None, None);
    assert!(svg.contains("build: unknown"), "{svg}");
}

/// Branch `name` of repository view `view`, if listed.
fn branch_in(view: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    view["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// The repository view and list answer from state the daemon keeps in
/// memory (issue 15); each change must be in the very next answer: a build
/// queued, started, cancelled and finished, a new branch, a new head, a
/// branch deleted and pushed again (with its earlier builds).
#[test]
fn the_repository_view_shows_each_change_in_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Builds run while `hold` exists, so that their states can be seen.
    let hold = dir.path().join("hold");
    let nix = dir.path().join("held-nix");
    std::fs::write(
        &nix,
        format!(
            "#!/bin/sh\nwhile [ -e {} ]; do /bin/sleep 0.05; done\nexit 0\n",
            hold.display()
        ),
    )
    .unwrap();
    make_executable(&nix);
    let mut daemon = Daemon::configure(
        dir.path(),
        &format!(
            "workers = 1\nscan_interval_secs = 3600\ncancel_superseded = false\nnix_bin = \"{}\"\n",
            nix.display()
        ),
        &[],
    );
    daemon.spawn();
    daemon.create_repo("live");
    let view = || {
        let (status, view) = daemon.get("/api/repos/live");
        assert_eq!(status, 200, "{view}");
        view
    };
    let badge = |branch: &str| {
        let (status, svg) = daemon.request_text(
            "GET",
            &format!("/api/repos/live/badge.svg?branch={branch}"),
            None,
            None,
        );
        assert_eq!(status, 200);
        svg
    };
    let work = Work::clone(&daemon.repo_path("live"));
    std::fs::write(&hold, "").unwrap();

    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    let b1 = daemon.build_of("main", &c1);
    daemon.wait_build(b1, Duration::from_secs(60), |b| b["status"] == "running");
    let main = branch_in(&view(), "main").expect("main listed");
    assert_eq!(main["commit"], c1.as_str());
    assert_eq!(main["latest_build"]["id"], b1);
    assert_eq!(main["latest_build"]["status"], "running", "{main}");

    // A new branch, its build queued behind the running one.
    let c2 = work.commit("two");
    work.push(&["HEAD:refs/heads/feature"]);
    let b2 = daemon.build_of("feature", &c2);
    let feature = branch_in(&view(), "feature").expect("a pushed branch is listed at once");
    assert_eq!(feature["commit"], c2.as_str());
    assert_eq!(feature["latest_build"]["id"], b2);
    assert_eq!(feature["latest_build"]["status"], "queued", "{feature}");
    assert!(badge("feature").contains("build: running"));
    let (status, _) = daemon.post(&format!("/api/builds/{b2}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let feature = branch_in(&view(), "feature").unwrap();
    assert_eq!(feature["latest_build"]["status"], "cancelled", "{feature}");
    assert!(badge("feature").contains("build: unknown"));

    // A new head on a branch.
    let c3 = work.commit("three");
    work.push(&["HEAD:main"]);
    let b3 = daemon.build_of("main", &c3);
    let main = branch_in(&view(), "main").unwrap();
    assert_eq!(main["commit"], c3.as_str());
    assert_eq!(main["latest_build"]["id"], b3);
    assert_eq!(main["latest_build"]["status"], "queued", "{main}");

    // Builds finishing.
    std::fs::remove_file(&hold).unwrap();
    daemon.wait_final(b1);
    assert_eq!(daemon.wait_final(b3)["status"], "success");
    let now = view();
    let main = branch_in(&now, "main").unwrap();
    assert_eq!(main["latest_build"]["id"], b3);
    assert_eq!(main["latest_build"]["status"], "success", "{main}");
    assert_eq!(main["stats"]["builds"], 2, "{main}");
    assert_eq!(now["stats"]["builds"], 2, "{now}");
    assert!(badge("main").contains("build: passing"));
    let (_, list) = daemon.get("/api/repos");
    let listed = &list["repos"].as_array().unwrap()[0];
    assert_eq!(listed["name"], "live");
    assert_eq!(listed["last_build"]["id"], b3, "{list}");
    assert_eq!(listed["last_build"]["status"], "success", "{list}");

    let c4 = work.commit("four");
    work.push(&["HEAD:refs/heads/feature"]);
    daemon.wait_final(daemon.build_of("feature", &c4));
    let feature = branch_in(&view(), "feature").unwrap();
    assert_eq!(feature["commit"], c4.as_str());
    assert_eq!(feature["stats"]["builds"], 1, "{feature}");

    // A branch deleted by a push is gone; pushed again, its earlier builds
    // count again.
    work.push(&[":refs/heads/feature"]);
    assert_eq!(branch_names(&view()), ["main"]);
    assert!(badge("feature").contains("build: unknown"));
    work.push(&["HEAD:refs/heads/feature"]);
    let again: Vec<i64> = builds_of(&daemon, "live")
        .iter()
        .filter(|b| b["branch"] == "feature" && b["commit"] == c4.as_str())
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(again.len(), 2, "a second build of the pushed head");
    daemon.wait_final(again[0]);
    let feature = branch_in(&view(), "feature").expect("listed again");
    assert_eq!(feature["latest_build"]["id"], again[0]);
    assert_eq!(feature["stats"]["builds"], 2, "{feature}");
    assert_eq!(branch_names(&view()), ["feature", "main"]);
}

/// A restart rebuilds the view from the database and git, and pushes made
/// while the daemon was down (a new head, a new branch, a deletion) are in
/// it once the daemon is back.
#[test]
fn the_repository_view_is_rebuilt_at_start_with_the_pushes_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, work) = super::restartable(dir.path(), "kept");
    let c1 = work.commit("one");
    work.push(&["HEAD:main", "HEAD:refs/heads/side"]);
    // One build per commit and repository: side shows main's.
    let b1 = daemon.build_of("main", &c1);
    daemon.wait_final(b1);
    let (_, view) = daemon.get("/api/repos/kept");
    assert_eq!(branch_in(&view, "side").unwrap()["latest_build"]["id"], b1);
    let c2 = work.commit("two");
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &c2));
    let (_, before) = daemon.get("/api/repos/kept");
    assert_eq!(branch_in(&before, "main").unwrap()["stats"]["builds"], 2);
    let (_, list_before) = daemon.get("/api/repos");

    daemon.stop();
    daemon.spawn();
    let (_, after) = daemon.get("/api/repos/kept");
    assert_eq!(after, before, "the same view after a restart");
    assert_eq!(daemon.get("/api/repos").1, list_before);

    daemon.stop();
    let c3 = work.commit("three");
    let output = work.push(&["HEAD:main", "HEAD:refs/heads/offline", ":refs/heads/side"]);
    assert!(output.contains("cannot reach"), "{output}");
    daemon.spawn();
    let b3 = daemon.build_of("main", &c3);
    let view = daemon.get("/api/repos/kept").1;
    let mut names = branch_names(&view);
    names.sort();
    assert_eq!(names, ["main", "offline"], "{view}");
    let main = branch_in(&view, "main").unwrap();
    assert_eq!(main["commit"], c3.as_str());
    assert_eq!(main["latest_build"]["id"], b3);
    daemon.wait_final(b3);
    let view = daemon.get("/api/repos/kept").1;
    let main = branch_in(&view, "main").unwrap();
    assert_eq!(main["latest_build"]["status"], "success", "{main}");
    assert_eq!(main["stats"]["builds"], 3, "{main}");
    assert_eq!(branch_in(&view, "offline").unwrap()["commit"], c3.as_str());
}

/// A branch made in the repository without the hook (`git update-ref`) and
/// then built through the API is in the view with that build at once, not
/// only after the next scan.
#[test]
fn a_branch_made_without_the_hook_is_in_the_view_once_built_through_the_api() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\nscan_interval_secs = 86400\n");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    common::create_branches(&daemon.repo_path("r"), [("side", c1.as_str())]);
    let (_, view) = daemon.get("/api/repos/r");
    assert!(branch_in(&view, "main").is_some(), "{view}");
    assert!(
        branch_in(&view, "side").is_none(),
        "no hook told the daemon: {view}"
    );
    let (status, build) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "side", "commit": c1}),
    );
    assert_eq!(status, 201, "{build}");
    let (_, view) = daemon.get("/api/repos/r");
    let side = branch_in(&view, "side").expect("the built branch is listed");
    assert_eq!(side["commit"], c1.as_str());
    assert_eq!(side["latest_build"]["id"], build["id"], "{side}");
}

/// `GET /api/repos/{name}` with `Accept-Encoding: gzip`: the status, the
/// `Content-Encoding` and the decoded body.
fn repo_view_gzip(daemon: &Daemon, name: &str) -> (u16, Option<String>, serde_json::Value) {
    use std::io::{Read, Write};
    let address = daemon.base().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /api/repos/{name} HTTP/1.1\r\nHost: {address}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let body = &raw[split + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        procurator_ci::repos::hook::dechunk(body)
    } else {
        body.to_vec()
    };
    let encoding = header("content-encoding");
    let json = if encoding.as_deref() == Some("gzip") {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .unwrap();
        text
    } else {
        body
    };
    (status, encoding, serde_json::from_slice(&json).unwrap())
}

/// A client that accepts gzip gets the same view, compressed, and the
/// compressed answer changes with the view.
#[test]
fn the_repository_view_is_gzipped_for_clients_that_accept_it_and_stays_current() {
    let daemon = Daemon::start(super::QUICK);
    daemon.create_repo("zipped");
    let work = Work::clone(&daemon.repo_path("zipped"));
    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &c1));
    let (status, encoding, zipped) = repo_view_gzip(&daemon, "zipped");
    assert_eq!(status, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(zipped, daemon.get("/api/repos/zipped").1);
    assert_eq!(zipped["branches"][0]["commit"], c1.as_str());
    // Asked again: the kept encoding, still the same view.
    assert_eq!(repo_view_gzip(&daemon, "zipped").2, zipped);
    let c2 = work.commit("two");
    work.push(&["HEAD:main"]);
    let (_, _, after) = repo_view_gzip(&daemon, "zipped");
    assert_eq!(after["branches"][0]["commit"], c2.as_str(), "{after}");
    let (status, encoding, _) = repo_view_gzip(&daemon, "nothing-here");
    assert_eq!((status, encoding), (404, None));
}

/// The names a page of the repository view lists, in its order.
fn page_names(daemon: &Daemon, query: &str) -> (serde_json::Value, Vec<String>) {
    let (status, page) = daemon.get(&format!("/api/repos/paged{query}"));
    assert_eq!(status, 200, "{query}: {page}");
    let names = branch_names(&page);
    (page, names)
}

/// The repository view lists a page of branches, the newest build first
/// (ties by name), with how many there are, the default branch whatever the
/// page, and pages that together list every branch exactly once.
#[test]
fn the_repository_view_pages_its_branches_newest_build_first() {
    let daemon = Daemon::start(super::QUICK);
    daemon.create_repo("paged");
    let work = Work::clone(&daemon.repo_path("paged"));
    let main_commit = work.commit("main");
    work.push(&["HEAD:main"]);
    let main_build = daemon.build_of("main", &main_commit);
    // 250 more branches in one push, after main, each at its own commit
    // (one commit on many branches is built once): main's build is the
    // oldest, so main is on no page but the last.
    let refspecs: Vec<String> = (0..250)
        .map(|i| format!("{}:refs/heads/b-{i:03}", work.commit(&format!("wide {i}"))))
        .collect();
    let pushed = work.push(&refspecs.iter().map(String::as_str).collect::<Vec<_>>());
    let latest = |branch: &str| -> i64 {
        builds_of(&daemon, "paged")
            .iter()
            .filter(|b| b["branch"] == branch)
            .map(|b| b["id"].as_i64().unwrap())
            .max()
            .unwrap_or_else(|| panic!("no build of {branch}"))
    };
    // The hook has a few seconds for all 250 heads; on a loaded machine it
    // leaves the rest to the catch-up, which a scan runs now.
    let (status, _) = daemon.post("/api/repos/paged/scan", &json!({}));
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Every build ended: the pages compared below must not change between
    // two reads (a loaded machine is still running some otherwise).
    let builds = loop {
        let builds = builds_of(&daemon, "paged");
        let ended = |b: &serde_json::Value| {
            matches!(
                b["status"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
        };
        if builds.len() >= 251 && builds.iter().all(ended) {
            break builds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} builds after the push: {pushed}\n{}",
            builds.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut expected: Vec<(i64, String)> = std::iter::once("main".to_string())
        .chain((0..250).map(|i| format!("b-{i:03}")))
        .map(|name| {
            let id = builds
                .iter()
                .filter(|b| b["branch"] == name.as_str())
                .map(|b| b["id"].as_i64().unwrap())
                .max()
                .unwrap_or_else(|| panic!("no build of {name}"));
            (-id, name)
        })
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, name)| name).collect();
    assert_eq!(expected.last().map(String::as_str), Some("main"));

    // The default page: the first 100, and the default branch although it
    // is not among them.
    let (first, names) = page_names(&daemon, "");
    assert_eq!(first["branches_total"], 251, "{first}");
    assert_eq!(first["branches_offset"], 0);
    assert_eq!(first["branches_next_offset"], 100);
    assert_eq!(names, expected[..100], "newest build first");
    assert!(!names.contains(&"main".to_string()));
    let default = &first["default_branch"];
    assert_eq!(default["name"], "main", "{default}");
    assert_eq!(default["commit"], main_commit.as_str());
    assert_eq!(default["latest_build"]["id"], main_build, "{default}");
    assert_eq!(
        page_names(&daemon, "?branches_offset=0&branches_limit=100").0,
        first,
        "the default page asked for explicitly"
    );

    // Pages of 60 list every branch once, in the same order.
    let mut paged = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let (page, names) =
            page_names(&daemon, &format!("?branches_offset={at}&branches_limit=60"));
        assert_eq!(page["branches_offset"], at);
        assert_eq!(page["branches_total"], 251);
        assert_eq!(page["default_branch"]["name"], "main");
        assert!(names.len() <= 60 && !names.is_empty(), "{page}");
        paged.extend(names);
        offset = page["branches_next_offset"].as_i64();
    }
    assert_eq!(paged, expected, "the pages list every branch once");
    let (all, names) = page_names(&daemon, "?branches_limit=1000");
    assert_eq!(names, expected);
    assert_eq!(all["branches_next_offset"], serde_json::Value::Null);
    let (past, names) = page_names(&daemon, "?branches_offset=5000");
    assert!(names.is_empty());
    assert_eq!(past["branches_total"], 251);
    assert_eq!(past["branches_next_offset"], serde_json::Value::Null);

    // A branch pushed again comes first.
    let again = work.commit("again");
    work.push(&["HEAD:refs/heads/b-000"]);
    let (_, names) = page_names(&daemon, "?branches_limit=3");
    assert_eq!(names[0], "b-000");
    assert_eq!(latest("b-000"), daemon.build_of("b-000", &again));

    // Bad values name their field.
    for (query, field) in [
        ("branches_offset=-1", "branches_offset"),
        ("branches_offset=x", "branches_offset"),
        ("branches_limit=0", "branches_limit"),
        ("branches_limit=1001", "branches_limit"),
        ("branches_limit=ten", "branches_limit"),
    ] {
        let (status, body) = daemon.get(&format!("/api/repos/paged?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = daemon.get("/api/repos/paged?branches_page=2");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("branches_page"),
        "{body}"
    );
}

/// Issue 24: the default branch is the bare repository's `HEAD` (given at
/// creation, changeable with `PATCH`, declared in the configuration), not
/// the branch built last; badges without `?branch` follow it.
#[test]
fn the_default_branch_is_head_and_badges_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "[repos.declared]\ndefault_branch = \"develop\"\n",
        &[],
    );
    daemon.spawn();
    let token = daemon.token();
    let badge = |repo: &str| {
        let (status, svg) =
            daemon.request_text("GET", &format!("/api/repos/{repo}/badge.svg"), None, None);
        assert_eq!(status, 200, "{svg}");
        svg
    };
    // Declared: HEAD names the configured branch, before any push.
    let head = std::fs::read_to_string(daemon.repo_path("declared").join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/develop\n");
    let (_, view) = daemon.get("/api/repos/declared");
    assert_eq!(view["default_branch"]["name"], "develop", "{view}");
    assert!(view["default_branch"]["latest_build"].is_null(), "{view}");

    let body = json!({"name": "lib", "default_branch": "trunk"}).to_string();
    let (status, created) = daemon.request("POST", "/api/repos", Some(&body), Some(&token));
    assert_eq!(status, 201, "{created}");
    let head = std::fs::read_to_string(daemon.repo_path("lib").join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/trunk\n");
    let work = Work::clone(&daemon.repo_path("lib"));
    common::build_one(&daemon, &work, "trunk", &common::ok_script());
    // A failing feature branch, built last, heads nothing.
    let failed = common::build_one(&daemon, &work, "feature", &common::failing_script());
    assert_eq!(failed["status"], "failed");
    let (_, view) = daemon.get("/api/repos/lib");
    assert_eq!(view["default_branch"]["name"], "trunk", "{view}");
    assert_eq!(
        view["default_branch"]["latest_build"]["status"], "success",
        "{view}"
    );
    assert!(badge("lib").contains("passing"), "{}", badge("lib"));
    // Changed through the API: the badge follows.
    let body = json!({"default_branch": "feature"}).to_string();
    let (status, view) = daemon.request("PATCH", "/api/repos/lib", Some(&body), Some(&token));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["default_branch"]["name"], "feature", "{view}");
    let head = std::fs::read_to_string(daemon.repo_path("lib").join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/feature\n");
    assert!(badge("lib").contains("failing"), "{}", badge("lib"));
    // Bad input names the field; no token, no change.
    let body = json!({"default_branch": "-x"}).to_string();
    let (status, error) = daemon.request("PATCH", "/api/repos/lib", Some(&body), Some(&token));
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["field"], "default_branch", "{error}");
    let body = json!({"default_branch": "trunk"}).to_string();
    let (status, _) = daemon.request("PATCH", "/api/repos/lib", Some(&body), None);
    assert_eq!(status, 401);
    // It holds across a restart (HEAD is read from git).
    daemon.stop();
    daemon.spawn();
    let (_, view) = daemon.get("/api/repos/lib");
    assert_eq!(view["default_branch"]["name"], "feature", "{view}");
}

#[test]
fn the_first_pushed_branch_becomes_the_default_when_head_names_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "[repos.declared]\ndefault_branch = \"develop\"\n",
        &[],
    );
    daemon.spawn();
    // Made for `main`, pushed `master` (and a feature branch after it).
    daemon.create_repo("older");
    let work = Work::clone(&daemon.repo_path("older"));
    common::build_one(&daemon, &work, "master", &common::ok_script());
    common::build_one(&daemon, &work, "feature", &common::failing_script());
    let head = std::fs::read_to_string(daemon.repo_path("older").join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/master\n");
    let (_, view) = daemon.get("/api/repos/older");
    assert_eq!(view["default_branch"]["name"], "master", "{view}");
    let (_, svg) = daemon.request_text("GET", "/api/repos/older/badge.svg", None, None);
    assert!(svg.contains("passing"), "{svg}");
    // A default declared in the configuration is the administrator's: kept.
    let work = Work::clone(&daemon.repo_path("declared"));
    common::build_one(&daemon, &work, "main", &common::ok_script());
    let head = std::fs::read_to_string(daemon.repo_path("declared").join("HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/develop\n");
}
