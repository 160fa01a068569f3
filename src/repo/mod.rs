//! The target repository: inspecting it, committing a plan file to the base branch, pushing
//! that branch, and reading a plan back from a commit.
//!
//! This is the only module that uses git2. Every function is synchronous and opens the
//! repository afresh, so callers run them in `spawn_blocking` and hold nothing between calls.
//!
//! Invariant: [`commit_file`] changes exactly one path. The new commit's tree is the base
//! branch's tip tree with that one file added or replaced, built in the object database; the
//! user's index and work tree never flow into it, whatever is staged or dirty. When the base
//! branch is checked out, the same file is mirrored into the work tree and its single index
//! entry, so `git status` stays as it was; any other branch or a detached HEAD is left alone.
//!
//! Invariant: the GitHub token is handed to libgit2 only as the password of an HTTPS push and
//! never appears in a log line or an error message; remote URLs are shown without userinfo.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use git2::build::TreeUpdateBuilder;
use git2::{
    Cred, CredentialType, ErrorCode, FileMode, IndexEntry, IndexTime, ObjectType, Oid, PushOptions,
    RemoteCallbacks, Repository, Signature, Status, StatusOptions,
};

use crate::config::RepoConfig;

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

/// The state of the target repository, for `featurebot check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoStatus {
    /// `branch main`, `detached at 1a2b3c4` or `unborn branch main`.
    pub head: String,
    /// The full hex id of the base branch's tip.
    pub base_commit: String,
    /// The configured remote's URL without userinfo, or `None` when there is no such remote.
    pub remote_url: Option<String>,
    /// Whether tracked files differ between HEAD, the index and the work tree. Untracked files
    /// do not count, as for `git describe --dirty`.
    pub work_tree_dirty: bool,
}

/// Describes the repository at `cfg.path`: where HEAD is, the base branch's tip, the remote.
pub fn inspect(cfg: &RepoConfig) -> Result<RepoStatus, RepoError> {
    let repo = open(cfg)?;
    let head = head(&repo)?;
    let tip = base_tip(&repo, cfg, &head)?;
    let remote_url = match repo.find_remote(&cfg.remote) {
        Ok(remote) => remote.url().map(strip_userinfo),
        Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => None,
        Err(e) => return Err(git_error(format!("reading remote {}", cfg.remote), e)),
    };
    let mut options = StatusOptions::new();
    options.include_untracked(false).include_ignored(false);
    let work_tree_dirty = !repo
        .statuses(Some(&mut options))
        .map_err(|e| git_error("reading the status of the work tree", e))?
        .is_empty();
    Ok(RepoStatus {
        head: head.to_string(),
        base_commit: tip.id().to_string(),
        remote_url,
        work_tree_dirty,
    })
}

