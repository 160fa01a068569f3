//! One agent run: the plan's numbered steps, one by one, in their own branch and work tree.
//!
//! For each step: the backend edits; the formatters and tests run; on failure the backend gets
//! the failing output and repairs, up to `agent.max_repair_attempts`; then the step is
//! committed (`step k/n: <title>`), green or not (a file holding one of our configured secrets
//! is left out, and said), and the run record is saved, so a run can resume from the next step. At the end the branch is pushed and a pull request opened (a
//! draft when anything is red or unfinished). Limits (run time, tokens, tool calls, a
//! repeated failure) stop the run gracefully: what exists is committed, pushed and proposed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod steps;

use super::backend::{self, Backend, Tools};
use super::sandbox::{self, Sandbox};
use super::{Event, Human, Phase, StepReport, StepRequest};
use crate::config::{Config, RepoConfig};
use crate::github::{Clients, GitHub, PullRequest, PullRequestSpec};
use crate::llm::{self, Usage};
use crate::model::{BranchName, Feature, PlanVersion, Run, RunState, StepRecord};
use crate::plan::{self, Slug};
use crate::prompts::Prompts;
use crate::redact::Redactor;
use crate::repo::worktree::{CaughtUp, Committed};
use crate::repo::{Repo, Repos};
use crate::store::Store;
use steps::{RunIo, StepLoop};

/// What a run needs that outlives it.
pub struct Runner {
    pub config: Arc<Config>,
    pub llm: llm::Client,
    pub prompts: Prompts,
    pub redactor: Redactor,
    pub github: Clients,
    /// The target repositories, shared with the core (one commit lock each).
    pub repos: Repos,
}

/// One run to carry out.
pub struct Job {
    pub feature: Feature,
    pub plan: PlanVersion,
    /// The run record to continue, for a resumed run.
    pub resume: Option<Run>,
    /// A link to where the feature was discussed, for the pull request.
    pub discussion_url: Option<String>,
    /// For a follow-up on an open pull request: what to change, as the person wrote it. The run
    /// then has one step, on the same branch.
    pub follow_up: Option<String>,
    /// The branch to work on instead of [`branch_name`] (a valid branch name; `featurebot agent
    /// --branch`, where the bot chose it and the runner's store knows nothing of the feature).
    pub branch: Option<BranchName>,
    /// Continue the branch where an earlier run of it, maybe on another machine, left off: fetch
    /// it, and start at the first step its plan file does not tick off. A branch that does not
    /// exist yet starts at step 1.
    pub continue_from_ticks: bool,
}

/// A new run record for `job`, numbered after the feature's earlier runs: its steps are the
/// plan's (or the follow-up's one), none done yet. `worktree` is empty for a run elsewhere.
pub fn new_run(job: &Job, store: &Store, worktree: &str) -> anyhow::Result<Run> {
    let steps = match &job.follow_up {
        Some(request) => vec![follow_up_title(request)],
        None => plan::steps(&job.plan.markdown),
    };
    let now = OffsetDateTime::now_utc();
    let earlier = store.runs(job.feature.id)?;
    // A follow-up works on the open pull request: it is this run's too, whatever happens, so
    // a failed follow-up leaves the feature's pull request open and tracked.
    let pr_url = match &job.follow_up {
        Some(_) => earlier.iter().rev().find_map(|r| r.pr_url.clone()),
        None => None,
    };
    Ok(Run {
        feature: job.feature.id,
        number: earlier.len() as u32 + 1,
        plan_version: job.plan.version,
        branch: job
            .branch
            .clone()
            .unwrap_or_else(|| branch_name(&job.feature)),
        worktree: worktree.to_string(),
        steps: steps
            .into_iter()
            .map(|title| StepRecord {
                title,
                green: None,
                commit: None,
                summary: None,
            })
            .collect(),
        next_step: 0,
        state: RunState::Running,
        pr_url,
        message: None,
        usage: Usage::default(),
        follow_up: job.follow_up.clone(),
        remote: None,
        started_at: now,
        updated_at: now,
    })
}

/// The branch of a feature's runs.
pub fn branch_name(feature: &Feature) -> BranchName {
    BranchName::for_feature(
        feature.id,
        &Slug::new(&feature.title, feature.id).to_string(),
    )
}

