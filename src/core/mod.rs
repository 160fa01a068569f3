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

pub mod queries;
pub mod runs;

use crate::agent::run::Runner;
use crate::agent::Event;
use crate::config::Config;
use crate::conversation::{self, MarkerFilter};
use crate::github::{Clients, GitHub, GithubError, IssueSpec, PrState};
use crate::llm::{self, LlmError, Message, Request};
use crate::model::{
    Author, Feature, FeatureId, Place, PlanVersion, Priority, Run, RunState, Speaker, Status,
};
use crate::plan::file as plan_file;
use crate::plan::{self, Slug, Title};
use crate::prompts::{self, Prompts};
use crate::redact::Redactor;
use crate::repo::{self, RepoError, Repos};
use crate::store::{Store, StoreError};
use runs::{RunQueue, StepDecision};

/// Something a person did.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start a feature with this (untrusted) title.
    Start {
        title: String,
        requester: Author,
        place: Place,
        /// A target repository's name from `[[repos]]`; `None` for the default `[repo]`.
        repo: Option<String>,
    },
    /// A message in a feature's conversation. `source_id` identifies the front end's message,
    /// so the same message delivered twice is one turn.
    Message {
        feature: FeatureId,
        author: Author,
        text: String,
        source_id: Option<String>,
    },
    /// Answer the conversation's last message if it has no answer yet (after a restart).
    Resume { feature: FeatureId },
    /// Write (or rewrite) the plan. Without `force`, only once the requirements are confirmed.
    GeneratePlan { feature: FeatureId, force: bool },
    /// The requirements were confirmed, but the person wants to keep talking first.
    KeepRefining { feature: FeatureId },
    /// Approve plan `version` for an agent run.
    Approve { feature: FeatureId, version: u32 },
    /// Reopen the conversation about plan `version`; the next plan is a new version.
    RequestChanges { feature: FeatureId, version: u32 },
    /// Close the feature for good.
    Discard { feature: FeatureId },
    /// Stop the feature's agent run.
    CancelRun { feature: FeatureId },
    /// Continue an interrupted, failed or cancelled run from its next step.
    ResumeRun { feature: FeatureId },
    /// Give up an interrupted run.
    AbortRun { feature: FeatureId },
    SetPriority {
        feature: FeatureId,
        priority: Priority,
    },
    /// Open a GitHub issue with the plan, the priority and the labels.
    CreateIssue { feature: FeatureId },
    /// The next admin message about this feature's open pull request starts a follow-up run.
    FollowUp { feature: FeatureId },
    /// A decision on a step awaiting approval (`agent.approval = "step"`).
    StepDecision {
        feature: FeatureId,
        decision: StepDecision,
    },
    /// Ask GitHub whether open pull requests were merged or closed.
    RefreshPullRequests,
    /// Add labels (untrusted text; each is cleaned up or refused).
    AddLabels {
        feature: FeatureId,
        labels: Vec<String>,
    },
}

