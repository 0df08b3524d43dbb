//! The domain operations on repositories: creating (with its hook),
//! listing, finding and deleting them, and at startup adopting those found
//! on disk and creating the declared ones ([`prepare_repos`]).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{App, AppError, ForgeView, Repo, blocking};
use crate::build::queue::{format_ms, now_ms};
use crate::config::{ForgeKeys, ForgeTarget};
use crate::repos::upstream::{self, DEFAULT_POLL_INTERVAL_SECS, UpstreamSettings};
use crate::repos::{self, RepoError};
use crate::storage::store::SqlResultExt;

impl App {
    fn repo_json(&self, (name, path, description, created, forge): RepoRow) -> Repo {
        Repo {
            forge: forge
                .and_then(|json| serde_json::from_str::<ForgeTarget>(&json).ok())
                .map(|t| ForgeView {
                    forge: t.forge,
                    api_url: crate::redact::urls(&t.api_url).into_owned(),
                    repo: t.repo,
                    check_statuses: t.check_statuses,
                }),
            ssh_url: self
                .config
                .ssh_push_base
                .as_ref()
                .map(|base| format!("{base}{path}")),
            declared: self.config.repos.contains_key(&name),
            name,
            path,
            description,
            created_at: format_ms(created),
        }
    }

    pub(super) async fn repo_row(&self, name: &str) -> Result<Option<Repo>, AppError> {
        let key = name.to_string();
        let row = self
            .store
            .read(move |conn| {
                use rusqlite::OptionalExtension;
                conn.prepare_cached(&format!("{REPO_SELECT} WHERE r.name = ?1"))
                    .db()?
                    .query_row([key], repo_row)
                    .optional()
                    .db()
            })
            .await?;
        Ok(row.map(|row| self.repo_json(row)))
    }

    /// Creates a repository with its hook, its `HEAD` naming
    /// `default_branch` (`main` unless given), mirroring `upstream` when
    /// one is named.
    pub async fn create_repo(
        self: &Arc<Self>,
        name: String,
        description: String,
        default_branch: Option<String>,
        upstream: Option<UpstreamSettings>,
        forge: ForgeKeys,
    ) -> Result<Repo, AppError> {
        validate_description(&description)?;
        let target = checked_forge(&forge, upstream.as_ref().map(|u| u.url.as_str())).await?;
        let default_branch = default_branch.unwrap_or_else(|| DEFAULT_BRANCH.to_string());
        validate_default_branch(&default_branch)?;
        repos::validate_repo_name(&name).map_err(|reason| {
            AppError::from(RepoError::InvalidName {
                name: name.clone(),
                reason,
            })
        })?;
        self.refuse_when_disk_full()?;
        let files = self.repos.clone();
        let (n, d) = (name.clone(), description.clone());
        let settings = upstream.clone();
        let path = blocking(move || {
            let path = files.create(&n, &d, &default_branch)?;
            if let Err(e) = files.write_upstream(&path, settings.as_ref()) {
                let _ = files.delete(&n);
                return Err(e.into());
            }
            Ok(path)
        })
        .await?;
        let repo = self.insert_repo_row(&name, &path, &description).await;
        if let Err(e) = &repo {
            tracing::error!(repo = %name, error = %e, "cannot record a new repository; removing it");
            let files = self.repos.clone();
            let n = name.clone();
            let _ = blocking(move || Ok(files.delete(&n)?)).await;
        }
        let mut repo = repo?;
        if let Some(target) = target {
            let n = name.clone();
            self.store
                .write(move |conn| {
                    crate::ops::forge::outbox::set_target(conn, &n, Some(&target), false)
                })
                .await?;
            repo = self.find_repo(&name).await?;
        }
        if let Err(e) = self.refresh_view(&repo).await {
            // Its first request or the next scan loads it.
            tracing::warn!(repo = %repo.name, error = %e, "cannot load the view of a new repository");
        }
        tracing::info!(repo = %repo.name, path = %repo.path, "Repository created");
        if let Some(settings) = upstream {
            self.start_upstream(&repo.name, path, settings).await?;
        }
        self.events.publish("repo.created", None, &repo);
        Ok(repo)
    }

