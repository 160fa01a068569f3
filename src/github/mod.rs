//! GitHub's REST API: checking that the configured repository is reachable, opening the pull
//! request for a feature branch (or updating the one already open for it) and reading its
//! state, and opening and labelling issues. [`actions`] adds GitHub Actions: dispatching the
//! agent's workflow and following its runs.
//!
//! This is the only module that uses octocrab. octocrab's own retry layer is left out (its
//! `retry` feature is off): it retries server errors at once, without backoff, and would sleep
//! for as long as a primary rate limit asks (up to an hour). Instead [`GitHub`] makes at most
//! [`ATTEMPTS`] attempts per request, with exponential backoff after a server error, a
//! connection error or a bare 429, and waits as long as `Retry-After` (or a reset close at
//! hand) asks only when that is at most [`MAX_WAIT`]; a longer wait is returned to the
//! caller as [`GithubError::RateLimited`].
//!
//! Opening a pull request is idempotent per branch: an open pull request whose head is the
//! branch is updated (title, body, base) rather than duplicated, and a create that GitHub
//! answers with "a pull request already exists" (a retried create that had in fact gone
//! through, or a race) falls back to that update. Opening an issue is not: GitHub has nothing
//! to match a retried create against, so a create whose answer was lost can leave a duplicate.
//!
//! Private repositories under GitHub Free and Pro have no draft pull requests: GitHub answers a
//! draft's create with 422 "Draft pull requests are not supported in this repository.". The
//! draft is then opened as a normal pull request marked not ready: its title starts with
//! [`NOT_READY_PREFIX`], its body with [`NOT_READY_NOTE`], and it carries the label
//! [`NOT_READY_LABEL`]. An update keeps those marks while the spec still asks for a draft and
//! drops them (the label too) once it does not.
//!
//! Invariant: the token goes into octocrab's `Authorization` header and nowhere else; it never
//! appears in an error, a log line or `Debug` output, and GitHub's messages are scrubbed of
//! it in case a proxy echoes it back.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use octocrab::models::pulls::PullRequest as OctoPullRequest;
use octocrab::models::IssueState;
use octocrab::Octocrab;
use url::Url;

use crate::config::{GithubConfig, Secret};

pub mod actions;

/// Attempts per request, the first included.
pub const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; each later one doubles it.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest rate-limit wait we sit out; a longer one goes back to the caller.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For each read and each write on the connection, not for the whole request.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of GitHub's message we repeat to the user.
const MAX_MESSAGE_CHARS: usize = 300;

/// What went wrong, one variant per thing a caller or a user does differently.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub refused the token (401); check GITHUB_TOKEN: it may be mistyped, expired or revoked")]
    Unauthorized,
    #[error("GitHub refused the request (403): {message}; give the token read and write access to contents and pull requests of the repository, or, if GitHub mentions a secondary rate limit, wait a few minutes and try again")]
    Forbidden { message: String },
    #[error("{what} not found on GitHub, or the token cannot see it; check github.owner and github.repo, and that the token has access to that repository")]
    NotFound { what: String },
    #[error("GitHub rejected the request (422): {message}")]
    Unprocessable { message: String },
    #[error("GitHub is rate limiting us{}; wait and try again", wait_hint(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error(
        "GitHub had a server error ({status}) on each of {ATTEMPTS} attempts; try again later"
    )]
    Server { status: u16 },
    #[error("cannot reach GitHub ({0}); check github.api_base and the network")]
    Network(String),
    #[error("GitHub sent an answer we could not use: {0}")]
    Unexpected(String),
    #[error("the workflow .github/workflows/{workflow} is not in {repo} on {git_ref}; run `featurebot install-workflow` and push it")]
    WorkflowMissing {
        workflow: String,
        repo: String,
        git_ref: String,
    },
    #[error("the workflow .github/workflows/{workflow} in {repo} does not have a `workflow_dispatch` trigger (GitHub reads the triggers from the default branch's copy); run `featurebot install-workflow` and push it to the default branch")]
    NoDispatchTrigger { workflow: String, repo: String },
    #[error("the workflow .github/workflows/{workflow} is disabled in {repo}; enable it on the repository's Actions tab")]
    WorkflowDisabled { workflow: String, repo: String },
    #[error("the workflow .github/workflows/{workflow} in {repo} does not take the inputs featurebot sends ({message}); run `featurebot install-workflow` to update it and push it")]
    WorkflowInputs {
        workflow: String,
        repo: String,
        message: String,
    },
    #[error("GitHub refused the Actions request (403): {message}; give the token the `actions: {access}` permission on {repo} (a fine-grained token's \"Actions\" permission; a classic token's `repo` scope) and check that Actions is enabled in the repository's settings")]
    ActionsForbidden {
        repo: String,
        /// `read` or `write`.
        access: &'static str,
        message: String,
    },
    /// A dispatch whose answer was a server error or never came: GitHub may have started the
    /// run anyway, so it was not sent again.
    #[error("GitHub did not confirm the dispatch of .github/workflows/{workflow} ({cause}); the run may have started anyway, so look for it before dispatching again")]
    DispatchUnconfirmed { workflow: String, cause: String },
}

