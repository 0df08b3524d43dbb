//! The one way procurator-ci starts `git` and `nix`: argument vectors (never a
//! shell), stdin closed, `NOTIFY_SOCKET` removed, a private `HOME` and
//! `XDG_CACHE_HOME`, `GC_NPROCS` set, each child in its own process group;
//! failures carry the command, the exit status and the tail of stderr.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How much of a failed command's stderr is kept in its error.
const STDERR_TAIL: usize = 2048;

/// A child process that could not be started or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program does not exist.
    #[error("{program} not found: {hint}")]
    NotFound { program: String, hint: String },
    /// The program exists but could not be started.
    #[error("cannot start `{command}`: {reason}")]
    Spawn { command: String, reason: String },
    /// The program ran and failed.
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    Failed {
        command: String,
        status: String,
        stderr_tail: String,
    },
}

/// Builds child processes with the environment every tool gets.
#[derive(Debug, Clone)]
pub struct Tools {
    home: PathBuf,
    cache: PathBuf,
    gc_nprocs: Option<String>,
}

impl Tools {
    /// `home` becomes the children's `HOME`, `cache` their `XDG_CACHE_HOME`.
    pub fn new(home: PathBuf, cache: PathBuf) -> Tools {
        Tools {
            home,
            cache,
            gc_nprocs: gc_nprocs(),
        }
    }

    /// A command for `program` with `args`, ready to spawn.
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", &self.cache)
            .process_group(0);
        if let Some(n) = &self.gc_nprocs {
            cmd.env("GC_NPROCS", n);
        }
        cmd
    }

    /// Runs `git --git-dir=<repo> <args>` and returns its stdout.
    pub fn git<S: AsRef<OsStr>>(&self, repo: &Path, args: &[S]) -> Result<Vec<u8>, CommandError> {
        let mut all: Vec<OsString> = vec![OsString::from("--git-dir"), repo.as_os_str().into()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self.output("git", &all)
    }

    /// Runs `program args`, waits, and returns its stdout on success.
    pub fn output<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> Result<Vec<u8>, CommandError> {
        let mut cmd = self.command(program, args);
        let output = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| spawn_error(program, &describe(program, args), e))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(CommandError::Failed {
                command: describe(program, args),
                status: describe_status(output.status),
                stderr_tail: tail(&output.stderr, STDERR_TAIL),
            })
        }
    }
}

/// The processor count nix's garbage collector (Boehm's) should use, unless
/// the daemon's own environment sets one. Without it the collector reads
/// /proc/stat, which the unit hides (`ProcSubset=pid`), and nix prints
/// `GC Warning: Could not open /proc/stat` into every build log. The count
/// comes from the scheduler's CPU mask, as the collector's own would.
fn gc_nprocs() -> Option<String> {
    if std::env::var_os("GC_NPROCS").is_some() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(cpus.to_string())
}

/// The error for a program that could not be spawned; a missing program gets
/// a hint on how to fix it.
pub fn spawn_error(program: &str, command: &str, error: std::io::Error) -> CommandError {
    if error.kind() == std::io::ErrorKind::NotFound {
        let hint = if program.ends_with("nix") || program == "nix" {
            "install Nix or set nix_bin".to_string()
        } else {
            format!("install {program} or put it on PATH")
        };
        CommandError::NotFound {
            program: program.to_string(),
            hint,
        }
    } else {
        CommandError::Spawn {
            command: command.to_string(),
            reason: error.to_string(),
        }
    }
}

/// A command line for messages and logs (not for execution).
pub fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = program.to_string();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// "exit code 1" or "killed by signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".into(),
    }
}

/// The last `max` bytes of `bytes`, trimmed, as text.
pub fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Whether any process of group `pgid` is alive (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    pgid > 0
        && Pid::from_raw(pgid)
            .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

/// Sends `signal` to every process of group `pgid`; a gone group is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    // Not 0 (our own group) nor below: a group outside our PID namespace
    // reads as 0 in /proc.
    if pgid > 0
        && let Some(pid) = Pid::from_raw(pgid)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), used to tell a live process from a reused pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Process groups holding a process one of whose arguments starts with
