//! What the repository API and badges show, kept in memory (issue 15): each
//! repository's branch heads, each head's latest build and the statistics of
//! its last finished builds, and the serialised answers of
//! `GET /api/repos/{name}` (`page`). A request costs a lock and a clone of bytes
//! whatever the branches, and starts no process.
//!
//! A repository's view is loaded once from git and SQLite (at start, when it
//! is created, or on its first request if that failed), then changed where
//! the state changes: a push moves one head, a scan (periodic, or the hook's
//! after a deletion) brings the heads to git's, and every write that changes
//! a build applies it here on the database's writer thread just before its
//! batch commits, in the order of the changes, so the view is never behind
//! the database. Loads run as writer jobs too, so no build change can fall
//! between a load and the changes after it. Only current heads keep build state, so memory follows
//! the branches that exist, not every branch ever built. A branch whose head
//! commit was built on another branch shows that build (`standing`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;

use crate::app::{App, AppError, BuildRef, Repo, blocking};
use crate::build::queue::{self, Build, Status};
use crate::ops::metrics::{BuildStats, STATS_WINDOW, finished_builds, finished_per_branch};
use crate::repos::Branch;
use crate::storage::store::StoreError;

mod page;
mod standing;
mod window;

use page::{Answer, gzip, page_json, range_of};
pub use page::{BRANCH_PAGE_DEFAULT, BRANCH_PAGE_MAX, BranchPage};
use standing::shown;
use window::{Window, finished, newer};

/// One branch head and its builds.
#[derive(Debug)]
struct BranchState {
    commit: String,
    latest: Option<BuildRef>,
    finished: Window,
    /// This branch's part of the repository's answer.
    json: Bytes,
}

/// A branch as `GET /api/repos/{name}` lists it.
#[derive(Serialize)]
struct BranchJson<'a> {
    name: &'a str,
    commit: &'a str,
    latest_build: Option<&'a BuildRef>,
    /// Success rate and median duration of the branch's last finished
    /// builds.
    stats: BuildStats,
}

impl BranchState {
    fn new(
        name: &str,
        commit: String,
        (latest, finished): (Option<BuildRef>, Window),
        standing: &HashMap<String, BuildRef>,
    ) -> Self {
        let mut state = BranchState {
            commit,
            latest,
            finished,
            json: Bytes::new(),
        };
        state.render(name, standing);
        state
    }

    fn render(&mut self, name: &str, standing: &HashMap<String, BuildRef>) {
        let json = BranchJson {
            name,
            commit: &self.commit,
            latest_build: shown(
                self.latest.as_ref(),
                standing.get(&self.commit),
                &self.commit,
            ),
            stats: self.finished.stats(),
        };
        self.json = serde_json::to_vec(&json)
            .expect("a branch serialises")
            .into();
    }
}

/// One repository's view.
#[derive(Debug)]
struct RepoState {
    repo: Repo,
    /// The branch the bare repository's `HEAD` names: the default branch.
    head: Option<String>,
    /// By name, in git's order of refs.
    branches: BTreeMap<String, BranchState>,
    /// The newest build of any branch, deleted ones included.
    last_build: Option<BuildRef>,
    /// The newest queued, running, passed or failed build of each commit
    /// built: what a branch at that commit shows when it has none of its own.
    standing: HashMap<String, BuildRef>,
    finished: Window,
    /// The branches in page order and the default page, made on the first
    /// request after a change.
    answer: Option<Answer>,
}

/// What the database holds for a view being loaded: a whole repository
/// (`repo` is set), or some of its branches.
#[derive(Debug, Default)]
pub struct Loaded {
    repo: Option<(Option<BuildRef>, Window, HashMap<String, BuildRef>)>,
    branches: HashMap<String, (Option<BuildRef>, Window)>,
}

