//! The core: plain events in ([`Input`]), plain events out ([`Output`]).
//!
//! Front ends (the console, later Discord) translate people's actions into [`Input`]s, call
//! [`App::handle`], and render the [`Output`]s that arrive on the channel [`App::new`] returns.
//! The core knows nothing of any front end. It persists every input before acting on it,
//! serialises the work of each feature, and turns every failure into an [`Output::Failed`]
//! with a sentence a person can act on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::Instrument;

pub mod outbox;
pub mod protocol;
pub mod rules;
mod planning;
pub mod queries;
pub mod runs;
mod talk;
mod tracking;

use crate::agent::run::Runner;
use crate::config::{Config, Executor};
use crate::conversation::{self, MarkerFilter};
use crate::github::{Clients, GitHub, GithubError, IssueSpec, PrState};
use crate::llm::{self, LlmError, Message, Request};
use crate::lock::LockExt;
use crate::model::{
    Author, BranchName, Feature, FeatureId, Place, PlanConflict, PlanVersion, Speaker, Status,
};
use crate::plan::file as plan_file;
use crate::plan::{self, Slug, Title};
use crate::prompts::{self, Prompts};
use crate::redact::Redactor;
use crate::repo::{self, Conflict, RepoError, Repos};
use crate::store::{Store, StoreError};
use outbox::Outbox;
use protocol::{Input, Output, OutputKind};
use rules::Intent;
use runs::RunQueue;

/// The core of one featurebot process.
pub struct App {
    config: Arc<Config>,
    store: Store,
    llm: llm::Client,
    prompts: Prompts,
    out: Outbox,
    /// One lock per feature, so that its turns and plans happen one at a time.
    features: Mutex<HashMap<FeatureId, Arc<tokio::sync::Mutex<()>>>>,
    /// The target repositories; each serialises its own commits.
    repos: Repos,
    /// The agent runs.
    runs: RunQueue,
    /// Plans pass through it before they are committed.
    redactor: Redactor,
    /// For issues and pull-request states, per target repository (with the agent).
    github: Clients,
    /// Features whose next message starts a follow-up run.
    follow_ups: Mutex<HashSet<FeatureId>>,
}

/// The author name of the bot's turns in the transcript.
pub const BOT_NAME: &str = "featurebot";

impl App {
    /// The core over `store`, with the agent's `runner`: the runner's services (config, LLM,
    /// prompts, redactor, GitHub clients) are the core's too. Only the wiring point, `startup.rs`, calls this.
    pub fn new(runner: Runner, store: Store) -> (App, mpsc::UnboundedReceiver<Output>) {
        let (out, rx) = Outbox::new(runner.redactor.clone(), store.clone());
        let app = App {
            config: runner.config.clone(),
            store: store.clone(),
            llm: runner.llm.clone(),
            prompts: runner.prompts.clone(),
            redactor: runner.redactor.clone(),
            github: runner.github.clone(),
            out: out.clone(),
            features: Mutex::new(HashMap::new()),
            repos: runner.repos.clone(),
            runs: RunQueue::new(runner, store, out),
            follow_ups: Mutex::new(HashSet::new()),
        };
        (app, rx)
    }

    /// For a shutdown: stops the agent runs, leaving them resumable at the next start.
    pub async fn shutdown(&self) {
        self.runs.shutdown().await;
    }