    pub(super) async fn insert_repo_row(
        &self,
        name: &str,
        path: &std::path::Path,
        description: &str,
    ) -> Result<Repo, AppError> {
        let (n, p, d) = (
            name.to_string(),
            path.display().to_string(),
            description.to_string(),
        );
        let created = self
            .store
            .write(move |conn| {
                let now = now_ms();
                conn.prepare_cached(
                    "INSERT INTO repos (name, path, description, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET path = excluded.path, description = excluded.description",
                )
                .db()?
                .execute(rusqlite::params![n, p, d, now])
                .db()?;
                conn.query_row("SELECT created_at FROM repos WHERE name = ?1", [&n], |r| r.get(0))
                    .db()
            })
            .await?;
        Ok(self.repo_json((
            name.to_string(),
            path.display().to_string(),
            description.to_string(),
            created,
            None,
        )))
    }

    /// Makes `branch` the default branch of repository `name` (its bare
    /// repository's `HEAD`): the one its headline and badge are about. The
    /// branch need not be pushed yet.
    pub async fn set_default_branch(&self, name: &str, branch: String) -> Result<(), AppError> {
        validate_default_branch(&branch)?;
        let repo = self.find_repo(name).await?;
        let files = self.repos.clone();
        let path = std::path::PathBuf::from(&repo.path);
        let b = branch.clone();
        blocking(move || Ok(files.set_head_branch(&path, &b)?)).await?;
        self.refresh_view(&repo).await?;
        tracing::info!(repo = %name, branch = %branch, "Default branch changed");
        Ok(())
    }

    /// Makes a repository's first pushed branch its default when `HEAD`
    /// names a branch that does not exist (a repository made for `main`,
    /// pushed `master`), as forges do with an empty repository; a
    /// `default_branch` declared in the configuration is kept.
    pub(crate) async fn adopt_first_branch(&self, repo: &Repo, branch: &str) {
        let declared = self
            .config
            .repos
            .get(&repo.name)
            .is_some_and(|decl| decl.default_branch.is_some());
        let Some(Some(head)) = self.views.default_branch(&repo.name) else {
            return;
        };
        if declared
            || head == branch
            || self.views.has_branch(&repo.name, &head) != Some(false)
            || self.views.branch_count(&repo.name) != Some(1)
        {
            return;
        }
        if let Err(e) = self
            .set_default_branch(&repo.name, branch.to_string())
            .await
        {
            tracing::warn!(repo = %repo.name, branch, error = %e, "cannot make the first pushed branch the default");
        }
    }

    /// Every managed repository.
    pub async fn list_repos(&self) -> Result<Vec<Repo>, AppError> {
        let rows: Vec<RepoRow> = self
            .store
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!("{REPO_SELECT} ORDER BY r.name"))
                    .db()?;
                let rows = stmt.query_map([], repo_row).db()?;
                rows.collect::<Result<Vec<_>, _>>().db()
            })
            .await?;
        Ok(rows.into_iter().map(|row| self.repo_json(row)).collect())
    }

    /// The recorded repository `name`.
    pub(crate) async fn find_repo(&self, name: &str) -> Result<Repo, AppError> {
        repos::validate_repo_name(name).map_err(|reason| {
            AppError::invalid("name", format!("invalid repository name: {reason}"))
        })?;
        self.repo_row(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("repository {name:?} not found")))
    }

    /// Deletes a repository; its builds stay readable.
    pub async fn delete_repo(&self, name: &str, confirm: Option<&str>) -> Result<(), AppError> {
        let repo = self.find_repo(name).await?;
        if confirm != Some(name) {
            return Err(AppError::invalid(
                "confirm",
                format!(
                    "deleting a repository cannot be undone: repeat its name as ?confirm={name}"
                ),
            ));
        }
        let files = self.repos.clone();
        let n = name.to_string();
        let deleted = blocking(move || Ok(files.delete(&n)?)).await;
        match deleted {
            Ok(()) | Err(AppError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let n = name.to_string();
        self.store
            .write(move |conn| {
                conn.execute("DELETE FROM repos WHERE name = ?1", [&n])
                    .db()?;
                crate::ops::forge::outbox::set_target(conn, &n, None, false)?;
                Ok(())
            })
            .await?;
        self.views.remove(name);
        self.upstreams.stop(name);
        tracing::warn!(repo = %name, path = %repo.path, "Repository deleted");
        self.events.publish("repo.deleted", None, &repo);
        Ok(())
    }
}

/// A repository's upstream keys, as `POST /api/repos` and `[repos.NAME]`
/// name them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRequest {
    pub upstream: Option<String>,
    pub upstream_credentials_file: Option<PathBuf>,
    pub poll_interval_secs: Option<u64>,
    pub webhook_secret_file: Option<PathBuf>,
    pub build_fork_pull_requests: Option<bool>,
}