fn wait_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (it asked us to wait {}s)", d.as_secs().max(1)),
        None => String::new(),
    }
}

/// What the title of a pull request marked not ready starts with.
pub const NOT_READY_PREFIX: &str = "[WIP] ";
/// The label of a pull request marked not ready.
pub const NOT_READY_LABEL: &str = "not ready";
/// What the body of a pull request marked not ready starts with.
pub const NOT_READY_NOTE: &str = "> **Not ready for review.** Some checks are red or the run stopped before its last step. This repository has no draft pull requests, so featurebot marks this one `[WIP]` and labels it `not ready` instead; both go once a run is green.\n\n";
/// GitHub's answer to a draft in a repository without drafts.
const DRAFTS_UNSUPPORTED: &str = "Draft pull requests are not supported";

/// The pull request to open or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestSpec {
    /// The branch with the changes, in the configured repository.
    pub head: String,
    /// The branch to merge into.
    pub base: String,
    pub title: String,
    pub body: String,
    /// Only for a new pull request: GitHub's REST API cannot turn a draft into a ready pull
    /// request or back, so an existing one keeps its state. Where GitHub has no drafts, the
    /// pull request is marked not ready instead (see the module's documentation).
    pub draft: bool,
}

/// A pull request as opened or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// The page people open (`html_url`).
    pub url: String,
    /// False when an open pull request for the head branch existed and was updated.
    pub created: bool,
}

/// The issue to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueSpec {
    pub title: String,
    pub body: String,
    /// Names; GitHub creates those the repository lacks. It drops them all, silently, when the
    /// token has no push access.
    pub labels: Vec<String>,
}

/// An issue as opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub number: u64,
    /// The page people open (`html_url`).
    pub url: String,
}

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Merged,
    /// Closed without being merged.
    Closed,
}

/// The number in a pull request's web address, e.g. 123 for
/// `https://github.com/acme/shop/pull/123` (a trailing `/files`, query or fragment allowed).
pub fn pr_number_from_url(url: &str) -> Option<u64> {
    let url = Url::parse(url).ok()?;
    let segments: Vec<&str> = url.path_segments()?.collect();
    // `owner/repo/pull/N`: the owner and repository come first.
    segments.windows(2).skip(2).find_map(|pair| match pair {
        ["pull", number] if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
            number.parse().ok().filter(|&n| n > 0)
        }
        _ => None,
    })
}

/// The GitHub clients of the configured repositories, built once: the default `[github]` and
/// each `[[repos]]` entry that names a GitHub repository. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clients {
    default: Option<GitHub>,
    targets: std::collections::HashMap<String, GitHub>,
}

