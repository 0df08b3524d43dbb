//! Issue 25, item 1: a pusher's flake cannot read what the CI keeps. Nix
//! evaluates in a namespace where the daemon's state and credentials are
//! absent (attacks that no text check can see: `builtins.fetchTree` of a
//! file with its hash, `builtins.fetchGit` of another repository at a
//! revision the API shows), and local inputs outside the repository are
//! refused before nix runs, unless `allowed_local_inputs` lists their root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, Daemon, NIX_CONFIG, Work, nonce};
use serde_json::Value;

/// A derivation that passes, new to nix.
fn passing_drv(label: &str) -> String {
    format!(
        "derivation {{ name = \"{label}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo {} > $out\" ]; }}",
        nonce(label)
    )
}

/// A flake with one check that prints `expr` (a string) into the log.
fn flake_printing(expr: &str, label: &str) -> String {
    format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux.leak = builtins.trace \"LEAK:${{{expr}}}\" ({});\n  }};\n}}\n",
        passing_drv(label)
    )
}

/// The NAR hash of `path`, as an attacker who knows the file computes it.
fn nar_hash(path: &Path) -> String {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "hash",
            "path",
        ])
        .arg(path)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn secret_file(path: &Path, content: &str) -> PathBuf {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// Pushes `flake` to `branch` of `work` and returns the finished build.
fn push_flake(daemon: &Daemon, work: &Work, branch: &str, flake: &str) -> Value {
    std::fs::write(work.path().join("flake.nix"), flake).unwrap();
    let commit = work.commit(branch);
    work.push(&[&format!("HEAD:refs/heads/{branch}")]);
    daemon.wait_final(daemon.build_of(branch, &commit))
}

/// Everything a reader learns of `build`: its API view and its log.
fn public_text(daemon: &Daemon, build: &Value) -> String {
    let id = build["id"].as_i64().unwrap();
    format!("{build}\n{}", daemon.log_of(id))
}

/// Store paths created since `before` whose contents hold `secret`.
fn store_copies(before: &[String], secret: &str) -> Vec<String> {
    std::fs::read_dir("/nix/store")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().display().to_string()))
        .filter(|p| !before.contains(p))
        .filter(|p| {
            std::fs::read(p).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(secret))
        })
        .collect()
}

fn store_listing() -> Vec<String> {
    std::fs::read_dir("/nix/store")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().display().to_string()))
        .collect()
}

