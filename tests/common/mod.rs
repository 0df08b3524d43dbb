//! Test harness: the real `procurator-ci` binary on real sockets, real git
//! repositories and real `nix flake check` with an offline configuration.
#![allow(dead_code)]

mod builders;
mod git;
mod system;

// Every test binary includes this harness and uses a part of it.
#[allow(unused_imports)]
pub use builders::*;
#[allow(unused_imports)]
pub use git::*;
#[allow(unused_imports)]
pub use system::*;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Nix settings that work offline on Debian without a daemon.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\nbuild-users-group =\nsandbox = false\n";

/// Names the binary the tests run instead of the debug build cargo makes
/// for them: scripts/test sets it to the release binary, which is what
/// ships, so the attacks of issue 15 are reproduced against that. Not
/// `PROCURATOR_CI_*`: the daemon reads every such variable as a key.
pub const BINARY_VARIABLE: &str = "PROCURATOR_TEST_BINARY";

/// The binary under test: `$PROCURATOR_TEST_BINARY` when set, else the
/// debug build. Says once per test binary which one it is, on stderr past
/// the test harness's capture, so every run shows what it tested.
pub fn binary() -> PathBuf {
    static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let (path, source) = match std::env::var_os(BINARY_VARIABLE) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    assert!(
                        path.is_file(),
                        "{BINARY_VARIABLE}={} is not a file; build it with \
                         `cargo build --release --bin procurator-ci` or unset it",
                        path.display()
                    );
                    (path, BINARY_VARIABLE)
                }
                None => (
                    PathBuf::from(env!("CARGO_BIN_EXE_procurator-ci")),
                    "cargo's test build",
                ),
            };
            // Not eprintln!: the harness would keep it for failing tests only.
            let _ = writeln!(
                std::io::stderr(),
                "{}: testing {} ({source})",
                env!("CARGO_CRATE_NAME"),
                path.display()
            );
            path
        })
        .clone()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP client that returns error statuses as responses and gives up on
/// a whole request after `timeout`.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(30))
}

/// Spawns `command` so that it is told to stop (SIGTERM) when the test
/// process ends, even when nothing drops its handle (a daemon shared by
/// all cases of a file through a static). The parent-death signal belongs
/// to the thread that forked, so one thread that lives as long as the
/// process does the spawning.
pub fn spawn_bound_to_this_process(mut command: Command) -> Child {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut command, reply) in queue {
                let _ = reply.send(command.spawn());
            }
        });
        std::sync::Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("the spawner thread lives as long as the process");
    answer.recv().unwrap().unwrap()
}

/// A running daemon with its own state directory.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub stderr: PathBuf,
    extra_env: Vec<(String, String)>,
    /// The descriptor limit (soft and hard) the daemon starts with.
    pub nofile: Option<u64>,
    _tmp: Option<TempDir>,
}