impl Clients {
    /// Every client the config asks for; fails (naming the fix) when one cannot be built, for
    /// example without `GITHUB_TOKEN`.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Clients> {
        let default = config.github.as_ref().map(GitHub::new).transpose()?;
        let mut targets = std::collections::HashMap::new();
        for target in &config.targets {
            if let Some(cfg) = &target.github {
                targets.insert(target.name.clone(), GitHub::new(cfg)?);
            }
        }
        Ok(Clients { default, targets })
    }

    /// Only a default client (or none).
    pub fn with_default(default: Option<GitHub>) -> Clients {
        Clients {
            default,
            targets: std::collections::HashMap::new(),
        }
    }

    /// The client of the repository named `name` (`None`: the default one), if it has one.
    pub fn for_repo(&self, name: Option<&str>) -> Option<&GitHub> {
        match name {
            None => self.default.as_ref(),
            Some(name) => self.targets.get(name),
        }
    }
}

/// A client for the configured repository. Cheap to clone: the HTTP client is shared.
#[derive(Clone)]
pub struct GitHub {
    client: Octocrab,
    api_base: Url,
    /// The web root, for links people open: `https://github.com/` for github.com.
    web_base: Url,
    owner: String,
    repo: String,
    /// Only to scrub GitHub's messages; octocrab holds its own copy for the header.
    token: Secret,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_base", &self.api_base.as_str())
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// Builds the client. Fails when `GITHUB_TOKEN` is missing or cannot be sent as a header,
    /// or when the TLS stack finds no CA certificates.
    pub fn new(cfg: &GithubConfig) -> anyhow::Result<GitHub> {
        let Some(token) = cfg.token.as_ref() else {
            bail!(
                "GITHUB_TOKEN is not set; create a token that can read and write contents and pull requests of {}/{} and export it as GITHUB_TOKEN",
                cfg.owner,
                cfg.repo
            );
        };
        let secret = token.clone();
        let token = token.expose();
        // octocrab panics on a token that is not a valid header value; refuse it here.
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            bail!("GITHUB_TOKEN has spaces or characters other than printable ASCII; copy the token again");
        }
        let client = Octocrab::builder()
            .base_uri(cfg.api_base.as_str())
            .context("github.api_base is not a URL octocrab accepts")?
            .personal_token(token.to_string())
            .set_connect_timeout(Some(CONNECT_TIMEOUT))
            .set_read_timeout(Some(IO_TIMEOUT))
            .set_write_timeout(Some(IO_TIMEOUT))
            .build()
            .context("starting the GitHub client (are CA certificates installed?)")?;
        Ok(GitHub {
            client,
            api_base: cfg.api_base.clone(),
            web_base: web_base(&cfg.api_base)?,
            owner: cfg.owner.clone(),
            repo: cfg.repo.clone(),
            token: secret,
        })
    }

    /// Reads the repository, for `featurebot check`: `owner/repo (default branch main)`.
    pub async fn check(&self) -> Result<String, GithubError> {
        let repo = self
            .call("GET repository", &self.repository(), || async move {
                self.client.repos(&self.owner, &self.repo).get().await
            })
            .await?;
        let name = repo
            .full_name
            .unwrap_or_else(|| format!("{}/{}", self.owner, self.repo));
        let branch = repo.default_branch.as_deref().unwrap_or("unknown");
        Ok(format!("{name} (default branch {branch})"))
    }

    /// Opens a pull request from `spec.head` into `spec.base`, or, when one is already open
    /// for `spec.head`, sets its title, body and base to the spec's.
    pub async fn open_or_update_pr(
        &self,
        spec: &PullRequestSpec,
    ) -> Result<PullRequest, GithubError> {
        if let Some(open) = self.find_open(spec).await? {
            return self.update(&open, spec).await;
        }
        let mut marked = false;
        let mut created = self.create(spec, false).await;
        if let Err(GithubError::Unprocessable { message }) = &created {
            if spec.draft && message.contains(DRAFTS_UNSUPPORTED) {
                tracing::info!(head = %spec.head, "the repository has no draft pull requests; opening one marked not ready");
                marked = true;
                created = self.create(spec, true).await;
            }
        }
        match created {
            Ok(pr) => {
                let pr = self.pull_request(pr, true);
                tracing::info!(number = pr.number, head = %spec.head, marked, "opened pull request");
                if marked {
                    self.add_not_ready_label(pr.number).await;
                }
                Ok(pr)
            }
            Err(GithubError::Unprocessable { message }) if message.contains("already exists") => {
                match self.find_open(spec).await? {
                    Some(open) => self.update(&open, spec).await,
                    None => Err(GithubError::Unprocessable { message }),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Creates the pull request: a draft as the spec says, or, when `marked`, a normal one
    /// marked not ready.
    async fn create(
        &self,
        spec: &PullRequestSpec,
        marked: bool,
    ) -> Result<OctoPullRequest, GithubError> {
        let (title, body) = title_and_body(spec, marked);
        let (title, body) = (&title, &body);
        self.call("POST pull request", &self.repository(), || async move {
            self.client
                .pulls(&self.owner, &self.repo)
                .create(title, &spec.head, &spec.base)
                .body(body.as_str())
                .draft(spec.draft && !marked)
                .send()
                .await
        })
        .await
    }

    /// Labels pull request `number` not ready. A failure only costs the label, so it is logged
    /// and the pull request stands.
    async fn add_not_ready_label(&self, number: u64) {
        let what = format!("pull request #{number} of {}/{}", self.owner, self.repo);
        let labels = [NOT_READY_LABEL.to_string()];
        let labels = &labels;
        let added = self
            .call("POST issue labels", &what, || async move {
                self.client
                    .issues(&self.owner, &self.repo)
                    .add_labels(number, labels)
                    .await
            })
            .await;
        if let Err(err) = added {
            tracing::warn!(number, error = %err, "labelling the pull request not ready failed; its title and description still say so");
        }
    }

    /// Takes the not-ready label off pull request `number`; as with adding it, a failure is
    /// logged and the update stands.
    async fn remove_not_ready_label(&self, number: u64) {
        let what = format!("pull request #{number} of {}/{}", self.owner, self.repo);
        let removed = self
            .call("DELETE issue label", &what, || async move {
                self.client
                    .issues(&self.owner, &self.repo)
                    .remove_label(number, NOT_READY_LABEL)
                    .await
            })
            .await;
        if let Err(err) = removed {
            tracing::warn!(number, error = %err, "removing the not-ready label failed; remove it by hand");
        }
    }

    /// Where pull request `number` stands.
    pub async fn pull_request_state(&self, number: u64) -> Result<PrState, GithubError> {
        let what = format!("pull request #{number} of {}/{}", self.owner, self.repo);
        let pr = self
            .call("GET pull request", &what, || async move {
                self.client.pulls(&self.owner, &self.repo).get(number).await
            })
            .await?;
        match pr.state {
            Some(IssueState::Open) => Ok(PrState::Open),
            Some(IssueState::Closed) if pr.merged_at.is_some() || pr.merged == Some(true) => {
                Ok(PrState::Merged)
            }
            Some(IssueState::Closed) => Ok(PrState::Closed),
            other => Err(GithubError::Unexpected(format!(
                "pull request #{number} has state {other:?}"
            ))),
        }
    }

    /// Opens an issue with the spec's title, body and labels.
    pub async fn create_issue(&self, spec: &IssueSpec) -> Result<Issue, GithubError> {
        let issue = self
            .call("POST issue", &self.repository(), || async move {
                self.client
                    .issues(&self.owner, &self.repo)
                    .create(spec.title.as_str())
                    .body(spec.body.as_str())
                    .labels(spec.labels.clone())
                    .send()
                    .await
            })
            .await?;
        let dropped = spec
            .labels
            .iter()
            .filter(|name| {
                !issue
                    .labels
                    .iter()
                    .any(|label| label.name.eq_ignore_ascii_case(name))
            })
            .count();
        if dropped > 0 {
            tracing::warn!(
                number = issue.number,
                dropped,
                "GitHub dropped labels from a new issue; the token may lack push access"
            );
        }
        tracing::info!(number = issue.number, "opened issue");
        Ok(Issue {
            number: issue.number,
            url: issue.html_url.to_string(),
        })
    }

    /// Replaces the labels of issue (or pull request) `number` with `labels`, creating those
    /// the repository lacks; none removes them all.
    pub async fn set_issue_labels(
        &self,
        number: u64,
        labels: &[String],
    ) -> Result<(), GithubError> {
        let what = format!("issue #{number} of {}/{}", self.owner, self.repo);
        self.call("PUT issue labels", &what, || async move {
            self.client
                .issues(&self.owner, &self.repo)
                .replace_all_labels(number, labels)
                .await
        })
        .await?;
        tracing::info!(number, labels = labels.len(), "set issue labels");
        Ok(())
    }

    /// The page showing `path` on `branch`, e.g.
    /// `https://github.com/acme/shop/blob/feature/x/tasks/plan.md`.
    pub fn file_url(&self, branch: &str, path: &str) -> String {
        let mut url = self.web_base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend([self.owner.as_str(), self.repo.as_str(), "blob"])
                .extend(branch.split('/'))
                .extend(path.split('/').filter(|s| !s.is_empty()));
        }
        url.to_string()
    }

    /// The open pull request from `spec.head`, preferring one into `spec.base` (GitHub allows
    /// one per base).
    async fn find_open(
        &self,
        spec: &PullRequestSpec,
    ) -> Result<Option<OctoPullRequest>, GithubError> {
        let head = format!("{}:{}", self.owner, spec.head);
        let head = &head;
        let page = self
            .call("GET pull requests", &self.repository(), || async move {
                self.client
                    .pulls(&self.owner, &self.repo)
                    .list()
                    .state(octocrab::params::State::Open)
                    .head(head.as_str())
                    .per_page(10)
                    .send()
                    .await
            })
            .await?;
        let mut items = page.items;
        let position = items
            .iter()
            .position(|pr| pr.base.ref_field == spec.base)
            .unwrap_or(0);
        Ok((position < items.len()).then(|| items.swap_remove(position)))
    }

    /// Sets the title, body and base of the open pull request `open` to the spec's, keeping or
    /// dropping the not-ready marks of a pull request opened with them.
    async fn update(
        &self,
        open: &OctoPullRequest,
        spec: &PullRequestSpec,
    ) -> Result<PullRequest, GithubError> {
        let number = open.number;
        let labelled = open
            .labels
            .iter()
            .flatten()
            .any(|label| label.name.eq_ignore_ascii_case(NOT_READY_LABEL));
        let marked = labelled && spec.draft && open.draft != Some(true);
        let (title, body) = title_and_body(spec, marked);
        let (title, body) = (&title, &body);
        let what = format!("pull request #{number} of {}/{}", self.owner, self.repo);
        let pr = self
            .call("PATCH pull request", &what, || async move {
                self.client
                    .pulls(&self.owner, &self.repo)
                    .update(number)
                    .title(title.as_str())
                    .body(body.as_str())
                    .base(spec.base.as_str())
                    .send()
                    .await
            })
            .await?;
        let pr = self.pull_request(pr, false);
        tracing::info!(number = pr.number, head = %spec.head, marked, "updated pull request");
        if labelled && !marked {
            self.remove_not_ready_label(number).await;
        }
        Ok(pr)
    }

    fn pull_request(&self, pr: OctoPullRequest, created: bool) -> PullRequest {
        let url = match pr.html_url {
            Some(url) => url.to_string(),
            None => {
                let mut url = self.web_base.clone();
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().extend([
                        self.owner.as_str(),
                        self.repo.as_str(),
                        "pull",
                        &pr.number.to_string(),
                    ]);
                }
                url.to_string()
            }
        };
        PullRequest {
            number: pr.number,
            url,
            created,
        }
    }

    fn repository(&self) -> String {
        format!("repository {}/{}", self.owner, self.repo)
    }

    /// `owner/repo`.
    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// Runs `send` up to [`ATTEMPTS`] times, waiting between attempts as [`classify`] says.
    /// `request` names the request in logs and `what` the thing a 404 did not find.
    async fn call<T, F, Fut>(&self, request: &str, what: &str, send: F) -> Result<T, GithubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = octocrab::Result<T>>,
    {
        self.call_with(request, what, Resend::Always, send).await
    }

    /// [`GitHub::call`], sending again only as `resend` allows.
    async fn call_with<T, F, Fut>(
        &self,
        request: &str,
        what: &str,
        resend: Resend,
        mut send: F,
    ) -> Result<T, GithubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = octocrab::Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let err = match send().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let (error, mut retry) = classify(err, what, self.token.expose());
            if resend == Resend::IfRefused && !matches!(error, GithubError::RateLimited { .. }) {
                retry = Retry::No;
            }
            let delay = match retry {
                Retry::No => None,
                Retry::Backoff => Some(BASE_DELAY.saturating_mul(1 << (attempt - 1).min(8))),
                Retry::After(wait) => Some(wait),
            };
            let Some(delay) = delay.filter(|_| attempt < ATTEMPTS) else {
                tracing::warn!(request, attempt, error = %error, "GitHub request failed");
                return Err(error);
            };
            tracing::warn!(
                request,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = ?error,
                "GitHub request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// The spec's title and body, with the not-ready marks when `marked`.
fn title_and_body(spec: &PullRequestSpec, marked: bool) -> (String, String) {
    if marked {
        (
            format!("{NOT_READY_PREFIX}{}", spec.title),
            format!("{NOT_READY_NOTE}{}", spec.body),
        )
    } else {
        (spec.title.clone(), spec.body.clone())
    }
}

/// Which failed requests may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Whenever another attempt could help: the request is safe to repeat.
    Always,
    /// Only when GitHub refused it (a rate limit), never after a server error or a lost
    /// connection, which may come after GitHub acted on it: for requests that must not happen
    /// twice.
    IfRefused,
}

/// Whether another attempt could help, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    Backoff,
    After(Duration),
}

/// Turns an octocrab error into what the caller sees, and whether to try again.
fn classify(err: octocrab::Error, what: &str, token: &str) -> (GithubError, Retry) {
    let octocrab::Error::GitHub { source, .. } = err else {
        return classify_transport(err, token);
    };
    let status = source.status_code.as_u16();
    let message = scrub(&github_message(&source), token);
    let headers = source.headers.as_ref();
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if status == 403 || status == 429 {
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        // A spent primary limit: `x-ratelimit-remaining: 0` until `x-ratelimit-reset`.
        let reset = match (header("x-ratelimit-remaining"), header("x-ratelimit-reset")) {
            (Some("0"), Some(reset)) => reset.parse::<u64>().ok().map(|reset| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Duration::from_secs(reset.saturating_sub(now).max(1))
            }),
            _ => None,
        };
        if let Some(wait) = retry_after.or(reset) {
            let retry = if wait <= MAX_WAIT {
                Retry::After(wait)
            } else {
                Retry::No
            };
            return (
                GithubError::RateLimited {
                    retry_after: Some(wait),
                },
                retry,
            );
        }
        if status == 429 {
            return (
                GithubError::RateLimited { retry_after: None },
                Retry::Backoff,
            );
        }
        // GitHub asks for at least a minute after a secondary limit without `Retry-After`;
        // that is the caller's to sit out.
        if message.to_lowercase().contains("rate limit") {
            return (GithubError::RateLimited { retry_after: None }, Retry::No);
        }
        return (GithubError::Forbidden { message }, Retry::No);
    }
    let error = match status {
        401 => GithubError::Unauthorized,
        404 => GithubError::NotFound {
            what: what.to_string(),
        },
        422 => GithubError::Unprocessable { message },
        500..=599 => return (GithubError::Server { status }, Retry::Backoff),
        301 | 302 | 307 | 308 => GithubError::Unexpected(format!(
            "{status}: {what} moved (renamed or transferred?); set github.owner and github.repo to its new name"
        )),
        _ => GithubError::Unexpected(format!("{status}: {message}")),
    };
    (error, Retry::No)
}

