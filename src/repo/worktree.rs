//! An agent run's work tree: a git worktree of the target repository on the run's branch,
//! committing everything in it after a step, listing its files, and the diffs shown to people.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature, Status, StatusOptions};

use crate::config::RepoConfig;

use super::base::base_tip;
use super::*;
use crate::model::BranchName;

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
    /// How the branch took in commits pushed to it by others, when it had to.
    pub caught_up: Option<CaughtUp>,
}

/// How a run's branch took in what others pushed to it (a reviewer's commits) before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaughtUp {
    /// Only the remote had moved: the branch is now at its tip, `to`.
    FastForward { to: String },
    /// Both had moved: the remote's tip `theirs` is merged into the branch, as `merge`.
    Merged { theirs: String, merge: String },
    /// Someone rewrote the remote's branch (a force-push) and the branch had nothing of its
    /// own beyond what was pushed: it follows the rewrite, to `to`.
    Rewritten { to: String },
}

/// The commit `<remote>/<branch>` points at here, if any.
pub fn tracking_tip(cfg: &RepoConfig, branch: &BranchName) -> Option<git2::Oid> {
    let repo = open(cfg).ok()?;
    repo.refname_to_id(&format!("refs/remotes/{}/{}", cfg.remote, branch.as_str()))
        .ok()
}