/// Commits `contents` as `rel_path` on the base branch and returns the new commit's hex id.
///
/// The commit's parent is the branch's current tip and its tree is that tip's tree with only
/// this file changed; author and committer are the configured bot identity. The branch moves
/// by compare-and-swap, so a commit that lands concurrently is never overwritten: this call
/// fails instead and can simply be retried.
///
/// Every call makes a new commit, even when the file already has these contents: each plan
/// version then has its own commit to point at, and the history shows every time the bot wrote.
///
/// When HEAD is the base branch, the file is also written into the work tree and its index
/// entry updated, unless the user has their own staged or unstaged changes to that very file,
/// which are kept (and logged). An existing `index.lock` refuses the commit in every case,
/// since another git process may be about to move the branch.
pub fn commit_file(
    cfg: &RepoConfig,
    rel_path: &Path,
    contents: &[u8],
    message: &str,
) -> Result<String, RepoError> {
    let path = tree_path(cfg, rel_path)?;
    let repo = open(cfg)?;
    let index_lock = repo.path().join("index.lock");
    if index_lock.exists() {
        return Err(RepoError::Locked { path: index_lock });
    }
    let head = head(&repo)?;
    let tip = base_tip(&repo, cfg, &head)?;
    let tip_tree = tip
        .tree()
        .map_err(|e| git_error(format!("reading the tree of {}", tip.id()), e))?;

    let mode = match tip_tree.get_path(Path::new(&path)) {
        Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
            return Err(RepoError::Git(format!(
                "{path} is a folder on {}; a plan file cannot replace it",
                cfg.base_branch
            )));
        }
        Ok(entry) if entry.filemode() == i32::from(FileMode::BlobExecutable) => {
            FileMode::BlobExecutable
        }
        _ => FileMode::Blob,
    };
    let blob = repo
        .blob(contents)
        .map_err(|e| git_error(format!("storing the contents of {path}"), e))?;
    let tree_id = TreeUpdateBuilder::new()
        .upsert(path.as_str(), blob, mode)
        .create_updated(&repo, &tip_tree)
        .map_err(|e| git_error(format!("building a tree with {path}"), e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("reading the new tree", e))?;
    let signature = Signature::now(&cfg.author_name, &cfg.author_email)
        .map_err(|e| git_error("making the commit signature", e))?;
    let mut message = message.to_string();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let commit = repo
        .commit(None, &signature, &signature, &message, &tree, &[&tip])
        .map_err(|e| git_error(format!("writing the commit of {path}"), e))?;

    // The status of the file must be read while HEAD still names the old tip.
    let checked_out = matches!(&head, Head::Branch(name) if *name == cfg.base_branch);
    let status = checked_out.then(|| repo.status_file(Path::new(&path)));

    let refname = format!("refs/heads/{}", cfg.base_branch);
    let summary = message.lines().next().unwrap_or_default();
    repo.reference_matching(
        &refname,
        commit,
        true,
        tip.id(),
        &format!("commit: {summary}"),
    )
    .map_err(|e| match e.code() {
        ErrorCode::Locked => RepoError::Locked {
            path: repo.commondir().join(format!("{refname}.lock")),
        },
        ErrorCode::Modified => RepoError::Git(format!(
            "{} moved while the plan was being committed (another commit landed first); nothing was changed, try again",
            cfg.base_branch
        )),
        _ => git_error(format!("moving {refname} to {commit}"), e),
    })?;
    tracing::info!(commit = %commit, path = %path, branch = %cfg.base_branch, "committed plan file");

    if let Some(status) = status {
        // The commit is made and the branch moved; a failure to mirror it into the checkout
        // leaves the user a staged difference to clean up, but must not lose the commit id.
        if let Err(error) = update_checkout(&repo, &path, blob, mode, contents, status) {
            tracing::warn!(path = %path, error = %error, "could not mirror the plan into the checked-out work tree");
        }
    }
    Ok(commit.to_string())
}

/// Pushes the base branch to the configured remote, without force.
///
/// HTTPS remotes get `x-access-token` and the GitHub token as credentials when a token is
/// configured; ssh remotes get the keys of the ssh agent (`SSH_AUTH_SOCK`); local paths and
/// `file://` URLs need none.
pub fn push_base(cfg: &RepoConfig) -> Result<(), RepoError> {
    let repo = open(cfg)?;
    let head = head(&repo)?;
    base_tip(&repo, cfg, &head)?;
    push_branch_in(&repo, cfg, &cfg.base_branch)
}

/// Pushes `refs/heads/<branch>` to the configured remote (an agent run's branch).
pub fn push_branch(cfg: &RepoConfig, branch: &str) -> Result<(), RepoError> {
    let repo = open(cfg)?;
    push_branch_in(&repo, cfg, branch)
}