#[test]
fn a_pushed_flake_reads_none_of_the_daemons_state_credentials_or_other_repositories() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let credentials = dir.join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let credential = secret_file(
        &credentials.join("notify-secret-0"),
        &format!("credential-{}", nonce("c")),
    );
    let key = secret_file(
        &dir.join("cache.secret"),
        &String::from_utf8(
            Command::new("nix")
                .args(["--extra-experimental-features", "nix-command"])
                .args(["key", "generate-secret", "--key-name", "ci-1"])
                .env("NIX_CONFIG", NIX_CONFIG)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    );
    let visible = secret_file(&dir.join("visible"), &format!("visible-{}", nonce("v")));
    let mut daemon = Daemon::configure(
        dir,
        &format!(
            "cache_serve = true\ncache_secret_key_file = \"{}\"\n",
            key.display()
        ),
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    daemon.spawn();
    // Another team's repository, with a commit whose id the API shows.
    daemon.create_repo("other");
    let other = Work::clone(&daemon.repo_path("other"));
    let other_secret = format!("other-repository-{}", nonce("o"));
    std::fs::write(other.path().join("secret"), &other_secret).unwrap();
    let other_rev = other.commit("secret");
    other.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &other_rev));

    daemon.create_repo("attacker");
    let work = Work::clone(&daemon.repo_path("attacker"));
    let fetch_file = |path: &Path| {
        format!(
            "builtins.readFile (builtins.fetchTree {{ type = \"path\"; path = \"{}\"; narHash = \"{}\"; }})",
            path.display(),
            nar_hash(path)
        )
    };
    // The method works on a file the daemon does not keep to itself.
    let control = push_flake(
        &daemon,
        &work,
        "control",
        &flake_printing(&fetch_file(&visible), "control"),
    );
    let text = public_text(&daemon, &control);
    assert_eq!(control["status"], "success", "{text}");
    let visible_content = std::fs::read_to_string(&visible).unwrap();
    assert!(text.contains(&format!("LEAK:{visible_content}")), "{text}");

    let token_file = daemon.state().join("api-token");
    let mut secrets: Vec<(&str, String, String)> = [
        ("token", &token_file),
        ("cache-key", &key),
        ("credential", &credential),
    ]
    .into_iter()
    .map(|(name, path)| {
        (
            name,
            std::fs::read_to_string(path).unwrap().trim().to_string(),
            fetch_file(path),
        )
    })
    .collect();
    secrets.push((
        "other-repository",
        other_secret.clone(),
        format!(
            "builtins.readFile \"${{builtins.fetchGit {{ url = \"file://{}\"; rev = \"{other_rev}\"; }}}}/secret\"",
            daemon.repo_path("other").display()
        ),
    ));
    let before = store_listing();
    for (name, secret, expr) in &secrets {
        let build = push_flake(&daemon, &work, name, &flake_printing(expr, name));
        let text = public_text(&daemon, &build);
        assert!(!text.contains(secret.as_str()), "{name} leaked: {text}");
        assert_eq!(build["status"], "failed", "{name}: {text}");
        let copies = store_copies(&before, secret);
        assert!(
            copies.is_empty(),
            "{name} copied into the store: {copies:?}"
        );
    }
    // The daemon's own view is not reachable through /proc either.
    let pid = daemon.pid();
    let through_proc = token_file.display().to_string();
    let build = push_flake(
        &daemon,
        &work,
        "proc",
        &flake_printing(
            &fetch_file(&token_file).replace(
                &format!("path = \"{through_proc}\""),
                &format!("path = \"/proc/{pid}/root{through_proc}\""),
            ),
            "proc",
        ),
    );
    let text = public_text(&daemon, &build);
    assert!(
        !text.contains(&daemon.token()),
        "the token leaked through /proc: {text}"
    );
    assert_eq!(build["status"], "failed", "{text}");
    // Builds of the daemon's own repositories are unaffected.
    let ok = push_flake(
        &daemon,
        &work,
        "fine",
        &format!(
            "{{ outputs = {{ self }}: {{ checks.x86_64-linux.ok = {}; }}; }}\n",
            passing_drv("fine")
        ),
    );
    assert_eq!(ok["status"], "success", "{ok}");
    let (_, health) = daemon.get("/api/health");
    assert!(
        !health.to_string().contains("evaluation_not_isolated"),
        "{health}"
    );
}

/// A wrapper around nix that records every command line it is given.
fn recording_nix(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("nix-calls");
    let wrapper = dir.join("nix-recording");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec nix \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, calls)
}

