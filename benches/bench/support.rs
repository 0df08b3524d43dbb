//! What every benchmark needs: the real daemon in a state directory of its
//! own, a keep-alive HTTP/1.1 client and a Server-Sent Events reader on raw
//! loopback sockets, git repositories filled fast, and percentiles.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// One blocking request with `Connection: close`; the body as JSON (or a
/// JSON string when it is not JSON).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Res<(u16, Value)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(err("connect"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(err("timeout"))?;
    let mut request = request_bytes(method, path, token, body);
    // Replace keep-alive by close for this one-shot client.
    let head = String::from_utf8_lossy(&request).replacen(
        "Connection: keep-alive",
        "Connection: close",
        1,
    );
    request = head.into_bytes();
    stream.write_all(&request).map_err(err("send"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(err("receive"))?;
    let (status, body) = parse_full(&raw).ok_or_else(|| "malformed response".to_string())?;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, value))
}

/// The bytes of a keep-alive HTTP/1.1 request.
pub fn request_bytes(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(b.as_bytes());
            bytes
        }
        None => {
            head.push_str("\r\n");
            head.into_bytes()
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status and length framing of a response head.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    size: usize,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().ok();
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    Some(Head {
        status,
        length,
        chunked,
        size: end + 4,
    })
}

/// Decodes complete chunks from `raw`; returns the bytes consumed and
/// whether the last chunk was seen.
fn dechunk(raw: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&raw[pos..], b"\r\n") else {
            return (pos, false);
        };
        let size_text = std::str::from_utf8(&raw[pos..pos + line_end]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        let data = pos + line_end + 2;
        if size == 0 {
            // Last chunk; trailers are not used by the daemon.
            return if raw.len() >= data + 2 {
                (data + 2, true)
            } else {
                (pos, false)
            };
        }
        if raw.len() < data + size + 2 {
            return (pos, false);
        }
        out.extend_from_slice(&raw[data..data + size]);
        pos = data + size + 2;
    }
}

fn parse_full(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head = parse_head(raw)?;
    let rest = &raw[head.size..];
    if head.chunked {
        let mut body = Vec::new();
        dechunk(rest, &mut body);
        Some((head.status, body))
    } else {
        let n = head.length.unwrap_or(rest.len()).min(rest.len());
        Some((head.status, rest[..n].to_vec()))
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `request` and reads one whole response: status and body.
    pub async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf) {
                break head;
            }
            self.fill().await?;
        };
        if head.chunked {
            let mut body = Vec::new();
            let mut pos = head.size;
            loop {
                let (used, done) = dechunk(&self.buf[pos..], &mut body);
                pos += used;
                if done {
                    self.buf.drain(..pos);
                    return Ok((head.status, body));
                }
                self.fill().await?;
            }
        }
        let length = head.length.unwrap_or(0);
        while self.buf.len() < head.size + length {
            self.fill().await?;
        }
        let body = self.buf[head.size..head.size + length].to_vec();
        self.buf.drain(..head.size + length);
        Ok((head.status, body))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    /// When the read that completed it returned (epoch ms).
    pub at_ms: f64,
}

/// A subscriber of `/api/events`.
pub struct Sse {
    stream: TcpStream,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    pending: SseEvent,
    ready: std::collections::VecDeque<SseEvent>,
    ended: bool,
}

