//! One daemon per state directory: an exclusive lock held for the daemon's
//! life, and a hook socket removed only by the daemon that created it.
//!
//! Two daemons on one state directory would take builds from the same queue
//! and the second, on exit, would delete the first one's hook socket; so the
//! second is refused at start, naming the first one's pid.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "daemon.lock";

/// The exclusive lock on a state directory; released when dropped (or when
/// the process ends, however it ends: the kernel drops `flock` locks with
/// the last descriptor, so a crashed daemon leaves no stale lock).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock on `state_dir` (which must exist) and writes our pid
    /// into it, or says which daemon holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, String> {
        use rustix::fs::{FlockOperation, flock};
        let path = state_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another procurator-ci".to_string()
                } else {
                    format!("another procurator-ci (pid {holder})")
                };
                return Err(format!(
                    "the state directory {} is in use by {who}, which holds {}; \
                     one daemon per state directory: stop that daemon first, or give this one \
                     another state_dir (PROCURATOR_CI_STATE_DIR)",
                    state_dir.display(),
                    path.display()
                ));
            }
            Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(StateLock { _file: file })
    }
}

/// The hook socket this daemon bound: removed at exit only while the path
/// still names that socket, not one another process put there since.
#[derive(Debug)]
pub struct OwnSocket {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl OwnSocket {
    /// Remembers the socket just bound at `path`.
    pub fn created(path: &Path) -> std::io::Result<OwnSocket> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(OwnSocket {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// Removes the socket if it is still ours; says whether it did.
    pub fn remove(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.device && meta.ino() == self.inode => {
                std::fs::remove_file(&self.path).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let error = StateLock::acquire(dir.path()).unwrap_err();
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_socket_replaced_by_another_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let ours = OwnSocket::created(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!ours.remove());
        assert!(path.exists());
        drop(first);
        let again = OwnSocket::created(&path).unwrap();
        assert!(again.remove());
        assert!(!path.exists());
    }
}