fn push_branch_in(repo: &Repository, cfg: &RepoConfig, branch: &str) -> Result<(), RepoError> {
    let remote_error = |message: String| RepoError::Remote {
        remote: cfg.remote.clone(),
        message,
    };
    let mut remote = repo.find_remote(&cfg.remote).map_err(|e| match e.code() {
        ErrorCode::NotFound | ErrorCode::InvalidSpec => remote_error(format!(
            "there is no such remote; add it with git remote add {} URL, or set repo.remote",
            cfg.remote
        )),
        _ => remote_error(e.message().to_string()),
    })?;
    let url = remote
        .pushurl()
        .or_else(|| remote.url())
        .unwrap_or_default()
        .to_string();
    let shown = strip_userinfo(&url);
    let ssh = is_ssh(&url);
    let token = cfg
        .github_token
        .as_ref()
        .map(|t| t.expose())
        .filter(|t| !t.is_empty());
    let scrub = scrubber(&url, &shown, token);

    let credentials_refused = Cell::new(false);
    let asked = Cell::new(0u32);
    let rejections = RefCell::new(Vec::<(String, String)>::new());
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, username, allowed| {
        let answer = credentials(token, &asked, username, allowed);
        if answer.is_err() {
            credentials_refused.set(true);
        }
        answer
    });
    callbacks.push_update_reference(|reference, status| {
        if let Some(status) = status {
            rejections
                .borrow_mut()
                .push((reference.to_string(), status.to_string()));
        }
        Ok(())
    });
    let mut proxy = git2::ProxyOptions::new();
    proxy.auto();
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks).proxy_options(proxy);

    let refname = format!("refs/heads/{branch}");
    let moved = || {
        format!(
            "the remote branch has commits that the local {branch} does not have; pull or rebase {branch} onto {remote}/{branch}, then push again",
            remote = cfg.remote
        )
    };
    let pushed = remote.push(&[format!("{refname}:{refname}")], Some(&mut options));
    if let Err(e) = pushed {
        return Err(if e.code() == ErrorCode::NotFastForward {
            RepoError::PushRejected {
                remote: cfg.remote.clone(),
                reference: refname,
                message: moved(),
            }
        } else if credentials_refused.get() && ssh {
            remote_error(format!(
                "{shown} refused the ssh agent's keys; load a key that may push (ssh-add) in the agent of featurebot's user, or use the https URL with GITHUB_TOKEN"
            ))
        } else if credentials_refused.get() && token.is_some() {
            remote_error(format!(
                "{shown} refused the GitHub token; check that GITHUB_TOKEN is valid and may push to the repository"
            ))
        } else if credentials_refused.get() {
            remote_error(format!(
                "{shown} asks for credentials; set GITHUB_TOKEN to a token that may push to the repository"
            ))
        } else {
            remote_error(format!("pushing to {shown} failed: {}", scrub(e.message())))
        });
    }
    let rejection = rejections.borrow_mut().pop();
    if let Some((reference, status)) = rejection {
        let message = if status.contains("non-fast-forward") || status.contains("fetch first") {
            moved()
        } else {
            scrub(status.trim_end_matches([':', ' ']))
        };
        return Err(RepoError::PushRejected {
            remote: cfg.remote.clone(),
            reference,
            message,
        });
    }
    tracing::info!(remote = %cfg.remote, %branch, "pushed");
    Ok(())
}

/// The contents of `rel_path` at `commit` (a full or abbreviated hex id), or `None` when the
/// commit has no file there.
pub fn read_file(
    cfg: &RepoConfig,
    commit: &str,
    rel_path: &Path,
) -> Result<Option<String>, RepoError> {
    let path = tree_path(cfg, rel_path)?;
    let repo = open(cfg)?;
    if commit.len() < 4 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(RepoError::Git(format!("{commit:?} is not a commit id")));
    }
    let found = repo
        .revparse_single(commit)
        .and_then(|object| object.peel_to_commit())
        .map_err(|e| git_error(format!("finding commit {commit}"), e))?;
    let tree = found
        .tree()
        .map_err(|e| git_error(format!("reading the tree of {commit}"), e))?;
    let entry = match tree.get_path(Path::new(&path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_error(format!("looking up {path} in {commit}"), e)),
    };
    let object = entry
        .to_object(&repo)
        .map_err(|e| git_error(format!("reading {path} at {commit}"), e))?;
    let Ok(blob) = object.into_blob() else {
        return Ok(None);
    };
    String::from_utf8(blob.content().to_vec())
        .map(Some)
        .map_err(|_| RepoError::Git(format!("{path} at {commit} is not UTF-8 text")))
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

/// A git work tree of the target repository, checked out on an agent run's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    pub path: PathBuf,
    pub branch: String,
    /// The commit the branch started from: the base branch's tip when it was created, its tip
    /// when it existed.
    pub base_commit: String,
    /// False when an existing branch, local or pushed, was used (a resumed run).
    pub created: bool,
}

/// Updates `<remote>/<base_branch>` from the remote, so a new run starts from the latest base.
/// Returns `Ok(false)` when there is no such remote (a purely local repository).
pub fn fetch_base(cfg: &RepoConfig) -> Result<bool, RepoError> {
    fetch(cfg, &cfg.base_branch)
}

