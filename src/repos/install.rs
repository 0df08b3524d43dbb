//! The hooks procurator-ci installs in its repositories: the embedded
//! `post-receive` and `pre-receive` templates, rendered with shell-quoted
//! values, and their installation, which keeps a foreign `post-receive`
//! running after ours.

use std::fs;
use std::path::{Path, PathBuf};

use super::{RepoError, RepoFiles, atomic_write, io_error};

/// The embedded hook template; `@PROCURATOR_CI@`, `@SOCKET@` and `@REPO@` are
/// replaced with shell-quoted values at installation.
pub const HOOK_TEMPLATE: &str = include_str!("../../hooks/post-receive");

/// The `pre-receive` hook: refuses branch names procurator-ci cannot build.
pub const PRE_RECEIVE_TEMPLATE: &str = include_str!("../../hooks/pre-receive");

/// Marks a hook as ours, so that upgrades replace it and foreign hooks are
/// kept.
pub const HOOK_MARKER: &str = "procurator-ci-managed-hook";

/// Where a foreign `post-receive` found in a repository is moved; our hook
/// runs every executable in `post-receive.d/` after queuing builds.
pub const CHAINED_HOOKS_DIR: &str = "post-receive.d";

/// What the hook needs to reach the daemon.
#[derive(Debug, Clone)]
pub struct HookTarget {
    /// The daemon's executable, which the hook runs.
    pub executable: PathBuf,
    /// The daemon's Unix socket.
    pub socket: PathBuf,
}

impl RepoFiles {
    /// Installs (or upgrades) our hook in `repo`, atomically. A foreign
    /// `post-receive` is moved into `post-receive.d/`, where our hook runs
    /// it, rather than destroyed.
    pub fn install_hook(&self, repo: &Path, name: &str) -> Result<(), RepoError> {
        let hooks = repo.join("hooks");
        fs::create_dir_all(&hooks)
            .map_err(io_error(format!("cannot create {}", hooks.display())))?;
        let target = hooks.join("post-receive");
        let content = render_hook(&self.hook, HOOK_TEMPLATE, name);
        match fs::read_to_string(&target) {
            Ok(existing) if existing == content => return Ok(()),
            Ok(existing) if !existing.contains(HOOK_MARKER) => {
                self.keep_foreign_hook(&hooks, &target, name)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.keep_foreign_hook(&hooks, &target, name)?
            }
            _ => {}
        }
        atomic_write(&target, content.as_bytes(), 0o755).map_err(io_error(format!(
            "cannot install hook {}",
            target.display()
        )))?;
        self.install_pre_receive(&hooks, name)
    }

    /// Installs the `pre-receive` hook unless the repository has one of its
    /// own: git runs a single `pre-receive`, and a foreign one may refuse
    /// pushes for reasons of its own (the daemon then still refuses an
    /// unbuildable name when the push arrives, and says so to the pusher).
    fn install_pre_receive(&self, hooks: &Path, name: &str) -> Result<(), RepoError> {
        let target = hooks.join("pre-receive");
        let content = render_hook(&self.hook, PRE_RECEIVE_TEMPLATE, name);
        match fs::read(&target) {
            Ok(existing) if existing == content.as_bytes() => return Ok(()),
            Ok(existing) if !String::from_utf8_lossy(&existing).contains(HOOK_MARKER) => {
                tracing::warn!(
                    repo = name,
                    hook = %target.display(),
                    "a foreign pre-receive hook is kept: branch names procurator-ci cannot build \
                     are then refused only after the push"
                );
                return Ok(());
            }
            _ => {}
        }
        atomic_write(&target, content.as_bytes(), 0o755).map_err(io_error(format!(
            "cannot install hook {}",
            target.display()
        )))
    }

    fn keep_foreign_hook(&self, hooks: &Path, target: &Path, name: &str) -> Result<(), RepoError> {
        let chained = hooks.join(CHAINED_HOOKS_DIR);
        fs::create_dir_all(&chained)
            .map_err(io_error(format!("cannot create {}", chained.display())))?;
        let mut kept = chained.join("previous-post-receive");
        let mut n = 1;
        while kept.exists() {
            n += 1;
            kept = chained.join(format!("previous-post-receive-{n}"));
        }
        fs::rename(target, &kept).map_err(io_error(format!(
            "cannot move foreign hook {}",
            target.display()
        )))?;
        tracing::warn!(
            repo = name,
            kept = %kept.display(),
            "moved a foreign post-receive hook aside; it still runs after ours"
        );
        Ok(())
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The text of hook `template` for repository `name`.
pub fn render_hook(target: &HookTarget, template: &str, name: &str) -> String {
    template
        .replace(
            "@PROCURATOR_CI@",
            &shell_quote(&target.executable.to_string_lossy()),
        )
        .replace("@SOCKET@", &shell_quote(&target.socket.to_string_lossy()))
        .replace("@REPO@", &shell_quote(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_is_quoted() {
        let target = HookTarget {
            executable: PathBuf::from("/opt/it's/procurator-ci"),
            socket: PathBuf::from("/run/p.sock"),
        };
        let hook = render_hook(&target, HOOK_TEMPLATE, "demo");
        assert!(hook.contains(r"'/opt/it'\''s/procurator-ci'"));
        assert!(hook.contains("'/run/p.sock'"));
        assert!(hook.contains(HOOK_MARKER));
        assert!(!hook.contains('@'));
    }
}
