//! Managed bare repositories: name and ref validation, creation, the
//! post-receive hook, branch listing and deletion.
//!
//! Everything here is blocking (git and the filesystem); callers run it on
//! the blocking pool.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use serde::Serialize;

use crate::build::process::{CommandError, Tools};
use crate::repos::git_objects::CommitReader;

pub mod git_objects;
pub mod hook;
pub mod views;

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

/// A repository operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The name breaks the naming rules.
    #[error("invalid repository name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A repository of that name exists already.
    #[error("repository {0:?} already exists")]
    Exists(String),
    /// No repository of that name is managed.
    #[error("repository {0:?} not found")]
    NotFound(String),
    /// Git failed.
    #[error(transparent)]
    Git(#[from] CommandError),
    /// The filesystem failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RepoError {
    let context = context.into();
    move |source| RepoError::Io { context, source }
}

/// Checks a repository name: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, not ending
/// in `.git`, without `..`.
pub fn validate_repo_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 100 {
        return Err("must be at most 100 characters".into());
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err("must start with an ASCII letter or digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may only contain ASCII letters, digits, '.', '_' and '-' (found {bad:?})"
        ));
    }
    if name.contains("..") {
        return Err("must not contain '..'".into());
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Err("must not end in '.git' (it is added on disk)".into());
    }
    Ok(())
}

/// Checks a branch name by git's ref-name rules, stricter in three ways: no
/// component may start with '-', only printable ASCII is accepted (so that a
/// look-alike of another branch cannot be pushed to CI), and at most 255
/// bytes.
pub fn validate_branch(branch: &str) -> Result<(), String> {
    if branch.is_empty() {
        return Err("must not be empty".into());
    }
    if branch.len() > 255 {
        return Err("must be at most 255 characters".into());
    }
    if let Some(bad) = branch
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control())
    {
        let shown = if bad.is_control() {
            String::new()
        } else {
            format!("'{bad}' ")
        };
        return Err(format!(
            "must be printable ASCII, so that no branch can pass for another (found {shown}U+{:04X})",
            bad as u32
        ));
    }
    if let Some(bad) = branch
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!("must not contain {bad:?}"));
    }
    if branch == "@" || branch.contains("@{") {
        return Err("must not be '@' or contain '@{'".into());
    }
    if branch == "HEAD" {
        // git refuses it as a branch name: `HEAD` would be ambiguous.
        return Err("must not be 'HEAD'".into());
    }
    if branch.contains("..") {
        return Err("must not contain '..'".into());
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.contains("//") {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    if branch.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    if branch.starts_with("refs/") {
        return Err("is a branch name, not a ref: leave out 'refs/heads/'".into());
    }
    for component in branch.split('/') {
        if component.starts_with('.') {
            return Err("no path component may start with '.'".into());
        }
        if component.starts_with('-') {
            return Err("no path component may start with '-'".into());
        }
        if component.ends_with(".lock") {
            return Err("no path component may end with '.lock'".into());
        }
    }
    Ok(())
}

/// Checks a commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if !(commit.len() == 40 || commit.len() == 64) {
        return Err("must be a full commit id of 40 or 64 hex digits".into());
    }
    if !commit
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("must be lowercase hexadecimal".into());
    }
    Ok(())
}

/// A branch of a repository with its head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Branch {
    pub name: String,
    pub commit: String,
}

/// What the hook needs to reach the daemon.
#[derive(Debug, Clone)]
pub struct HookTarget {
    /// The daemon's executable, which the hook runs.
    pub executable: PathBuf,
    /// The daemon's Unix socket.
    pub socket: PathBuf,
}

/// The managed repositories on disk.
#[derive(Debug, Clone)]
pub struct RepoFiles {
    base: PathBuf,
    tools: Tools,
    hook: HookTarget,
    commits: Arc<CommitReader>,
}

