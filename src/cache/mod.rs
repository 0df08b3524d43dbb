//! What CI built, kept useful: after a successful build the outputs of the
//! checks' derivations it built, as the store records them, and their
//! closures are recorded (the only paths `/nix-cache/` serves),
//! kept alive by GC roots for the last `cache_keep_builds` builds of each
//! branch, and queued for pushing to every `cache_push` target.
//!
//! Recording runs off the worker, in its own task, so a build slot is never
//! held by the cache; pushes run in `push`, serving in `serve`.

pub mod narinfo;
mod netrc;
pub mod push;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::app::App;
use crate::build::outputs;
use crate::build::queue::{self, Build, format_ms, now_ms};
use crate::storage::store::{SqlResultExt, StoreError};
use narinfo::{CacheKey, PathInfo};

/// Successful builds recorded again at startup when an earlier instance
/// stopped between a build's end and its recording.
const CATCH_UP_BUILDS: i64 = 20;

/// The cache's shared state, present when caching is configured.
pub struct Cache {
    /// Signs every served narinfo and every pushed path.
    pub key: CacheKey,
    /// Where the key was read from, for `nix` commands that sign.
    pub key_file: PathBuf,
    /// Wakes the pusher when pushes are queued.
    pub wake: Notify,
    /// NAR streams running now, bounded by `serve::MAX_NAR_STREAMS`.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl Cache {
    /// The cache state for `config`, or `None` when nothing is cached.
    pub fn load(config: &crate::config::Config) -> Result<Option<Cache>, String> {
        if !config.cache_serve && config.cache_push.is_empty() {
            return Ok(None);
        }
        let Some(path) = &config.cache_secret_key_file else {
            return Err("cache_secret_key_file is required".into());
        };
        let key = load_key(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(Cache {
            key,
            key_file: path.clone(),
            wake: Notify::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(serve::MAX_NAR_STREAMS)),
        }))
    }
}