/// Creates (or, for a resumed run, reuses) a work tree at `dir` on branch `branch`. An
/// existing local branch is used as it is; a branch that exists only as `<remote>/<branch>`
/// (a fresh clone, such as a GitHub Actions checkout, of a branch an earlier run pushed) gets
/// its local branch from there; otherwise a new branch starts from the base branch:
/// `<remote>/<base>` when it was fetched, the local base otherwise. The bot's own checkout is
/// never touched.
pub fn prepare_worktree(
    cfg: &RepoConfig,
    branch: &BranchName,
    dir: &Path,
    before: Option<git2::Oid>,
) -> Result<Worktree, RepoError> {
    let branch = branch.as_str();
    let repo = open(cfg)?;
    let local = repo.find_branch(branch, git2::BranchType::Local).ok();
    let pushed = repo
        .find_reference(&format!("refs/remotes/{}/{branch}", cfg.remote))
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    // How the branch moved on to the remote's commits here, which the work tree must follow.
    let mut caught_up = None;
    let (branch_ref, base_commit, created) = match (local, pushed) {
        (Some(existing), pushed) => {
            let commit = existing
                .get()
                .peel_to_commit()
                .map_err(|e| git_error(format!("reading branch {branch}"), e))?;
            // Others' commits on the pushed branch (a reviewer's) come first: the run goes on
            // on top of them.
            if let Some(remote) = pushed.filter(|r| r.id() != commit.id()) {
                caught_up = catch_up_with(&repo, cfg, branch, &commit, &remote, before)?;
            }
            let tip = match &caught_up {
                Some(CaughtUp::FastForward { to } | CaughtUp::Rewritten { to }) => to.clone(),
                Some(CaughtUp::Merged { merge, .. }) => merge.clone(),
                None => commit.id().to_string(),
            };
            let reference = repo
                .find_reference(&format!("refs/heads/{branch}"))
                .map_err(|e| git_error(format!("reading branch {branch}"), e))?;
            (reference, tip, false)
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
            // Both moved (plans committed here, a merge there): the remote's tip, with the
            // plan files only this clone has, so the run's branch carries its plan.
            let commit = match local.filter(|l| *l != start_id) {
                Some(l) => {
                    let local = repo
                        .find_commit(l)
                        .map_err(|e| git_error("reading the base commit", e))?;
                    super::publish::carry_unpushed(&repo, cfg, &local, &start)?.unwrap_or(start)
                }
                None => start,
            };
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
            // The branch may have moved on to the remote's commits: the work tree follows. It
            // holds only the run's own work, committed after every step.
            if caught_up.is_some() {
                let tip = git2::Oid::from_str(&base_commit)
                    .map_err(|e| git_error("reading the branch's tip", e))?;
                let object = existing
                    .find_object(tip, None)
                    .map_err(|e| git_error("reading the branch's tip in the work tree", e))?;
                existing
                    .reset(&object, git2::ResetType::Hard, None)
                    .map_err(|e| git_error(format!("moving {} to {tip}", dir.display()), e))?;
            }
            return Ok(Worktree {
                path: dir.to_path_buf(),
                branch: branch.to_string(),
                base_commit,
                created: false,
                caught_up,
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
        caught_up,
    })
}

/// Brings the local `branch` (at `local`) up to the pushed one (at `remote`): a fast-forward
/// when the remote is ahead, nothing when the local branch is ahead (its commits are pushed at
/// the end), a merge commit when both moved, so that nobody's commit is lost and no push has to
/// be forced. A merge that conflicts is refused with what to do. Returns the branch's new tip.
fn catch_up_with(
    repo: &Repository,
    cfg: &RepoConfig,
    branch: &str,
    local: &git2::Commit<'_>,
    remote: &git2::Commit<'_>,
    before: Option<git2::Oid>,
) -> Result<Option<CaughtUp>, RepoError> {
    let descends = |a: git2::Oid, b: git2::Oid| repo.graph_descendant_of(a, b).unwrap_or(false);
    let refname = format!("refs/heads/{branch}");
    // A force-push: the remote's new tip does not build on what it had before.
    let rewritten = before.filter(|b| *b != remote.id() && !descends(remote.id(), *b));
    if let Some(before) = rewritten {
        if local.id() != before && !descends(before, local.id()) {
            return Err(RepoError::Git(format!(
                "{branch} was force-pushed on {remote} (it no longer has {}, which it had), and the local branch has commits that were never pushed; featurebot does not merge a rewrite back: keep what you want on {remote}/{branch}, delete the local branch (git branch -D {branch}), then resume",
                short(&before.to_string()),
                remote = cfg.remote
            )));
        }
        tracing::info!(%branch, commit = %remote.id(), "the pushed branch was rewritten; following it");
        repo.reference_matching(
            &refname,
            remote.id(),
            true,
            local.id(),
            "featurebot: follow a rewrite",
        )
        .map_err(|e| git_error(format!("moving {refname}"), e))?;
        return Ok(Some(CaughtUp::Rewritten {
            to: remote.id().to_string(),
        }));
    }
    if descends(local.id(), remote.id()) {
        return Ok(None);
    }
    let (tip, caught_up) = if descends(remote.id(), local.id()) {
        tracing::info!(%branch, commit = %remote.id(), "the pushed branch has new commits; continuing on top of them");
        let to = remote.id().to_string();
        (remote.id(), CaughtUp::FastForward { to })
    } else {
        let mut index = repo
            .merge_commits(local, remote, None)
            .map_err(|e| git_error(format!("merging {}/{branch} into {branch}", cfg.remote), e))?;
        if index.has_conflicts() {
            return Err(RepoError::Git(format!(
                "{branch} and {remote}/{branch} both changed the same lines; merge {remote}/{branch} into {branch} by hand (or drop the local branch to start from the pushed one), then resume",
                remote = cfg.remote
            )));
        }
        let tree_id = index
            .write_tree_to(repo)
            .map_err(|e| git_error("writing the merged tree", e))?;
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| git_error("reading the merged tree", e))?;
        let signature = Signature::now(&cfg.author_name, &cfg.author_email)
            .map_err(|e| git_error("making the commit signature", e))?;
        let message = format!("Merge {}/{branch} into {branch}\n", cfg.remote);
        let merged = repo
            .commit(
                None,
                &signature,
                &signature,
                &message,
                &tree,
                &[local, remote],
            )
            .map_err(|e| git_error("writing the merge commit", e))?;
        tracing::info!(%branch, commit = %merged, "the pushed branch and the local one both moved; merged them");
        let caught_up = CaughtUp::Merged {
            theirs: remote.id().to_string(),
            merge: merged.to_string(),
        };
        (merged, caught_up)
    };
    repo.reference_matching(
        &refname,
        tip,
        true,
        local.id(),
        "featurebot: catch up with the remote",
    )
    .map_err(|e| git_error(format!("moving {refname}"), e))?;
    Ok(Some(caught_up))
}

/// What [`commit_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The new commit's hex id; `None` when nothing was left to commit.
    pub id: Option<String>,
    /// Changed files that `keep_out` refused, as relative paths, sorted: left out of the
    /// commit, still changed in the work tree.
    pub left_out: Vec<String>,
}