impl UpstreamRequest {
    /// The settings these keys make, each key checked (the files must be
    /// readable by the daemon); `None` without an `upstream`.
    pub fn settings(self) -> Result<Option<UpstreamSettings>, AppError> {
        let Some(url) = self.upstream else {
            for (field, set) in [
                (
                    "upstream_credentials_file",
                    self.upstream_credentials_file.is_some(),
                ),
                ("poll_interval_secs", self.poll_interval_secs.is_some()),
                ("webhook_secret_file", self.webhook_secret_file.is_some()),
                (
                    "build_fork_pull_requests",
                    self.build_fork_pull_requests.is_some(),
                ),
            ] {
                if set {
                    return Err(AppError::invalid(
                        field,
                        format!("{field} needs `upstream`: only a mirrored repository uses it"),
                    ));
                }
            }
            return Ok(None);
        };
        upstream::validate_url(&url).map_err(|why| {
            AppError::invalid(
                "upstream",
                format!("upstream {}: {why}", crate::redact::urls(&url)),
            )
        })?;
        let poll_interval_secs = self
            .poll_interval_secs
            .unwrap_or(DEFAULT_POLL_INTERVAL_SECS);
        upstream::validate_poll_interval(poll_interval_secs).map_err(|why| {
            AppError::invalid("poll_interval_secs", format!("poll_interval_secs {why}"))
        })?;
        for (field, file) in [
            ("upstream_credentials_file", &self.upstream_credentials_file),
            ("webhook_secret_file", &self.webhook_secret_file),
        ] {
            if let Some(path) = file {
                if !path.is_absolute() {
                    return Err(AppError::invalid(
                        field,
                        format!("{field} must be an absolute path"),
                    ));
                }
                upstream::read_secret_file(path).map_err(|why| {
                    AppError::invalid(field, format!("{field} {}: {why}", path.display()))
                })?;
            }
        }
        Ok(Some(UpstreamSettings {
            url,
            credentials_file: self.upstream_credentials_file,
            poll_interval_secs,
            webhook_secret_file: self.webhook_secret_file,
            build_fork_pull_requests: self.build_fork_pull_requests.unwrap_or(false),
        }))
    }
}

/// The upstream settings of a declared repository (validated with the
/// configuration).
fn declared_upstream(decl: &crate::config::RepoDecl) -> Option<UpstreamSettings> {
    decl.upstream.as_ref().map(|url| UpstreamSettings {
        url: url.clone(),
        credentials_file: decl.upstream_credentials_file.clone(),
        poll_interval_secs: decl
            .poll_interval_secs
            .unwrap_or(DEFAULT_POLL_INTERVAL_SECS),
        webhook_secret_file: decl.webhook_secret_file.clone(),
        build_fork_pull_requests: decl.build_fork_pull_requests,
    })
}

/// A repository's row: name, path, description, creation, forge target.
type RepoRow = (String, String, String, i64, Option<String>);

const REPO_SELECT: &str = "SELECT r.name, r.path, r.description, r.created_at, f.target \
    FROM repos r LEFT JOIN repo_forges f ON f.repo = r.name";

fn repo_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RepoRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// The target the forge keys of a new repository name, its token file
/// read (and refused when others may read it); errors name the key.
async fn checked_forge(
    keys: &ForgeKeys,
    upstream: Option<&str>,
) -> Result<Option<ForgeTarget>, AppError> {
    let target = crate::config::forge::resolve(keys, upstream)
        .map_err(|e| AppError::invalid(e.key, format!("{}: {}", e.key, e.reason)))?;
    let Some(target) = target else {
        return Ok(None);
    };
    let file = target.token_file.clone();
    blocking(move || {
        if let Some(mode) = crate::config::exposed_mode(&file) {
            return Err(AppError::invalid(
                "forge_token_file",
                format!(
                    "forge_token_file: {} is readable by group or others (mode {mode:04o}): \
                     chmod 600 it",
                    file.display()
                ),
            ));
        }
        crate::config::forge::read_token(&file)
            .map_err(|e| AppError::invalid("forge_token_file", format!("forge_token_file: {e}")))?;
        Ok(())
    })
    .await?;
    Ok(Some(target))
}