impl Runner {
    /// Carries out `job`, saving the run record in `store` as it goes, and returns the final
    /// record. Errors that end the run are recorded in it (state `failed`, with the message);
    /// `Err` is only for a store that cannot save. `cancel` stops the run: as cancelled, or,
    /// when `stopping` is set (featurebot shuts down), as a checkpoint still `running`, which
    /// the next start offers to resume.
    pub async fn execute(
        &self,
        job: Job,
        store: &Store,
        events: mpsc::UnboundedSender<Event>,
        mut answers: mpsc::UnboundedReceiver<Human>,
        cancel: CancellationToken,
        stopping: &AtomicBool,
    ) -> anyhow::Result<Run> {
        let worktree = self.config.agent.worktrees_dir.join(format!(
            "{}-{}",
            job.feature.id,
            Slug::new(&job.feature.title, job.feature.id)
        ));
        let mut run = match job.resume.clone() {
            Some(run) => run,
            None => new_run(&job, store, &worktree.to_string_lossy())?,
        };
        run.state = RunState::Running;
        run.message = None;
        let mut run = store.save_run(&run).await?;
        tracing::info!(
            feature = job.feature.id.0,
            run = run.number,
            follow_up = run.follow_up.is_some(),
            "run started"
        );

        let io = RunIo {
            store,
            events: &events,
            answers: &mut answers,
            cancel: &cancel,
        };
        let result = self.steps(&job, &mut run, &worktree, io).await;
        match result {
            Ok(()) => {}
            Err(err) if cancel.is_cancelled() && stopping.load(Ordering::SeqCst) => {
                // Saved once, as a checkpoint: never `cancelled` in between.
                run.state = RunState::Running;
                run.message = None;
                tracing::info!(feature = run.feature.0, error = %err, "run checkpointed for a stop");
            }
            Err(err) if cancel.is_cancelled() => {
                run.state = RunState::Cancelled;
                run.message = Some(format!(
                    "cancelled at step {} of {}",
                    (run.next_step + 1).min(run.steps.len()),
                    run.steps.len()
                ));
                tracing::info!(feature = run.feature.0, error = %err, "run cancelled");
            }
            Err(err) => {
                run.state = RunState::Failed;
                run.message = Some(self.redactor.redact(&format!("{err:#}")));
                tracing::warn!(feature = run.feature.0, error = %format!("{err:#}"), "run failed");
            }
        }
        Ok(store.save_run(&run).await?)
    }