/// Errors before or instead of an HTTP answer: connecting, TLS, timeouts, unreadable JSON.
fn classify_transport(err: octocrab::Error, token: &str) -> (GithubError, Retry) {
    match err {
        octocrab::Error::Json { source, .. } => (
            GithubError::Unexpected(scrub(
                &format!("at {}: {}", source.path(), source.inner()),
                token,
            )),
            Retry::No,
        ),
        octocrab::Error::Serde { source, .. } => (
            GithubError::Unexpected(scrub(&source.to_string(), token)),
            Retry::No,
        ),
        octocrab::Error::InvalidUtf8 { .. } => (
            GithubError::Unexpected("text that is not UTF-8".to_string()),
            Retry::No,
        ),
        other => (
            GithubError::Network(scrub(&error_chain(&other), token)),
            Retry::Backoff,
        ),
    }
}

/// GitHub's message plus the details of its `errors` list, e.g.
/// `Validation Failed: No commits between main and feature`.
fn github_message(err: &octocrab::GitHubError) -> String {
    let details: Vec<String> = err
        .errors
        .iter()
        .flatten()
        .filter_map(|e| match e {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                let text = |key: &str| o.get(key).and_then(|v| v.as_str());
                match (text("message"), text("field"), text("code")) {
                    (Some(message), _, _) => Some(message.to_string()),
                    (None, Some(field @ ("base" | "head")), Some("invalid")) => {
                        Some(format!("{field} is invalid (is that branch on GitHub?)"))
                    }
                    (None, Some(field), Some(code)) => Some(format!("{field} is {code}")),
                    (None, None, Some(code)) => Some(code.to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    let message = if details.is_empty() {
        err.message.clone()
    } else {
        format!("{}: {}", err.message, details.join("; "))
    };
    shorten(&message)
}

/// An error and its sources, `outer: inner: innermost`, without repeats.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    shorten(&parts.join(": "))
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn scrub(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "***")
    }
}

/// The web root for an API root: `https://github.com/` for `https://api.github.com/`,
/// `https://acme.ghe.com/` for `https://api.acme.ghe.com/`, and the same scheme, host and
/// port otherwise (GitHub Enterprise Server serves the API under `/api/v3/`).
fn web_base(api: &Url) -> anyhow::Result<Url> {
    let host = api
        .host_str()
        .context("github.api_base has no host; use e.g. https://api.github.com")?;
    let web_host = match host.strip_prefix("api.") {
        Some(rest) if rest == "github.com" || rest.ends_with(".ghe.com") => rest,
        _ => host,
    };
    let port = api.port().map(|p| format!(":{p}")).unwrap_or_default();
    Url::parse(&format!("{}://{web_host}{port}/", api.scheme()))
        .with_context(|| format!("cannot derive GitHub's web address from {api}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_base_follows_the_api_base() {
        let check = |api: &str, web: &str| {
            let api = Url::parse(api).unwrap();
            assert_eq!(web_base(&api).unwrap().as_str(), web, "for {api}");
        };
        check("https://api.github.com/", "https://github.com/");
        check("https://api.acme.ghe.com/", "https://acme.ghe.com/");
        check(
            "https://ghe.example.com/api/v3/",
            "https://ghe.example.com/",
        );
        check("http://127.0.0.1:8080/", "http://127.0.0.1:8080/");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(short.ends_with('…'));
    }
}