impl RepoFiles {
    /// Repositories under `base` (created if missing).
    pub fn new(base: PathBuf, tools: Tools, hook: HookTarget) -> Result<RepoFiles, RepoError> {
        fs::create_dir_all(&base).map_err(io_error(format!("cannot create {}", base.display())))?;
        let base = fs::canonicalize(&base)
            .map_err(io_error(format!("cannot resolve {}", base.display())))?;
        Ok(RepoFiles {
            base,
            tools,
            hook,
            commits: Arc::default(),
        })
    }

    /// The tool runner repositories use.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// The path of repository `name`, checked to lie inside the base.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, RepoError> {
        validate_repo_name(name).map_err(|reason| RepoError::InvalidName {
            name: name.to_string(),
            reason,
        })?;
        let path = self.base.join(format!("{name}.git"));
        // A symlink planted under the base must not lead outside it.
        if let Ok(resolved) = fs::canonicalize(&path)
            && !resolved.starts_with(&self.base)
        {
            return Err(RepoError::InvalidName {
                name: name.to_string(),
                reason: "resolves outside the repositories directory".into(),
            });
        }
        Ok(path)
    }

    /// Whether repository `name` exists on disk.
    pub fn exists(&self, name: &str) -> bool {
        self.path_of(name).is_ok_and(|p| p.join("HEAD").is_file())
    }

    /// Creates a bare repository with the hook installed. It is built under a
    /// temporary name and renamed into place, so a failure leaves nothing.
    pub fn create(&self, name: &str, description: &str) -> Result<PathBuf, RepoError> {
        let path = self.path_of(name)?;
        if path.exists() {
            return Err(RepoError::Exists(name.to_string()));
        }
        let staging = self
            .base
            .join(format!(".creating-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        let result = (|| {
            self.tools.output(
                "git",
                &[
                    "init".as_ref(),
                    "--bare".as_ref(),
                    "--quiet".as_ref(),
                    "--initial-branch=main".as_ref(),
                    "--".as_ref(),
                    staging.as_os_str(),
                ],
            )?;
            self.write_description(&staging, description)?;
            self.install_hook(&staging, name)?;
            if path.exists() {
                return Err(RepoError::Exists(name.to_string()));
            }
            fs::rename(&staging, &path).map_err(io_error(format!(
                "cannot move repository into {}",
                path.display()
            )))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.map(|()| path)
    }

    /// Writes git's own `description` file, which other git tools show.
    pub fn write_description(&self, repo: &Path, description: &str) -> Result<(), RepoError> {
        atomic_write(
            &repo.join("description"),
            format!("{description}\n").as_bytes(),
            0o644,
        )
        .map_err(io_error(format!(
            "cannot write description in {}",
            repo.display()
        )))
    }

    /// Names of the bare repositories present on disk.
    pub fn list_on_disk(&self) -> Result<Vec<String>, RepoError> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.base)
            .map_err(io_error(format!("cannot list {}", self.base.display())))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".git")) else {
                continue;
            };
            if validate_repo_name(name).is_ok() && entry.path().join("HEAD").is_file() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

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

    /// The branches of a repository and their head commits.
    pub fn branches(&self, repo: &Path) -> Result<Vec<Branch>, RepoError> {
        let out = self.tools.git(
            repo,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads/",
            ],
        )?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|line| {
                let (commit, refname) = line.split_once(' ')?;
                let name = refname.strip_prefix("refs/heads/")?;
                Some(Branch {
                    name: name.to_string(),
                    commit: commit.to_string(),
                })
            })
            .collect())
    }

    /// The head commit of `branch` of `repo`, or `None` when the repository
    /// has no such branch.
    pub fn branch_head(&self, repo: &Path, branch: &str) -> Result<Option<String>, RepoError> {
        validate_branch(branch).map_err(|reason| RepoError::InvalidName {
            name: branch.to_string(),
            reason,
        })?;
        let name = format!("refs/heads/{branch}");
        if let Ok(found) = self.commits.branch_head(&self.tools, repo, branch) {
            return Ok(found);
        }
        match self.tools.git(
            repo,
            // No option can hide in it: the name starts with `refs/heads/`.
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{name}^{{commit}}"),
            ],
        ) {
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out).trim().to_string())),
            Err(CommandError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The author and message of `commit` when it is a commit object of
    /// `repo`; `None` when it does not exist there.
    pub fn commit_info(&self, repo: &Path, commit: &str) -> Result<Option<CommitInfo>, RepoError> {
        validate_commit(commit).map_err(|reason| RepoError::InvalidName {
            name: commit.to_string(),
            reason,
        })?;
        // The kept reader is the fast path; a one-shot git answers when it
        // cannot be had.
        if let Ok(found) = self.commits.commit(&self.tools, repo, commit) {
            return Ok(found.map(|object| CommitInfo::parse(&object)));
        }
        match self
            .tools
            .git(repo, &["cat-file", "--end-of-options", "commit", commit])
        {
            Ok(object) => Ok(Some(CommitInfo::parse(&object))),
            Err(CommandError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The text of file `path` at `commit` (already validated), or `None`
    /// when the commit has no such file.
    pub fn file_at(
        &self,
        repo: &Path,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, RepoError> {
        validate_commit(commit).map_err(|reason| RepoError::InvalidName {
            name: commit.to_string(),
            reason,
        })?;
        match self.tools.git(
            repo,
            &[
                "cat-file",
                "blob",
                "--end-of-options",
                &format!("{commit}:{path}"),
            ],
        ) {
            Ok(text) => Ok(Some(String::from_utf8_lossy(&text).into_owned())),
            Err(CommandError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `commit` has a `.gitmodules` at its root: then its flake must
    /// be fetched with its submodules.
    pub fn has_submodules(&self, repo: &Path, commit: &str) -> Result<bool, RepoError> {
        validate_commit(commit).map_err(|reason| RepoError::InvalidName {
            name: commit.to_string(),
            reason,
        })?;
        match self.tools.git(
            repo,
            &[
                "cat-file",
                "-e",
                "--end-of-options",
                &format!("{commit}:.gitmodules"),
            ],
        ) {
            Ok(_) => Ok(true),
            Err(CommandError::Failed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes repository `name` from disk.
    pub fn delete(&self, name: &str) -> Result<(), RepoError> {
        let path = self.path_of(name)?;
        self.commits.forget(&path);
        if !path.exists() {
            return Err(RepoError::NotFound(name.to_string()));
        }
        // Rename first so a half-deleted repository is never served.
        let doomed = self
            .base
            .join(format!(".deleting-{name}-{}", std::process::id()));
        fs::rename(&path, &doomed)
            .map_err(io_error(format!("cannot remove {}", path.display())))?;
        fs::remove_dir_all(&doomed).map_err(io_error(format!("cannot remove {}", doomed.display())))
    }
}

/// What a build shows of its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// `Name <email>`, or empty when the object names none.
    pub author: String,
    /// The message, trimmed, at most `MAX_MESSAGE_BYTES` (cut at a character
    /// boundary): a commit message is text for people, and the database keeps
    /// one per build.
    pub message: String,
}

/// Longest commit message kept with a build.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

impl CommitInfo {
    fn parse(object: &[u8]) -> CommitInfo {
        let text = String::from_utf8_lossy(object);
        // Headers end at the first empty line (continuation lines of a
        // signature start with a space, so they are never empty).
        let message = text
            .split_once("\n\n")
            .map(|(_, m)| m.trim())
            .unwrap_or_default();
        let mut end = message.len().min(MAX_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        CommitInfo {
            author: parse_author(object),
            message: message[..end].to_string(),
        }
    }
}

fn parse_author(object: &[u8]) -> String {
    String::from_utf8_lossy(object)
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("author "))
        .map(|a| match a.rfind('>') {
            Some(end) => a[..=end].to_string(),
            None => a.to_string(),
        })
        .unwrap_or_default()
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

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// (and git running the hook) see either the old or the new file.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "demo", "A-b_c.d", "x1", &"a".repeat(100)] {
            assert!(validate_repo_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../b",
            "x.git",
            "X.GIT",
            "-h",
            ".hidden",
            "a..b",
            "a/b",
            "--upload-pack=touch /tmp/p",
            "ext::sh -c id",
            "a\0b",
            "a\nb",
            "dеmo",
            &"a".repeat(101),
        ] {
            assert!(validate_repo_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branches() {
        for ok in [
            "main",
            "feature/x",
            "release-1.0",
            "a.b",
            "v1@2",
            "user/fix_3",
        ] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-h",
            "feature/-x",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "@",
            "a@{1}",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a\0b",
            "a\nb",
            "mаin",
            "refs/heads/main",
            "--upload-pack=x",
            &"a".repeat(256),
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commits() {
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        assert!(validate_commit(&"0".repeat(64)).is_ok());
        for bad in [
            "",
            "abc1234",
            &"A".repeat(40),
            &"g".repeat(40),
            &"a".repeat(41),
            "-h",
        ] {
            assert!(validate_commit(bad).is_err(), "{bad:?}");
        }
    }

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

    #[test]
    fn author_from_commit_object() {
        let object = b"tree abc\nauthor Ann Example <ann@example.org> 1700000000 +0000\ncommitter X <x> 1 +0000\n\nmsg\nauthor fake\n";
        assert_eq!(parse_author(object), "Ann Example <ann@example.org>");
        let info = CommitInfo::parse(object);
        assert_eq!(info.message, "msg\nauthor fake");
    }

    #[test]
    fn message_after_a_signature_and_capped() {
        let object = b"tree abc\nauthor A <a> 1 +0000\ngpgsig -----BEGIN\n \n -----END\n\n\nSubject line\n\nBody.\n";
        assert_eq!(CommitInfo::parse(object).message, "Subject line\n\nBody.");
        let long = format!("tree abc\n\n{}", "é".repeat(MAX_MESSAGE_BYTES));
        let info = CommitInfo::parse(long.as_bytes());
        assert!(info.message.len() <= MAX_MESSAGE_BYTES && info.message.starts_with('é'));
        assert_eq!(CommitInfo::parse(b"tree abc\n").message, "");
    }

    /// git's own `check-ref-format --branch` is the grammar; ours may only be
    /// stricter.
    fn git_accepts_branch(name: &str) -> bool {
        std::process::Command::new("git")
            .args(["check-ref-format", "--branch", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn accepted_branches_are_valid_git_refs(name in "[ -~]{1,20}") {
            if validate_branch(&name).is_ok() {
                prop_assert!(git_accepts_branch(&name), "accepted {:?}", name);
                prop_assert!(!name.split('/').any(|c| c.starts_with('-')));
            }
        }

        #[test]
        fn accepted_branch_grammar_sample(name in "[a-z0-9._/@{}~^:-]{1,16}") {
            if validate_branch(&name).is_ok() {
                prop_assert!(git_accepts_branch(&name), "accepted {:?}", name);
            }
        }

        #[test]
        fn accepted_repo_names_match_the_grammar(name in "\\PC{0,120}") {
            if validate_repo_name(&name).is_ok() {
                let bytes = name.as_bytes();
                prop_assert!(bytes[0].is_ascii_alphanumeric());
                prop_assert!(name.len() <= 100);
                prop_assert!(bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b)));
                prop_assert!(!name.contains(".."));
                prop_assert!(!name.to_ascii_lowercase().ends_with(".git"));
            }
        }

        #[test]
        fn accepted_commits_are_lower_hex(s in "[0-9a-fA-Fg-z]{38,66}") {
            if validate_commit(&s).is_ok() {
                prop_assert!(s.len() == 40 || s.len() == 64);
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }
}
