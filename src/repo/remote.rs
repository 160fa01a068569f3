//! The remote: fetching the base branch or a run's branch, pushing them (and deleting the
//! bot's own side branches), and the credentials and error scrubbing around all of them.
//!
//! Invariant: no push is ever forced; a commit someone else pushed is never overwritten.
//!
//! Invariant: the GitHub token is handed to libgit2 only as the password of an HTTPS push and
//! never appears in a log line or an error message; remote URLs are shown without userinfo.

use std::cell::{Cell, RefCell};

use git2::{Cred, CredentialType, ErrorCode, PushOptions, RemoteCallbacks, Repository};

use crate::config::RepoConfig;

use super::base::base_tip;
use super::*;
use crate::model::BranchName;

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
pub fn push_branch(cfg: &RepoConfig, branch: &BranchName) -> Result<(), RepoError> {
    let repo = open(cfg)?;
    push_branch_in(&repo, cfg, branch.as_str())
}

fn push_branch_in(repo: &Repository, cfg: &RepoConfig, branch: &str) -> Result<(), RepoError> {
    push_ref(repo, cfg, &format!("refs/heads/{branch}"), branch)
}

/// Pushes the local reference `source` (a full refname) to `refs/heads/<branch>` on the
/// configured remote, without force.
pub(super) fn push_ref(
    repo: &Repository,
    cfg: &RepoConfig,
    source: &str,
    branch: &str,
) -> Result<(), RepoError> {
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
    let pushed = remote.push(&[format!("{source}:{refname}")], Some(&mut options));
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

/// Updates `<remote>/<base_branch>` from the remote, so a new run starts from the latest base.
/// Returns `Ok(false)` when there is no such remote (a purely local repository).
pub fn fetch_base(cfg: &RepoConfig) -> Result<bool, RepoError> {
    fetch(cfg, &cfg.base_branch)
}

/// Updates `<remote>/<branch>` from the remote, so a run continues from what an earlier run
/// of the branch pushed (on another machine, or on GitHub Actions). Returns whether the remote
/// has the branch; `Ok(false)` too when there is no such remote.
pub fn fetch_branch(cfg: &RepoConfig, branch: &BranchName) -> Result<bool, RepoError> {
    let branch = branch.as_str();
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

pub(super) fn strip_userinfo(url: &str) -> String {
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

/// Deletes `branch` on the remote and here: a side branch of the bot's own
/// (`featurebot/plans/<id>`) once its conflict is settled. A branch the remote does not have is
/// no error.
pub fn delete_branch(cfg: &RepoConfig, branch: &BranchName) -> Result<(), RepoError> {
    let repo = open(cfg)?;
    let name = branch.as_str();
    if let Ok(mut local) = repo.find_branch(name, git2::BranchType::Local) {
        local
            .delete()
            .map_err(|e| git_error(format!("deleting branch {name}"), e))?;
    }
    let tracking = format!("refs/remotes/{}/{name}", cfg.remote);
    if let Ok(mut reference) = repo.find_reference(&tracking) {
        // An empty source deletes the remote's branch.
        push_ref(&repo, cfg, "", name)?;
        let _ = reference.delete();
    }
    Ok(())
}
