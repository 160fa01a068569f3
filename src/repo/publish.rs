//! Publishing one file on the remote's base branch (a plan version, a front-matter update):
//! the remote is the truth when others pushed first, and a file someone else changed on the
//! remote is never overwritten silently.
//!
//! Invariant: no push is forced, and a commit someone else pushed stays on the base branch
//! under the bot's. When the remote's copy of the file is someone else's text
//! ([`Guard::foreign`]), the bot's new version goes to a side branch of its own instead (or
//! nowhere), and the caller is told who changed it.

use std::path::Path;

use git2::{Oid, Repository};

use crate::config::RepoConfig;
use crate::model::BranchName;

use super::base::{base_tip, build_commit, commit_file, text_at, tree_path};
use super::remote::{fetch_base, fetch_branch, push_base, push_ref};
use super::{git_error, head, open, Head, RepoError};

/// How a publish treats the remote's copy of the file.
pub struct Guard {
    /// Whether the remote's text of the file is someone else's: not a version the bot wrote.
    pub foreign: Box<dyn Fn(&str) -> bool + Send>,
    /// Where the new version goes when it is: this branch, built on the remote's tip and
    /// pushed; `None`: nowhere (nothing is committed).
    pub side_branch: Option<BranchName>,
}

/// Someone else changed the file on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The latest commit on the remote's base branch that changed the file.
    pub theirs: String,
    /// The side branch holding the bot's version, when it was written there.
    pub branch: Option<BranchName>,
}

/// What a publish did.
#[derive(Debug)]
pub struct Published {
    /// The commit made; `None` when a conflict left nothing to commit.
    pub commit: Option<String>,
    /// The push's failure, when the commit was made but could not be pushed (it is then only
    /// in the clone, and goes out with the next push).
    pub push_error: Option<RepoError>,
    pub conflict: Option<Conflict>,
}

impl Published {
    fn pushed(commit: String, push_error: Option<RepoError>) -> Published {
        Published {
            commit: Some(commit),
            push_error,
            conflict: None,
        }
    }
}

/// How often [`publish_file`] rebuilds its commit when the remote moves between its fetch and
/// its push.
const PUBLISH_ATTEMPTS: usize = 3;

