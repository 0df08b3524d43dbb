//! Real git servers on loopback for the upstream side: `git daemon`,
//! `git http-backend` behind lighttpd (Debian's package) with HTTP basic
//! authentication for a private repository, and `sshd` with a key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{self, Work, git};

/// A bare upstream repository and a work tree that pushes to it.
pub struct Upstream {
    pub bare: PathBuf,
    pub work: Work,
}

impl Upstream {
    /// `name.git` under `root`, with a work tree whose origin it is.
    pub fn new(root: &Path, name: &str) -> Upstream {
        let bare = root.join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let work = Work::clone(&bare);
        Upstream { bare, work }
    }

    /// Commits a flake whose one check passes and pushes it to `branch`
    /// (force, so that it may rewrite history); returns the commit.
    pub fn push_new(&self, branch: &str) -> String {
        let commit = self.work.commit_flake(&[("check", &common::ok_script())]);
        self.work
            .push(&["--force", &format!("HEAD:refs/heads/{branch}")]);
        commit
    }
}

/// A server process, stopped (group and all) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: `git daemon` runs `git-daemon` as a child, sshd
        // and lighttpd have children of their own.
        // SAFETY: kill(2) touches no memory.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(mut command: Command, port: u16, log: PathBuf, dir: Option<TempDir>) -> Server {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let out = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = common::spawn_bound_to_this_process(command);
        let mut server = Server {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited with {status}: {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `git daemon` exporting every repository under `root` on `port`.
pub fn git_daemon(root: &Path, port: u16) -> Server {
    let log = root.join(format!("git-daemon-{port}.log"));
    let mut command = Command::new("git");
    command.args([
        "daemon",
        "--reuseaddr",
        "--export-all",
        "--verbose",
        "--listen=127.0.0.1",
        &format!("--port={port}"),
        &format!("--base-path={}", root.display()),
        &root.display().to_string(),
    ]);
    Server::spawn(command, port, log, None)
}

/// lighttpd serving `git http-backend` for the repositories under `root`
/// at `/git/`. `/git/private.git` needs HTTP basic credentials `user` /
/// `password`. Every request to the backend is written to `requests.log`
/// (start and end times) and takes at least `delay_ms`, so that a test can
/// see how many requests overlapped.
pub fn lighttpd(root: &Path, user: &str, password: &str, delay_ms: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let backend = Command::new("git").args(["--exec-path"]).output().unwrap();
    let exec_path = String::from_utf8(backend.stdout)
        .unwrap()
        .trim()
        .to_string();
    let wrapper = dir.path().join("backend");
    let requests = root.join("requests.log");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             echo \"start $(date +%s.%N) $REQUEST_METHOD $PATH_INFO?$QUERY_STRING\" >> '{log}'\n\
             sleep {delay}\n\
             '{exec_path}/git-http-backend'\n\
             echo \"end $(date +%s.%N)\" >> '{log}'\n",
            log = requests.display(),
            delay = delay_ms as f64 / 1000.0,
        ),
    )
    .unwrap();
    make_executable(&wrapper);
    let users = dir.path().join("users");
    std::fs::write(&users, format!("{user}:{password}\n")).unwrap();
    let conf = dir.path().join("lighttpd.conf");
    std::fs::write(
        &conf,
        format!(
            "server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_cgi\", \"mod_auth\", \"mod_authn_file\", \"mod_accesslog\")\n\
             server.document-root = \"{root}\"\n\
             server.bind = \"127.0.0.1\"\n\
             server.port = {port}\n\
             server.errorlog = \"{dir}/error.log\"\n\
             accesslog.filename = \"{dir}/access.log\"\n\
             alias.url = (\"/git\" => \"{wrapper}\")\n\
             $HTTP[\"url\"] =~ \"^/git\" {{\n\
               cgi.assign = (\"\" => \"\")\n\
               setenv.add-environment = (\"GIT_PROJECT_ROOT\" => \"{root}\", \"GIT_HTTP_EXPORT_ALL\" => \"1\")\n\
             }}\n\
             auth.backend = \"plain\"\n\
             auth.backend.plain.userfile = \"{users}\"\n\
             auth.require = (\"/git/private.git\" => (\"method\" => \"basic\", \"realm\" => \"git\", \"require\" => \"valid-user\"))\n",
            root = root.display(),
            dir = dir.path().display(),
            wrapper = wrapper.display(),
            users = users.display(),
        ),
    )
    .unwrap();
    let mut command = Command::new("lighttpd");
    command.arg("-D").arg("-f").arg(&conf);
    let log = dir.path().join("lighttpd.out");
    Server::spawn(command, port, log, Some(dir))
}

/// The times at which each request to the http backend started and ended.
pub fn backend_requests(root: &Path) -> Vec<(f64, f64, String)> {
    let text = std::fs::read_to_string(root.join("requests.log")).unwrap_or_default();
    let mut open: Vec<(f64, String)> = Vec::new();
    let mut done = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        match (
            parts.next(),
            parts.next().and_then(|t| t.parse::<f64>().ok()),
        ) {
            (Some("start"), Some(t)) => open.push((t, parts.next().unwrap_or("").to_string())),
            // CGI requests of one server overlap in their order of start
            // only if they overlap at all; pairing by order is enough to
            // tell.
            (Some("end"), Some(t)) if !open.is_empty() => {
                let (start, what) = open.remove(0);
                done.push((start, t, what));
            }
            _ => {}
        }
    }
    done
}

/// `sshd` on loopback that lets the current user in with `key`'s public
/// half only. Returns the server and the host's public key line.
pub fn sshd(key: &Path) -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let host_key = dir.path().join("host_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, public).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let conf = dir.path().join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nPidFile none\n",
            host_key.display(),
            authorized.display()
        ),
    )
    .unwrap();
    let mut command = Command::new("/usr/sbin/sshd");
    command.arg("-D").arg("-e").arg("-f").arg(&conf);
    let log = dir.path().join("sshd.log");
    let host_public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    (Server::spawn(command, port, log, Some(dir)), host_public)
}

/// A fresh ed25519 key pair at `path` (and `path.pub`).
pub fn ssh_key(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f"])
        .arg(path));
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