/// Reads, on the writer's connection, what the view of `repo` needs: its
/// whole state when `whole`, else that of the branches `names`. Only the
/// branches `names` keep their builds.
fn load(
    conn: &Connection,
    repo: &str,
    names: &[String],
    commits: &[String],
    whole: bool,
) -> Result<Loaded, StoreError> {
    if !whole {
        let mut branches = HashMap::new();
        for name in names {
            let latest = queue::latest_of_branch(conn, repo, name)?;
            let finished = finished_builds(conn, repo, Some(name), STATS_WINDOW)?;
            branches.insert(
                name.clone(),
                (latest.as_ref().map(BuildRef::from), Window::new(finished)),
            );
        }
        return Ok(Loaded {
            repo: None,
            branches,
        });
    }
    let wanted: HashSet<&String> = names.iter().collect();
    let mut latest: HashMap<String, BuildRef> = queue::latest_per_branch(conn, repo)?
        .iter()
        .filter(|b| wanted.contains(&b.branch))
        .map(|b| (b.branch.clone(), BuildRef::from(b)))
        .collect();
    let mut finished = finished_per_branch(conn, repo, STATS_WINDOW)?;
    let branches = names
        .iter()
        .map(|name| {
            let window = Window::new(finished.remove(name).unwrap_or_default());
            (name.clone(), (latest.remove(name), window))
        })
        .collect();
    let last = queue::latest_of_repo(conn, repo)?;
    let finished = finished_builds(conn, repo, None, STATS_WINDOW)?;
    let heads: HashSet<&str> = commits.iter().map(String::as_str).collect();
    let standing = crate::build::standing::standing_per_commit(conn, repo)?
        .iter()
        .filter(|b| heads.contains(b.commit.as_str()))
        .map(|b| (b.commit.clone(), BuildRef::from(b)))
        .collect();
    Ok(Loaded {
        repo: Some((
            last.as_ref().map(BuildRef::from),
            Window::new(finished),
            standing,
        )),
        branches,
    })
}

/// Which heads a load brings.
enum Heads {
    /// All of them: branches not among them are gone.
    All(Vec<Branch>),
    /// One pushed head.
    One(Branch),
}

/// Where a pushed head could be recorded.
enum Pushed {
    /// The branch was known; its head moved.
    Moved,
    /// A branch the view does not have: its builds must be loaded.
    New,
    /// The repository's view is not loaded; its load will read the head.
    NotLoaded,
}

/// The views of every repository.
#[derive(Debug, Default)]
pub struct RepoViews {
    repos: Mutex<BTreeMap<String, RepoState>>,
    /// Changes of a repository's heads, one at a time: a scan's reading of
    /// git and a push's head must not overtake each other.
    heads_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RepoViews {
    fn state(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RepoState>> {
        self.repos.lock().expect("repository views")
    }

    fn heads_lock(&self, repo: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.heads_locks
            .lock()
            .expect("heads locks")
            .entry(repo.to_string())
            .or_default()
            .clone()
    }

    /// The answer of `GET /api/repos/{name}` listing the branches `page`
    /// asks for, gzip-encoded when `gzip` is asked for (the flag says
    /// whether it is); `None` when not loaded. The default page is made once
    /// per change; another is put together per request, outside the lock.
    pub fn detail(&self, repo: &str, page: BranchPage, gzip_wanted: bool) -> Option<(Bytes, bool)> {
        let json = {
            let mut state = self.state();
            let answer = state.get_mut(repo)?.answer();
            if page != BranchPage::default() {
                let head = answer.head.clone();
                let total = answer.order.len();
                let range = range_of(page, total);
                let start = range.start;
                let listed = answer.order[range].to_vec();
                drop(state);
                let json = page_json(&head, &listed, start, total);
                return Some(if gzip_wanted {
                    (gzip(&json), true)
                } else {
                    (json, false)
                });
            }
            if !gzip_wanted {
                return Some((answer.json.clone(), false));
            }
            if let Some(zipped) = &answer.gzip {
                return Some((zipped.clone(), true));
            }
            answer.json.clone()
        };
        // Encoded outside the lock: the writer thread applies builds under it.
        let zipped = gzip(&json);
        let mut state = self.state();
        if let Some(answer) = state.get_mut(repo).and_then(|v| v.answer.as_mut())
            && answer.json.as_ptr() == json.as_ptr()
        {
            // Still the answer it encodes (held by `json`, its memory cannot
            // have been reused by a newer one).
            answer.gzip = Some(zipped.clone());
        }
        Some((zipped, true))
    }

    /// Whether `repo` has `branch` as far as the view knows; `None` when
    /// the view is not loaded.
    pub fn has_branch(&self, repo: &str, branch: &str) -> Option<bool> {
        self.state()
            .get(repo)
            .map(|state| state.branches.contains_key(branch))
    }

    /// How many branches `repo` has; `None` when not loaded.
    pub fn branch_count(&self, repo: &str) -> Option<usize> {
        self.state().get(repo).map(|state| state.branches.len())
    }

    /// The default branch of `repo` (its `HEAD`); `None` outside when not
    /// loaded, inside when `HEAD` names no branch.
    pub fn default_branch(&self, repo: &str) -> Option<Option<String>> {
        self.state().get(repo).map(|state| state.head.clone())
    }

    /// The status of the latest build of `branch`, `None` when the branch
    /// does not exist or has no build; `None` outside when not loaded.
    pub fn branch_status(&self, repo: &str, branch: &str) -> Option<Option<Status>> {
        self.state().get(repo).map(|state| {
            let branch = state.branches.get(branch)?;
            let standing = state.standing.get(&branch.commit);
            shown(branch.latest.as_ref(), standing, &branch.commit).map(|l| l.status)
        })
    }

    /// The answer of `GET /api/repos`: every loaded repository with its
    /// newest build, by name.
    pub fn summaries(&self) -> Bytes {
        #[derive(Serialize)]
        struct Summary<'a> {
            #[serde(flatten)]
            repo: &'a Repo,
            /// The newest build of any branch: the repository's current
            /// state.
            last_build: Option<&'a BuildRef>,
        }
        #[derive(Serialize)]
        struct List<'a> {
            repos: Vec<Summary<'a>>,
        }
        let state = self.state();
        let list = List {
            repos: state
                .values()
                .map(|s| Summary {
                    repo: &s.repo,
                    last_build: s.last_build.as_ref(),
                })
                .collect(),
        };
        serde_json::to_vec(&list)
            .expect("repositories serialise")
            .into()
    }