/// Commits `contents` as `rel_path` for the remote's base branch and pushes it, treating the
/// remote as the truth: when `<remote>/<base>` has commits the local base branch lacks (a
/// teammate's merge), the one-file commit is built on the remote's tip, pushed without force,
/// and rebuilt on the new tip when the remote moved again in between (a bounded number of
/// times). The local base branch follows where that is a fast-forward and it is not checked
/// out; a checked-out clone's branch and work tree are left as they are.
///
/// With a `guard`, a remote copy of the file that is someone else's text is not replaced: see
/// [`Guard`]. When the local branch is level with the remote or ahead of it, this is
/// [`commit_file`] and a push. A remote that cannot be fetched or pushed to leaves the commit in
/// the clone, with the error returned beside it.
pub fn publish_file(
    cfg: &RepoConfig,
    rel_path: &Path,
    contents: &[u8],
    message: &str,
    guard: Option<&Guard>,
) -> Result<Published, RepoError> {
    // The latest commit made and the latest refusal, for when every attempt is refused.
    let mut made: Option<String> = None;
    let mut last_error = None;
    let path = tree_path(cfg, rel_path)?;
    let tracking = format!("refs/remotes/{}/{}", cfg.remote, cfg.base_branch);
    let had_base = open(cfg)?.find_reference(&tracking).is_ok();
    for _ in 0..PUBLISH_ATTEMPTS {
        if let Err(err) = fetch_base(cfg) {
            let commit = commit_file(cfg, rel_path, contents, message)?;
            return Ok(Published::pushed(commit, Some(err)));
        }
        let repo = open(cfg)?;
        let head = head(&repo)?;
        let local = base_tip(&repo, cfg, &head)?;
        let remote_tip = match repo.find_reference(&tracking) {
            Ok(reference) => Some(
                reference
                    .peel_to_commit()
                    .map_err(|e| git_error(format!("reading {tracking}"), e))?,
            ),
            Err(_) => None,
        };
        if had_base && remote_tip.is_none() {
            // Deleted or renamed by someone: not recreated behind their back.
            let commit = commit_file(cfg, rel_path, contents, message)?;
            return Ok(Published::pushed(
                commit,
                Some(RepoError::Remote {
                    remote: cfg.remote.clone(),
                    message: format!(
                        "the remote no longer has the branch {base} (deleted or renamed), so featurebot does not push it back; set repo.base_branch to the branch plans go to now, or push {base} yourself",
                        base = cfg.base_branch
                    ),
                }),
            ));
        }
        if let (Some(guard), Some(tip)) = (guard, &remote_tip) {
            let theirs = text_at(&repo, tip, &path)?;
            if theirs.is_some_and(|text| (guard.foreign)(&text)) {
                let theirs = last_change(tip, &path).to_string();
                return divert(&repo, cfg, &path, contents, message, tip, guard, theirs);
            }
        }
        let behind = match &remote_tip {
            Some(tip) if tip.id() != local.id() => !repo
                .graph_descendant_of(local.id(), tip.id())
                .map_err(|e| git_error("comparing the base branch with the remote's", e))?,
            _ => false,
        };
        let (commit, pushed) = match (behind, remote_tip) {
            (true, Some(tip)) => {
                // Plans whose push failed earlier go along, on the remote's tip.
                let parent = carry_unpushed(&repo, cfg, &local, &tip)?.unwrap_or(tip);
                publish_on(&repo, cfg, &path, contents, message, &parent, &head)?
            }
            // Level with the remote, ahead of it, or a remote without the branch yet.
            _ => {
                let commit = commit_file(cfg, rel_path, contents, message)?;
                let pushed = push_base(cfg);
                (commit, pushed)
            }
        };
        match pushed {
            Ok(()) => return Ok(Published::pushed(commit, None)),
            // The remote moved between the fetch and the push: start again from its new tip.
            Err(err @ RepoError::PushRejected { .. }) => {
                made = Some(commit);
                last_error = Some(err);
            }
            // Unreachable, or refused for another reason: the commit stays in the clone.
            Err(err) => return Ok(Published::pushed(commit, Some(err))),
        }
    }
    match made {
        Some(commit) => Ok(Published::pushed(commit, last_error)),
        None => Err(RepoError::Git(
            "publishing the plan file failed".to_string(),
        )),
    }
}

/// Pushes what the base branch holds that the remote lacks, at start-up: plans committed while
/// the remote could not be reached. Ahead of the remote, the branch is pushed; when the remote
/// moved too, the tasks folder's files that only the clone changed are committed on the
/// remote's tip and pushed ([`carry_unpushed`]). Returns how many commits or files went out (0:
/// nothing to do). Without a remote, nothing happens.
pub fn push_pending(cfg: &RepoConfig) -> Result<usize, RepoError> {
    if !fetch_base(cfg)? {
        return Ok(0);
    }
    let repo = open(cfg)?;
    let head = head(&repo)?;
    let local = base_tip(&repo, cfg, &head)?;
    let tracking = format!("refs/remotes/{}/{}", cfg.remote, cfg.base_branch);
    let Ok(tip) = repo
        .find_reference(&tracking)
        .and_then(|r| r.peel_to_commit())
    else {
        return Ok(0);
    };
    let descends = |a: Oid, b: Oid| repo.graph_descendant_of(a, b).unwrap_or(false);
    if local.id() == tip.id() || descends(tip.id(), local.id()) {
        return Ok(0);
    }
    if descends(local.id(), tip.id()) {
        let (ahead, _) = repo
            .graph_ahead_behind(local.id(), tip.id())
            .map_err(|e| git_error("counting the commits to push", e))?;
        push_base(cfg)?;
        return Ok(ahead);
    }
    let Some(carried) = carry_unpushed(&repo, cfg, &local, &tip)? else {
        return Ok(0);
    };
    let files = carried
        .message()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("- "))
        .count();
    push_commit(&repo, cfg, carried.id())?;
    repo.reference(&tracking, carried.id(), true, "featurebot: carried")
        .map_err(|e| git_error(format!("moving {tracking}"), e))?;
    Ok(files)
}