impl Sse {
    /// Connects and reads the response head (200 expected).
    pub async fn connect(port: u16, path: &str) -> std::io::Result<Sse> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(&request_bytes("GET", path, None, None))
            .await?;
        let mut raw = Vec::new();
        let head = loop {
            if let Some(head) = parse_head(&raw) {
                break head;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        if head.status != 200 || !head.chunked {
            return Err(std::io::Error::other(format!(
                "events answered {} (chunked: {})",
                head.status, head.chunked
            )));
        }
        raw.drain(..head.size);
        Ok(Sse {
            stream,
            raw,
            decoded: Vec::new(),
            pending: SseEvent::default(),
            ready: Default::default(),
            ended: false,
        })
    }

    /// The next event (comments skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> std::io::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            let at = epoch_ms();
            self.raw.extend_from_slice(&chunk[..n]);
            let (used, done) = dechunk(&self.raw, &mut self.decoded);
            self.raw.drain(..used);
            self.parse(at);
            self.ended = done;
        }
    }

    fn parse(&mut self, at: f64) {
        while let Some(end) = self.decoded.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.decoded.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                if !self.pending.event.is_empty() || !self.pending.data.is_empty() {
                    let mut event = std::mem::take(&mut self.pending);
                    event.at_ms = at;
                    self.ready.push_back(event);
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.pending.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.pending.data.is_empty() {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

/// `"key":<integer>` in a JSON text, without parsing the rest.
pub fn json_int(text: &str, key: &str) -> Option<i64> {
    let needle = format!("\"{key}\":");
    let start = text.find(&needle)? + needle.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// Runs git, returning stdout; fails on a non-zero exit.
pub fn git(dir: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(err("git"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `n` commits onto `branch` of the repository at `git_dir` with
/// `git fast-import` (the first holds `flake.nix` = `flake`); returns their
/// ids, oldest first.
pub fn fast_import(git_dir: &Path, branch: &str, n: usize, flake: &str) -> Res<Vec<String>> {
    let marks = git_dir.join(format!("bench-marks-{branch}"));
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(err("git fast-import"))?;
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        for i in 1..=n {
            let message = format!("bench commit {i}\n");
            write!(
                stdin,
                "commit refs/heads/{branch}\nmark :{i}\ncommitter Bench <bench@example.org> {now} +0000\ndata {}\n{message}",
                message.len()
            )
            .map_err(err("fast-import input"))?;
            if i == 1 {
                write!(
                    stdin,
                    "M 644 inline flake.nix\ndata {}\n{flake}\n",
                    flake.len()
                )
                .map_err(err("fast-import input"))?;
            }
            writeln!(stdin).map_err(err("fast-import input"))?;
        }
        stdin.flush().map_err(err("fast-import input"))?;
    }
    let status = child.wait().map_err(err("git fast-import"))?;
    if !status.success() {
        return Err(format!("git fast-import failed: {status}"));
    }
    let text = std::fs::read_to_string(&marks).map_err(err("marks"))?;
    let _ = std::fs::remove_file(&marks);
    let mut commits = vec![String::new(); n];
    for line in text.lines() {
        if let Some((mark, sha)) = line.split_once(' ')
            && let Ok(i) = mark.trim_start_matches(':').parse::<usize>()
            && (1..=n).contains(&i)
        {
            commits[i - 1] = sha.to_string();
        }
    }
    if commits.iter().any(String::is_empty) {
        return Err("fast-import lost a mark".into());
    }
    Ok(commits)
}

/// Creates the branch `{prefix}/{i}` at `commits[i]` for every `i`, with one
/// `git update-ref --stdin` (no hooks): the daemon builds only branches a
/// repository has, and a push per branch would dwarf what is measured.
pub fn make_branches(git_dir: &Path, prefix: &str, commits: &[String]) -> Res<Vec<String>> {
    let names: Vec<String> = (0..commits.len())
        .map(|i| format!("{prefix}/{i}"))
        .collect();
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(err("git update-ref"))?;
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        for (name, commit) in names.iter().zip(commits) {
            writeln!(stdin, "create refs/heads/{name} {commit}")
                .map_err(err("update-ref input"))?;
        }
        stdin.flush().map_err(err("update-ref input"))?;
    }
    let status = child.wait().map_err(err("git update-ref"))?;
    if !status.success() {
        return Err(format!("git update-ref --stdin failed: {status}"));
    }
    Ok(names)
}

/// A flake whose one check runs `script` with /bin/sh (absolute paths:
/// builders get no PATH), with `nonce` making the derivation unique.
pub fn flake(script: &str, nonce: &str) -> String {
    format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux.bench = derivation {{ name = \"bench\"; \
         system = \"x86_64-linux\"; builder = \"/bin/sh\"; nonce = \"{nonce}\"; args = [ \"-c\" {script:?} ]; }};\n  }};\n}}\n"
    )
}

/// Percentiles over samples (nearest rank).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn summary(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[i.clamp(1, sorted.len()) - 1]
    };
    Summary {
        n: sorted.len(),
        p50: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// A raw SQLite commit loop on the same disk: single-row `INSERT`s, each
/// its own `BEGIN IMMEDIATE … COMMIT`, WAL and `synchronous=FULL` as the
/// daemon. Returns commits per second and the latency of one commit.
pub fn sqlite_floor(dir: &Path, duration: Duration) -> Res<(f64, Summary)> {
    let path = dir.join("floor.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).map_err(err("floor db"))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
        .map_err(err("floor wal"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err("floor sync"))?;
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, at INTEGER NOT NULL)",
    )
    .map_err(err("floor table"))?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(err("floor begin"))?;
        conn.execute(
            "INSERT INTO t (v, at) VALUES (?1, ?2)",
            rusqlite::params!["a build request of about this size", epoch_ms() as i64],
        )
        .map_err(err("floor insert"))?;
        conn.execute_batch("COMMIT").map_err(err("floor commit"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("floor.db{suffix}")));
    }
    Ok((rate, summary(&latencies)))
}

/// Results of a closed-loop load run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Load {
    pub connections: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub rate: f64,
    pub latency_ms: Summary,
}

/// `connections` keep-alive clients each send `make(i)` (i counts up across
/// all of them) back to back until `duration` passes or `limit` requests
/// were sent. A response whose status `ok` rejects counts as an error.
pub async fn load(
    port: u16,
    connections: usize,
    duration: Duration,
    limit: usize,
    make: std::sync::Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    ok: fn(u16) -> bool,
) -> Res<Load> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let request = make(i);
                let t = Instant::now();
                let (status, body) = conn.call(&request).await.map_err(err("request"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok(status) {
                    errors += 1;
                    first_error.get_or_insert_with(|| {
                        format!("{status} {}", String::from_utf8_lossy(&body))
                    });
                }
            }
            Ok::<_, String>((latencies, errors, first_error))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for task in tasks {
        let (latencies, e, f) = task.await.map_err(err("load task"))??;
        all.extend(latencies);
        errors += e;
        first = first.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(f) = first {
        eprintln!("  first error response: {f}");
    }
    Ok(Load {
        connections,
        requests: all.len(),
        errors,
        seconds,
        rate: all.len() as f64 / seconds,
        latency_ms: summary(&all),
    })
}
