//! Pushes and the hook: one build per pushed branch, hooks installed and
//! kept, pushes made while the daemon is down or unreachable, names refused
//! at push time, flake references and submodules.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::{self, Daemon, Work, git, passing};
use crate::{builds_of, make_executable};

#[test]
fn push_queues_exactly_one_build_and_tells_the_pusher() {
    let daemon = Daemon::start("");
    let repo = daemon.create_repo("demo");
    let path = daemon.repo_path("demo");
    assert_eq!(repo["path"], path.to_str().unwrap());
    assert!(path.join("hooks/post-receive").is_file());

    let work = Work::clone(&path);
    let commit = work.commit_flake(&[("ok", &passing("hello"))]);
    let output = work.push(&["HEAD:main"]);
    let builds = builds_of(&daemon, "demo");
    assert_eq!(builds.len(), 1, "{builds:?}");
    let build = &builds[0];
    assert_eq!(build["repo"], "demo");
    assert_eq!(build["branch"], "main");
    assert_eq!(build["commit"], commit.as_str());
    assert_eq!(build["trigger"], "push");
    assert_eq!(build["author"], "Test <test@example.org>");
    let line = format!(
        "procurator-ci: build #{} queued for main ({})",
        build["id"],
        &commit[..7]
    );
    assert!(output.contains(&line), "{output}");
    assert!(
        output.contains(&format!("{}/#/builds/{}", daemon.base(), build["id"])),
        "{output}"
    );

    let (status, detail) = daemon.get("/api/repos/demo");
    assert_eq!(status, 200);
    assert_eq!(detail["branches"][0]["name"], "main");
    assert_eq!(detail["branches"][0]["commit"], commit.as_str());
    assert_eq!(detail["branches"][0]["latest_build"]["id"], build["id"]);
}

#[test]
fn three_branches_three_builds_deletions_and_tags_none() {
    let daemon = Daemon::start("workers = 2\n");
    daemon.create_repo("multi");
    let work = Work::clone(&daemon.repo_path("multi"));
    work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:main"]);
    let base = builds_of(&daemon, "multi").len();
    assert_eq!(base, 1);
    // Three commits: one commit on several branches is built once.
    let for_main = work.commit("next");
    let for_a = work.commit("for a");
    work.commit("for b/c");
    let output = work.push(&[
        &format!("{for_main}:refs/heads/main"),
        &format!("{for_a}:refs/heads/a"),
        "HEAD:refs/heads/b/c",
    ]);
    let builds = builds_of(&daemon, "multi");
    assert_eq!(builds.len(), 4, "{output}");
    let mut branches: Vec<&str> = builds[..3]
        .iter()
        .map(|b| b["branch"].as_str().unwrap())
        .collect();
    branches.sort();
    assert_eq!(branches, ["a", "b/c", "main"]);
    assert_eq!(
        output.matches("procurator-ci: build #").count(),
        3,
        "{output}"
    );

    git(work.path(), &["tag", "v1"]);
    let output = work.push(&["v1", ":refs/heads/a"]);
    assert_eq!(
        builds_of(&daemon, "multi").len(),
        4,
        "tag and deletion queue nothing: {output}"
    );
    assert!(!output.contains("procurator-ci: build #"), "{output}");
    assert!(
        output.contains("procurator-ci: tag v1 is not built (only branches are)"),
        "the pusher is told tags are not built: {output}"
    );
}