/// Something to show people.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A feature was created; its conversation begins.
    Started { feature: Feature },
    /// The input was refused, nothing was done. `feature` is `None` when it never existed.
    Rejected {
        feature: Option<FeatureId>,
        message: String,
    },
    /// The LLM is working on an answer.
    Typing { feature: FeatureId },
    /// Visible text of the answer being streamed.
    ReplyDelta { feature: FeatureId, text: String },
    /// The whole visible answer, after the last delta.
    Reply { feature: FeatureId, text: String },
    /// The requirements are confirmed; a plan can be generated.
    Confirmed { feature: FeatureId, summary: String },
    /// A plan is being written.
    PlanStarted { feature: FeatureId, version: u32 },
    /// A plan version is committed (or, when `again`, an existing one is shown again).
    PlanCommitted {
        feature: FeatureId,
        version: u32,
        path: String,
        commit: String,
        markdown: String,
        again: bool,
    },
    /// The conversation goes on after a confirmation.
    Refining { feature: FeatureId },
    /// Plan `version` was approved; an agent run may start.
    Approved { feature: FeatureId, version: u32 },
    /// Plan `version` was sent back for changes; the conversation is open again.
    ChangesRequested { feature: FeatureId, version: u32 },
    /// The feature was closed without going further.
    Discarded { feature: FeatureId },
    /// An agent run is queued; `position` runs are ahead of it (0: it starts now).
    RunQueued { feature: FeatureId, position: usize },
    /// Progress of the feature's agent run.
    RunEvent {
        feature: FeatureId,
        event: crate::agent::Event,
    },
    /// The run ended (finished, stopped by a limit, failed or cancelled); see `run.state`.
    RunEnded { feature: FeatureId, run: Run },
    /// A run was going when featurebot stopped; it can be resumed or aborted.
    RunInterrupted { feature: FeatureId, run: Run },
    /// The feature's priority or labels changed.
    FeatureUpdated { feature: Feature },
    /// A GitHub issue now mirrors the feature.
    IssueCreated {
        feature: FeatureId,
        number: u64,
        url: String,
    },
    /// The next message will start a follow-up run on the open pull request.
    FollowUpReady { feature: FeatureId },
    /// The feature's pull request was merged or closed on GitHub.
    PullRequestChanged { feature: FeatureId, status: Status },
    /// What changed from the previous plan version, as a unified diff.
    PlanDiff {
        feature: FeatureId,
        from: u32,
        to: u32,
        diff: String,
    },
    /// Something worth knowing that did not stop the work.
    Warning { feature: FeatureId, message: String },
    /// The work failed; nothing already said or written is lost.
    Failed { feature: FeatureId, message: String },
}

impl Output {
    /// The feature this output is about, if any.
    pub fn feature(&self) -> Option<FeatureId> {
        match self {
            Output::Started { feature } | Output::FeatureUpdated { feature } => Some(feature.id),
            Output::IssueCreated { feature, .. }
            | Output::PullRequestChanged { feature, .. }
            | Output::FollowUpReady { feature } => Some(*feature),
            Output::Rejected { feature, .. } => *feature,
            Output::Typing { feature }
            | Output::ReplyDelta { feature, .. }
            | Output::Reply { feature, .. }
            | Output::Confirmed { feature, .. }
            | Output::PlanStarted { feature, .. }
            | Output::PlanCommitted { feature, .. }
            | Output::PlanDiff { feature, .. }
            | Output::Refining { feature }
            | Output::Approved { feature, .. }
            | Output::ChangesRequested { feature, .. }
            | Output::Discarded { feature }
            | Output::RunQueued { feature, .. }
            | Output::RunEvent { feature, .. }
            | Output::RunEnded { feature, .. }
            | Output::RunInterrupted { feature, .. }
            | Output::Warning { feature, .. }
            | Output::Failed { feature, .. } => Some(*feature),
        }
    }
}

/// The core of one featurebot process.
pub struct App {
    config: Arc<Config>,
    store: Store,
    llm: llm::Client,
    prompts: Prompts,
    out: mpsc::UnboundedSender<Output>,
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
        let (out, rx) = mpsc::unbounded_channel();
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