/// A commit on the remote's `tip` with the tasks folder's files that the local base branch
/// changed since the two parted and that nobody changed on the remote since: the plans whose
/// push failed earlier, carried over. `None` when there are none (or no common history).
pub(super) fn carry_unpushed<'r>(
    repo: &'r Repository,
    cfg: &RepoConfig,
    local: &git2::Commit<'_>,
    tip: &git2::Commit<'r>,
) -> Result<Option<git2::Commit<'r>>, RepoError> {
    let Ok(base) = repo.merge_base(local.id(), tip.id()) else {
        return Ok(None);
    };
    if base == local.id() {
        return Ok(None);
    }
    let tree = |id: Oid| {
        repo.find_commit(id)
            .and_then(|c| c.tree())
            .map_err(|e| git_error(format!("reading the tree of {id}"), e))
    };
    let (base_tree, local_tree, tip_tree) = (tree(base)?, tree(local.id())?, tree(tip.id())?);
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&local_tree), None)
        .map_err(|e| git_error("comparing the base branch with the remote's", e))?;
    let entry = |tree: &git2::Tree<'_>, path: &str| {
        tree.get_path(Path::new(path))
            .ok()
            .map(|e| (e.id(), e.filemode()))
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    let mut carried = Vec::new();
    for delta in diff.deltas() {
        let Some(path) = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .and_then(|p| p.to_str())
        else {
            continue;
        };
        if tree_path(cfg, Path::new(path)).is_err() {
            continue;
        }
        let (theirs, mine) = (entry(&tip_tree, path), entry(&local_tree, path));
        // Only what nobody else touched, and only where the remote still differs.
        if theirs != entry(&base_tree, path) || theirs == mine {
            continue;
        }
        match mine {
            Some((blob, mode)) => {
                let mode = if mode == i32::from(git2::FileMode::BlobExecutable) {
                    git2::FileMode::BlobExecutable
                } else {
                    git2::FileMode::Blob
                };
                update.upsert(path, blob, mode);
            }
            None => {
                update.remove(path);
            }
        }
        carried.push(path.to_string());
    }
    if carried.is_empty() {
        return Ok(None);
    }
    let tree_id = update
        .create_updated(repo, &tip_tree)
        .map_err(|e| git_error("building the tree of the carried plans", e))?;
    let new_tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("reading the tree of the carried plans", e))?;
    let signature = git2::Signature::now(&cfg.author_name, &cfg.author_email)
        .map_err(|e| git_error("making the commit signature", e))?;
    let list: String = carried.iter().map(|p| format!("- {p}\n")).collect();
    let message = format!("plan: files not pushed earlier\n\n{list}");
    let commit = repo
        .commit(None, &signature, &signature, &message, &new_tree, &[tip])
        .map_err(|e| git_error("writing the commit of the carried plans", e))?;
    tracing::info!(files = carried.len(), %commit, "carried plan files that were not pushed onto the remote's tip");
    repo.find_commit(commit)
        .map(Some)
        .map_err(|e| git_error("reading the commit of the carried plans", e))
}

/// The remote's text of `rel_path` on its base branch, freshly fetched, with the latest commit
/// that changed it; `None` when the remote (or its base branch, or the file) is not there.
pub fn remote_file(
    cfg: &RepoConfig,
    rel_path: &Path,
) -> Result<Option<(String, String)>, RepoError> {
    let path = tree_path(cfg, rel_path)?;
    if !fetch_base(cfg)? {
        return Ok(None);
    }
    let repo = open(cfg)?;
    let tracking = format!("refs/remotes/{}/{}", cfg.remote, cfg.base_branch);
    let Ok(tip) = repo
        .find_reference(&tracking)
        .and_then(|r| r.peel_to_commit())
    else {
        return Ok(None);
    };
    Ok(text_at(&repo, &tip, &path)?.map(|text| (last_change(&tip, &path).to_string(), text)))
}