/// Updates `<remote>/<branch>` from the remote, so a run continues from what an earlier run
/// of the branch pushed (on another machine, or on GitHub Actions). Returns whether the remote
/// has the branch; `Ok(false)` too when there is no such remote.
pub fn fetch_branch(cfg: &RepoConfig, branch: &str) -> Result<bool, RepoError> {
    if !crate::config::is_branch_name(branch) {
        return Err(RepoError::Git(format!(
            "{branch:?} is not a valid branch name"
        )));
    }
    if !fetch(cfg, branch)? {
        return Ok(false);
    }
    let repo = open(cfg)?;
    let tracking = format!("refs/remotes/{}/{branch}", cfg.remote);
    let found = repo.find_reference(&tracking).is_ok();
    Ok(found)
}

/// Fetches `branch` into its remote-tracking ref; `Ok(false)` when there is no such remote. A
/// branch the remote lacks fetches nothing and is no error.
fn fetch(cfg: &RepoConfig, branch: &str) -> Result<bool, RepoError> {
    let repo = open(cfg)?;
    let mut remote = match repo.find_remote(&cfg.remote) {
        Ok(remote) => remote,
        Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => {
            return Ok(false)
        }
        Err(e) => return Err(git_error(format!("reading remote {}", cfg.remote), e)),
    };
    let url = remote.url().unwrap_or_default().to_string();
    let shown = strip_userinfo(&url);
    let token = cfg
        .github_token
        .as_ref()
        .map(|t| t.expose())
        .filter(|t| !t.is_empty());
    let scrub = scrubber(&url, &shown, token);
    let asked = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, username, allowed| credentials(token, &asked, username, allowed));
    // Like a push: through the proxy the environment names, if any.
    let mut proxy = git2::ProxyOptions::new();
    proxy.auto();
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks).proxy_options(proxy);
    let refspec = format!(
        "+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
        remote = cfg.remote
    );
    remote
        .fetch(&[refspec], Some(&mut options), None)
        .map_err(|e| RepoError::Remote {
            remote: cfg.remote.clone(),
            message: format!(
                "fetching {branch} from {shown} failed: {}",
                scrub(e.message())
            ),
        })?;
    Ok(true)
}

/// Creates (or, for a resumed run, reuses) a work tree at `dir` on branch `branch`. An
/// existing local branch is used as it is; a branch that exists only as `<remote>/<branch>`
/// (a fresh clone, such as a GitHub Actions checkout, of a branch an earlier run pushed) gets
/// its local branch from there; otherwise a new branch starts from the base branch:
/// `<remote>/<base>` when it was fetched, the local base otherwise. The bot's own checkout is
/// never touched.
pub fn prepare_worktree(cfg: &RepoConfig, branch: &str, dir: &Path) -> Result<Worktree, RepoError> {
    if !crate::config::is_branch_name(branch) {
        return Err(RepoError::Git(format!(
            "{branch:?} is not a valid branch name"
        )));
    }
    let repo = open(cfg)?;
    let local = repo.find_branch(branch, git2::BranchType::Local).ok();
    let pushed = repo
        .find_reference(&format!("refs/remotes/{}/{branch}", cfg.remote))
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let (branch_ref, base_commit, created) = match (local, pushed) {
        (Some(existing), _) => {
            let commit = existing
                .get()
                .peel_to_commit()
                .map_err(|e| git_error(format!("reading branch {branch}"), e))?;
            (existing.into_reference(), commit.id().to_string(), false)
        }
        (None, Some(tip)) => {
            let new = repo.branch(branch, &tip, false).map_err(|e| {
                git_error(
                    format!("creating branch {branch} from {}/{branch}", cfg.remote),
                    e,
                )
            })?;
            (new.into_reference(), tip.id().to_string(), false)
        }
        (None, None) => {
            // The newer of the local base and the fetched one: local when it is ahead (it holds
            // plans not pushed yet), the remote's when the local one is behind.
            let tracking = format!("refs/remotes/{}/{}", cfg.remote, cfg.base_branch);
            let head = head(&repo)?;
            let local = base_tip(&repo, cfg, &head).ok().map(|c| c.id());
            let remote = repo
                .find_reference(&tracking)
                .ok()
                .and_then(|r| r.peel_to_commit().ok())
                .map(|c| c.id());
            let start_id = match (local, remote) {
                (Some(l), Some(r)) if l == r || repo.graph_descendant_of(l, r).unwrap_or(false) => {
                    l
                }
                (_, Some(r)) => r,
                (Some(l), None) => l,
                (None, None) => base_tip(&repo, cfg, &head)?.id(),
            };
            let start = repo
                .find_commit(start_id)
                .map_err(|e| git_error("reading the base commit", e))?;
            let commit = start;
            let new = repo
                .branch(branch, &commit, false)
                .map_err(|e| git_error(format!("creating branch {branch}"), e))?;
            (new.into_reference(), commit.id().to_string(), true)
        }
    };
    if dir.join(".git").exists() {
        let existing = Repository::open(dir).map_err(|_| RepoError::NotARepository {
            path: dir.to_path_buf(),
        })?;
        let on = existing
            .head()
            .ok()
            .and_then(|h| h.shorthand().map(str::to_string));
        if on.as_deref() == Some(branch) {
            return Ok(Worktree {
                path: dir.to_path_buf(),
                branch: branch.to_string(),
                base_commit,
                created: false,
            });
        }
        return Err(RepoError::Git(format!(
            "{} exists but is not on branch {branch}; remove it or set agent.worktrees_dir",
            dir.display()
        )));
    }
    let name: String = branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if let Ok(stale) = repo.find_worktree(&name) {
        // Its folder is gone (checked above): forget it so the name can be used again.
        let mut prune = git2::WorktreePruneOptions::new();
        prune.valid(true).working_tree(true);
        stale
            .prune(Some(&mut prune))
            .map_err(|e| git_error(format!("pruning the stale work tree {name}"), e))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RepoError::Git(format!("creating {}: {e}", parent.display())))?;
    }
    let mut options = git2::WorktreeAddOptions::new();
    options.reference(Some(&branch_ref));
    repo.worktree(&name, dir, Some(&options))
        .map_err(|e| git_error(format!("creating the work tree at {}", dir.display()), e))?;
    Ok(Worktree {
        path: dir.to_path_buf(),
        branch: branch.to_string(),
        base_commit,
        created,
    })
}

