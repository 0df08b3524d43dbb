//! What nix sees while it evaluates and fetches a pushed flake: a private
//! mount namespace in which the daemon's state (database, token, logs,
//! other repositories) and credentials are absent, and only the repository
//! being built (read-only) and nix's own home are bound back.
//!
//! A pusher's flake can name any local path as an input, and nix reads it
//! as the daemon's user, outside any build sandbox; nix's own switches
//! (`restrict-eval`, `allowed-uris`) do not stop a `path:` input. So the
//! files are taken out of nix's sight instead. As root the namespace is
//! unshared directly and nix loses `CAP_SYS_PTRACE` (with it, the daemon's
//! view would be one `/proc/<pid>/root` away); as another user it comes
//! with a user namespace mapping that user to itself, which has no power
//! over the daemon's processes. Each repository's nix has a home (caches)
//! of its own.
//! Where namespaces are refused (a kernel or unit that forbids them), the
//! probe at start says why, the pre-flight warns, and builds run without.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;

use crate::config::Config;

/// Files that stay out of sight whatever the configuration: the host's
/// password hashes.
const HOST_SECRET_FILES: [&str; 2] = ["/etc/shadow", "/etc/gshadow"];

/// Directories that stay out of sight whatever the configuration: every
/// unit's systemd credentials.
const HOST_SECRET_DIRS: [&str; 1] = ["/run/credentials"];

/// How nix's processes are kept from the daemon's files.
#[derive(Debug)]
pub struct Isolation {
    /// Directories covered by an empty tmpfs.
    hidden_dirs: Vec<PathBuf>,
    /// Files covered by `/dev/null`.
    hidden_files: Vec<PathBuf>,
    /// Where each repository's nix home is: its caches (fetched inputs,
    /// evaluation results) are its own, so that one repository's flake
    /// cannot look up what another's fetched.
    homes: PathBuf,
    /// `Ok` when the probe at start could isolate a process, else why not.
    available: Result<(), String>,
}

impl Isolation {
    /// The isolation for `config`, probed on this host: blocking (it starts
    /// a process).
    pub fn probe(config: &Config) -> Isolation {
        let mut isolation = Isolation::for_config(config);
        isolation.available = isolation.try_once(config);
        match &isolation.available {
            Ok(()) => tracing::info!(
                hidden = isolation.hidden_dirs.len() + isolation.hidden_files.len(),
                "nix evaluates in a private mount namespace without the daemon's state and credentials"
            ),
            Err(why) => tracing::warn!(
                error = %why,
                "nix cannot be isolated from the daemon's files; builds run without isolation"
            ),
        }
        isolation
    }

