//! The target repository, the only module that uses git2.
//!
//! [`Repo`] is the async facade the rest of the process uses: one per target repository, built
//! once at start-up and shared, it owns that repository's commit lock and runs every git call
//! off the async runtime. The blocking functions it calls live in `base.rs` (the base branch:
//! inspect, commit one file, read a file back), `publish.rs` (one file on the remote's tip,
//! never over someone else's text), `remote.rs` (fetch, push, credentials) and `worktree.rs` (an agent run's work tree, its commits and diffs); each opens the repository
//! afresh and holds nothing between calls.
//!
//! Invariant: every commit to a target repository's base branch, every fetch into it and every
//! work tree made from it goes through its [`Repo`], one at a time, whoever asks (the core's
//! plans, the front-matter updates of the run queue, an agent run's preparation).

pub mod base;
pub mod publish;
pub mod remote;
pub mod worktree;

use std::fmt;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, Oid, Repository};

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, RepoConfig};
use crate::model::BranchName;
pub use publish::{Conflict, Guard, Published};
use worktree::Worktree;

/// What can go wrong with the target repository, one variant per thing a caller or a user
/// does differently.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "{} is not a git repository (or not its top folder); set repo.path (or the [[repos]] entry's path) to a clone of the target repository",
        .path.display()
    )]
    NotARepository { path: PathBuf },
    #[error(
        "{} is a bare repository; featurebot needs a work tree for now, so set repo.path (or the [[repos]] entry's path) to a normal clone",
        .path.display()
    )]
    Bare { path: PathBuf },
    #[error("{}", missing_base_message(.branch, .head))]
    MissingBaseBranch { branch: String, head: String },
    #[error(
        "another git process is using the repository ({} exists); wait for it to finish, or remove the lock if it is stale",
        .path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "refusing the plan path {}: it must be a relative path inside repo.tasks_dir, without `.`, `..` or `.git`",
        .path.display()
    )]
    OutsideTasksDir { path: PathBuf },
    #[error("remote {remote} rejected the push to {reference}: {message}")]
    PushRejected {
        remote: String,
        reference: String,
        message: String,
    },
    #[error("remote {remote}: {message}")]
    Remote { remote: String, message: String },
    #[error("{0}")]
    Git(String),
}

/// Where HEAD points.
enum Head {
    Branch(String),
    Unborn(String),
    Detached(Oid),
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Head::Branch(name) => write!(f, "branch {name}"),
            Head::Unborn(name) => write!(f, "unborn branch {name}"),
            Head::Detached(id) => {
                let hex = id.to_string();
                write!(f, "detached at {}", &hex[..hex.len().min(7)])
            }
        }
    }
}

fn missing_base_message(branch: &str, head: &str) -> String {
    if head.starts_with("unborn") {
        format!(
            "base branch {branch} does not exist: HEAD is {head}, which has no commits yet; make a first commit on {branch}, or set repo.base_branch to a branch that has one"
        )
    } else {
        format!(
            "base branch {branch} does not exist (HEAD is {head}); create it with git branch {branch} <commit>, or set repo.base_branch"
        )
    }
}

fn open(cfg: &RepoConfig) -> Result<Repository, RepoError> {
    let repo = Repository::open(&cfg.path).map_err(|e| match e.code() {
        ErrorCode::NotFound => RepoError::NotARepository {
            path: cfg.path.clone(),
        },
        ErrorCode::Owner => RepoError::Git(format!(
            "{} belongs to another user, so git refuses to use it; fix its ownership or add it with git config --global --add safe.directory",
            cfg.path.display()
        )),
        _ => git_error(format!("opening {}", cfg.path.display()), e),
    })?;
    if repo.is_bare() {
        return Err(RepoError::Bare {
            path: cfg.path.clone(),
        });
    }
    Ok(repo)
}