    /// At start-up: marks the runs a stop interrupted and reports each, so people can resume
    /// or abort them.
    pub async fn recover_runs(&self) {
        let remote = self.config.agent.executor == crate::config::Executor::GithubActions;
        match runs::recover(&self.store, remote).await {
            Ok(recovered) => {
                for run in recovered.interrupted {
                    tracing::warn!(
                        feature = run.feature.0,
                        run = run.number,
                        "run interrupted by a stop"
                    );
                    self.emit(Output::RunInterrupted {
                        feature: run.feature,
                        run,
                    });
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one input to the end. Never fails: failures become [`Output::Failed`] or
    /// [`Output::Rejected`], with a log line.
    pub async fn handle(&self, input: Input) {
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
        let result = self.dispatch(input).instrument(span).await;
        if let Err(err) = result {
            self.report(feature, err);
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
                let cancelled = self.runs.cancel(feature);
                if !cancelled {
                    self.refuse(feature, format!("feature #{feature} has no run going"));
                }
                Ok(())
            }
            Input::ResumeRun { feature } => self.resume_run(feature).await,
            Input::AbortRun { feature } => self.abort_run(feature).await,
            Input::CreateIssue { feature } => self.create_issue(feature).await,
            Input::StepDecision { feature, decision } => {
                let decided = self.runs.decide(feature, decision);
                if !decided {
                    self.refuse(
                        feature,
                        "no step of this feature is waiting for approval".to_string(),
                    );
                }
                Ok(())
            }
            Input::FollowUp { feature } => {
                let status = self.store.feature(feature)?.status;
                if status != Status::PrOpen {
                    self.refuse(feature, format!("feature #{feature} is {status}; a follow-up needs an open pull request"));
                } else {
                    self.lock_follow_ups().insert(feature);
                    self.emit(Output::FollowUpReady { feature });
                }
                Ok(())
            }
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

    async fn create_issue(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        let Some(github) = self.github_for(&feature) else {
            self.refuse(
                id,
                "GitHub is not configured for this feature's repository; add a [github] section (or github_owner and github_repo in [[repos]]) to open issues".to_string(),
            );
            return Ok(());
        };
        if let Some((number, url)) = &feature.issue {
            self.refuse(
                id,
                format!("issue #{number} already mirrors this feature: {url}"),
            );
            return Ok(());
        }
        let Some(plan) = self.store.plans(id)?.pop() else {
            self.refuse(
                id,
                format!("feature #{id} has no plan to put in an issue yet"),
            );
            return Ok(());
        };
        let spec = IssueSpec {
            title: feature.title.clone(),
            body: self.redactor.redact(&format!(
                "{}\n\n---\nPlan version {} · `{}` · Feature-Id: {}",
                plan.markdown, plan.version, plan.path, id
            )),
            labels: issue_labels(&feature),
        };
        let issue = github
            .create_issue(&spec)
            .await
            .map_err(|e| anyhow::Error::new(e).context("opening the GitHub issue"))?;
        self.store.set_issue(id, issue.number, &issue.url).await?;
        tracing::info!(feature = id.0, issue = issue.number, "issue opened");
        self.emit(Output::IssueCreated {
            feature: id,
            number: issue.number,
            url: issue.url,
        });
        Ok(())
    }

    /// Moves features whose pull request was merged or closed on GitHub.
    async fn refresh_pull_requests(&self) -> anyhow::Result<()> {
        for feature in self.store.features()? {
            if feature.status != Status::PrOpen {
                continue;
            }
            let Some(github) = self.github_for(&feature) else {
                continue;
            };
            let Some(url) = self
                .store
                .runs(feature.id)?
                .into_iter()
                .rev()
                .find_map(|r| r.pr_url)
            else {
                continue;
            };
            let Some(number) = crate::github::pr_number_from_url(&url) else {
                continue;
            };
            let status = match github.pull_request_state(number).await {
                Ok(PrState::Open) => continue,
                Ok(PrState::Merged) => Status::Merged,
                Ok(PrState::Closed) => Status::Closed,
                Err(err) => {
                    tracing::warn!(feature = feature.id.0, error = %err, "reading a pull request's state failed");
                    continue;
                }
            };
            self.store.set_status(feature.id, status).await?;
            if let Err(err) = plan_file::refresh(
                self.repos.of(feature.repo.as_deref()),
                &self.store,
                feature.id,
                status.as_str(),
            )
            .await
            {
                tracing::warn!(feature = feature.id.0, error = %format!("{err:#}"), "updating the plan file failed");
            }
            self.emit(Output::PullRequestChanged {
                feature: feature.id,
                status,
            });
        }
        Ok(())
    }

    /// After a priority or label change: the plan file's front matter follows, the GitHub issue's
    /// labels too, and people see it.
    async fn feature_changed(&self, id: FeatureId, what: &str) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        if let (Some(github), Some((number, _))) = (self.github_for(&feature), &feature.issue) {
            if let Err(err) = github
                .set_issue_labels(*number, &issue_labels(&feature))
                .await
            {
                tracing::warn!(feature = id.0, error = %err, "mirroring labels to the issue failed");
                self.emit(Output::Warning {
                    feature: id,
                    message: format!("the change is saved, but the GitHub issue's labels could not be updated: {err}"),
                });
            }
        }
        {
            if let Err(err) = plan_file::refresh(
                self.repos.of(feature.repo.as_deref()),
                &self.store,
                id,
                what,
            )
            .await
            {
                tracing::warn!(feature = id.0, error = %format!("{err:#}"), "updating the plan file failed");
                self.emit(Output::Warning {
                    feature: id,
                    message: format!(
                        "the change is saved, but the plan file could not be updated: {err:#}"
                    ),
                });
            }
        }
        self.emit(Output::FeatureUpdated {
            feature: self.store.feature(id)?,
        });
        Ok(())
    }

    async fn resume_run(&self, id: FeatureId) -> anyhow::Result<()> {
        let runs = &self.runs;
        // A failed run whose steps are all done failed at the push or the pull request:
        // resuming it tries those again.
        let last = self.store.runs(id)?.pop();
        match last {
            Some(run)
                if matches!(
                    run.state,
                    RunState::Interrupted
                        | RunState::Failed
                        | RunState::Cancelled
                        | RunState::Stopped
                ) && (run.next_step < run.steps.len() || run.state == RunState::Failed) =>
            {
                let follow_up = run.follow_up.clone();
                runs.start(id, Some(run), follow_up).await
            }
            _ => {
                self.refuse(id, format!("feature #{id} has no run to resume"));
                Ok(())
            }
        }
    }

    async fn abort_run(&self, id: FeatureId) -> anyhow::Result<()> {
        if let Some(mut run) = self.store.runs(id)?.pop() {
            if run.state == RunState::Interrupted {
                run.state = RunState::Cancelled;
                run.message = Some("aborted after a stop".to_string());
                let run = self.store.save_run(&run).await?;
                self.emit(Output::RunEnded { feature: id, run });
            }
        }
        Ok(())
    }

    async fn keep_refining(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        match feature.status {
            Status::Gathering => {}
            Status::Confirmed => {
                self.store.set_status(id, Status::Gathering).await?;
            }
            other => {
                self.refuse(
                    id,
                    format!("feature #{id} is {other}; there is nothing to refine"),
                );
                return Ok(());
            }
        }
        self.emit(Output::Refining { feature: id });
        Ok(())
    }

    async fn approve(&self, id: FeatureId, version: u32) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        if !self.is_current_plan(&feature, version) {
            return Ok(());
        }
        match feature.status {
            Status::Planned => {
                self.store.set_status(id, Status::Approved).await?;
                tracing::info!(feature = id.0, version, "plan approved");
                self.emit(Output::Approved {
                    feature: id,
                    version,
                });
                let wants_issue = self
                    .config
                    .github_of(feature.repo.as_deref())
                    .is_some_and(|g| g.issue_on_approval);
                if wants_issue && feature.issue.is_none() {
                    if let Err(err) = self.create_issue(id).await {
                        self.emit(Output::Warning {
                            feature: id,
                            message: format!("{err:#}"),
                        });
                    }
                }
                self.runs.start(id, None, None).await?;
                return Ok(());
            }
            Status::Approved => {} // A second click: already done.
            other => self.refuse(
                id,
                format!("feature #{id} is {other}; it cannot be approved"),
            ),
        }
        Ok(())
    }

    async fn request_changes(&self, id: FeatureId, version: u32) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        if !self.is_current_plan(&feature, version) {
            return Ok(());
        }
        match feature.status {
            Status::Planned => {
                self.store.set_status(id, Status::Gathering).await?;
                self.emit(Output::ChangesRequested {
                    feature: id,
                    version,
                });
            }
            Status::Gathering => {} // A second click: already reopened.
            other => self.refuse(
                id,
                format!("feature #{id} is {other}; its plan cannot change"),
            ),
        }
        Ok(())
    }

    async fn discard(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        match feature.status {
            Status::Discarded => {}
            status if status.can_move_to(Status::Discarded) => {
                self.store.set_status(id, Status::Discarded).await?;
                tracing::info!(feature = id.0, "feature discarded");
                self.emit(Output::Discarded { feature: id });
            }
            other => self.refuse(
                id,
                format!("feature #{id} is {other}; it cannot be discarded now"),
            ),
        }
        Ok(())
    }

    /// Whether `version` is the feature's latest plan; says which one is when it is not.
    fn is_current_plan(&self, feature: &Feature, version: u32) -> bool {
        if feature.plan_version == version && version > 0 {
            return true;
        }
        let message = if feature.plan_version == 0 {
            format!("feature #{} has no plan yet", feature.id)
        } else {
            format!(
                "that was plan version {version}; version {} is current, use its buttons",
                feature.plan_version
            )
        };
        self.refuse(feature.id, message);
        false
    }

    fn refuse(&self, feature: FeatureId, message: String) {
        self.emit(Output::Rejected {
            feature: Some(feature),
            message,
        });
    }

    async fn start(
        &self,
        raw_title: &str,
        requester: Author,
        place: Place,
        repo: Option<String>,
    ) -> anyhow::Result<()> {
        if let Some(name) = &repo {
            if self.config.target(Some(name)).is_none() {
                self.emit(Output::Rejected {
                    feature: None,
                    message: format!("there is no repository named {name:?} in [[repos]]"),
                });
                return Ok(());
            }
        }
        let title = match Title::parse(raw_title) {
            Ok(title) => title,
            Err(message) => {
                self.emit(Output::Rejected {
                    feature: None,
                    message,
                });
                return Ok(());
            }
        };
        let feature = self
            .store
            .create_feature(title.as_str(), requester.clone(), place)
            .await
            .context("storing the new feature")?;
        let feature = match repo {
            Some(_) => self.store.set_repo(feature.id, repo).await?,
            None => feature,
        };
        tracing::info!(feature = feature.id.0, title = %title, "feature started");
        let lock = self.lock_for(feature.id);
        let _guard = lock.lock().await;
        self.store
            .append_turn(
                feature.id,
                Speaker::User,
                &requester.name,
                &conversation::opening_request(title.as_str(), &requester.name),
                None,
            )
            .await
            .context("storing the request")?;
        self.emit(Output::Started {
            feature: feature.clone(),
        });
        self.answer(&feature).await
    }

    async fn message(
        &self,
        id: FeatureId,
        author: &Author,
        text: &str,
        source_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut feature = self.store.feature(id)?;
        if matches!(feature.status, Status::Running | Status::Queued) {
            let answered = self.runs.answer(id, text);
            if answered {
                self.store
                    .append_turn(id, Speaker::User, &author.name, text, source_id)
                    .await
                    .context("storing your answer")?;
            } else {
                self.refuse(id, "the agent is working on this feature; it will ask here if it needs you, or press Cancel to stop it".to_string());
            }
            return Ok(());
        }
        if feature.status == Status::PrOpen && !text.trim().is_empty() {
            let wanted = self.lock_follow_ups().remove(&id);
            if wanted {
                let runs = &self.runs;
                let stored = self
                    .store
                    .append_turn(id, Speaker::User, &author.name, text, source_id)
                    .await
                    .context("storing your request")?;
                if stored.is_some() {
                    runs.start(id, None, Some(text.to_string())).await?;
                }
            } else {
                self.refuse(id, "the pull request is open; press Follow up, then say what to change, to run the agent on it again".to_string());
            }
            return Ok(());
        }
        if !matches!(
            feature.status,
            Status::Gathering | Status::Confirmed | Status::Planned
        ) {
            self.emit(Output::Rejected {
                feature: Some(id),
                message: format!(
                    "feature #{id} is {}; its requirements conversation is closed",
                    feature.status
                ),
            });
            return Ok(());
        }
        if text.trim().is_empty() {
            return Ok(());
        }
        let stored = self
            .store
            .append_turn(id, Speaker::User, &author.name, text, source_id)
            .await
            .context("storing your message")?;
        if stored.is_none() {
            tracing::debug!(feature = id.0, ?source_id, "duplicate message ignored");
            return Ok(());
        }
        if feature.status != Status::Gathering {
            // More talk after a confirmation or a plan reopens the requirements; the next plan
            // becomes a new version.
            feature = self.store.set_status(id, Status::Gathering).await?;
        }
        self.answer(&feature).await
    }

    async fn resume(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        let transcript = self.store.transcript(id)?;
        let unanswered = transcript
            .last()
            .is_some_and(|t| t.speaker == Speaker::User);
        if unanswered && feature.status == Status::Gathering {
            self.answer(&feature).await?;
        }
        Ok(())
    }

    /// Asks the LLM for the next message of the conversation and stores it.
    async fn answer(&self, feature: &Feature) -> anyhow::Result<()> {
        let id = feature.id;
        let transcript = self.store.transcript(id)?;
        let system = prompts::render(&self.prompts.requirements, &[("title", &feature.title)]);
        let budget = self.context_budget();
        let request = Request {
            messages: conversation::fit_transcript(&system, &transcript, budget),
            ..Request::default()
        };
        self.emit(Output::Typing { feature: id });
        let mut filter = MarkerFilter::default();
        // Released a word at a time, so a secret split between deltas is still masked whole.
        let mut words = self.redactor.words();
        let mut visible = String::new();
        let out = self.out.clone();
        let response = self
            .llm
            .stream(&request, &mut |delta: &str| {
                let shown = filter.push(delta);
                visible.push_str(&shown);
                let text = words.push(&shown);
                if !text.is_empty() {
                    let _ = out.send(Output::ReplyDelta { feature: id, text });
                }
            })
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context("the LLM could not answer; your messages are saved, send another message to try again")
            })?;
        let rest = filter.finish();
        visible.push_str(&rest);
        let text = words.push(&rest) + &words.finish();
        if !text.is_empty() {
            self.emit(Output::ReplyDelta { feature: id, text });
        }
        let reading = filter.reading(visible);
        self.store
            .append_answer(id, BOT_NAME, &response.text, response.usage)
            .await
            .context("storing the answer")?;
        self.emit(Output::Reply {
            feature: id,
            text: reading.visible.clone(),
        });
        if let Some(summary) = reading.confirmed {
            self.store.confirm(id, &summary).await?;
            tracing::info!(feature = id.0, "requirements confirmed");
            self.emit(Output::Confirmed {
                feature: id,
                summary,
            });
        }
        Ok(())
    }