    /// Branches among `heads` the view of `repo` has no state for; `None`
    /// when the repository is not loaded.
    fn unknown(&self, repo: &str, heads: &[Branch]) -> Option<Vec<String>> {
        let state = self.state();
        let known = &state.get(repo)?.branches;
        Some(
            heads
                .iter()
                .filter(|b| !known.contains_key(&b.name))
                .map(|b| b.name.clone())
                .collect(),
        )
    }

    fn push_head(&self, repo: &str, branch: &str, commit: &str) -> Pushed {
        let mut state = self.state();
        let Some(repo) = state.get_mut(repo) else {
            return Pushed::NotLoaded;
        };
        let Some(head) = repo.branches.get_mut(branch) else {
            return Pushed::New;
        };
        if head.commit != commit {
            head.commit = commit.to_string();
            head.render(branch, &repo.standing);
            repo.answer = None;
        }
        Pushed::Moved
    }

    /// Installs what a load read, with the heads it was for. Runs on the
    /// writer thread, in commit order.
    fn install(&self, repo: Repo, heads: Heads, head: Option<String>, loaded: &mut Loaded) {
        let mut state = self.state();
        let name = repo.name.clone();
        if let Some((last_build, finished, standing)) = loaded.repo.take() {
            let Heads::All(heads) = heads else {
                return;
            };
            let branches = heads
                .into_iter()
                .map(|b| {
                    let builds = loaded.branches.remove(&b.name).unwrap_or_default();
                    let branch = BranchState::new(&b.name, b.commit, builds, &standing);
                    (b.name, branch)
                })
                .collect();
            state.insert(
                name,
                RepoState {
                    repo,
                    head,
                    branches,
                    last_build,
                    standing,
                    finished,
                    answer: None,
                },
            );
            return;
        }
        // A partial load of a repository since deleted has nothing to add to.
        let Some(view) = state.get_mut(&name) else {
            return;
        };
        // A push (`Heads::One`) does not read `HEAD`; a scan does.
        let mut changed = false;
        if matches!(heads, Heads::All(_)) && view.head != head {
            view.head = head;
            changed = true;
        }
        let mut add = |view: &mut RepoState, b: Branch, loaded: &mut Loaded| match view
            .branches
            .get_mut(&b.name)
        {
            Some(known) if known.commit == b.commit => {}
            Some(known) => {
                known.commit = b.commit;
                known.render(&b.name, &view.standing);
                changed = true;
            }
            None => {
                let builds = loaded.branches.remove(&b.name).unwrap_or_default();
                let branch = BranchState::new(&b.name, b.commit, builds, &view.standing);
                view.branches.insert(b.name, branch);
                changed = true;
            }
        };
        match heads {
            Heads::One(b) => add(view, b, loaded),
            Heads::All(heads) => {
                let current: HashSet<&str> = heads.iter().map(|b| b.name.as_str()).collect();
                let before = view.branches.len();
                view.branches
                    .retain(|name, _| current.contains(name.as_str()));
                let removed = view.branches.len() != before;
                for b in heads {
                    add(view, b, loaded);
                }
                changed |= removed;
            }
        }
        if changed {
            view.answer = None;
        }
    }