    fn for_config(config: &Config) -> Isolation {
        let mut hidden_dirs = vec![config.state_dir.clone()];
        if !config.repos_base_path.starts_with(&config.state_dir) {
            hidden_dirs.push(config.repos_base_path.clone());
        }
        // Every repository's nix caches live under cache_dir (systemd's
        // CACHE_DIRECTORY): hidden, but for the one being built.
        if !config.cache_dir.starts_with(&config.state_dir) {
            hidden_dirs.push(config.cache_dir.clone());
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            hidden_dirs.push(PathBuf::from(dir));
        }
        hidden_dirs.extend(HOST_SECRET_DIRS.iter().map(PathBuf::from));
        let mut hidden_files: Vec<PathBuf> = HOST_SECRET_FILES.iter().map(PathBuf::from).collect();
        hidden_files.extend(config.api_token_file.iter().cloned());
        hidden_files.extend(config.cache_secret_key_file.iter().cloned());
        hidden_files.extend(config.notify.iter().filter_map(|n| n.secret_file.clone()));
        if !config.database_url.starts_with(&config.state_dir) {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = config.database_url.clone().into_os_string();
                name.push(suffix);
                hidden_files.push(PathBuf::from(name));
            }
        }
        Isolation {
            hidden_dirs,
            hidden_files,
            homes: config.cache_dir.join("repos"),
            available: Err("not probed".into()),
        }
    }

    /// Isolates a shell that must not find the daemon's token, the way a
    /// build's nix is isolated.
    fn try_once(&self, config: &Config) -> Result<(), String> {
        let token = config
            .api_token_file
            .clone()
            .unwrap_or_else(|| config.generated_token_file());
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "! test -s \"$1\"", "sh"])
            .arg(&token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.plan(&config.repos_base_path, &config.home_dir())
            .map_err(|e| format!("cannot prepare the namespace: {e}"))?
            .install(&mut cmd);
        match cmd.status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!(
                "an isolated process still read {} ({status})",
                token.display()
            )),
            Err(e) => Err(format!("cannot create a private mount namespace: {e}")),
        }
    }

    /// Why nix runs without isolation on this host, if it does.
    pub fn unavailable(&self) -> Option<&str> {
        self.available.as_ref().err().map(String::as_str)
    }

    /// A build's isolation for the repository at `repo`: its own nix home
    /// (created here) and, when this host allows it, the mounts that leave
    /// nix `repo` (read-only) and that home of the daemon's files. Blocking.
    pub fn prepare(&self, repo: &Path) -> Result<Prepared, String> {
        let home = self
            .homes
            .join(repo.file_name().unwrap_or(repo.as_os_str()));
        let cache = home.join(".cache");
        std::fs::create_dir_all(&cache)
            .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
        let plan = match &self.available {
            Ok(()) => Some(
                self.plan(repo, &home)
                    .map_err(|e| format!("cannot prepare the namespace: {e}"))?,
            ),
            Err(_) => None,
        };
        Ok(Prepared { home, plan })
    }

    /// Everything the child does, prepared here: after the fork it may not
    /// allocate.
    fn plan(&self, repo: &Path, home: &Path) -> Result<Plan, String> {
        let exists = |p: &&PathBuf, dir: bool| {
            std::fs::metadata(p).is_ok_and(|m| if dir { m.is_dir() } else { !m.is_dir() })
        };
        let hidden_dirs: Vec<&PathBuf> = self
            .hidden_dirs
            .iter()
            .filter(|p| exists(p, true))
            .collect();
        let mut binds = Vec::new();
        let mut mkdirs = Vec::new();
        for (path, writable) in [(home, true), (repo, false)] {
            let Some(root) = hidden_dirs.iter().find(|h| path.starts_with(h)) else {
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            let mut dir = root.to_path_buf();
            for part in path.strip_prefix(root).unwrap_or(path).components() {
                if let Component::Normal(part) = part {
                    dir.push(part);
                    mkdirs.push(c_path(&dir));
                }
            }
            binds.push(Bind {
                path: c_path(path),
                read_only: (!writable).then(|| read_only_flags(path)),
            });
        }
        if binds.len() > MAX_BINDS {
            return Err(format!("more than {MAX_BINDS} directories to bind back"));
        }
        let root = rustix::process::geteuid().is_root();
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        Ok(Plan {
            user_namespace: !root,
            uid_map: format!("{0} {0} 1\n", uid.as_raw()).into_bytes(),
            gid_map: format!("{0} {0} 1\n", gid.as_raw()).into_bytes(),
            hidden_dirs: hidden_dirs.into_iter().map(|p| c_path(p)).collect(),
            hidden_files: self
                .hidden_files
                .iter()
                .filter(|p| exists(p, false))
                .map(|p| c_path(p))
                .collect(),
            mkdirs,
            binds,
        })
    }
}

/// The flags that remount a bind of `path` read-only: its mount's own
/// flags kept, which a user namespace may not drop.
fn read_only_flags(path: &Path) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as St;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    let Ok(stat) = rustix::fs::statvfs(path) else {
        return flags;
    };
    for (st, flag) in [
        (St::NOSUID, MountFlags::NOSUID),
        (St::NODEV, MountFlags::NODEV),
        (St::NOEXEC, MountFlags::NOEXEC),
        (St::NOATIME, MountFlags::NOATIME),
        (St::NODIRATIME, MountFlags::NODIRATIME),
        (St::RELATIME, MountFlags::RELATIME),
    ] {
        if stat.f_flag.contains(st) {
            flags |= flag;
        }
    }
    flags
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// One build's isolation, ready for each nix it starts.
#[derive(Debug, Clone)]
pub struct Prepared {
    home: PathBuf,
    /// `None` where the host does not allow isolation.
    plan: Option<Plan>,
}

impl Prepared {
    /// Makes `cmd` start in the build's isolation. Does not block.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"));
        if let Some(plan) = &self.plan {
            plan.clone().install(cmd);
        }
    }
}

/// A directory bound back into a hidden one.
#[derive(Debug, Clone)]
struct Bind {
    path: CString,
    /// The flags of its read-only remount, when it is bound read-only.
    read_only: Option<MountFlags>,
}

/// Directories bound back at most: nix's home and the repository.
const MAX_BINDS: usize = 2;

/// The mounts of one isolated child.
#[derive(Debug, Clone)]
struct Plan {
    user_namespace: bool,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    hidden_dirs: Vec<CString>,
    hidden_files: Vec<CString>,
    mkdirs: Vec<CString>,
    binds: Vec<Bind>,
}