#[test]
fn local_inputs_outside_the_repository_are_refused_before_nix_runs_unless_allowed() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let shared = dir.join("shared-flakes");
    std::fs::create_dir(&shared).unwrap();
    let shared_data = format!("shared-{}", nonce("s"));
    std::fs::write(shared.join("data"), &shared_data).unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("data"), "not for pushers").unwrap();
    let (wrapper, calls) = recording_nix(dir);
    let mut daemon = Daemon::configure(
        dir,
        &format!(
            "nix_bin = \"{}\"\nallowed_local_inputs = [\"{}\"]\n",
            wrapper.display(),
            shared.display()
        ),
        &[],
    );
    daemon.spawn();
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let token = daemon.state().join("api-token");
    let data_input = |url: &str| {
        format!(
            "{{\n  inputs.x = {{ url = {url}; flake = false; }};\n  outputs = {{ self, x }}: {{\n    \
             checks.x86_64-linux.leak = builtins.trace \"LEAK:${{builtins.readFile \"${{x}}/data\"}}\" ({});\n  }};\n}}\n",
            passing_drv("local")
        )
    };
    let lock = format!(
        r#"{{"nodes": {{"x": {{"locked": {{"type": "path", "path": "{0}", "narHash": "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}, "original": {{"type": "path", "path": "{0}"}}}}, "root": {{"inputs": {{"x": "x"}}}}}}, "root": "root", "version": 7}}"#,
        elsewhere.display()
    );
    let refused: Vec<(&str, String, Option<String>, String)> = vec![
        (
            "path",
            data_input(&format!("\"path:{}\"", token.display())),
            None,
            token.display().to_string(),
        ),
        (
            "bare-path",
            data_input(&format!("\"{}\"", elsewhere.display())),
            None,
            elsewhere.display().to_string(),
        ),
        (
            "git-file",
            data_input(&format!(
                "\"git+file://{}\"",
                daemon
                    .repo_path("r")
                    .parent()
                    .unwrap()
                    .join("other.git")
                    .display()
            )),
            None,
            "other.git".into(),
        ),
        (
            "file-url",
            data_input(&format!("\"file://{}/data\"", elsewhere.display())),
            None,
            elsewhere.display().to_string(),
        ),
        (
            "indented",
            data_input(&format!("''path:{}''", elsewhere.display())),
            None,
            elsewhere.display().to_string(),
        ),
        (
            "climbing",
            data_input("\"path:../../../../../../../../etc\""),
            None,
            "../../../../../../../../etc".into(),
        ),
        (
            "attributes",
            format!(
                "{{\n  inputs.x = {{ type = \"path\"; path = \"{}\"; flake = false; }};\n  outputs = {{ self, x }}: {{ checks.x86_64-linux.ok = {}; }};\n}}\n",
                elsewhere.display(),
                passing_drv("attrs")
            ),
            None,
            elsewhere.display().to_string(),
        ),
        (
            "lock-only",
            format!(
                "{{\n  outputs = {{ self, x }}: {{ checks.x86_64-linux.ok = {}; }};\n}}\n",
                passing_drv("lock")
            ),
            Some(lock),
            elsewhere.display().to_string(),
        ),
    ];
    for (branch, flake, lock, path) in &refused {
        std::fs::write(work.path().join("flake.nix"), flake).unwrap();
        match lock {
            Some(lock) => std::fs::write(work.path().join("flake.lock"), lock).unwrap(),
            None => {
                let _ = std::fs::remove_file(work.path().join("flake.lock"));
            }
        }
        let commit = work.commit(branch);
        work.push(&[&format!("HEAD:refs/heads/{branch}")]);
        let build = daemon.wait_final(daemon.build_of(branch, &commit));
        let summary = build["failure_summary"].as_str().unwrap_or_default();
        assert_eq!(build["status"], "failed", "{branch}: {build}");
        assert_eq!(
            build["diagnosis"]["kind"], "evaluation",
            "{branch}: {build}"
        );
        assert_eq!(build["retry_count"], 0, "{branch}: {build}");
        assert!(
            summary.contains("input 'x'")
                && summary.contains(path.as_str())
                && summary.contains("allowed_local_inputs"),
            "{branch}: {summary}"
        );
        let ran = std::fs::read_to_string(&calls).unwrap_or_default();
        assert!(
            !ran.contains(&commit),
            "{branch}: nix ran on the refused commit: {ran}"
        );
    }
    let _ = std::fs::remove_file(work.path().join("flake.lock"));
    // Under an allowed root the same input works, locked as its author
    // locks it.
    let flake = data_input(&format!("\"path:{}\"", shared.display()));
    std::fs::write(work.path().join("flake.nix"), flake).unwrap();
    common::git(work.path(), &["add", "-A"]);
    let locked = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
        ])
        .current_dir(work.path())
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(locked.status.success(), "{locked:?}");
    let commit = work.commit("allowed");
    work.push(&["HEAD:refs/heads/allowed"]);
    let build = daemon.wait_final(daemon.build_of("allowed", &commit));
    let text = public_text(&daemon, &build);
    assert_eq!(build["status"], "success", "{text}");
    assert!(text.contains(&format!("LEAK:{shared_data}")), "{text}");
}

/// A `nix-daemon` of our own (root, on a socket under `dir`) for a daemon
/// that is not root; killed when dropped.
struct NixDaemon(std::process::Child);