    /// Applies a committed change of `build`. Runs on the writer thread, in
    /// commit order.
    pub fn apply(&self, build: &Build) {
        let mut state = self.state();
        let Some(view) = state.get_mut(&build.repo) else {
            return;
        };
        newer(&mut view.last_build, build);
        let done = finished(build);
        if let Some(done) = done {
            view.finished.add(done);
        }
        let standing = view.standing.get(&build.commit).map(|s| s.id);
        if build.status == Status::Cancelled {
            // A cancelled build stands for its commit no more.
            if standing == Some(build.id) {
                view.standing.remove(&build.commit);
            }
        } else if standing.is_none_or(|id| id <= build.id)
            && view.branches.values().any(|b| b.commit == build.commit)
        {
            // Kept for current heads only: memory follows the branches.
            view.standing
                .insert(build.commit.clone(), BuildRef::from(build));
        }
        if let Some(branch) = view.branches.get_mut(&build.branch) {
            newer(&mut branch.latest, build);
            if let Some(done) = done {
                branch.finished.add(done);
            }
        }
        // Every branch at the commit shows it: its own, or the one standing.
        let RepoState {
            branches, standing, ..
        } = view;
        for (name, branch) in branches.iter_mut() {
            if branch.commit == build.commit || *name == build.branch {
                branch.render(name, standing);
            }
        }
        view.answer = None;
    }

    /// Forgets a repository: deleted, or its view is no longer trusted (a
    /// change applied to it failed to commit). A forgotten view is loaded
    /// again by its next request or the next scan.
    pub fn remove(&self, repo: &str) {
        self.state().remove(repo);
    }

    /// The `apply` and `undo` of `Store::write_then` for a write that
    /// changes a build.
    pub fn track<T: ChangedBuild>(
        self: &Arc<Self>,
    ) -> (
        impl FnOnce(&mut T) + Send + 'static,
        impl FnOnce(&T) + Send + 'static,
    ) {
        let (views, undo) = (self.clone(), self.clone());
        (
            move |result: &mut T| {
                if let Some(build) = result.changed() {
                    views.apply(build);
                }
            },
            move |result: &T| {
                if let Some(build) = result.changed() {
                    undo.remove(&build.repo);
                }
            },
        )
    }
}

/// A write's result that may be a build it changed.
pub trait ChangedBuild {
    /// The build the write changed, if any.
    fn changed(&self) -> Option<&Build>;
}

impl ChangedBuild for Build {
    fn changed(&self) -> Option<&Build> {
        Some(self)
    }
}

impl ChangedBuild for Option<Build> {
    fn changed(&self) -> Option<&Build> {
        self.as_ref()
    }
}

/// An enqueue's result: the build, and whether it was created.
impl ChangedBuild for (Build, bool) {
    fn changed(&self) -> Option<&Build> {
        self.1.then_some(&self.0)
    }
}