/// Writes the bot's version beside someone else's: on the guard's side branch (on top of its
/// earlier versions there, or of the remote's tip), pushed without force; or nowhere.
#[allow(clippy::too_many_arguments)]
fn divert(
    repo: &Repository,
    cfg: &RepoConfig,
    path: &str,
    contents: &[u8],
    message: &str,
    tip: &git2::Commit<'_>,
    guard: &Guard,
    theirs: String,
) -> Result<Published, RepoError> {
    let Some(branch) = &guard.side_branch else {
        tracing::info!(%path, %theirs, "the remote's copy was changed by someone else; not replacing it");
        return Ok(Published {
            commit: None,
            push_error: None,
            conflict: Some(Conflict {
                theirs,
                branch: None,
            }),
        });
    };
    let fetched = fetch_branch(cfg, branch);
    let side = format!("refs/remotes/{}/{branch}", cfg.remote);
    let earlier = match fetched {
        Ok(true) => repo
            .find_reference(&side)
            .and_then(|r| r.peel_to_commit())
            .ok(),
        _ => None,
    };
    let parent = earlier.as_ref().unwrap_or(tip);
    let (commit, _, _) = build_commit(repo, cfg, path, contents, message, parent)?;
    let local = format!("refs/heads/{branch}");
    repo.reference(
        &local,
        commit,
        true,
        "featurebot: plan beside someone else's",
    )
    .map_err(|e| git_error(format!("moving {local}"), e))?;
    let push_error = push_ref(repo, cfg, &local, branch.as_str()).err();
    tracing::info!(%path, %theirs, %commit, %branch, "the remote's copy was changed by someone else; the new version is on a side branch");
    Ok(Published {
        commit: Some(commit.to_string()),
        push_error,
        conflict: Some(Conflict {
            theirs,
            branch: Some(branch.clone()),
        }),
    })
}

/// Builds the one-file commit on the remote's `tip` and pushes it there; then the tracking
/// branch and, when allowed, the local base branch follow. Returns the commit's id and how
/// the push went (a commit the remote refused is on no branch).
fn publish_on(
    repo: &Repository,
    cfg: &RepoConfig,
    path: &str,
    contents: &[u8],
    message: &str,
    tip: &git2::Commit<'_>,
    head: &Head,
) -> Result<(String, Result<(), RepoError>), RepoError> {
    let (commit, _, _) = build_commit(repo, cfg, path, contents, message, tip)?;
    if let Err(err) = push_commit(repo, cfg, commit) {
        return Ok((commit.to_string(), Err(err)));
    }
    let tracking = format!("refs/remotes/{}/{}", cfg.remote, cfg.base_branch);
    repo.reference(&tracking, commit, true, "featurebot: published")
        .map_err(|e| git_error(format!("moving {tracking}"), e))?;
    let checked_out = matches!(head, Head::Branch(name) if *name == cfg.base_branch);
    let local = format!("refs/heads/{}", cfg.base_branch);
    let local_tip = repo.refname_to_id(&local).ok();
    let fast_forward =
        local_tip.is_some_and(|old| repo.graph_descendant_of(commit, old).unwrap_or(false));
    match (checked_out, fast_forward, local_tip) {
        (false, true, Some(old)) => {
            repo.reference_matching(&local, commit, true, old, "featurebot: published")
                .map_err(|e| git_error(format!("moving {local}"), e))?;
        }
        _ => tracing::info!(
            branch = %cfg.base_branch,
            "the remote had moved on: the plan is committed on its tip and pushed; the local branch is left as it is"
        ),
    }
    tracing::info!(%commit, %path, "published plan file on the remote's tip");
    Ok((commit.to_string(), Ok(())))
}

/// Pushes `commit` (on no local branch) to the remote's base branch, without force.
fn push_commit(repo: &Repository, cfg: &RepoConfig, commit: Oid) -> Result<(), RepoError> {
    // libgit2 pushes references, not bare ids: a private one carries the commit.
    let carrier = "refs/featurebot/publish";
    repo.reference(carrier, commit, true, "featurebot: publish")
        .map_err(|e| git_error(format!("making {carrier}"), e))?;
    let pushed = push_ref(repo, cfg, carrier, &cfg.base_branch);
    if let Ok(mut reference) = repo.find_reference(carrier) {
        let _ = reference.delete();
    }
    pushed
}

/// The latest commit from `tip` back (first parents, a bounded walk) that changed `path`;
/// `tip` itself when none is found within the bound.
fn last_change(tip: &git2::Commit<'_>, path: &str) -> Oid {
    let entry = |commit: &git2::Commit<'_>| {
        commit
            .tree()
            .ok()
            .and_then(|tree| tree.get_path(Path::new(path)).ok().map(|e| e.id()))
    };
    let mut commit = tip.clone();
    for _ in 0..1000 {
        let Ok(parent) = commit.parent(0) else {
            return commit.id();
        };
        if entry(&commit) != entry(&parent) {
            return commit.id();
        }
        commit = parent;
    }
    tip.id()
}
