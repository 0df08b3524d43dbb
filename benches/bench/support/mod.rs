//! What every benchmark needs: the real daemon in a state directory of its
//! own, a keep-alive HTTP/1.1 client and a Server-Sent Events reader on raw
//! loopback sockets, git repositories filled fast, and percentiles.

mod git;
mod http;
mod stats;

pub use git::*;
pub use http::*;
pub use stats::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Nix settings that work offline on Debian without a daemon (as the tests).
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\nbuild-users-group =\nsandbox = false\n";

pub type Res<T> = Result<T, String>;

/// Turns any displayable error into the benchmark's error string.
pub fn err<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// The release binary under test.
pub fn binary() -> PathBuf {
    std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/procurator-ci")
        })
}

/// Wall-clock milliseconds since the epoch, as the daemon's `*_ms` fields.
pub fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Resident memory of a process, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// `VmRSS` and `VmHWM` of `pid` from /proc.
pub fn mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The real daemon with a state directory of its own.
pub struct Daemon {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes the configuration under `root` (`extra` is appended TOML).
    pub fn configure(root: &Path, extra: &str) -> Res<Daemon> {
        std::fs::create_dir_all(root).map_err(err("create bench dir"))?;
        let port = free_port();
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\nbind_address = \"127.0.0.1:{port}\"\nlog_format = \"json\"\n{extra}\n",
                root.join("state").display()
            ),
        )
        .map_err(err("write config"))?;
        Ok(Daemon {
            child: None,
            root: root.to_path_buf(),
            port,
            config,
            log: root.join("daemon.log"),
            env: Vec::new(),
        })
    }

    /// The process, not yet waited for.
    pub fn launch(&mut self) -> Res<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(err("daemon log"))?;
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("PROCURATOR_CI_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The daemon reads every PROCURATOR_CI_* variable as configuration.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PROCURATOR_CI_") {
                cmd.env_remove(key);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .map_err(err(&format!("start {}", binary().display())))?,
        );
        Ok(())
    }

    /// Starts and waits until `/api/health` answers.
    pub fn spawn(&mut self) -> Res<()> {
        self.launch()?;
        self.wait_healthy()
    }

    pub fn wait_healthy(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(self.port, "GET", "/api/health", None, None) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("daemon exited with {status}: {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("daemon did not start: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<char> = text.chars().rev().take(2000).collect();
        tail.into_iter().rev().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn mem(&self) -> Mem {
        mem(self.pid())
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state().join("api-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// SIGTERM and wait (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// An authenticated JSON POST.
    pub fn post(&self, path: &str, body: &Value) -> Res<(u16, Value)> {
        http(
            self.port,
            "POST",
            path,
            Some(&self.token()),
            Some(&body.to_string()),
        )
    }

    pub fn get(&self, path: &str) -> Res<(u16, Value)> {
        http(self.port, "GET", path, None, None)
    }

    /// Creates a repository through the API; returns its bare path.
    pub fn create_repo(&self, name: &str) -> Res<PathBuf> {
        let (status, body) = self.post(
            "/api/repos",
            &serde_json::json!({"name": name, "description": "benchmark"}),
        )?;
        if status != 201 {
            return Err(format!("create repo {name}: {status} {body}"));
        }
        Ok(PathBuf::from(body["path"].as_str().unwrap_or_default()))
    }

    /// Polls build `id` until it has a final status.
    pub fn wait_final(&self, id: i64, timeout: Duration) -> Res<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, build) = self.get(&format!("/api/builds/{id}"))?;
            if matches!(
                build["status"].as_str(),
                Some("success" | "failed" | "cancelled")
            ) {
                return Ok(build);
            }
            if Instant::now() > deadline {
                return Err(format!("build {id} did not finish: {build}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