/// The default branch of a repository created without one.
const DEFAULT_BRANCH: &str = "main";

fn validate_default_branch(branch: &str) -> Result<(), AppError> {
    repos::validate_branch(branch)
        .map_err(|why| AppError::invalid("default_branch", format!("invalid branch name: {why}")))
}

fn validate_description(description: &str) -> Result<(), AppError> {
    crate::text::check(description, crate::text::MAX_DESCRIPTION_CHARS, true)
        .map_err(|why| AppError::invalid("description", format!("description {why}")))
}

/// Startup: records repositories present on disk, creates the declared
/// ones, syncs descriptions and (re)installs every hook. Nothing is deleted.
pub async fn prepare_repos(app: &Arc<App>) -> Result<(), AppError> {
    let files = app.repos.clone();
    let on_disk = blocking(move || Ok(files.list_on_disk()?)).await?;
    let known = app.list_repos().await?;
    for name in &on_disk {
        let path = app.repos.path_of(name)?;
        let files = app.repos.clone();
        let (n, p) = (name.clone(), path.clone());
        blocking(move || Ok(files.install_hook(&p, &n)?)).await?;
        // A state directory restored or moved elsewhere: the rows name the
        // repositories where they were.
        if let Some(moved) = known
            .iter()
            .find(|r| &r.name == name && r.path != path.display().to_string())
        {
            app.insert_repo_row(name, &path, &moved.description).await?;
            tracing::info!(repo = %name, from = %moved.path, to = %path.display(), "Repository found in a new place");
        }
        if !known.iter().any(|r| &r.name == name) {
            let file = path.join("description");
            let description = blocking(move || Ok(std::fs::read_to_string(file).ok()))
                .await?
                .map(|d| d.trim().to_string())
                .filter(|d| !d.starts_with("Unnamed repository"))
                .unwrap_or_default();
            // Held to the API's rule; a description it refuses is dropped.
            let description = match validate_description(&description) {
                Ok(()) => description,
                Err(e) => {
                    tracing::warn!(repo = %name, error = %e, "ignoring the description found on disk");
                    String::new()
                }
            };
            app.insert_repo_row(name, &path, &description).await?;
            tracing::info!(repo = %name, "Adopted a repository found on disk");
        }
    }
    for (name, decl) in &app.config.repos {
        if on_disk.contains(name) {
            let path = app.repos.path_of(name)?;
            // Unchanged descriptions cost no write (and no fsync) per start.
            let recorded = known.iter().any(|r| {
                &r.name == name
                    && r.description == decl.description
                    && r.path == path.display().to_string()
            });
            let files = app.repos.clone();
            let (p, d) = (path.clone(), decl.description.clone());
            let head = decl.default_branch.clone();
            let settings = declared_upstream(decl);
            blocking(move || {
                // The configuration says what the repository mirrors.
                files.write_upstream(&p, settings.as_ref())?;
                let current = std::fs::read_to_string(p.join("description")).unwrap_or_default();
                if current != format!("{d}\n") {
                    files.write_description(&p, &d)?;
                }
                // A declared default branch is kept, as the description is.
                if let Some(head) = head
                    && files.head_branch(&p).as_deref() != Some(head.as_str())
                {
                    files.set_head_branch(&p, &head)?;
                }
                Ok(())
            })
            .await?;
            if !recorded {
                app.insert_repo_row(name, &path, &decl.description).await?;
            }
        } else {
            // Its forge is recorded with the other declared ones.
            app.create_repo(
                name.clone(),
                decl.description.clone(),
                decl.default_branch.clone(),
                declared_upstream(decl),
                ForgeKeys::default(),
            )
            .await?;
        }
    }
    // Every repository with an upstream in its config mirrors it (those
    // created through the API keep theirs there too).
    for name in &on_disk {
        let path = app.repos.path_of(name)?;
        let files = app.repos.clone();
        let p = path.clone();
        if let Some(settings) = blocking(move || Ok(files.read_upstream(&p)?)).await? {
            app.start_upstream(name, path, settings).await?;
        }
    }
    Ok(())
}