/// Reads a secret key file, refusing one that others may read: whoever
/// reads it can sign paths every machine trusts.
pub fn load_key(path: &Path) -> Result<CacheKey, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if let Some(mode) = crate::config::exposed_mode(path) {
        return Err(format!(
            "it is readable by group or others (mode {mode:o}): a secret key must be mode 600 \
             or 400 (chmod 600 it)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    CacheKey::parse(&text).map_err(|e| e.to_string())
}

/// Whether nix signs on upload to `url` itself (`?secret-key=`): the
/// binary cache stores. Other stores get paths signed in the local store
/// first.
fn is_binary_cache(url: &str) -> bool {
    ["file://", "http://", "https://", "s3://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// One output of a build, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The check it belongs to.
    pub name: String,
    pub path: String,
}

/// A push of a build's outputs to one target, as the API shows it: the
/// target and nix's error with their credentials masked.
#[derive(Debug, Clone, Serialize)]
pub struct Push {
    pub target: String,
    /// `pending` (waiting for its first or next attempt), `pushed`, or
    /// `failed` (gave up).
    pub status: String,
    pub attempts: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    pub updated_at: String,
}

/// What the cache holds of one build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildCache {
    pub outputs: Vec<Output>,
    /// Whether GC roots keep the outputs alive.
    pub rooted: bool,
    /// Why recording the outputs failed.
    pub error: Option<String>,
    pub pushes: Vec<Push>,
}

/// The cache record of build `id`, if any.
pub fn build_cache(conn: &Connection, id: i64) -> Result<Option<BuildCache>, StoreError> {
    let row: Option<(String, bool, Option<String>)> = conn
        .prepare_cached("SELECT outputs, rooted, error FROM cache_builds WHERE build_id = ?1")
        .db()?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .db()?;
    let Some((outputs, rooted, error)) = row else {
        return Ok(None);
    };
    let pushes = conn
        .prepare_cached(
            "SELECT target, status, attempts, error, next_at, updated_at FROM cache_pushes \
             WHERE build_id = ?1 ORDER BY target",
        )
        .db()?
        .query_map([id], |r| {
            let status: String = r.get(1)?;
            let next_at: i64 = r.get(4)?;
            let (target, error): (String, Option<String>) = (r.get(0)?, r.get(3)?);
            Ok(Push {
                target: crate::redact::urls(&target).into_owned(),
                next_attempt_at: (status == "pending").then(|| format_ms(next_at)),
                status,
                attempts: r.get(2)?,
                error: error.map(|e| crate::redact::urls(&e).into_owned()),
                updated_at: format_ms(r.get(5)?),
            })
        })
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    Ok(Some(BuildCache {
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        rooted,
        error,
        pushes,
    }))
}

/// A check of a successful build whose outputs may be recorded: one that
/// passed (its derivation was built in this build) or was already in the
/// store.
struct Candidate {
    name: String,
    drv: String,
    built: bool,
}

fn candidates(build: &Build) -> Vec<Candidate> {
    let Some(checks) = build.checks.as_ref().and_then(|c| c.as_array()) else {
        return Vec::new();
    };
    checks
        .iter()
        .filter_map(|c| {
            let built = match c["status"].as_str()? {
                "passed" => true,
                "cached" => false,
                _ => return None,
            };
            Some(Candidate {
                name: c["name"].as_str()?.to_string(),
                drv: c["drv_path"].as_str()?.to_string(),
                built,
            })
        })
        .collect()
}

/// The candidates' outputs as the store records them for their
/// derivations (never an evaluated `outPath`), with whether this build
/// built them. Blocking.
fn store_outputs(app: &App, id: i64, candidates: Vec<Candidate>) -> Vec<(Output, bool)> {
    let tools = app.repos.tools();
    let mut found = Vec::new();
    for candidate in candidates {
        let timeout = outputs::QUERY_TIMEOUT;
        match outputs::of_derivation(tools, &app.config.nix_bin, &candidate.drv, timeout) {
            Ok(paths) => found.extend(paths.into_iter().filter(|p| Path::new(p).exists()).map(
                |path| {
                    let name = candidate.name.clone();
                    (Output { name, path }, candidate.built)
                },
            )),
            Err(error) => tracing::warn!(
                build_id = id,
                check = %candidate.name,
                error = %error,
                "cannot read a check's outputs from the store; not caching them"
            ),
        }
    }
    found
}

/// The outputs a build may claim: those it built, and those that were
/// already in the store only when the cache serves them already (an
/// earlier build here built them). A path this daemon never built, say a
/// fixed-output one that was already there, is never signed.
fn claimable(conn: &Connection, found: Vec<(Output, bool)>) -> Result<Vec<Output>, StoreError> {
    let mut claimed = Vec::new();
    for (output, built) in found {
        let served = || {
            narinfo::hash_part(&output.path)
                .map(|hash| lookup(conn, hash).map(|info| info.is_some()))
                .unwrap_or(Ok(false))
        };
        if built || served()? {
            claimed.push(output);
        }
    }
    Ok(claimed)
}

/// The directory of the GC roots of build `id`.
fn roots_dir(app: &App, id: i64) -> PathBuf {
    app.config.state_dir.join("gcroots").join(id.to_string())
}

/// Records a successful build's outputs in the cache; called in a task of
/// its own when a build succeeds.
pub async fn record(app: Arc<App>, build: Build) {
    // A fork's code gets no secret: its outputs are neither signed, served
    // nor pushed.
    if app.cache.is_none() || build.untrusted() {
        return;
    }
    let id = build.id;
    let found = {
        let app = app.clone();
        let candidates = candidates(&build);
        tokio::task::spawn_blocking(move || store_outputs(&app, id, candidates))
            .await
            .unwrap_or_default()
    };
    let outputs = match app.store.read(move |conn| claimable(conn, found)).await {
        Ok(outputs) => outputs,
        Err(e) => {
            tracing::warn!(build_id = id, error = %e, "cannot tell which outputs the cache may claim");
            return;
        }
    };
    let prepared = {
        let app = app.clone();
        let outputs = outputs.clone();
        tokio::task::spawn_blocking(move || prepare(&app, id, &outputs))
            .await
            .unwrap_or_else(|e| Err((Vec::new(), format!("recording task failed: {e}"))))
    };
    // Without the closure nothing can be served or pushed; without roots
    // the outputs are still served and pushed while they are valid.
    let (infos, rooted, error) = match prepared {
        Ok((infos, None)) => (infos, !outputs.is_empty(), None),
        Ok((infos, Some(error))) | Err((infos, error)) => {
            tracing::warn!(build_id = id, error = %error, "cannot record the build's outputs in the cache");
            (infos, false, Some(error))
        }
    };
    let targets = if infos.is_empty() {
        Vec::new()
    } else {
        app.config.cache_push.clone()
    };
    let (repo, branch) = (build.repo.clone(), build.branch.clone());
    let keep = app.config.cache_keep_builds;
    let written = app
        .store
        .write(move |conn| {
            insert(
                conn,
                &build,
                &outputs,
                &infos,
                rooted,
                error.as_deref(),
                &targets,
            )?;
            unrooted_beyond(conn, &repo, &branch, keep)
        })
        .await;
    match written {
        Ok(expired) => {
            tracing::info!(build_id = id, "Build outputs recorded in the cache");
            remove_roots(&app, expired).await;
            if let Some(cache) = &app.cache {
                cache.wake.notify_one();
            }
            publish(&app, id).await;
        }
        Err(e) => {
            tracing::warn!(build_id = id, error = %e, "cannot record the build's outputs in the cache")
        }
    }
}

/// The closure of a build's outputs, and why their GC roots could not be
/// made, if they could not.
type Prepared = Result<(Vec<PathInfo>, Option<String>), (Vec<PathInfo>, String)>;

/// Reads the outputs' closure and makes their GC roots. Blocking.
fn prepare(app: &App, id: i64, outputs: &[Output]) -> Prepared {
    if outputs.is_empty() {
        return Ok((Vec::new(), None));
    }
    let tools = app.repos.tools();
    let nix = &app.config.nix_bin;
    let mut args: Vec<String> = vec![
        "path-info".into(),
        "--extra-experimental-features".into(),
        "nix-command".into(),
        "--json".into(),
        "--recursive".into(),
    ];
    args.extend(outputs.iter().map(|o| o.path.clone()));
    let json = tools
        .output(nix, &args)
        .map_err(|e| (Vec::new(), e.to_string()))?;
    let infos = narinfo::parse_path_infos(&json).map_err(|e| (Vec::new(), e))?;
    match make_roots(app, id, outputs) {
        Ok(()) => Ok((infos, None)),
        Err(error) => Ok((infos, Some(format!("no GC roots: {error}")))),
    }
}

/// Makes a GC root for each output under the build's roots directory.
fn make_roots(app: &App, id: i64, outputs: &[Output]) -> Result<(), String> {
    let (tools, nix) = (app.repos.tools(), &app.config.nix_bin);
    let dir = roots_dir(app, id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut used = std::collections::HashSet::new();
    for output in outputs {
        // A check with several outputs gets a root per output.
        let mut name = root_name(&output.name);
        for n in 2.. {
            if used.insert(name.clone()) {
                break;
            }
            name = format!(
                "{}-{n}.out",
                root_name(&output.name).trim_end_matches(".out")
            );
        }
        let link = dir.join(name);
        let args = [
            "build".to_string(),
            "--extra-experimental-features".into(),
            "nix-command".into(),
            "--out-link".into(),
            link.display().to_string(),
            output.path.clone(),
        ];
        tools.output(nix, &args).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A check name as a file name.
fn root_name(check: &str) -> String {
    check
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
        + ".out"
}

fn insert(
    conn: &Connection,
    build: &Build,
    outputs: &[Output],
    infos: &[PathInfo],
    rooted: bool,
    error: Option<&str>,
    targets: &[String],
) -> Result<(), StoreError> {
    let now = now_ms();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO cache_builds (build_id, repo, branch, outputs, rooted, error, \
         recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .db()?
    .execute(params![
        build.id,
        build.repo,
        build.branch,
        serde_json::to_string(outputs).expect("outputs serialise"),
        rooted,
        error,
        now
    ])
    .db()?;
    for info in infos {
        let Some(hash) = narinfo::hash_part(&info.path) else {
            continue;
        };
        conn.prepare_cached(
            "INSERT OR IGNORE INTO cache_paths (hash, path, info, build_id) VALUES (?1, ?2, ?3, ?4)",
        )
        .db()?
        .execute(params![
            hash,
            info.path,
            serde_json::to_string(info).expect("path info serialises"),
            build.id
        ])
        .db()?;
    }
    for target in targets {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO cache_pushes (build_id, target, status, attempts, next_at, \
             updated_at) VALUES (?1, ?2, 'pending', 0, ?3, ?3)",
        )
        .db()?
        .execute(params![build.id, target, now])
        .db()?;
    }
    Ok(())
}

/// Marks the rooted builds of a branch beyond the newest `keep` as no
/// longer rooted and returns them, for their roots to be removed.
fn unrooted_beyond(
    conn: &Connection,
    repo: &str,
    branch: &str,
    keep: u32,
) -> Result<Vec<i64>, StoreError> {
    let expired = conn
        .prepare_cached(
            "SELECT build_id FROM cache_builds WHERE repo = ?1 AND branch = ?2 AND rooted = 1 \
             AND build_id NOT IN (SELECT build_id FROM cache_builds WHERE repo = ?1 AND \
             branch = ?2 AND rooted = 1 ORDER BY build_id DESC LIMIT ?3)",
        )
        .db()?
        .query_map(params![repo, branch, keep], |r| r.get(0))
        .db()?
        .collect::<Result<Vec<i64>, _>>()
        .db()?;
    for id in &expired {
        conn.prepare_cached("UPDATE cache_builds SET rooted = 0 WHERE build_id = ?1")
            .db()?
            .execute([id])
            .db()?;
    }
    Ok(expired)
}

/// Removes the GC roots of `builds`; the garbage collector may then reclaim
/// their outputs (they stay served while they are valid).
async fn remove_roots(app: &Arc<App>, builds: Vec<i64>) {
    if builds.is_empty() {
        return;
    }
    let dirs: Vec<PathBuf> = builds.iter().map(|id| roots_dir(app, *id)).collect();
    let _ = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(path = %dir.display(), "Removed old GC roots"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove old GC roots")
                }
            }
        }
    })
    .await;
}

/// Tells watchers that a build's cache state changed.
async fn publish(app: &Arc<App>, id: i64) {
    if let Ok(Some(cache)) = app.store.read(move |conn| build_cache(conn, id)).await {
        app.events.publish(
            "build.cache",
            Some(id),
            &serde_json::json!({ "id": id, "cache": cache }),
        );
    }
}

/// Records the successful builds an earlier instance ended without
/// recording (it stopped in between).
pub async fn catch_up(app: Arc<App>) {
    if app.cache.is_none() {
        return;
    }
    let missed = app
        .store
        .read(|conn| {
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM builds WHERE status = 'success' AND NOT EXISTS \
                     (SELECT 1 FROM cache_builds WHERE build_id = builds.id) \
                     ORDER BY id DESC LIMIT ?1",
                )
                .db()?
                .query_map([CATCH_UP_BUILDS], |r| r.get::<_, i64>(0))
                .db()?
                .collect::<Result<Vec<_>, _>>()
                .db()?;
            let mut builds = Vec::new();
            for id in ids {
                builds.extend(queue::get(conn, id)?);
            }
            Ok(builds)
        })
        .await;
    match missed {
        Ok(builds) => {
            for build in builds.into_iter().rev() {
                record(app.clone(), build).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for builds missing from the cache"),
    }
}

/// Pushes waiting for their first or next attempt.
pub fn pending_pushes(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM cache_pushes WHERE status = 'pending'")
        .db()?
        .query_row([], |r| r.get(0))
        .db()
}

/// The recorded path with this hash part.
pub fn lookup(conn: &Connection, hash: &str) -> Result<Option<PathInfo>, StoreError> {
    let info: Option<String> = conn
        .prepare_cached("SELECT info FROM cache_paths WHERE hash = ?1")
        .db()?
        .query_row([hash], |r| r.get(0))
        .optional()
        .db()?;
    Ok(info.and_then(|i| serde_json::from_str(&i).ok()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn binary_caches_sign_on_upload() {
        assert!(is_binary_cache("file:///x") && !is_binary_cache("ssh-ng://h"));
    }

    #[test]
    fn root_names_stay_inside_the_directory() {
        assert_eq!(root_name("ok"), "ok.out");
        assert_eq!(root_name("../x"), "_x.out");
        assert_eq!(root_name("a/b c"), "a_b_c.out");
    }

    #[test]
    fn key_files_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "k:AAAA").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_key(&path).unwrap_err();
        assert!(err.contains("mode 640"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key(&path).unwrap_err();
        assert!(err.contains("64"), "{err}");
    }
}