impl App {
    /// Reads the branch heads of `repo` from git and brings its view to
    /// them, loading the view whole the first time. Returns the heads.
    pub async fn refresh_view(&self, repo: &Repo) -> Result<Vec<Branch>, AppError> {
        let lock = self.views.heads_lock(&repo.name);
        let _held = lock.lock().await;
        let files = self.repos.clone();
        let path = PathBuf::from(&repo.path);
        let (heads, head) =
            blocking(move || Ok((files.branches(&path)?, files.head_branch(&path)))).await?;
        let unknown = self.views.unknown(&repo.name, &heads);
        let whole = unknown.is_none();
        let names = unknown.unwrap_or_else(|| heads.iter().map(|b| b.name.clone()).collect());
        let commits: Vec<String> = heads.iter().map(|b| b.commit.clone()).collect();
        let (views, row, all) = (self.views.clone(), repo.clone(), heads.clone());
        let repo_name = repo.name.clone();
        let (name, undo) = (repo.name.clone(), self.views.clone());
        self.store
            .write_then(
                move |conn| load(conn, &name, &names, &commits, whole),
                move |loaded| views.install(row, Heads::All(all), head, loaded),
                move |_| undo.remove(&repo_name),
            )
            .await?;
        Ok(heads)
    }

    /// Records a head the hook reported: `branch` of `repo` is now at
    /// `commit`. A branch new to the view gets its earlier builds (a name
    /// can be pushed again after a deletion) before the push's build is
    /// queued.
    pub(crate) async fn record_push(&self, repo: &Repo, branch: &str, commit: &str) {
        let lock = self.views.heads_lock(&repo.name);
        let _held = lock.lock().await;
        if !matches!(
            self.views.push_head(&repo.name, branch, commit),
            Pushed::New
        ) {
            return;
        }
        let head = Branch {
            name: branch.to_string(),
            commit: commit.to_string(),
        };
        let (views, undo, row) = (self.views.clone(), self.views.clone(), repo.clone());
        let (name, names) = (repo.name.clone(), vec![branch.to_string()]);
        let repo_name = name.clone();
        let loaded = self
            .store
            .write_then(
                move |conn| load(conn, &name, &names, &[], false),
                move |loaded| views.install(row, Heads::One(head), None, loaded),
                move |_| undo.remove(&repo_name),
            )
            .await;
        if let Err(e) = loaded {
            // The next scan reads the heads again.
            tracing::warn!(repo = %repo.name, branch, error = %e, "cannot record a pushed head");
        }
    }

    /// What `read` finds in the view of repository `name`, loading the view
    /// if it is not (its load at start or creation failed).
    async fn read_view<T>(
        &self,
        name: &str,
        read: impl Fn(&RepoViews) -> Option<T>,
    ) -> Result<T, AppError> {
        crate::repos::validate_repo_name(name).map_err(|reason| {
            AppError::invalid("name", format!("invalid repository name: {reason}"))
        })?;
        if let Some(found) = read(&self.views) {
            return Ok(found);
        }
        let repo = self.find_repo(name).await?;
        self.refresh_view(&repo).await?;
        read(&self.views).ok_or_else(|| {
            AppError::Internal(format!("the view of repository {name:?} did not load"))
        })
    }

    /// The answer of `GET /api/repos/{name}`: the repository with its
    /// default branch and the page `page` of its branches, their latest
    /// builds and statistics.
    /// Gzip-encoded when `gzip` is asked for; the flag says whether it is.
    pub async fn repo_detail(
        &self,
        name: &str,
        page: BranchPage,
        gzip: bool,
    ) -> Result<(Bytes, bool), AppError> {
        self.read_view(name, |views| views.detail(name, page, gzip))
            .await
    }

    /// The default branch of repository `name` (its `HEAD`), `None` when
    /// `HEAD` names no branch.
    pub async fn default_branch(&self, name: &str) -> Result<Option<String>, AppError> {
        self.read_view(name, |views| views.default_branch(name))
            .await
    }

    /// The status of the latest build of `branch` of repository `name`;
    /// `None` when the branch does not exist or has no build.
    pub async fn branch_status(
        &self,
        name: &str,
        branch: &str,
    ) -> Result<Option<Status>, AppError> {
        self.read_view(name, |views| views.branch_status(name, branch))
            .await
    }
}