#[test]
fn declared_repos_are_created_and_hooks_reinstalled_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "[repos.declared]\ndescription = \"From the config\"\n",
        &[],
    );
    daemon.spawn();
    let path = daemon.repo_path("declared");
    let hook = path.join("hooks/post-receive");
    let installed = std::fs::read_to_string(&hook).unwrap();
    assert!(installed.contains("procurator-ci-managed-hook"));
    assert!(installed.contains(common::binary().to_str().unwrap()));
    let (status, repo) = daemon.get("/api/repos/declared");
    assert_eq!(status, 200);
    assert_eq!(repo["description"], "From the config");
    assert_eq!(repo["declared"], true);
    assert_eq!(
        std::fs::read_to_string(path.join("description")).unwrap(),
        "From the config\n"
    );

    // An older hook of ours is upgraded; a foreign one elsewhere is kept.
    daemon.stop();
    std::fs::write(
        &hook,
        "#!/bin/sh\n# procurator-ci-managed-hook (old version)\n",
    )
    .unwrap();
    daemon.create_repo_offline("other");
    let foreign = daemon.repo_path("other").join("hooks/post-receive");
    std::fs::write(&foreign, "#!/bin/sh\necho foreign hook ran\n").unwrap();
    make_executable(&foreign);
    daemon.spawn();
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), installed);
    let kept = daemon
        .repo_path("other")
        .join("hooks/post-receive.d/previous-post-receive");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "#!/bin/sh\necho foreign hook ran\n"
    );
    let (status, _) = daemon.get("/api/repos/other");
    assert_eq!(status, 200, "repositories found on disk are served");
    let work = Work::clone(&daemon.repo_path("other"));
    work.commit_flake(&[("ok", &passing("x"))]);
    let output = work.push(&["HEAD:main"]);
    assert!(output.contains("procurator-ci: build #"), "{output}");
    assert!(
        output.contains("foreign hook ran"),
        "the kept hook still runs: {output}"
    );
}

trait Offline {
    fn create_repo_offline(&self, name: &str);
}

impl Offline for Daemon {
    /// A bare repository made by hand while the daemon is down.
    fn create_repo_offline(&self, name: &str) {
        let path = self.repo_path(name);
        git(
            Path::new("/"),
            &["init", "-q", "--bare", path.to_str().unwrap()],
        );
    }
}

