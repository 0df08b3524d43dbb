//! Remote builder hosts of scripts/nix-builders for the tests (issue 22):
//! each its own store, nix-daemon and sshd on a loopback address, reached
//! with a generated key and its host key; and a daemon whose nix builds
//! only on them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Daemon, NIX_CONFIG, nonce};

/// One builder host: its address and the process that holds it (killing
/// it kills every process of the host).
pub struct Host {
    pub address: String,
    pub child: Child,
}

/// Builder hosts and the files nix reaches them with.
pub struct Builders {
    pub hosts: Vec<Host>,
    pub dir: tempfile::TempDir,
}

impl Builders {
    /// Starts `count` builder hosts, or says why it cannot (not root).
    pub fn start(count: usize) -> Option<Builders> {
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "SKIPPED: builder hosts need root (namespaces, pivot_root); scripts/test runs as root"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        keygen(&key);
        let hosts = (0..count)
            .map(|i| {
                let address = address();
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nix-builders");
                let mut command = Command::new(script);
                command
                    .arg("host")
                    .arg(dir.path().join(format!("host{i}")))
                    .arg(&address)
                    .arg(key.with_extension("pub"))
                    .stdout(std::process::Stdio::null())
                    .stderr(
                        std::fs::File::create(dir.path().join(format!("host{i}.log"))).unwrap(),
                    );
                Host {
                    address,
                    child: super::spawn_bound_to_this_process(command),
                }
            })
            .collect();
        let builders = Builders { hosts, dir };
        for (i, host) in builders.hosts.iter().enumerate() {
            // The first use builds the builder root (a copy of the 2.26
            // chroot with openssh-server): minutes at most.
            let deadline = Instant::now() + Duration::from_secs(600);
            while TcpStream::connect((host.address.as_str(), 22)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "builder {i} does not listen: {}",
                    std::fs::read_to_string(builders.dir.path().join(format!("host{i}.log")))
                        .unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(builders)
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key")
    }

    /// The host key of host `i`, as nix's machines format takes it.
    pub fn host_key(&self, i: usize) -> String {
        public_key(
            &self
                .dir
                .path()
                .join(format!("host{i}/ssh_host_ed25519_key.pub")),
        )
    }

    pub fn uri(&self, i: usize) -> String {
        format!("ssh-ng://root@{}", self.hosts[i].address)
    }

    /// A machines file of `lines` (URI, host key), one slot each.
    pub fn machines(&self, lines: &[(String, String)]) -> PathBuf {
        let path = self.dir.path().join(format!("machines-{}", nonce("m")));
        let text: String = lines
            .iter()
            .map(|(uri, host_key)| {
                format!(
                    "{uri} x86_64-linux {} 1 1 - - {host_key}\n",
                    self.key().display()
                )
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every host, each with its own key.
    pub fn all(&self) -> PathBuf {
        let lines: Vec<_> = (0..self.hosts.len())
            .map(|i| (self.uri(i), self.host_key(i)))
            .collect();
        self.machines(&lines)
    }

    /// The PID namespace of host `i`'s processes: the one its unshare (the
    /// script's one child) makes for its children.
    fn namespace(&self, i: usize) -> PathBuf {
        let script = self.hosts[i].child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{script}/task/{script}/children")).unwrap();
        let unshare = children
            .split_whitespace()
            .next()
            .expect("the host's unshare");
        std::fs::read_link(format!("/proc/{unshare}/ns/pid_for_children")).unwrap()
    }

    /// Stops every process of host `i` (SIGSTOP): its sshd, nix-daemon and
    /// builds hang, as on a machine that froze.
    pub fn freeze(&self, i: usize) {
        let members = members(&self.namespace(i));
        assert!(!members.is_empty(), "no process in host {i}'s namespace");
        for pid in members {
            super::signal(pid, "STOP");
        }
    }

    /// Kills host `i` (its sshd, nix-daemon and builds) and waits until no
    /// process of it is left.
    pub fn kill(&mut self, i: usize) {
        let namespace = self.namespace(i);
        let host = &mut self.hosts[i];
        host.child.kill().unwrap();
        host.child.wait().unwrap();
        let left = || {
            members(&namespace)
                .into_iter()
                .map(super::cmdline)
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !left().is_empty() {
            assert!(Instant::now() < deadline, "host {i} left {:?}", left());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The processes in PID namespace `namespace`.
fn members(namespace: &Path) -> Vec<i32> {
    super::all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|link| link == namespace)
        })
        .collect()
}

impl Drop for Builders {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let _ = host.child.kill();
            let _ = host.child.wait();
        }
    }
}

/// A loopback address of its own for each host of this process.
pub fn address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(2);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "127.{}.{}.{}",
        100 + std::process::id() % 150,
        n / 250,
        n % 250 + 2
    )
}

pub fn keygen(path: &Path) {
    super::run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "procurator-ci-test",
                "-f",
            ])
            .arg(path),
    );
}

/// `TYPE KEY` of a public key file, base64-encoded as nix's machines
/// format takes a host key.
pub fn public_key(path: &Path) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(path).unwrap();
    let key: Vec<&str> = text.split_whitespace().take(2).collect();
    base64::engine::general_purpose::STANDARD.encode(key.join(" "))
}

/// A daemon whose nix builds only on the machines of `machines`.
pub fn daemon_with(machines: &Path, extra: &str) -> Daemon {
    daemon_with_env(machines, extra, &[])
}

/// The same with more of the daemon's environment (`NIX_SSHOPTS`).
pub fn daemon_with_env(machines: &Path, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    let nix_config = format!(
        "{NIX_CONFIG}max-jobs = 0\nbuilders = @{}\n",
        machines.display()
    );
    let mut env = env.to_vec();
    env.push(("NIX_CONFIG", &nix_config));
    let mut daemon = Daemon::configure(tmp.path(), extra, &env);
    daemon.keep(tmp);
    daemon.spawn();
    daemon
}
