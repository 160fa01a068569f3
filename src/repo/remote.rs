//! The remote: fetching the base branch or a run's branch, pushing them (and deleting the
//! bot's own side branches), and the credentials and error scrubbing around all of them.
//!
//! Invariant: no push is ever forced; a commit someone else pushed is never overwritten.
//!
//! Invariant: the GitHub token is handed to libgit2 only as the password of an HTTPS request
//! to `RepoConfig::token_host` (never plain HTTP, never another host, never in a URL) and never
//! appears in a log line or an error message; remote URLs are shown without userinfo.
//!
//! Invariant: pushes and fetches go to `RepoConfig::push_url`, fixed when featurebot starts
//! (`repo.push_url`, or the remote's URL read then), never to the clone's config as it is at
//! push time.

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
    // The URL featurebot was configured with (or read at start-up), never the clone's config
    // as it is now: the agent's commands could have rewritten that.
    let Some(url) = cfg.push_url.clone() else {
        return Err(remote_error(format!(
            "there was no such remote when featurebot started; add it with git remote add {} URL and restart featurebot, or set repo.push_url",
            cfg.remote
        )));
    };
    let mut remote = repo
        .remote_anonymous(&url)
        .map_err(|e| remote_error(e.message().to_string()))?;
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
    callbacks.credentials(|url, username, allowed| {
        let answer = credentials(token_for(cfg, url, token), &asked, username, allowed);
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
        } else if credentials_refused.get()
            && token.is_some()
            && token_for(cfg, &url, token).is_none()
        {
            remote_error(format!(
                "{shown} asks for credentials, and the GitHub token goes only to https://{}; push over HTTPS to that host, use an ssh remote, or set repo.push_url",
                cfg.token_host
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
    // An anonymous remote does not move the remote-tracking branch: it follows here.
    let tracking = format!("refs/remotes/{}/{branch}", cfg.remote);
    if source.is_empty() {
        if let Ok(mut reference) = repo.find_reference(&tracking) {
            let _ = reference.delete();
        }
    } else if let Ok(id) = repo.refname_to_id(source) {
        repo.reference(&tracking, id, true, "featurebot: pushed")
            .map_err(|e| git_error(format!("moving {tracking}"), e))?;
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
    // As for a push: the URL of featurebot's configuration, not of the clone's config now.
    let Some(url) = cfg.push_url.clone() else {
        return Ok(false);
    };
    let mut remote = repo
        .remote_anonymous(&url)
        .map_err(|e| git_error(format!("reading remote {}", cfg.remote), e))?;
    let shown = strip_userinfo(&url);
    let token = cfg
        .github_token
        .as_ref()
        .map(|t| t.expose())
        .filter(|t| !t.is_empty());
    let scrub = scrubber(&url, &shown, token);
    let asked = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|url, username, allowed| {
        credentials(token_for(cfg, url, token), &asked, username, allowed)
    });
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
    // A branch the remote no longer has (deleted, renamed) leaves no stale tracking branch:
    // the refs the remote advertised stay listed after the fetch.
    let wanted = format!("refs/heads/{branch}");
    let advertised = remote
        .list()
        .map(|heads| heads.iter().any(|h| h.name() == wanted))
        .unwrap_or(true);
    if !advertised {
        let tracking = format!("refs/remotes/{}/{branch}", cfg.remote);
        if let Ok(mut reference) = repo.find_reference(&tracking) {
            tracing::info!(%branch, "the remote no longer has the branch");
            let _ = reference.delete();
        }
    }
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

/// The token, when `url` (the address libgit2 asks credentials for) is HTTPS on the GitHub host
/// featurebot is configured for (`RepoConfig::token_host`); `None` for any other host or for
/// plain HTTP, so a rewritten remote never receives it.
fn token_for<'a>(cfg: &RepoConfig, url: &str, token: Option<&'a str>) -> Option<&'a str> {
    let parsed = url::Url::parse(url).ok()?;
    let allowed = parsed.scheme() == "https"
        && parsed
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&cfg.token_host));
    if !allowed && token.is_some() {
        tracing::warn!(url = %strip_userinfo(url), host = %cfg.token_host, "not offering the GitHub token: it goes only to its own host over HTTPS");
    }
    token.filter(|_| allowed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str) -> RepoConfig {
        RepoConfig {
            path: ".".into(),
            base_branch: "main".to_string(),
            remote: "origin".to_string(),
            tasks_dir: "tasks".into(),
            push_plans: false,
            author_name: "featurebot".to_string(),
            author_email: "featurebot@localhost".to_string(),
            github_token: None,
            push_url: None,
            token_host: host.to_string(),
        }
    }

    #[test]
    fn the_token_goes_only_to_its_own_host_over_https() {
        let token = Some("ghp_x");
        let github = cfg("github.com");
        assert_eq!(
            token_for(&github, "https://github.com/acme/shop.git", token),
            token
        );
        assert_eq!(
            token_for(&github, "https://GitHub.com/acme/shop.git", token),
            token
        );
        for other in [
            "http://github.com/acme/shop.git",
            "https://github.com.evil.example/acme/shop.git",
            "https://evil.example/github.com/acme/shop.git",
            "https://x-access-token@evil.example/shop.git",
            "git://github.com/acme/shop.git",
            "ssh://git@github.com/acme/shop.git",
            "/srv/git/shop.git",
        ] {
            assert_eq!(token_for(&github, other, token), None, "{other}");
        }
        let enterprise = cfg("git.acme.example");
        assert_eq!(
            token_for(&enterprise, "https://git.acme.example/shop.git", token),
            token
        );
        assert_eq!(
            token_for(&enterprise, "https://github.com/acme/shop.git", token),
            None
        );
    }
}