impl Daemon {
    /// Starts a daemon on a fresh state directory with `extra` TOML appended
    /// to its configuration, and waits until it answers.
    pub fn start(extra: &str) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut daemon = Daemon::configure(&dir, extra, &[]);
        daemon._tmp = Some(tmp);
        daemon.spawn();
        daemon
    }

    /// Writes the configuration for `dir` without starting.
    pub fn configure(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let config = dir.join("config.toml");
        let state = dir.join("state");
        let log_format = if extra.contains("log_format") {
            ""
        } else {
            "log_format = \"json\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\nbind_address = \"127.0.0.1:{port}\"\n{log_format}\
                 retry_backoff_secs = 0\n{extra}\n",
                state.display()
            ),
        )
        .unwrap();
        Daemon {
            child: None,
            stderr: dir.join("daemon.log"),
            dir: dir.to_path_buf(),
            port,
            config,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nofile: None,
            _tmp: None,
        }
    }

    /// Keeps `tmp` (its state directory's parent) as long as the daemon.
    pub fn keep(&mut self, tmp: TempDir) {
        self._tmp = Some(tmp);
    }

    /// The command that starts this daemon.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("PROCURATOR_CI_CONFIG")
            // Ours, not the daemon's: it would warn that it does not read it.
            .env_remove(BINARY_VARIABLE)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        if let Some(limit) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // of ours.
            unsafe {
                cmd.pre_exec(move || {
                    use rustix::process::{Resource, Rlimit, setrlimit};
                    let limit = Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    };
                    setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
                });
            }
        }
        cmd
    }

    /// (Re)starts the process and waits for `/api/health`.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let mut command = self.command();
        command.stdout(Stdio::null()).stderr(log);
        self.child = Some(spawn_bound_to_this_process(command));
        // A bound on "never starts", not a speed goal: a restart over ten
        // thousand queued builds on a loaded CI machine came near 30 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(resp) = agent().get(format!("{}/api/health", self.base())).call()
                && resp.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the daemon has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state().join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.state().join("repos").join(format!("{name}.git"))
    }

    /// A request; returns status and body (JSON when it parses, else a string).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let (status, text) = self.request_text(method, path, body, token);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub fn request_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base());
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        };
        let result = match body {
            Some(b) => agent().run(
                request
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => agent().run(request.body(()).unwrap()),
        };
        let mut response = result.unwrap();
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .unwrap();
        (status, text)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None)
    }

    /// An authenticated POST.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()), Some(&self.token()))
    }

    /// Creates a repository through the API.
    pub fn create_repo(&self, name: &str) -> Value {
        let (status, body) = self.post(
            "/api/repos",
            &serde_json::json!({"name": name, "description": "test"}),
        );
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Every build, newest first.
    pub fn builds(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/builds?limit=500");
        assert_eq!(status, 200, "{body}");
        body["builds"].as_array().unwrap().clone()
    }

    pub fn build(&self, id: i64) -> Value {
        let (status, body) = self.get(&format!("/api/builds/{id}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until build `id` satisfies `done`.
    pub fn wait_build(&self, id: i64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let build = self.build(id);
            if done(&build) {
                return build;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} did not get there: {build}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until build `id` has a final status.
    pub fn wait_final(&self, id: i64) -> Value {
        self.wait_build(id, Duration::from_secs(120), |b| {
            matches!(
                b["status"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
        })
    }

    /// The log of a build.
    /// Follows build `id`'s log (`?follow=true`) on a thread of its own;
    /// the thread returns the bytes received and how the stream ended (an
    /// error when the connection broke before the log did).
    pub fn follow_log(
        &self,
        id: i64,
    ) -> std::thread::JoinHandle<(Vec<u8>, std::io::Result<usize>)> {
        let url = format!("{}/api/builds/{id}/logs?follow=true&ansi=1", self.base());
        std::thread::spawn(move || {
            let mut response = agent_with_timeout(Duration::from_secs(120))
                .get(&url)
                .call()
                .unwrap();
            let mut text = Vec::new();
            let end = response
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .reader()
                .read_to_end(&mut text);
            (text, end)
        })
    }

    /// Reads `/api/events` lines on a thread.
    pub fn event_lines(&self) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let url = format!("{}/api/events", self.base());
        std::thread::spawn(move || {
            let Ok(mut response) = agent_with_timeout(Duration::from_secs(300))
                .get(&url)
                .call()
            else {
                return;
            };
            let mut reader = std::io::BufReader::new(response.body_mut().as_reader());
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Build `id`'s log as stored, colours included (`ansi=1`): the bytes
    /// that offsets, caps and lengths count (nix 2.2x colours its warnings
    /// even in its JSON log).
    pub fn log_of(&self, id: i64) -> String {
        self.request_text("GET", &format!("/api/builds/{id}/logs?ansi=1"), None, None)
            .1
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id() as i32, "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The branch names a repository view lists, in its order.
pub fn branch_names(view: &Value) -> Vec<String> {
    view["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of builds in `builds`.
pub fn ids(builds: &[Value]) -> Vec<i64> {
    builds.iter().map(|b| b["id"].as_i64().unwrap()).collect()
}

/// Waits until `path` exists with content; returns it.
pub fn wait_file(path: &Path, timeout: Duration, daemon: &Daemon) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written: {}",
            path.display(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    /// The id of the one build of `commit` on `branch`, waiting briefly for
    /// the hook to queue it.
    pub fn build_of(&self, branch: &str, commit: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<i64> = self
                .builds()
                .iter()
                .filter(|b| b["commit"] == commit && b["branch"] == branch)
                .map(|b| b["id"].as_i64().unwrap())
                .collect();
            match found.as_slice() {
                [id] => return *id,
                [] => {}
                many => panic!("more than one build of {commit} on {branch}: {many:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "no build was queued for {commit}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
