//! `procurator-ci backup DIR`: a consistent copy of what the daemon keeps,
//! taken while it runs. Restoring is copying `DIR/state/` into an empty state
//! directory (docs/nixos.md, "Upgrades and backups").
//!
//! Order matters, since builds go on meanwhile: the database first (one
//! instant, by `VACUUM INTO`), then the repositories (git's own protocol,
//! so each is consistent; they only gain commits the database may not name
//! yet), then the logs (every log the database's finished builds name is
//! complete by then; newer ones are extra). Nix's caches and the GC roots of
//! old builds are not kept: the first are caches, the second are made again
//! as builds succeed.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::process::Tools;
use crate::config::Config;
use crate::repos::RepoFiles;
use crate::repos::install::HookTarget;

/// What a backup holds, written to `DIR/backup.json`.
#[derive(Debug, Serialize)]
pub struct Manifest {
    /// The procurator-ci that took it.
    pub version: &'static str,
    /// The database's schema version (its `user_version`).
    pub schema_version: i64,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The repositories copied.
    pub repositories: Vec<String>,
    /// Log files copied.
    pub log_files: usize,
}

/// A backup that could not be taken. Nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists and is not empty: back up into a new directory")]
    NotEmpty(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the database: {0}")]
    Database(#[from] crate::storage::store::StoreError),
    #[error("repository {name}: {reason}")]
    Repository { name: String, reason: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Takes a backup of the daemon configured by `config` into `dir`, which
/// must not exist or be empty. On failure the partial copy is removed.
pub fn backup(config: &Config, dir: &Path) -> Result<Manifest, BackupError> {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(BackupError::NotEmpty(dir.to_path_buf()));
    }
    let created = !dir.exists();
    let result = take(config, dir);
    if result.is_err() {
        if created {
            let _ = std::fs::remove_dir_all(dir);
        } else if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
    }
    result
}

fn take(config: &Config, dir: &Path) -> Result<Manifest, BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // The token and the database are secrets of the service: the backup is
    // its owner's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("cannot create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(format!("cannot restrict {}", dir.display())))?;
    let state = dir.join("state");
    std::fs::create_dir(&state).map_err(io_error(format!("cannot create {}", state.display())))?;

    let schema_version =
        crate::storage::store::snapshot(&config.database_url, &state.join("ci.db"))?;

    let tools = Tools::new(config.home_dir(), config.cache_dir.clone());
    let files = RepoFiles::new(
        config.repos_base_path.clone(),
        tools.clone(),
        HookTarget {
            executable: PathBuf::new(),
            socket: config.socket_path.clone(),
        },
    )
    .map_err(|e| BackupError::Repository {
        name: "*".into(),
        reason: e.to_string(),
    })?;
    let names = files.list_on_disk().map_err(|e| BackupError::Repository {
        name: "*".into(),
        reason: e.to_string(),
    })?;
    let repos = state.join("repos");
    std::fs::create_dir(&repos).map_err(io_error(format!("cannot create {}", repos.display())))?;
    for name in &names {
        let source = files.path_of(name).map_err(|e| BackupError::Repository {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        copy_repository(&tools, &source, &repos.join(format!("{name}.git"))).map_err(|reason| {
            BackupError::Repository {
                name: name.clone(),
                reason,
            }
        })?;
    }

    let log_files = copy_tree(&config.logs_dir(), &state.join("logs"))?;
    let token = config.generated_token_file();
    if config.api_token_file.is_none() && token.exists() {
        std::fs::copy(&token, state.join("api-token"))
            .map_err(io_error(format!("cannot copy {}", token.display())))?;
    }

    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION"),
        schema_version,
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        repositories: names,
        log_files,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("the manifest serialises");
    std::fs::write(dir.join("backup.json"), text + "\n")
        .map_err(io_error("cannot write backup.json"))?;
    Ok(manifest)
}

/// A bare copy of `source` by git's fetch: every ref, with the objects they
/// need, as of one instant even while a push lands. The hooks are not
/// copied: the daemon installs its own at start.
fn copy_repository(tools: &Tools, source: &Path, target: &Path) -> Result<(), String> {
    let git = |args: &[&std::ffi::OsStr]| tools.output("git", args).map_err(|e| e.to_string());
    git(&[
        "init".as_ref(),
        "--quiet".as_ref(),
        "--bare".as_ref(),
        target.as_os_str(),
    ])?;
    let git_dir = format!("--git-dir={}", target.display());
    let from = format!("file://{}", source.display());
    git(&[
        git_dir.as_ref(),
        "fetch".as_ref(),
        "--quiet".as_ref(),
        "--no-write-fetch-head".as_ref(),
        from.as_ref(),
        "+refs/*:refs/*".as_ref(),
    ])?;
    let head = tools
        .git(source, &["symbolic-ref", "HEAD"])
        .map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&head).trim().to_string();
    git(&[
        git_dir.as_ref(),
        "symbolic-ref".as_ref(),
        "HEAD".as_ref(),
        head.as_ref(),
    ])?;
    if let Ok(description) = std::fs::read(source.join("description")) {
        std::fs::write(target.join("description"), description).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copies the regular files below `from` into `to`; returns how many.
fn copy_tree(from: &Path, to: &Path) -> Result<usize, BackupError> {
    std::fs::create_dir_all(to).map_err(io_error(format!("cannot create {}", to.display())))?;
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(format!("cannot list {}", from.display()))(e)),
    };
    let mut copied = 0;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("cannot list {}", from.display())))?;
        let kind = entry.file_type().map_err(io_error(format!(
            "cannot examine {}",
            entry.path().display()
        )))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copied += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => copied += 1,
                // A running attempt's log compressed and removed meanwhile:
                // its compressed file is copied instead, if listed later, or
                // the build is one the database snapshot does not hold ended.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io_error(format!("cannot copy {}", entry.path().display()))(
                        e,
                    ));
                }
            }
        }
    }
    Ok(copied)
}