    /// Prepares the work tree, carries out the steps from `run.next_step` on, then pushes the
    /// branch and opens (or updates) the pull request.
    async fn steps(
        &self,
        job: &Job,
        run: &mut Run,
        worktree: &Path,
        io: RunIo<'_>,
    ) -> anyhow::Result<()> {
        let agent = &self.config.agent;
        let total = run.steps.len();
        if total == 0 {
            anyhow::bail!(
                "the plan has no numbered implementation steps; press Request changes and ask for numbered steps"
            );
        }
        // No sandbox, no run: refused before anything is prepared.
        let sandboxed = sandbox::available(agent.sandbox).map_err(anyhow::Error::msg)?;
        if !sandboxed {
            let _ = io.events.send(Event::Unconfined);
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + agent.max_run;
        let _ = io.events.send(Event::Phase {
            step: run.next_step,
            total,
            title: String::new(),
            phase: Phase::Preparing,
            usage: run.usage,
        });
        let prepared = self
            .repo(job)
            .prepare_worktree(&run.branch, worktree)
            .await
            .context("preparing the work tree")?;
        match &prepared.caught_up {
            Some(CaughtUp::FastForward { to }) => {
                let _ = io.events.send(Event::BranchCaughtUp {
                    theirs: to.clone(),
                    merged: false,
                });
            }
            Some(CaughtUp::Merged { theirs, .. }) => {
                let _ = io.events.send(Event::BranchCaughtUp {
                    theirs: theirs.clone(),
                    merged: true,
                });
            }
            Some(CaughtUp::Rewritten { to }) => {
                let _ = io
                    .events
                    .send(Event::BranchRewritten { theirs: to.clone() });
            }
            None => {}
        }
        if job.continue_from_ticks && run.next_step == 0 && job.follow_up.is_none() {
            skip_ticked_steps(run, &prepared.path, &job.plan.path);
            *run = io.store.save_run(run).await?;
        }
        let _ = io.events.send(Event::Started {
            branch: run.branch.to_string(),
            steps: run.steps.iter().map(|s| s.title.clone()).collect(),
            from: run.next_step,
        });
        let scratch = agent.worktrees_dir.join(format!(
            "{}.logs",
            worktree
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        // A fresh HOME per run, beside its logs.
        let home = scratch.with_extension("home");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).context("making the run's home folder")?;
        let sandbox = sandboxed.then(|| Sandbox {
            work_tree: prepared.path.clone(),
            git_dir: self.repo_cfg(job).path.join(".git"),
            readable: vec![scratch.clone()],
            home,
            network: agent.network,
        });
        if !agent.setup.is_empty() {
            let setup = sandbox.clone().map(|s| Sandbox { network: true, ..s });
            backend::run_setup(
                agent,
                &prepared.path,
                io.cancel,
                &self.redactor,
                &scratch,
                setup,
            )
            .await?;
        }
        let mut steps = StepLoop {
            sandbox,
            runner: self,
            job,
            run,
            io,
            worktree: prepared.path,
            plan_file: self.repo_cfg(job).path.join(&job.plan.path),
            scratch,
            backend: Backend::from_config(agent),
            deadline,
            total,
            stopped: None,
        };
        while steps.run.next_step < total {
            let index = steps.run.next_step;
            steps.step(index).await?;
            steps.run.next_step = index + 1;
            *steps.run = steps.io.store.save_run(steps.run).await?;
            if steps.stopped.is_some() {
                break;
            }
        }
        steps.finish(started).await
    }

    /// Pushes the branch after step `index` (`agent.push_each_step`). A failure is logged and
    /// reported, and the run goes on: the push at the end decides.
    async fn push_step(
        &self,
        job: &Job,
        branch: &BranchName,
        index: usize,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let pushed = self
            .repo(job)
            .push_branch(branch)
            .await
            .map_err(|e| e.to_string());
        if let Err(message) = pushed {
            let message = self.redactor.redact(&message);
            tracing::warn!(%branch, step = index + 1, error = %message, "pushing the step failed; the run goes on");
            let _ = events.send(Event::StepPushFailed {
                step: index,
                message,
            });
        }
    }

    /// The feature's target repository (`[[repos]]`, or the default `[repo]`).
    fn repo_cfg(&self, job: &Job) -> &RepoConfig {
        self.repo(job).config()
    }

    fn repo(&self, job: &Job) -> &Repo {
        self.repos.of(job.feature.repo.as_deref())
    }

    /// The GitHub client of the feature's target repository, if it has one.
    fn github_for(&self, job: &Job) -> Option<&GitHub> {
        self.github.for_repo(job.feature.repo.as_deref())
    }

    /// Commits the step's changes, but not a file that holds one of our configured secrets
    /// (in its name or its contents, however it got there: the agent, a check, an external
    /// agent): that one is left out, and said.
    async fn commit(&self, job: &Job, worktree: &Path, message: &str) -> anyhow::Result<Committed> {
        let message = self.redactor.redact(message);
        let redactor = self.redactor.clone();
        let holds_secret = move |path: &str, bytes: &[u8]| {
            redactor.holds_value(path.as_bytes()) || redactor.holds_value(bytes)
        };
        self.repo(job)
            .commit_all(worktree, &message, holds_secret)
            .await
            .context("committing the step")
    }

    async fn open_pull_request(
        &self,
        github: &GitHub,
        job: &Job,
        history: &[Run],
        draft: bool,
        elapsed: std::time::Duration,
    ) -> anyhow::Result<PullRequest> {
        let branch = history
            .last()
            .map(|r| r.branch.to_string())
            .unwrap_or_default();
        let body = self.redactor.redact(&plan::pr::pull_request_body(
            github,
            &job.feature,
            &job.plan,
            job.discussion_url.as_deref(),
            history,
            elapsed,
        ));
        let spec = PullRequestSpec {
            head: branch,
            base: self.repo_cfg(job).base_branch.clone(),
            title: job.feature.title.clone(),
            body,
            draft,
        };
        github
            .open_or_update_pr(&spec)
            .await
            .map_err(|e| anyhow::Error::new(e).context("opening the pull request"))
    }
}

/// The next approval decision; a stray answer to no question counts as nothing.
async fn next_decision(answers: &mut mpsc::UnboundedReceiver<Human>) -> Option<Human> {
    loop {
        match answers.recv().await? {
            Human::Answer(_) => continue,
            decision => return Some(decision),
        }
    }
}

/// A follow-up step's title: the request's first line, shortened.
fn follow_up_title(request: &str) -> String {
    let first = request
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("changes");
    let short: String = first.trim().chars().take(80).collect();
    format!("Follow-up: {short}")
}

/// For a run that continues a branch: marks the steps before the first one that the work
/// tree's plan file does not tick off as done, and starts there. A plan file that is missing or
/// lists other steps than the run's changes nothing: the run starts at step 1.
fn skip_ticked_steps(run: &mut Run, worktree: &Path, plan_path: &str) {
    let text = super::paths::resolve(worktree, plan_path)
        .ok()
        .and_then(|file| std::fs::read_to_string(file).ok());
    let Some(text) = text else {
        tracing::info!(branch = %run.branch, "the branch has no plan file; starting at step 1");
        return;
    };
    let titles: Vec<&str> = run.steps.iter().map(|s| s.title.as_str()).collect();
    if plan::steps(&text) != titles {
        tracing::warn!(branch = %run.branch, "the branch's plan file lists other steps than the plan; starting at step 1");
        return;
    }
    let done = plan::ticked_steps(&text)
        .iter()
        .take_while(|ticked| **ticked)
        .count();
    for step in &mut run.steps[..done] {
        step.green = Some(true);
        step.summary = Some("done in an earlier run".to_string());
    }
    run.next_step = done;
}

/// Ticks step `index` off in the work tree's copy of the plan file, when the branch has it, so
/// the repository records what was done (committed with the step).
fn tick_plan_file(worktree: &Path, plan_path: &str, index: usize) {
    let Ok(file) = super::paths::resolve(worktree, plan_path) else {
        return;
    };
    if let Ok(text) = std::fs::read_to_string(&file) {
        let ticked = plan::tick_step(&text, index);
        if ticked != text {
            if let Err(err) = std::fs::write(&file, ticked) {
                tracing::warn!(error = %err, "ticking the step in the plan file failed");
            }
        }
    }
}
