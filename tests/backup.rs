//! Backups and restores, against the real binary: `procurator-ci backup DIR`
//! while a build runs, then a daemon started on a copy of `DIR/state/` has
//! the builds, logs, repositories and token of the first.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, binary, git};

fn run_backup(daemon: &Daemon, dir: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .args(["backup", "--config"])
        .arg(&daemon.config)
        .arg(dir)
        .env_remove("PROCURATOR_CI_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn a_backup_taken_while_a_build_runs_restores_builds_logs_repositories_and_token() {
    let mut first = Daemon::start("");
    first.create_repo("kept");
    let work = common::Work::clone(&first.repo_path("kept"));
    let done = common::build_one(&first, &work, "main", &common::ok_script());
    assert_eq!(done["status"], "success", "{done}");
    let done_id = done["id"].as_i64().unwrap();
    let done_log = first.log_of(done_id);
    assert!(!done_log.is_empty());

    // A build running while the backup is taken.
    let marker = common::nonce("slow");
    let slow_commit = work.commit_flake(&[(
        "slow",
        &format!("echo {marker}; /bin/sleep 6; echo ok > $out"),
    )]);
    work.push(&["HEAD:refs/heads/slow"]);
    let slow_id = first.build_of("slow", &slow_commit);
    first.wait_build(slow_id, Duration::from_secs(60), |b| {
        b["status"] == "running"
    });

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    let out = run_backup(&first, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 repositories"), "{said}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("backup.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["repositories"],
        serde_json::json!(["kept"]),
        "{manifest}"
    );
    // Into a directory that holds something: refused, nothing touched.
    let again = run_backup(&first, &dir);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let token = first.token();
    first.stop();

    // Restore: the backup's state/ copied into an empty state directory.
    let restored_dir = tempfile::tempdir().unwrap();
    let mut restored = Daemon::configure(restored_dir.path(), "", &[]);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(dir.join("state"))
        .arg(restored.state())
        .status()
        .unwrap();
    assert!(copied.success());
    restored.spawn();
    assert_eq!(restored.token(), token, "the generated token is kept");
    let build = restored.build(done_id);
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(
        restored.log_of(done_id),
        done_log,
        "the finished build's log"
    );
    let heads = git(
        &restored.repo_path("kept"),
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    assert!(
        heads.contains(&format!("refs/heads/slow {slow_commit}")),
        "{heads}"
    );
    assert!(
        heads.contains(&format!(
            "refs/heads/main {}",
            done["commit"].as_str().unwrap()
        )),
        "{heads}"
    );
    // The build that was running when the backup was taken runs again, as
    // after a crash, and ends once.
    let slow = restored.wait_final(slow_id);
    assert_eq!(slow["status"], "success", "{slow}");
    let slow_builds = restored.get("/api/builds?repo=kept&branch=slow").1;
    assert_eq!(
        slow_builds["builds"].as_array().unwrap().len(),
        1,
        "{slow_builds}"
    );
    // The restored repository takes pushes: the hook is installed again.
    let work = common::Work::clone(&restored.repo_path("kept"));
    git(work.path(), &["fetch", "-q", "origin", "main"]);
    git(work.path(), &["reset", "-q", "--hard", "FETCH_HEAD"]);
    let commit = work.commit_flake(&[("after", &common::ok_script())]);
    let pushed = work.push(&["HEAD:refs/heads/main"]);
    assert!(pushed.contains("queued for main"), "{pushed}");
    let after = restored.wait_final(restored.build_of("main", &commit));
    assert_eq!(after["status"], "success", "{after}");
}