impl Drop for NixDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_daemon_that_is_not_root_isolates_nix_in_a_user_namespace() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to start a nix-daemon and drop to another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("nix-daemon.socket");
    let socket_env = ("NIX_DAEMON_SOCKET_PATH", socket.to_str().unwrap());
    let nix_daemon = NixDaemon(
        Command::new("nix-daemon")
            .env("NIX_CONFIG", NIX_CONFIG)
            .env(socket_env.0, socket_env.1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no nix-daemon socket");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    rustix::fs::chown(
        &state,
        Some(rustix::fs::Uid::from_raw(NOBODY)),
        Some(rustix::fs::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let visible = dir.join("visible");
    std::fs::write(&visible, format!("visible-{}", nonce("v"))).unwrap();
    std::fs::set_permissions(&visible, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = Daemon::configure(dir, "", &[("NIX_REMOTE", "daemon"), socket_env]);
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = daemon.command();
    command
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&daemon.stderr).unwrap());
    daemon.child = Some(common::spawn_bound_to_this_process(command));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_err() {
        let exited = daemon.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < deadline,
            "{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    while daemon.get("/api/health").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    daemon.create_repo("attacker");
    let work = Work::clone(&daemon.repo_path("attacker"));
    // Root pushes into the service user's repository, as a local admin
    // would, trusting it as git asks.
    let git_config = dir.join("gitconfig");
    std::fs::write(&git_config, "[safe]\n\tdirectory = *\n").unwrap();
    let push = |branch: &str, flake: &str| {
        std::fs::write(work.path().join("flake.nix"), flake).unwrap();
        let commit = work.commit(branch);
        let pushed = Command::new("git")
            .args(["push", "origin", &format!("HEAD:refs/heads/{branch}")])
            .current_dir(work.path())
            .env("GIT_CONFIG_GLOBAL", &git_config)
            .output()
            .unwrap();
        assert!(pushed.status.success(), "{pushed:?}");
        let build = daemon.wait_final(daemon.build_of(branch, &commit));
        (public_text(&daemon, &build), build)
    };
    let read = |path: &Path| {
        format!(
            "builtins.readFile (builtins.fetchTree {{ type = \"path\"; path = \"{}\"; narHash = \"{}\"; }})",
            path.display(),
            nar_hash(path)
        )
    };
    let (text, control) = push(
        "control",
        &flake_printing(&read(&visible), "nobody-control"),
    );
    assert_eq!(control["status"], "success", "{text}\n{}", daemon.log());
    let content = std::fs::read_to_string(&visible).unwrap();
    assert!(text.contains(&format!("LEAK:{content}")), "{text}");
    let token_file = state.join("api-token");
    let token = daemon.token();
    let (text, build) = push("token", &flake_printing(&read(&token_file), "nobody-token"));
    assert!(!text.contains(&token), "the token leaked: {text}");
    assert_eq!(build["status"], "failed", "{text}");
    let pid = daemon.pid();
    let through_proc = read(&token_file).replace(
        &format!("path = \"{}\"", token_file.display()),
        &format!("path = \"/proc/{pid}/root{}\"", token_file.display()),
    );
    let (text, build) = push("proc", &flake_printing(&through_proc, "nobody-proc"));
    assert!(
        !text.contains(&token),
        "the token leaked through /proc: {text}"
    );
    assert_eq!(build["status"], "failed", "{text}");
    let (_, health) = daemon.get("/api/health");
    assert!(
        !health.to_string().contains("evaluation_not_isolated"),
        "{health}"
    );
    daemon.stop();
    drop(nix_daemon);
}

/// Makes `command` start under a seccomp filter that refuses `unshare()`
/// with a mount or user namespace, as systemd's `RestrictNamespaces=yes`
/// does.
fn forbid_namespaces(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl with a filter on the stack: no allocation, no lock.
    unsafe {
        command.pre_exec(|| {
            let ret_errno = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
            let namespaces = (libc::CLONE_NEWNS | libc::CLONE_NEWUSER) as u32;
            let filter = [
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 3,
                    k: libc::SYS_unshare as u32,
                },
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: 16,
                },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: namespaces,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: ret_errno,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_host_that_forbids_namespaces_gets_a_preflight_warning_and_builds_say_so() {
    let scratch = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(scratch.path(), "", &[]);
    let mut command = daemon.command();
    forbid_namespaces(&mut command);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&daemon.stderr).unwrap());
    daemon.child = Some(common::spawn_bound_to_this_process(command));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let health = loop {
        if std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_ok() {
            let (status, health) = daemon.get("/api/health");
            if status == 200 && !health["preflight"]["checked_at"].is_null() {
                break health;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let warning = health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "evaluation_not_isolated")
        .unwrap_or_else(|| panic!("no evaluation_not_isolated: {health}"));
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("API token") && message.contains("Security model"),
        "{message}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        daemon
            .log()
            .contains("\"code\":\"evaluation_not_isolated\""),
        "{}",
        daemon.log()
    );
    // Builds still run, and their logs say how exposed they were.
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let build = push_flake(
        &daemon,
        &work,
        "main",
        &format!(
            "{{ outputs = {{ self }}: {{ checks.x86_64-linux.ok = {}; }}; }}\n",
            passing_drv("exposed")
        ),
    );
    let text = public_text(&daemon, &build);
    assert_eq!(build["status"], "success", "{text}");
    assert!(
        text.contains("procurator-ci: warning: nix runs without isolation from the daemon's files"),
        "{text}"
    );
}
