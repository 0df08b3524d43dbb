//! Managed bare repositories on disk: creation, description, branch
//! listing, files at a commit, and deletion ([`RepoFiles`]).
//!
//! The rest lives by concern: `names` (repository, branch and commit
//! validation, re-exported here), `install` (the hooks and their
//! installation), `commits` (what a build shows of its commit), `hook` (the
//! hook's client), `git_objects` (long-lived commit readers), `views` (what
//! repository views and badges show).
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
use install::HookTarget;

pub mod commits;
pub mod git_objects;
pub mod hook;
pub mod install;
mod names;
pub mod upstream;
pub mod views;
pub mod webhooks;

pub use names::{
    is_pull_ref, validate_branch, validate_build_ref, validate_commit, validate_repo_name,
};

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

/// A branch of a repository with its head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Branch {
    pub name: String,
    pub commit: String,
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
    pub fn create(
        &self,
        name: &str,
        description: &str,
        default_branch: &str,
    ) -> Result<PathBuf, RepoError> {
        validate_branch(default_branch).map_err(|reason| RepoError::InvalidName {
            name: default_branch.to_string(),
            reason,
        })?;
        let initial = format!("--initial-branch={default_branch}");
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
                    initial.as_ref(),
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

    /// The branch the bare repository's `HEAD` names: its default branch,
    /// which need not exist yet. `None` for a detached or unreadable `HEAD`.
    /// Read from the file, as git writes it, without starting git.
    pub fn head_branch(&self, repo: &Path) -> Option<String> {
        let head = fs::read_to_string(repo.join("HEAD")).ok()?;
        let branch = head.trim_end().strip_prefix("ref: refs/heads/")?;
        validate_branch(branch).ok()?;
        Some(branch.to_string())
    }

    /// Makes `branch` the repository's default branch (its `HEAD`), as
    /// `git symbolic-ref HEAD refs/heads/<branch>` would.
    pub fn set_head_branch(&self, repo: &Path, branch: &str) -> Result<(), RepoError> {
        validate_branch(branch).map_err(|reason| RepoError::InvalidName {
            name: branch.to_string(),
            reason,
        })?;
        atomic_write(
            &repo.join("HEAD"),
            format!("ref: refs/heads/{branch}\n").as_bytes(),
            0o644,
        )
        .map_err(io_error(format!("cannot write HEAD in {}", repo.display())))
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
        // No option can hide in it: the name starts with `refs/heads/`.
        self.commit_of_ref(repo, &name)
    }

    /// The commit a pull request's head ref (see [`is_pull_ref`]) names in
    /// `repo`, or `None` when it has none.
    pub fn pull_head(&self, repo: &Path, name: &str) -> Result<Option<String>, RepoError> {
        if !is_pull_ref(name) {
            return Err(RepoError::InvalidName {
                name: name.to_string(),
                reason: "is not a pull request's head ref".into(),
            });
        }
        self.commit_of_ref(repo, name)
    }

    /// The commit the full ref `name` (checked by the caller: never an
    /// option) names in `repo`, or `None` when it names none.
    fn commit_of_ref(&self, repo: &Path, name: &str) -> Result<Option<String>, RepoError> {
        match self.tools.git(
            repo,
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

    /// The text of file `path` at `commit` (already validated), or `None`
    /// when the commit has no such file.
    pub fn file_at(
        &self,
        repo: &Path,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, RepoError> {
        let object = object_at(commit, path)?;
        match self
            .tools
            .git(repo, &["cat-file", "blob", "--end-of-options", &object])
        {
            Ok(text) => Ok(Some(String::from_utf8_lossy(&text).into_owned())),
            Err(CommandError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `commit` has a `.gitmodules` at its root: then its flake must
    /// be fetched with its submodules.
    pub fn has_submodules(&self, repo: &Path, commit: &str) -> Result<bool, RepoError> {
        let object = object_at(commit, ".gitmodules")?;
        match self
            .tools
            .git(repo, &["cat-file", "-e", "--end-of-options", &object])
        {
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

/// `commit:path`, as git names a file of a commit, once `commit` is known to
/// be a commit id (never an option or a revision expression).
fn object_at(commit: &str, path: &str) -> Result<String, RepoError> {
    validate_commit(commit).map_err(|reason| RepoError::InvalidName {
        name: commit.to_string(),
        reason,
    })?;
    Ok(format!("{commit}:{path}"))
}
