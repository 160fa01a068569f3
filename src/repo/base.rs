//! The base branch: inspecting the repository, committing one file to the base branch without
//! touching the user's index or work tree, and reading a file back from a commit.
//!
//! Invariant: [`commit_file`] changes exactly one path. The new commit's tree is the base
//! branch's tip tree with that one file added or replaced, built in the object database; the
//! user's index and work tree never flow into it, whatever is staged or dirty. When the base
//! branch is checked out, the same file is mirrored into the work tree and its single index
//! entry, so `git status` stays as it was; any other branch or a detached HEAD is left alone.

use std::path::{Component, Path};

use git2::build::TreeUpdateBuilder;
use git2::{
    ErrorCode, FileMode, IndexEntry, IndexTime, ObjectType, Oid, Repository, Signature, Status,
    StatusOptions,
};

use crate::config::RepoConfig;

use super::remote::strip_userinfo;
use super::*;

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
    let (commit, blob, mode) = build_commit(&repo, cfg, &path, contents, message, &tip)?;
    let summary = message.lines().next().unwrap_or_default().to_string();

    // The status of the file must be read while HEAD still names the old tip.
    let checked_out = matches!(&head, Head::Branch(name) if *name == cfg.base_branch);
    let status = checked_out.then(|| repo.status_file(Path::new(&path)));

    let refname = format!("refs/heads/{}", cfg.base_branch);
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

/// A commit, not yet on any branch, whose tree is `parent`'s with `path` (relative to the
/// repository root, checked) holding `contents`. Returns it with the file's blob and mode.
pub(super) fn build_commit(
    repo: &Repository,
    cfg: &RepoConfig,
    path: &str,
    contents: &[u8],
    message: &str,
    parent: &git2::Commit<'_>,
) -> Result<(Oid, Oid, FileMode), RepoError> {
    let parent_tree = parent
        .tree()
        .map_err(|e| git_error(format!("reading the tree of {}", parent.id()), e))?;

    let mode = match parent_tree.get_path(Path::new(&path)) {
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
        .upsert(path, blob, mode)
        .create_updated(repo, &parent_tree)
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
        .commit(None, &signature, &signature, &message, &tree, &[parent])
        .map_err(|e| git_error(format!("writing the commit of {path}"), e))?;

    Ok((commit, blob, mode))
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
    text_at(&repo, &found, &path)
}

/// The text of `path` (as [`tree_path`] spells it) in `commit`; `None` when there is no file
/// there.
pub(super) fn text_at(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    path: &str,
) -> Result<Option<String>, RepoError> {
    let id = commit.id();
    let tree = commit
        .tree()
        .map_err(|e| git_error(format!("reading the tree of {id}"), e))?;
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_error(format!("looking up {path} in {id}"), e)),
    };
    let object = entry
        .to_object(repo)
        .map_err(|e| git_error(format!("reading {path} at {id}"), e))?;
    let Ok(blob) = object.into_blob() else {
        return Ok(None);
    };
    String::from_utf8(blob.content().to_vec())
        .map(Some)
        .map_err(|_| RepoError::Git(format!("{path} at {id} is not UTF-8 text")))
}

pub(super) fn base_tip<'r>(
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
pub(super) fn tree_path(cfg: &RepoConfig, rel_path: &Path) -> Result<String, RepoError> {
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