    async fn generate_plan(&self, id: FeatureId, force: bool) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        match feature.status {
            Status::Confirmed => {}
            Status::Gathering if force => self.emit(Output::Warning {
                feature: id,
                message: "the requirements are not confirmed yet; the plan may have gaps"
                    .to_string(),
            }),
            Status::Gathering => {
                self.emit(Output::Rejected {
                    feature: Some(id),
                    message:
                        "the requirements are not confirmed yet; answer the open questions first"
                            .to_string(),
                });
                return Ok(());
            }
            Status::Planned => {
                // Nothing was said since the last plan: show it again instead of paying for
                // the same plan twice.
                let plans = self.store.plans(id)?;
                if let Some(latest) = plans.last() {
                    self.emit(Output::PlanCommitted {
                        feature: id,
                        version: latest.version,
                        path: latest.path.clone(),
                        commit: latest.commit.clone(),
                        markdown: latest.markdown.clone(),
                        again: true,
                    });
                    return Ok(());
                }
            }
            other => {
                self.emit(Output::Rejected {
                    feature: Some(id),
                    message: format!("feature #{id} is {other}; its plan can no longer change"),
                });
                return Ok(());
            }
        }
        let version = feature.plan_version + 1;
        self.emit(Output::PlanStarted {
            feature: id,
            version,
        });
        // No secret goes into a commit, even one the LLM repeated from the conversation.
        let markdown = self.redactor.redact(&self.write_plan(&feature).await?);
        let now = OffsetDateTime::now_utc();
        let path = match &feature.plan_path {
            Some(path) => PathBuf::from(path),
            None => self.new_plan_path(&feature, now)?,
        };
        let meta = plan::Meta {
            version,
            created: now,
            status: Status::Planned,
            pr: None,
        };
        let contents = plan::render_file(&feature, &meta, &markdown);
        let message = plan::commit_message(&feature, version);
        let target = self.repos.of(feature.repo.as_deref());
        let commit = target
            .commit_file(&path, contents.into_bytes(), &message)
            .await
            .context("committing the plan")?;
        let path_text = path.to_string_lossy().into_owned();
        tracing::info!(feature = id.0, version, path = %path_text, %commit, "plan committed");
        self.store
            .add_plan(
                id,
                PlanVersion {
                    version,
                    path: path_text.clone(),
                    commit: commit.clone(),
                    markdown: markdown.clone(),
                    at: now,
                },
            )
            .await
            .context("storing the plan")?;
        if target.config().push_plans {
            if let Err(err) = target.push_base().await {
                tracing::warn!(feature = id.0, error = %err, "pushing the plan failed");
                self.emit(Output::Warning {
                    feature: id,
                    message: format!("the plan is committed locally but pushing it failed: {err}"),
                });
            }
        }
        let previous = self
            .store
            .plans(id)?
            .into_iter()
            .find(|p| p.version + 1 == version);
        self.emit(Output::PlanCommitted {
            feature: id,
            version,
            path: path_text.clone(),
            commit,
            markdown: markdown.clone(),
            again: false,
        });
        if let Some(previous) = previous {
            match repo::worktree::unified_diff(&previous.markdown, &markdown, &path_text) {
                Ok(diff) => self.emit(Output::PlanDiff {
                    feature: id,
                    from: previous.version,
                    to: version,
                    diff,
                }),
                Err(err) => {
                    tracing::warn!(feature = id.0, error = %err, "diffing plan versions failed")
                }
            }
        }
        Ok(())
    }

    /// Asks the LLM for the plan, and once more to repair it when sections are missing.
    async fn write_plan(&self, feature: &Feature) -> anyhow::Result<String> {
        let transcript = self.store.transcript(feature.id)?;
        let instruction = prompts::render(&self.prompts.plan, &[("title", &feature.title)]);
        // The instruction is repeated after the transcript, where models follow it best.
        let budget = self
            .context_budget()
            .saturating_sub(conversation::estimate_tokens(&instruction));
        let mut messages = conversation::fit_transcript(&instruction, &transcript, budget);
        messages.push(Message::user(instruction.clone()));
        let mut request = Request {
            messages,
            ..Request::default()
        };
        let first = self.plan_request(feature.id, &request).await?;
        let draft = plan::clean_markdown(&first);
        let missing = plan::missing_sections(&draft);
        if missing.is_empty() {
            return Ok(draft);
        }
        tracing::info!(
            feature = feature.id.0,
            ?missing,
            "plan lacks sections, asking for a repair"
        );
        request.messages.push(Message::assistant(first));
        request.messages.push(Message::user(prompts::render(
            &self.prompts.plan_repair,
            &[("missing", &missing.join(", "))],
        )));
        let repaired = plan::clean_markdown(&self.plan_request(feature.id, &request).await?);
        let still_missing = plan::missing_sections(&repaired);
        if still_missing.is_empty() {
            return Ok(repaired);
        }
        bail!(
            "the LLM's plan still lacks these sections after one repair: {}; press Generate plan again, or refine the requirements first",
            still_missing.join(", ")
        )
    }

    async fn plan_request(&self, id: FeatureId, request: &Request) -> anyhow::Result<String> {
        let response = self
            .llm
            .complete(request)
            .await
            .map_err(|e| anyhow::Error::new(e).context("the LLM could not write the plan"))?;
        self.store.add_usage(id, response.usage).await?;
        Ok(response.text)
    }

    /// A path for a first plan that no other plan uses.
    fn new_plan_path(&self, feature: &Feature, now: OffsetDateTime) -> anyhow::Result<PathBuf> {
        let slug = Slug::new(&feature.title, feature.id);
        let taken: HashSet<String> = self
            .store
            .features()?
            .into_iter()
            .filter_map(|f| f.plan_path)
            .collect();
        let repo_cfg = self.config.repo_of(feature.repo.as_deref());
        let tasks_dir: &Path = &repo_cfg.tasks_dir;
        let path = (1..)
            .map(|n| plan::plan_path(tasks_dir, now, &slug, n))
            .find(|p| !taken.contains(&*p.to_string_lossy()) && !repo_cfg.path.join(p).exists())
            .unwrap_or_else(|| plan::plan_path(tasks_dir, now, &slug, 1));
        Ok(path)
    }

    /// The tokens the transcript may take: the context window less room for the answer.
    fn context_budget(&self) -> usize {
        let llm = &self.config.llm;
        llm.max_context_tokens
            .saturating_sub(llm.max_output_tokens as usize)
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
        self.follow_ups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_for(&self, id: FeatureId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.features.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_default().clone()
    }

    fn emit(&self, output: Output) {
        // The receiver is gone only when the front end is shutting down.
        let _ = self.out.send(redact_output(&self.redactor, output));
    }

    /// Decides what a person sees for a failure: our own errors read as sentences; anything
    /// else is a bug, shown as a log id.
    fn report(&self, feature: Option<FeatureId>, err: anyhow::Error) {
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
        match feature {
            Some(feature) => self.emit(Output::Failed { feature, message }),
            None => self.emit(Output::Rejected {
                feature: None,
                message,
            }),
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

/// `output` with every text a person will see passed through the redactor: the one place
/// where what the core shows is redacted, for every front end.
fn redact_output(redactor: &Redactor, output: Output) -> Output {
    let r = |text: String| redactor.redact(&text);
    match output {
        Output::Reply { feature, text } => Output::Reply {
            feature,
            text: r(text),
        },
        Output::ReplyDelta { feature, text } => Output::ReplyDelta {
            feature,
            text: r(text),
        },
        Output::RunEnded { feature, mut run } => {
            run.message = run.message.map(r);
            Output::RunEnded { feature, run }
        }
        Output::RunInterrupted { feature, mut run } => {
            run.message = run.message.map(r);
            Output::RunInterrupted { feature, run }
        }
        Output::RunEvent {
            feature,
            event: Event::StepPushFailed { step, message },
        } => Output::RunEvent {
            feature,
            event: Event::StepPushFailed {
                step,
                message: r(message),
            },
        },
        Output::Confirmed { feature, summary } => Output::Confirmed {
            feature,
            summary: r(summary),
        },
        Output::PlanDiff {
            feature,
            from,
            to,
            diff,
        } => Output::PlanDiff {
            feature,
            from,
            to,
            diff: r(diff),
        },
        Output::PlanCommitted {
            feature,
            version,
            path,
            commit,
            markdown,
            again,
        } => Output::PlanCommitted {
            feature,
            version,
            path,
            commit,
            markdown: r(markdown),
            again,
        },
        Output::Rejected { feature, message } => Output::Rejected {
            feature,
            message: r(message),
        },
        Output::Warning { feature, message } => Output::Warning {
            feature,
            message: r(message),
        },
        Output::Failed { feature, message } => Output::Failed {
            feature,
            message: r(message),
        },
        Output::RunEvent {
            feature,
            event: Event::Question { text },
        } => Output::RunEvent {
            feature,
            event: Event::Question { text: r(text) },
        },
        Output::RunEvent {
            feature,
            event:
                Event::ChecksFailed {
                    step,
                    attempt,
                    command,
                    tail,
                    log,
                },
        } => Output::RunEvent {
            feature,
            event: Event::ChecksFailed {
                step,
                attempt,
                command: r(command),
                tail: r(tail),
                log,
            },
        },
        other => other,
    }
}