    /// At start-up, what a stop left behind: pushes the plans each clone holds that its remote
    /// lacks (committed while it could not be reached; a failure is logged, and the next plan
    /// tries again), then marks the runs a stop interrupted and reports each, so people can
    /// resume or abort them.
    pub async fn recover(&self) {
        for repo in self.repos.all() {
            match repo.push_pending().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    repo = %repo.config().path.display(),
                    pushed = n,
                    "pushed plans committed while the remote could not be reached"
                ),
                Err(err) => tracing::warn!(
                    repo = %repo.config().path.display(),
                    error = %err,
                    "pushing plans committed while the remote could not be reached failed; the next plan tries again"
                ),
            }
        }
        let remote = self.config.agent.executor == crate::config::Executor::GithubActions;
        match runs::recover(&self.store, remote).await {
            Ok(recovered) => {
                for run in recovered.interrupted {
                    tracing::warn!(
                        feature = run.feature.0,
                        run = run.number,
                        "run interrupted by a stop"
                    );
                    self.emit(run.feature, OutputKind::RunInterrupted { run });
                }
                for run in recovered.remote {
                    let feature = run.feature;
                    tracing::info!(
                        feature = feature.0,
                        run = run.number,
                        "following the GitHub Actions run again"
                    );
                    if let Err(err) = self.runs.start(feature, Some(run), None).await {
                        tracing::error!(feature = feature.0, error = %format!("{err:#}"), "re-attaching to the Actions run failed");
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "checking for interrupted runs failed")
            }
        }
    }

    /// Handles one input to the end. Never fails: failures become [`Output::Failed`] or
    /// [`Output::Rejected`], with a log line.
    pub async fn handle(&self, input: Input) {
        let place = match &input {
            Input::Start { place, .. } => Some(place.clone()),
            _ => None,
        };
        let feature = match &input {
            Input::Start { .. } | Input::RefreshPullRequests => None,
            Input::Message { feature, .. }
            | Input::Resume { feature }
            | Input::GeneratePlan { feature, .. }
            | Input::KeepRefining { feature }
            | Input::Approve { feature, .. }
            | Input::RequestChanges { feature, .. }
            | Input::Discard { feature }
            | Input::CancelRun { feature }
            | Input::ResumeRun { feature }
            | Input::AbortRun { feature }
            | Input::SetPriority { feature, .. }
            | Input::AddLabels { feature, .. }
            | Input::CreateIssue { feature }
            | Input::FollowUp { feature }
            | Input::SettlePlanConflict { feature, .. }
            | Input::StepDecision { feature, .. } => Some(*feature),
        };
        // One input of a feature at a time: its turns, plans and state changes never interleave.
        // A cancel is the exception: it must reach a run whatever else is going on.
        let lock = feature
            .filter(|_| !matches!(input, Input::CancelRun { .. }))
            .map(|id| self.lock_for(id));
        let _guard = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let span = tracing::info_span!("input", feature = feature.map(|f| f.0));
        let result = async {
            if let Some(id) = feature {
                if !self.allowed(id, &input)? {
                    return Ok(());
                }
            }
            self.dispatch(input).await
        }
        .instrument(span)
        .await;
        if let Err(err) = result {
            self.report(feature, place, err);
        }
    }

    /// Whether `input` may act on feature `id` now, by [`rules::may`] (the same rule, and the
    /// same words, as a front end's instant answer). A refusal is said in the thread, unless it
    /// only says that this was already done (a second click), which is ignored.
    fn allowed(&self, id: FeatureId, input: &Input) -> anyhow::Result<bool> {
        // The conversation, the plan (with its `force`) and the dashboard's settings have rules
        // of their own, in their handlers: a message costs no extra read here.
        let ruled = matches!(
            input,
            Input::Approve { .. }
                | Input::RequestChanges { .. }
                | Input::Discard { .. }
                | Input::KeepRefining { .. }
                | Input::CancelRun { .. }
                | Input::ResumeRun { .. }
                | Input::AbortRun { .. }
                | Input::StepDecision { .. }
                | Input::FollowUp { .. }
                | Input::CreateIssue { .. }
                | Input::SettlePlanConflict { .. }
        );
        if !ruled {
            return Ok(true);
        }
        let feature = self.store.feature(id)?;
        let last_run = self.store.runs(id)?.pop();
        let current = feature.plan_version;
        let last_number = last_run.as_ref().map_or(0, |r| r.number);
        let intent = match *input {
            Input::Approve { version, .. } => Intent::Approve { version },
            Input::RequestChanges { version, .. } => Intent::RequestChanges { version },
            Input::Discard { .. } => Intent::Discard { version: current },
            Input::KeepRefining { .. } => Intent::KeepRefining { version: current },
            Input::CancelRun { .. } => Intent::CancelRun,
            Input::ResumeRun { .. } => Intent::ResumeRun { run: last_number },
            Input::AbortRun { .. } => Intent::AbortRun { run: last_number },
            Input::StepDecision { step, .. } => Intent::DecideStep { step },
            Input::FollowUp { .. } => Intent::FollowUp {
                on_host: self.config.agent.executor == Executor::Local,
            },
            Input::CreateIssue { .. } => Intent::CreateIssue,
            Input::SettlePlanConflict { version, .. } => Intent::SettlePlanConflict { version },
            _ => return Ok(true),
        };
        match rules::may(&feature, last_run.as_ref(), intent) {
            Ok(()) => Ok(true),
            Err(refusal) => {
                tracing::info!(feature = id.0, ?intent, message = %refusal.message, "input refused");
                if !refusal.already_done {
                    self.refuse(id, refusal.message);
                }
                Ok(false)
            }
        }
    }

    /// Every input, in one match.
    async fn dispatch(&self, input: Input) -> anyhow::Result<()> {
        match input {
            Input::Start {
                title,
                requester,
                place,
                repo,
            } => self.start(&title, requester, place, repo).await,
            Input::Message {
                feature,
                author,
                text,
                source_id,
            } => {
                self.message(feature, &author, &text, source_id.as_deref())
                    .await
            }
            Input::Resume { feature } => self.resume(feature).await,
            Input::GeneratePlan { feature, force } => self.generate_plan(feature, force).await,
            Input::KeepRefining { feature } => self.keep_refining(feature).await,
            Input::Approve { feature, version } => self.approve(feature, version).await,
            Input::RequestChanges { feature, version } => {
                self.request_changes(feature, version).await
            }
            Input::Discard { feature } => self.discard(feature).await,
            Input::CancelRun { feature } => {
                // The run may have ended since `allowed` looked.
                if !self.runs.cancel(feature) {
                    self.refuse(
                        feature,
                        "no agent run is going for this feature".to_string(),
                    );
                }
                Ok(())
            }
            Input::ResumeRun { feature } => self.resume_run(feature).await,
            Input::AbortRun { feature } => self.abort_run(feature).await,
            Input::CreateIssue { feature } => self.create_issue(feature).await,
            Input::StepDecision {
                feature, decision, ..
            } => {
                if !self.runs.decide(feature, decision) {
                    self.refuse(
                        feature,
                        "no run of this feature is waiting for approval".to_string(),
                    );
                }
                Ok(())
            }
            Input::FollowUp { feature } => self.follow_up(feature).await,
            Input::SettlePlanConflict {
                feature, keep_mine, ..
            } => self.settle_plan_conflict(feature, keep_mine).await,
            Input::RefreshPullRequests => self.refresh_pull_requests().await,
            Input::SetPriority { feature, priority } => {
                self.store.set_priority(feature, priority).await?;
                self.feature_changed(feature, &format!("priority {}", priority.as_str()))
                    .await
            }
            Input::AddLabels { feature, labels } => {
                let labels = match clean_labels(&labels) {
                    Ok(labels) => labels,
                    Err(message) => {
                        self.refuse(feature, message);
                        return Ok(());
                    }
                };
                self.store.add_labels(feature, &labels).await?;
                self.feature_changed(feature, &format!("labels {}", labels.join(", ")))
                    .await
            }
        }
    }

    fn refuse(&self, feature: FeatureId, message: String) {
        self.emit(feature, OutputKind::Rejected { message });
    }

    /// The GitHub client of the feature's target repository, if it has one.
    fn github_for(&self, feature: &Feature) -> Option<&GitHub> {
        self.github.for_repo(feature.repo.as_deref())
    }

    /// The GitHub clients, for front ends that link to GitHub.
    pub fn github(&self) -> &Clients {
        &self.github
    }

    fn lock_follow_ups(&self) -> std::sync::MutexGuard<'_, HashSet<FeatureId>> {
        self.follow_ups.locked()
    }

    fn lock_for(&self, id: FeatureId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.features.locked();
        map.entry(id).or_default().clone()
    }

    fn emit(&self, feature: FeatureId, kind: OutputKind) {
        self.out.send(feature, kind);
    }

    /// Decides what a person sees for a failure: our own errors read as sentences; anything
    /// else is a bug, shown as a log id.
    /// `place` is where the input came from, for an input that names no feature (a start).
    fn report(&self, feature: Option<FeatureId>, place: Option<Place>, err: anyhow::Error) {
        let readable = err.chain().any(|e| {
            e.is::<LlmError>()
                || e.is::<RepoError>()
                || e.is::<StoreError>()
                || e.is::<GithubError>()
        }) || err.chain().count() == 1;
        let message = if readable {
            format!("{err:#}")
        } else {
            let log_id = log_id();
            tracing::error!(log_id = %log_id, error = ?err, "internal error");
            format!("internal error, see log id {log_id}")
        };
        tracing::warn!(feature = feature.map(|f| f.0), error = %format!("{err:#}"), "input failed");
        match (feature, place) {
            (Some(feature), _) => self.emit(feature, OutputKind::Failed { message }),
            (None, Some(place)) => self.out.send_to(place, OutputKind::Rejected { message }),
            // A background input (refreshing pull requests): the log line is all there is.
            (None, None) => {}
        }
    }
}

/// The labels a feature's GitHub issue carries: its priority, then its own labels.
fn issue_labels(feature: &Feature) -> Vec<String> {
    std::iter::once(feature.priority.as_str().to_string())
        .chain(feature.labels.iter().cloned())
        .collect()
}

/// Labels as people type them, cleaned up: trimmed, at most 50 characters each, at most 10.
pub fn clean_labels(raw: &[String]) -> Result<Vec<String>, String> {
    let labels: Vec<String> = raw
        .iter()
        .flat_map(|l| l.split(','))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if labels.is_empty() {
        return Err("no label given; separate labels with commas".to_string());
    }
    if labels.len() > 10 {
        return Err("at most 10 labels at a time".to_string());
    }
    if let Some(long) = labels
        .iter()
        .find(|l| l.chars().count() > 50 || l.chars().any(char::is_control))
    {
        return Err(format!(
            "{long:?} is not a label: at most 50 characters, no control characters"
        ));
    }
    Ok(labels)
}

/// A short id that ties a message a person sees to the log line with the details.
fn log_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}", nanos & 0xffff_ffff)
}