#[test]
fn push_while_daemon_down_is_built_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(dir.path(), "", &[]);
    daemon.spawn();
    daemon.create_repo("late");
    let work = Work::clone(&daemon.repo_path("late"));
    work.commit_flake(&[("ok", &passing("x"))]);
    daemon.stop();
    let started = std::time::Instant::now();
    let output = work.push(&["HEAD:main"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        output.contains("procurator-ci: warning: cannot reach"),
        "{output}"
    );
    let commit = git(work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    daemon.spawn();
    let builds = builds_of(&daemon, "late");
    assert_eq!(builds.len(), 1, "caught up at startup");
    assert_eq!(builds[0]["commit"], commit.as_str());
    assert_eq!(builds[0]["trigger"], "scan");
    // A second start queues nothing more, and an explicit scan neither.
    let (status, body) = daemon.post("/api/repos/late/scan", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(body["queued"].as_array().unwrap().len(), 0);
}

#[test]
fn a_push_the_hook_could_not_deliver_is_built_while_the_daemon_runs() {
    let daemon = Daemon::start("scan_interval_secs = 2\nnix_bin = \"/bin/true\"\n");
    daemon.create_repo("missed");
    let work = Work::clone(&daemon.repo_path("missed"));
    let commit = work.commit("x");
    // The hook cannot connect (the socket's name is gone); the daemon runs
    // on, still listening on it.
    let socket = daemon.state().join("procurator-ci.sock");
    let hidden = daemon.state().join("hidden.sock");
    std::fs::rename(&socket, &hidden).unwrap();
    let output = work.push(&["HEAD:main"]);
    std::fs::rename(&hidden, &socket).unwrap();
    assert!(
        output.contains("procurator-ci: warning: cannot reach")
            && output.contains("every scan_interval_secs")
            && output.contains("will queue main"),
        "{output}"
    );
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(build["trigger"], "scan");
    // The scan that found the push brought the repository view to it.
    let (_, view) = daemon.get("/api/repos/missed");
    assert_eq!(view["branches"][0]["name"], "main", "{view}");
    assert_eq!(view["branches"][0]["commit"], commit.as_str(), "{view}");
    assert_eq!(view["branches"][0]["latest_build"]["status"], "success");
    assert!(
        daemon
            .log()
            .contains("Queued builds for pushes whose hook did not reach the daemon"),
        "{}",
        daemon.log()
    );
}

#[test]
fn flake_reference_is_accepted_by_nix() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\n");
    daemon.create_repo("refs");
    let work = Work::clone(&daemon.repo_path("refs"));
    let commit = work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:refs/heads/feature/a+b"]);
    let flake = procurator_ci::build::nix::flake_ref(
        &daemon.repo_path("refs"),
        "feature/a+b",
        &commit,
        false,
    );
    let out = common::run_ok(
        std::process::Command::new("nix")
            .args(["flake", "metadata", "--json", &flake])
            .env("NIX_CONFIG", common::NIX_CONFIG),
    );
    let metadata: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(metadata["locked"]["rev"], commit.as_str());
    assert_eq!(metadata["locked"]["ref"], "refs/heads/feature/a+b");
}

#[test]
fn a_branch_name_that_cannot_be_built_is_refused_at_push_time_with_the_reason() {
    let daemon = Daemon::start("");
    daemon.create_repo("names");
    let path = daemon.repo_path("names");
    assert!(path.join("hooks/pre-receive").is_file());
    let work = Work::clone(&path);
    work.commit_flake(&[("ok", &passing(&common::nonce("names")))]);
    let out = std::process::Command::new("git")
        .args(["push", "origin", "HEAD:refs/heads/feature/ä-x"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push was accepted: {said}");
    assert!(
        said.contains(
            "procurator-ci: refusing the push: branch \"feature/ä-x\" cannot be built: its name \
             must be printable ASCII"
        ) && said.contains("'ä' U+00E4"),
        "{said}"
    );
    // Nothing was stored, so nothing waits unbuilt.
    let refs = git(&path, &["for-each-ref", "--format=%(refname)"]);
    assert!(refs.trim().is_empty(), "{refs}");
    assert!(builds_of(&daemon, "names").is_empty());
    // A good branch beside a refused one is told why it was not stored;
    // a leading '-' gets a sentence, not a garble (issue 24).
    let out = std::process::Command::new("git")
        .args([
            "push",
            "origin",
            "HEAD:refs/heads/good",
            "HEAD:refs/heads/-x",
        ])
        .current_dir(work.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push was accepted: {said}");
    assert!(
        said.contains(
            "branch \"-x\" cannot be built: its name must not have a path component starting \
             with '-'"
        ) && said.contains(
            "procurator-ci: branch \"good\" is not pushed either: a push is refused whole, and \
             it carries \"-x\""
        ),
        "{said}"
    );
    // A buildable name goes through as before.
    let output = work.push(&["HEAD:refs/heads/feature/a-x"]);
    assert!(output.contains("queued for feature/a-x"), "{output}");
}

#[test]
fn a_commit_with_submodules_is_fetched_with_them() {
    // The submodule lives in a repository of its own, as it would on a
    // forge; git refuses file:// submodules unless told, as it would not
    // refuse https.
    let scratch = tempfile::tempdir().unwrap();
    let dep = scratch.path().join("dep");
    std::fs::create_dir(&dep).unwrap();
    git(&dep, &["init", "-q", "-b", "main"]);
    let marker = common::nonce("from-the-submodule");
    std::fs::write(dep.join("data.txt"), &marker).unwrap();
    git(&dep, &["add", "-A"]);
    git(&dep, &["commit", "-q", "-m", "dep"]);
    let allow_file = [
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "protocol.file.allow"),
        ("GIT_CONFIG_VALUE_0", "always"),
    ];
    let mut daemon = Daemon::configure(scratch.path(), "", &allow_file);
    daemon.spawn();
    daemon.create_repo("with-submodules");
    let work = Work::clone(&daemon.repo_path("with-submodules"));
    let url = format!("file://{}", dep.display());
    git(
        work.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &url,
            "vendor/dep",
        ],
    );
    std::fs::write(
        work.path().join("flake.nix"),
        "{\n  outputs = { self }: {\n    checks.x86_64-linux.sub = derivation { name = \"sub\"; \
         system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \
         \"echo ${builtins.readFile ./vendor/dep/data.txt}; echo ok > $out\" ]; };\n  };\n}\n",
    )
    .unwrap();
    let commit = work.commit("with a submodule");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(build["status"], "success", "{build}\n{log}");
    assert!(log.contains("&submodules=1"), "{log}");
    assert!(log.contains(&format!("sub> {marker}")), "{log}");
}

/// Issue 25: one commit pushed on many branches in one push is built once,
/// and that build is shown on every branch at the commit; neither the scan
/// nor a restart queues the rest; a commit already built elsewhere that a
/// branch moves to supersedes that branch's older live build.
#[test]
fn one_commit_on_many_branches_is_built_once_and_shown_on_every_branch() {
    let mut daemon = Daemon::start("");
    let token = daemon.token();
    daemon.create_repo("many");
    let work = Work::clone(&daemon.repo_path("many"));
    let commit = work.commit_flake(&[("ok", &common::ok_script())]);
    let refs: Vec<String> = (0..120)
        .map(|i| format!("HEAD:refs/heads/b{i:03}"))
        .collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let said = work.push(&refs);
    let builds = builds_of(&daemon, "many");
    assert_eq!(builds.len(), 1, "{said}");
    let id = builds[0]["id"].as_i64().unwrap();
    let built_on = builds[0]["branch"].as_str().unwrap().to_string();
    assert!(
        said.contains(&format!("(the same commit's build on {built_on})")),
        "{said}"
    );
    daemon.wait_final(id);
    // The scan and a restart find every head's commit built.
    let (status, scanned) = daemon.request("POST", "/api/repos/many/scan", None, Some(&token));
    assert_eq!(status, 200, "{scanned}");
    assert_eq!(scanned["queued"], json!([]), "{scanned}");
    daemon.stop();
    daemon.spawn();
    assert_eq!(builds_of(&daemon, "many").len(), 1);
    let (_, view) = daemon.get("/api/repos/many?branches_limit=1000");
    let branches = view["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 120, "{view}");
    for branch in branches {
        assert_eq!(branch["latest_build"]["id"], id, "{branch}");
        assert_eq!(branch["latest_build"]["status"], "success", "{branch}");
    }
    let (_, svg) = daemon.request_text("GET", "/api/repos/many/badge.svg?branch=b077", None, None);
    assert!(svg.contains("passing"), "{svg}");

    // A branch with a slow build of another commit moves to the commit
    // built: nothing is queued, and the slow build is superseded.
    let slow = work.commit_flake(&[("slow", "/bin/sleep 30; echo ok > $out")]);
    work.push(&["HEAD:refs/heads/b005"]);
    let slow_id = daemon.build_of("b005", &slow);
    daemon.wait_build(slow_id, Duration::from_secs(20), |b| {
        b["status"] == "running"
    });
    let said = work.push(&["--force", &format!("{commit}:refs/heads/b005")]);
    assert!(
        said.contains(&format!("build #{id} already passed for b005")),
        "{said}"
    );
    let cancelled = daemon.wait_final(slow_id);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(builds_of(&daemon, "many").len(), 2);
    let (_, view) = daemon.get("/api/repos/many?branches_limit=1000");
    let b005 = view["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b005")
        .unwrap()
        .clone();
    assert_eq!(b005["latest_build"]["id"], id, "{b005}");
}

/// Issue 25: a restart finds 10,000 branches at one unbuilt commit (made
/// while it was away): it queues one build, shows it on every branch, and
/// answers soon. The bound here is functional and generous (a debug build
/// on a shared machine); the figure is in docs/performance.md.
#[test]
fn a_restart_with_ten_thousand_branches_at_one_commit_queues_one_build() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, work) = super::restartable(dir.path(), "wide");
    let first = work.commit("one");
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &first));
    daemon.stop();
    let commit = work.commit("two");
    work.push(&["HEAD:refs/heads/carrier"]);
    let names: Vec<String> = (0..10_000).map(|i| format!("b{i:05}")).collect();
    common::create_branches(
        &daemon.repo_path("wide"),
        names.iter().map(|n| (n.as_str(), commit.as_str())),
    );
    let started = std::time::Instant::now();
    daemon.spawn();
    let (status, page) = daemon.get("/api/repos/wide?branches_limit=1000");
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{page}");
    eprintln!("restart with 10,002 branches → first answer: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    assert_eq!(page["branches_total"], 10_002);
    let builds = builds_of(&daemon, "wide");
    assert_eq!(builds.len(), 2, "one build for 10,001 heads at one commit");
    let id = builds[0]["id"].clone();
    for branch in page["branches"].as_array().unwrap() {
        if branch["name"] != "main" {
            assert_eq!(branch["latest_build"]["id"], id, "{branch}");
        }
    }
}