/// `prefix` (a build's flake reference): how a restarted daemon finds the
/// nix processes of a build whose group it never got to record.
pub fn groups_with_arg(prefix: &str) -> Vec<i32> {
    // Read, not getpgrp(): a group led from outside our PID namespace (a
    // container's, a test's) is 0, which rustix refuses to hand back.
    let own = group_of("self").unwrap_or(0);
    let mut groups = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline
            .split(|b| *b == 0)
            .any(|arg| arg.starts_with(prefix.as_bytes()))
        {
            continue;
        }
        let pgid = group_of(&pid.to_string());
        // A group led from outside our PID namespace reads as 0: not ours.
        if let Some(pgid) = pgid
            && pgid > 0
            && pgid != own
            && !groups.contains(&pgid)
        {
            groups.push(pgid);
        }
    }
    groups
}

/// The process group of `/proc/<pid>` (`self` for this process): field 5
/// of its `stat`.
fn group_of(pid: &str) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(2)?.parse().ok()
}

/// Ends an orphaned process group left by an earlier instance: SIGTERM first
/// (nix then stops its builders, which live in sessions of their own),
/// SIGKILL after `grace`. Skips the group when its id now belongs to an
/// unrelated process (a group id cannot be reused while the group exists, so
/// a different leader means our group is gone).
pub fn end_orphan_group(pgid: i32, recorded_start: Option<u64>, grace: Duration) {
    if let (Some(start), Some(now)) = (recorded_start, process_start_time(pgid))
        && start != now
    {
        return;
    }
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, Signal::TERM);
    let deadline = Instant::now() + grace;
    // An orphan's exited processes stay zombies until init reaps them,
    // which some inits do only now and then: they are not waited for.
    while group_running(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if group_running(pgid) {
        signal_group(pgid, Signal::KILL);
    }
}

/// Whether group `pgid` has a member that is not a zombie (scans `/proc`).
fn group_running(pgid: i32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && state != Some("Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_fix() {
        let tools = Tools::new(std::env::temp_dir(), std::env::temp_dir());
        let err = tools
            .output("/nonexistent/nix", &["--version"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/nonexistent/nix not found: install Nix or set nix_bin"
        );
    }

    #[test]
    fn failure_carries_command_status_and_stderr() {
        let tools = Tools::new(std::env::temp_dir(), std::env::temp_dir());
        let err = tools
            .output("sh", &["-c", "echo oops >&2; exit 3"])
            .unwrap_err();
        match err {
            CommandError::Failed {
                command,
                status,
                stderr_tail,
            } => {
                assert!(command.starts_with("sh -c"));
                assert_eq!(status, "exit code 3");
                assert_eq!(stderr_tail, "oops");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn children_get_private_home_own_group_and_no_notify_socket() {
        let home = tempfile::tempdir().unwrap();
        let tools = Tools::new(home.path().to_path_buf(), home.path().join(".cache"));
        let cmd = tools.command("true", [] as [&str; 0]);
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_os_string())
            .collect();
        assert!(removed.contains(&OsString::from("NOTIFY_SOCKET")));
        let out = tools
            .output(
                "sh",
                &["-c", "echo $HOME; ps -o pgid= $$; echo $$; echo $GC_NPROCS"],
            )
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], home.path().to_str().unwrap());
        assert_eq!(lines[1].trim(), lines[2].trim(), "own process group");
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(lines[3], cpus.to_string(), "GC_NPROCS for nix's collector");
    }

    #[test]
    fn groups_are_found_by_an_argument_prefix() {
        let marker = format!("git+file:///procurator-test-{}", std::process::id());
        // `& wait` keeps the shell, whose $0 is the marker: bash (the Nix
        // sandbox's sh) would exec a lone `sleep` in its place.
        let mut child = Tools::new(std::env::temp_dir(), std::env::temp_dir())
            .command("sh", ["-c", "sleep 30 & wait", &format!("{marker}?rev=1")])
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !groups_with_arg(&marker).contains(&pgid) {
            assert!(Instant::now() < deadline, "not found");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(groups_with_arg("git+file:///nothing-like-this").is_empty());
        end_orphan_group(pgid, None, Duration::from_secs(2));
        child.wait().unwrap();
        assert!(!groups_with_arg(&marker).contains(&pgid));
    }

    #[test]
    fn start_time_of_self_is_readable() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert!(group_alive(
            rustix::process::getpgrp().as_raw_nonzero().get()
        ));
    }
}