fn head(repo: &Repository) -> Result<Head, RepoError> {
    let head = repo
        .find_reference("HEAD")
        .map_err(|e| git_error("reading HEAD", e))?;
    if let Some(target) = head.symbolic_target() {
        let name = target.strip_prefix("refs/heads/").unwrap_or(target);
        return match repo.refname_to_id(target) {
            Ok(_) => Ok(Head::Branch(name.to_string())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(Head::Unborn(name.to_string())),
            Err(e) => Err(git_error(format!("resolving HEAD ({target})"), e)),
        };
    }
    head.target()
        .map(Head::Detached)
        .ok_or_else(|| RepoError::Git("HEAD is neither a branch nor a commit".to_string()))
}

fn git_error(context: impl fmt::Display, error: git2::Error) -> RepoError {
    RepoError::Git(format!("{context}: {}", error.message()))
}

/// One target repository, shared by everything in the process that touches it. Cheap to clone:
/// clones share the configuration and the lock.
///
/// Every call that writes to the repository's `.git` (a commit on the base branch, a fetch, a
/// push, a new work tree, a step's commit, whose objects and branch land in the shared object
/// database and refs) takes the lock, so they happen one at a time whoever asks. Reads of a
/// work tree (its head, its diff) do not.
#[derive(Clone)]
pub struct Repo {
    cfg: Arc<RepoConfig>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Repo {
    pub fn config(&self) -> &RepoConfig {
        &self.cfg
    }

    /// Commits `contents` as `path` (relative, inside `repo.tasks_dir`) on the base branch and
    /// returns the commit's id; see [`base::commit_file`].
    pub async fn commit_file(
        &self,
        path: &Path,
        contents: Vec<u8>,
        message: &str,
    ) -> Result<String, RepoError> {
        let path = path.to_path_buf();
        let message = message.to_string();
        self.locked(move |cfg| base::commit_file(cfg, &path, &contents, &message))
            .await
    }

    /// Commits `contents` as `path` on the base branch and, with `push_plans`, pushes it on top
    /// of the remote's tip ([`publish::publish_file`]), all under one hold of the lock, so no
    /// other commit of this process lands in between. A failed push does not undo the commit:
    /// it is returned beside it, for the caller to report. With a `guard`, a copy of the file
    /// someone else changed on the remote is not replaced (see [`publish::Guard`]).
    pub async fn publish(
        &self,
        path: &Path,
        contents: Vec<u8>,
        message: &str,
        guard: Option<Guard>,
    ) -> Result<Published, RepoError> {
        let path = path.to_path_buf();
        let message = message.to_string();
        self.locked(move |cfg| match cfg.push_plans {
            true => publish::publish_file(cfg, &path, &contents, &message, guard.as_ref()),
            false => Ok(Published {
                commit: Some(base::commit_file(cfg, &path, &contents, &message)?),
                push_error: None,
                conflict: None,
            }),
        })
        .await
    }

    /// The remote's text of `path` on the base branch and the commit that last changed it;
    /// see [`publish::remote_file`].
    pub async fn remote_file(&self, path: &Path) -> Result<Option<(String, String)>, RepoError> {
        let path = path.to_path_buf();
        self.locked(move |cfg| publish::remote_file(cfg, &path))
            .await
    }

    /// With `push_plans`, pushes the plans the clone holds that the remote lacks (committed while
    /// it could not be reached); how many commits or files went out. See
    /// [`publish::push_pending`].
    pub async fn push_pending(&self) -> Result<usize, RepoError> {
        self.locked(|cfg| match cfg.push_plans {
            true => publish::push_pending(cfg),
            false => Ok(0),
        })
        .await
    }

    /// Deletes one of the bot's side branches, here and on the remote.
    pub async fn delete_branch(&self, branch: &BranchName) -> Result<(), RepoError> {
        let branch = branch.clone();
        self.locked(move |cfg| remote::delete_branch(cfg, &branch))
            .await
    }

    /// Pushes a run's branch to the remote; see [`remote::push_branch`].
    pub async fn push_branch(&self, branch: &BranchName) -> Result<(), RepoError> {
        let branch = branch.clone();
        self.locked(move |cfg| remote::push_branch(cfg, &branch))
            .await
    }

    /// Makes the work tree of a run on `branch` at `dir`, from the freshly fetched base branch
    /// and the freshly fetched branch itself, so a run (a resume, a follow-up) continues on top
    /// of whatever was pushed to its branch meanwhile, a reviewer's commits included. A failed
    /// fetch is logged and the local copy used.
    pub async fn prepare_worktree(
        &self,
        branch: &BranchName,
        dir: &Path,
    ) -> Result<Worktree, RepoError> {
        let branch = branch.clone();
        let dir = dir.to_path_buf();
        self.locked(move |cfg| {
            if let Err(err) = remote::fetch_base(cfg) {
                tracing::warn!(error = %err, "fetching the base branch failed; starting from the local one");
            }
            // Where the remote's branch was before this fetch: a force-push shows as a new tip
            // that does not descend from it.
            let before = worktree::tracking_tip(cfg, &branch);
            if let Err(err) = remote::fetch_branch(cfg, &branch) {
                tracing::warn!(error = %err, %branch, "fetching the run's branch failed; using what is here");
            }
            worktree::prepare_worktree(cfg, &branch, &dir, before)
        })
        .await
    }

    /// Commits everything in the work tree at `dir` but the files `keep_out` refuses (given
    /// each changed file's path and contents). See [`worktree::commit_all`].
    pub async fn commit_all(
        &self,
        dir: &Path,
        message: &str,
        keep_out: impl Fn(&str, &[u8]) -> bool + Send + 'static,
    ) -> Result<worktree::Committed, RepoError> {
        let dir = dir.to_path_buf();
        let message = message.to_string();
        self.locked(move |cfg| worktree::commit_all(cfg, &dir, &message, &keep_out))
            .await
    }

    /// The commit the work tree at `dir` is on.
    pub async fn head_id(&self, dir: &Path) -> Result<String, RepoError> {
        let dir = dir.to_path_buf();
        blocking(move || worktree::head_id(&dir)).await
    }

    /// The files changed in the work tree at `dir` since commit `from`, with lines added and
    /// removed.
    pub async fn diff_stat(
        &self,
        dir: &Path,
        from: &str,
    ) -> Result<Vec<(String, usize, usize)>, RepoError> {
        let dir = dir.to_path_buf();
        let from = from.to_string();
        blocking(move || worktree::diff_stat(&dir, &from)).await
    }

    /// Runs `f` on the configuration off the async runtime, holding the repository's lock.
    async fn locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RepoConfig) -> Result<T, RepoError> + Send + 'static,
    ) -> Result<T, RepoError> {
        let _guard = self.lock.lock().await;
        let cfg = self.cfg.clone();
        blocking(move || f(&cfg)).await
    }
}