/// Commits every change in the work tree at `dir` (new, changed and deleted files, except
/// ignored ones) on its branch. Returns `None` when nothing changed.
pub fn commit_all(
    cfg: &RepoConfig,
    dir: &Path,
    message: &str,
) -> Result<Option<String>, RepoError> {
    let repo = Repository::open(dir).map_err(|_| RepoError::NotARepository {
        path: dir.to_path_buf(),
    })?;
    let mut index = repo
        .index()
        .map_err(|e| git_error("reading the work tree's index", e))?;
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .map_err(|e| git_error("staging changes", e))?;
    index
        .update_all(["*"].iter(), None)
        .map_err(|e| git_error("staging deletions", e))?;
    index
        .write()
        .map_err(|e| git_error("writing the index", e))?;
    let tree_id = index
        .write_tree()
        .map_err(|e| git_error("writing the tree", e))?;
    let parent = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading the work tree's HEAD", e))?;
    if parent.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("reading the tree", e))?;
    let signature = Signature::now(&cfg.author_name, &cfg.author_email)
        .map_err(|e| git_error("making the signature", e))?;
    let id = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &[&parent],
        )
        .map_err(|e| git_error("committing", e))?;
    Ok(Some(id.to_string()))
}

/// The files git sees in the work tree at `dir`: tracked ones and untracked ones that are not
/// ignored, as relative paths, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<String>, RepoError> {
    let repo = Repository::open(dir).map_err(|_| RepoError::NotARepository {
        path: dir.to_path_buf(),
    })?;
    let index = repo
        .index()
        .map_err(|e| git_error("reading the index", e))?;
    let mut files: Vec<String> = index
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .filter(|p| dir.join(p).is_file())
        .collect();
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| git_error("reading the status", e))?;
    for entry in statuses.iter() {
        if entry.status().contains(Status::WT_NEW) {
            if let Some(path) = entry.path() {
                files.push(path.to_string());
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The hex id of HEAD in the work tree at `dir`.
pub fn head_id(dir: &Path) -> Result<String, RepoError> {
    let repo = Repository::open(dir).map_err(|_| RepoError::NotARepository {
        path: dir.to_path_buf(),
    })?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading HEAD", e))?;
    Ok(head.id().to_string())
}

/// The files changed between `from` and the work tree's HEAD, with `+added -removed` lines.
pub fn diff_stat(dir: &Path, from: &str) -> Result<Vec<(String, usize, usize)>, RepoError> {
    let repo = Repository::open(dir).map_err(|_| RepoError::NotARepository {
        path: dir.to_path_buf(),
    })?;
    let old = repo
        .revparse_single(from)
        .and_then(|o| o.peel_to_tree())
        .map_err(|e| git_error(format!("reading {from}"), e))?;
    let new = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .map_err(|e| git_error("reading HEAD", e))?;
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(|e| git_error("diffing", e))?;
    let mut out = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (added, removed) = git2::Patch::from_diff(&diff, i)
            .ok()
            .flatten()
            .and_then(|p| p.line_stats().ok())
            .map(|(_, a, r)| (a, r))
            .unwrap_or((0, 0));
        out.push((path, added, removed));
    }
    Ok(out)
}

/// A unified diff (3 lines of context) from `old` to `new`, both shown as `path`; empty when
/// they are equal. Computed in memory: no repository is involved.
pub fn unified_diff(old: &str, new: &str, path: &str) -> Result<String, RepoError> {
    let mut options = git2::DiffOptions::new();
    options.context_lines(3);
    let mut patch = git2::Patch::from_buffers(
        old.as_bytes(),
        Some(Path::new(path)),
        new.as_bytes(),
        Some(Path::new(path)),
        Some(&mut options),
    )
    .map_err(|e| git_error("diffing two plan versions", e))?;
    let buf = patch
        .to_buf()
        .map_err(|e| git_error("formatting the diff", e))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    // Keep the `---`/`+++` headers and hunks; drop git's `diff --git` and index lines.
    Ok(text
        .lines()
        .skip_while(|l| !l.starts_with("--- "))
        .map(|l| format!("{l}\n"))
        .collect())
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

fn base_tip<'r>(
    repo: &'r Repository,
    cfg: &RepoConfig,
    head: &Head,
) -> Result<git2::Commit<'r>, RepoError> {
    let refname = format!("refs/heads/{}", cfg.base_branch);
    match repo.find_reference(&refname) {
        Ok(reference) => reference
            .peel_to_commit()
            .map_err(|e| git_error(format!("reading the tip of {}", cfg.base_branch), e)),
        Err(e) if e.code() == ErrorCode::NotFound => Err(RepoError::MissingBaseBranch {
            branch: cfg.base_branch.clone(),
            head: head.to_string(),
        }),
        Err(e) => Err(git_error(format!("reading {refname}"), e)),
    }
}

/// Checks that `rel_path` lies strictly inside the tasks folder and spells it the way git
/// trees and the index do, with `/` between components.
fn tree_path(cfg: &RepoConfig, rel_path: &Path) -> Result<String, RepoError> {
    let outside = || RepoError::OutsideTasksDir {
        path: rel_path.to_path_buf(),
    };
    let normal = |path: &Path| -> Result<Vec<String>, RepoError> {
        path.components()
            .map(|component| match component {
                Component::Normal(part) => {
                    let part = part.to_str().ok_or_else(|| {
                        RepoError::Git(format!(
                            "the plan path {} is not valid UTF-8",
                            rel_path.display()
                        ))
                    })?;
                    if part.eq_ignore_ascii_case(".git") {
                        Err(outside())
                    } else {
                        Ok(part.to_string())
                    }
                }
                _ => Err(outside()),
            })
            .collect()
    };
    let parts = normal(rel_path)?;
    let tasks_dir = normal(&cfg.tasks_dir)?;
    if parts.len() <= tasks_dir.len() || !parts.starts_with(&tasks_dir) {
        return Err(outside());
    }
    Ok(parts.join("/"))
}

/// Mirrors the committed file into the checked-out work tree and index, leaving alone
/// whatever the user changed in that very file themselves. `status` is the file's status
/// against the old tip, read before the branch moved.
fn update_checkout(
    repo: &Repository,
    path: &str,
    blob: Oid,
    mode: FileMode,
    contents: &[u8],
    status: Result<Status, git2::Error>,
) -> Result<(), RepoError> {
    let status = match status {
        Ok(status) => status,
        Err(e) if e.code() == ErrorCode::NotFound => Status::CURRENT,
        Err(e) => return Err(git_error(format!("reading the status of {path}"), e)),
    };
    if status.intersects(
        Status::INDEX_NEW
            | Status::INDEX_MODIFIED
            | Status::INDEX_DELETED
            | Status::INDEX_RENAMED
            | Status::INDEX_TYPECHANGE
            | Status::CONFLICTED,
    ) {
        tracing::warn!(path = %path, "kept the user's staged version of the plan file; git status shows it as a change");
        return Ok(());
    }
    let workdir = repo
        .workdir()
        .ok_or_else(|| RepoError::Git("the repository has no work tree".to_string()))?;
    let file = workdir.join(path);
    let exists = file.symlink_metadata().is_ok();
    let user_changed = status.intersects(
        Status::WT_NEW
            | Status::WT_MODIFIED
            | Status::WT_DELETED
            | Status::WT_RENAMED
            | Status::WT_TYPECHANGE,
    ) || (status.contains(Status::IGNORED) && exists);
    // Like git's checkout, never write through a symbolic link to a folder.
    let through_link = Path::new(path)
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .any(|p| {
            workdir
                .join(p)
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        });

    let mut index = repo
        .index()
        .map_err(|e| git_error("opening the index", e))?;
    index
        .read(false)
        .map_err(|e| git_error("reading the index", e))?;
    let mut entry = IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: u32::from(mode),
        uid: 0,
        gid: 0,
        file_size: 0,
        id: blob,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    };
    if user_changed || through_link {
        // An entry without stat data makes git compare the file's contents, so the user's
        // version shows as an unstaged change against the new commit.
        tracing::warn!(path = %path, "kept the user's version of the plan file in the work tree");
    } else {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RepoError::Git(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::write(&file, contents)
            .map_err(|e| RepoError::Git(format!("writing {}: {e}", file.display())))?;
        // Adding the file from disk records its stat data, so git sees it as unchanged
        // without reading it again.
        index
            .add_path(Path::new(path))
            .map_err(|e| git_error(format!("adding {path} to the index"), e))?;
        if let Some(added) = index.get_path(Path::new(path), 0) {
            if added.id == blob && added.mode == entry.mode {
                entry = added;
            }
        }
    }
    index
        .add(&entry)
        .map_err(|e| git_error(format!("updating {path} in the index"), e))?;
    index.write().map_err(|e| match e.code() {
        ErrorCode::Locked => RepoError::Locked {
            path: repo.path().join("index.lock"),
        },
        _ => git_error("writing the index", e),
    })
}

fn git_error(context: impl fmt::Display, error: git2::Error) -> RepoError {
    RepoError::Git(format!("{context}: {}", error.message()))
}

/// Drops the userinfo (`user:password@`) of a URL with a scheme. scp-like addresses
/// (`git@host:owner/repo`) keep their user name, which is not a secret.
/// What a remote's error message may show: the address without its user info, and no token.
fn scrubber<'a>(
    url: &'a str,
    shown: &'a str,
    token: Option<&'a str>,
) -> impl Fn(&str) -> String + 'a {
    move |message: &str| {
        let message = if url.is_empty() {
            message.to_string()
        } else {
            message.replace(url, shown)
        };
        match token {
            Some(token) => message.replace(token, "***"),
            None => message,
        }
    }
}

fn strip_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Answers libgit2's request for credentials: the ssh agent's keys for ssh remotes, the GitHub
/// token (as `x-access-token`) for HTTPS ones. Each kind is offered once: libgit2 asks again
/// after a refusal, and answering again would loop.
fn credentials(
    token: Option<&str>,
    asked: &Cell<u32>,
    username: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let user = username.unwrap_or("git");
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(user);
    }
    asked.set(asked.get() + 1);
    if asked.get() > 1 {
        return Err(git2::Error::from_str(
            "the offered credentials were refused",
        ));
    }
    if allowed.contains(CredentialType::SSH_KEY) {
        return Cred::ssh_key_from_agent(user);
    }
    match token {
        Some(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
            Cred::userpass_plaintext("x-access-token", token)
        }
        _ => Err(git2::Error::from_str("no usable credentials")),
    }
}

/// Whether git would reach `url` over ssh: an `ssh://` URL or the scp-like `host:path`.
fn is_ssh(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.contains("ssh");
    }
    // A colon before the first slash, after more than one character (not a drive letter).
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|slash| colon < slash),
        (None, _) => false,
    }
}