/// Commits every change in the work tree at `dir` (new, changed and deleted files, except
/// ignored ones) on its branch, but for the files `keep_out` refuses: it is asked about each
/// changed file with its path and what git would store (a file's bytes, a link's target), and
/// a file it refuses keeps its committed version (a new one stays untracked). That holds for a
/// file some command staged itself, too.
pub fn commit_all(
    cfg: &RepoConfig,
    dir: &Path,
    message: &str,
    keep_out: &dyn Fn(&str, &[u8]) -> bool,
) -> Result<Committed, RepoError> {
    let repo = Repository::open(dir).map_err(|_| RepoError::NotARepository {
        path: dir.to_path_buf(),
    })?;
    let parent = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| git_error("reading the work tree's HEAD", e))?;
    let parent_tree = parent
        .tree()
        .map_err(|e| git_error("reading the work tree's HEAD", e))?;
    let mut index = repo
        .index()
        .map_err(|e| git_error("reading the work tree's index", e))?;
    let mut left_out = Vec::new();
    // Refused files are skipped before git reads them, so their contents never reach the
    // object database.
    let mut skip = |path: &Path, _: &[u8]| -> i32 {
        let relative = path.to_string_lossy();
        match stored_bytes(&dir.join(path)) {
            Some(bytes) if keep_out(&relative, &bytes) => {
                left_out.push(relative.into_owned());
                1
            }
            _ => 0,
        }
    };
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, Some(&mut skip))
        .map_err(|e| git_error("staging changes", e))?;
    index
        .update_all(["*"].iter(), Some(&mut skip))
        .map_err(|e| git_error("staging deletions", e))?;
    // What was staged before (by a command of the run) is checked as git stored it.
    let staged = repo
        .diff_tree_to_index(Some(&parent_tree), Some(&index), None)
        .map_err(|e| git_error("comparing the index with HEAD", e))?;
    for delta in staged.deltas() {
        let new = delta.new_file();
        let Some(path) = new.path().map(Path::to_path_buf) else {
            continue;
        };
        let relative = path.to_string_lossy().into_owned();
        let refused = new.exists()
            && repo
                .find_blob(new.id())
                .is_ok_and(|blob| keep_out(&relative, blob.content()));
        if !refused {
            continue;
        }
        let old = delta.old_file();
        if old.exists() {
            index
                .add(&unstatted_entry(&relative, old.id(), u32::from(old.mode())))
                .map_err(|e| git_error(format!("restoring {relative} in the index"), e))?;
        } else {
            index
                .remove_path(&path)
                .map_err(|e| git_error(format!("unstaging {relative}"), e))?;
        }
        left_out.push(relative);
    }
    left_out.sort();
    left_out.dedup();
    index
        .write()
        .map_err(|e| git_error("writing the index", e))?;
    let tree_id = index
        .write_tree()
        .map_err(|e| git_error("writing the tree", e))?;
    if parent.tree_id() == tree_id {
        return Ok(Committed { id: None, left_out });
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
    Ok(Committed {
        id: Some(id.to_string()),
        left_out,
    })
}

/// What git stores for the file at `path`: a link's target, a file's bytes; `None` for a
/// folder (a submodule) or what cannot be read, which git then handles itself.
fn stored_bytes(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        Some(target.as_os_str().as_bytes().to_vec())
    } else if meta.is_file() {
        std::fs::read(path).ok()
    } else {
        None
    }
}

/// An index entry for blob `id` at `path` without stat data, so git compares the work tree's
/// file by its contents and shows it as changed.
fn unstatted_entry(path: &str, id: git2::Oid, mode: u32) -> git2::IndexEntry {
    let zero = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
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

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}