impl Plan {
    fn install(self, cmd: &mut Command) {
        // SAFETY: between fork and exec the closure makes system calls only,
        // on memory prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || self.enter().map_err(std::io::Error::from));
        }
    }

    /// Runs in the child between fork and exec.
    fn enter(&self) -> rustix::io::Result<()> {
        let mut flags = UnshareFlags::NEWNS;
        if self.user_namespace {
            flags |= UnshareFlags::NEWUSER;
        }
        // SAFETY: the child has one thread; no descriptor table is unshared.
        unsafe { rustix::thread::unshare_unsafe(flags)? };
        if self.user_namespace {
            write_file(c"/proc/self/setgroups", b"deny\n")?;
            write_file(c"/proc/self/uid_map", &self.uid_map)?;
            write_file(c"/proc/self/gid_map", &self.gid_map)?;
        }
        // Nothing done here may reach the daemon's namespace.
        rustix::mount::mount_change(
            c"/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        )?;
        // Opened in this namespace before they are covered, bound back from
        // these descriptors after: a mount of the daemon's namespace cannot
        // be the source of a bind here.
        let mut kept: [Option<OwnedFd>; MAX_BINDS] = Default::default();
        for (bind, slot) in self.binds.iter().zip(kept.iter_mut()) {
            *slot = Some(rustix::fs::open(
                bind.path.as_c_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        for file in &self.hidden_files {
            rustix::mount::mount_bind(c"/dev/null", file.as_c_str())?;
        }
        for dir in &self.hidden_dirs {
            rustix::mount::mount(
                c"none",
                dir.as_c_str(),
                c"tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(c"mode=0755,size=1m"),
            )?;
        }
        for dir in &self.mkdirs {
            match rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
        }
        for (bind, fd) in self.binds.iter().zip(&kept) {
            let Some(fd) = fd else { continue };
            let mut source = [0u8; 32];
            rustix::mount::mount_bind(fd_path(fd, &mut source), bind.path.as_c_str())?;
            if let Some(flags) = bind.read_only {
                rustix::mount::mount_remount(bind.path.as_c_str(), flags, c"")?;
            }
        }
        if !self.user_namespace {
            // Root keeps every capability nix may need but the one that
            // would let it look into other processes' namespaces.
            rustix::thread::remove_capability_from_bounding_set(
                rustix::thread::CapabilitySet::SYS_PTRACE,
            )?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/<fd>` written into `buffer`, without allocating.
fn fd_path<'a>(fd: &OwnedFd, buffer: &'a mut [u8; 32]) -> &'a std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.as_raw_fd() as u32;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        buffer[PREFIX.len() + i] = digits[count - 1 - i];
    }
    buffer[PREFIX.len() + count] = 0;
    std::ffi::CStr::from_bytes_until_nul(&buffer[..]).expect("NUL-terminated")
}

fn write_file(path: &std::ffi::CStr, contents: &[u8]) -> rustix::io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::io::write(&fd, contents)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_paths_are_written_without_allocating() {
        let file = tempfile::tempfile().unwrap();
        let fd = OwnedFd::from(file);
        let mut buffer = [0u8; 32];
        let path = fd_path(&fd, &mut buffer).to_str().unwrap().to_string();
        assert_eq!(path, format!("/proc/self/fd/{}", fd.as_raw_fd()));
    }

    #[test]
    fn the_repository_and_its_home_are_bound_back_into_the_hidden_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let repo = state.join("repos").join("r.git");
        let home = state.join("home").join("repos").join("r.git");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let isolation = Isolation {
            hidden_dirs: vec![state.clone(), dir.path().join("absent")],
            hidden_files: vec![dir.path().join("absent-key")],
            homes: state.join("home").join("repos"),
            available: Ok(()),
        };
        let plan = isolation.plan(&repo, &home).unwrap();
        let paths = |list: &[CString]| -> Vec<String> {
            list.iter()
                .map(|c| c.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(paths(&plan.hidden_dirs), [state.display().to_string()]);
        assert!(plan.hidden_files.is_empty());
        let under = |p: &str| state.join(p).display().to_string();
        assert_eq!(
            paths(&plan.mkdirs),
            [
                under("home"),
                under("home/repos"),
                under("home/repos/r.git"),
                under("repos"),
                under("repos/r.git")
            ]
        );
        assert_eq!(plan.binds.len(), 2);
        assert!(plan.binds[0].read_only.is_none(), "the home is writable");
        assert!(
            plan.binds[1]
                .read_only
                .is_some_and(|f| f.contains(MountFlags::RDONLY))
        );
    }
}