/// The repositories of every target (`[repo]` and each `[[repos]]` entry), built once at
/// start-up. Targets whose path is the same share one [`Repo`], and so one lock.
#[derive(Clone)]
pub struct Repos {
    default: Repo,
    named: HashMap<String, Repo>,
}

impl Repos {
    pub fn from_config(config: &Config) -> Repos {
        let mut by_path: HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
        let mut repo = |cfg: &RepoConfig| {
            let key = cfg.path.canonicalize().unwrap_or_else(|_| cfg.path.clone());
            let mut cfg = cfg.clone();
            if cfg.push_url.is_none() {
                cfg.push_url = configured_url(&cfg);
            }
            Repo {
                cfg: Arc::new(cfg),
                lock: by_path.entry(key).or_default().clone(),
            }
        };
        let default = repo(&config.repo);
        let named = config
            .targets
            .iter()
            .map(|t| (t.name.clone(), repo(&t.repo)))
            .collect();
        Repos { default, named }
    }

    /// Every target's repository once (targets sharing a clone give one).
    pub fn all(&self) -> Vec<&Repo> {
        let mut all = vec![&self.default];
        for repo in self.named.values() {
            if !all.iter().any(|r| Arc::ptr_eq(&r.lock, &repo.lock)) {
                all.push(repo);
            }
        }
        all
    }

    /// The repository of target `name`; the default `[repo]` for `None` (or a name no longer
    /// configured, as [`Config::repo_of`] does).
    pub fn of(&self, name: Option<&str>) -> &Repo {
        name.and_then(|n| self.named.get(n))
            .unwrap_or(&self.default)
    }
}

/// The remote's push URL (or its URL) as the clone's git config has it now, read once at
/// start-up: pushes and fetches use it ever after, whatever the config says later.
fn configured_url(cfg: &RepoConfig) -> Option<String> {
    let repo = Repository::open(&cfg.path).ok()?;
    let remote = repo.find_remote(&cfg.remote).ok()?;
    remote
        .pushurl()
        .or_else(|| remote.url())
        .map(str::to_string)
}

/// Runs a blocking git call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RepoError::Git(format!("the git task stopped unexpectedly: {e}")))?
}
