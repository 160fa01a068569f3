//! Agent runs on GitHub Actions (`agent.executor = "github-actions"`): the bot dispatches the
//! workflow `featurebot install-workflow` wrote, finds the run by the correlation id in its
//! name, follows it, and reports it with the same [`Event`]s as a local run. The work itself
//! is `featurebot agent` on the runner, the same run code as a local run.
//!
//! What the bot can see of a run: its status and its job's steps (polled), the plan file on
//! the run's branch, whose done steps the runner ticks and pushes after each step, and at the
//! end the job's log and the pull request for the branch.
//!
//! The run record is saved before the dispatch and again once the run is found, so a restart
//! re-attaches to the same run instead of dispatching another; a stop of the bot never stops
//! the run on GitHub.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::actions::workflow::{runner_config, DispatchInputs};
use crate::agent::progress::CHECKS_FAILED;
use crate::agent::run::{new_run, Job, Runner};
use crate::agent::{Event, Phase};
use crate::config::ActionsConfig;
use crate::github::actions::WorkflowRun;
use crate::github::{GitHub, GithubError};
use crate::llm::Usage;
use crate::model::{RemoteRun, Run, RunState};
use crate::plan;
use crate::redact::Redactor;
use crate::store::Store;

/// Consecutive failed polls (other than rate limits and outages) after which the run is
/// reported as lost: a revoked token or a deleted repository does not heal by waiting.
const MAX_POLL_ERRORS: u32 = 5;

/// How long to keep polling after a cancel before saying GitHub has not confirmed it.
const CANCEL_CONFIRM: Duration = Duration::from_secs(600);

/// What the job log shows of a failure, at most.
const EXCERPT_LINES: usize = 40;

/// Where the run stands on GitHub, as the thread shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    NotFound,
    Queued,
    Running(String),
    Cancelling,
}

/// Carries out `job` on GitHub Actions. Like [`Runner::execute`]: the run record is saved as
/// it goes, errors end in a `failed` record, and `Err` is only for a store that cannot save.
/// `stopping` tells a shutdown (stop following, leave the run going) from a cancel.
pub async fn execute(
    runner: &Runner,
    job: Job,
    store: &Store,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
    stopping: &AtomicBool,
) -> anyhow::Result<Run> {
    let mut run = match job.resume.clone() {
        Some(run) => run,
        None => new_run(&job, store, "")?,
    };
    let fail = |mut run: Run, message: String| async move {
        tracing::warn!(feature = run.feature.0, run = run.number, %message, "Actions run failed");
        run.state = RunState::Failed;
        run.message = Some(message);
        store.save_run(&run).await
    };
    if job.follow_up.is_some() {
        let message = "follow-ups run on the bot's host only: set agent.executor = \"local\" for them, or push the change to the pull request's branch".to_string();
        return Ok(fail(run, message).await?);
    }
    let Some(github) = runner.github.for_repo(job.feature.repo.as_deref()) else {
        let message = "no GitHub repository is configured for this feature's repository; GitHub Actions runs need one ([github] or the [[repos]] entry's github_*)".to_string();
        return Ok(fail(run, message).await?);
    };
    let repo = runner.config.repo_of(job.feature.repo.as_deref());
    let base = repo.base_branch.clone();
    let reattach = run
        .remote
        .as_ref()
        .is_some_and(|r| r.dispatched_at.is_some() && run.state == RunState::Running);
    run.state = RunState::Running;
    run.message = None;
    if !reattach {
        // A new dispatch (a first run or a retry): a new correlation id, saved first.
        run.remote = Some(RemoteRun {
            correlation_id: correlation_id(&run),
            dispatched_at: None,
            run_id: None,
            html_url: None,
        });
    }
    let mut run = store.save_run(&run).await?;
    let _ = events.send(Event::Started {
        branch: run.branch.to_string(),
        steps: run.steps.iter().map(|s| s.title.clone()).collect(),
        from: run.next_step,
    });

    let mut follow = Follow {
        github,
        actions: &runner.config.agent.github_actions,
        store,
        events: &events,
        base,
        plan_path: job.plan.path.clone(),
        logs: runner.config.store.path.join("logs"),
        redactor: &runner.redactor,
        seen: Seen::NotFound,
    };
    if !reattach {
        let inputs = DispatchInputs {
            correlation_id: remote(&run).correlation_id.clone(),
            feature_id: job.feature.id.0,
            plan_file: job.plan.path.clone(),
            plan_version: job.plan.version,
            plan_sha256: plan::fingerprint(&plan::file_body(
                &job.feature.title,
                &job.plan.markdown,
            )),
            branch: run.branch.to_string(),
            resume: run.next_step > 0 || job.resume.is_some(),
            config: runner_config(&runner.config, job.feature.repo.as_deref()),
            discussion_url: job.discussion_url.clone(),
            closes: job.feature.issue.as_ref().map(|(number, _)| *number),
        };
        // Short rate limits are sat out by the GitHub layer; a long one fails the run, saying
        // how long to wait before Resume.
        let dispatched = github
            .dispatch_workflow(&follow.actions.workflow, &follow.base, &inputs.to_json())
            .await;
        match dispatched {
            Ok(()) => {}
            // The dispatch may have landed: look for the run rather than dispatch twice.
            Err(err @ GithubError::DispatchUnconfirmed { .. }) => {
                tracing::warn!(feature = run.feature.0, error = %err, "the dispatch is unconfirmed; looking for the run");
            }
            Err(err) => {
                let message = format!("GitHub did not start the run: {err}");
                return Ok(fail(run, message).await?);
            }
        }
        if let Some(remote) = run.remote.as_mut() {
            remote.dispatched_at = Some(OffsetDateTime::now_utc());
        }
        run = store.save_run(&run).await?;
        tracing::info!(
            feature = run.feature.0,
            run = run.number,
            correlation = %remote(&run).correlation_id,
            "Actions run dispatched"
        );
        follow.show("dispatched, waiting for GitHub to queue it", None);
    } else {
        follow.show(
            "following the run again after a restart",
            remote(&run).html_url.clone(),
        );
    }

    let outcome = follow.until_done(&mut run, &cancel, stopping).await;
    match outcome {
        Ok(Some(done)) => follow.finish(run, done).await,
        // A shutdown: the run goes on on GitHub; the record stays `running` for a re-attach.
        Ok(None) => Ok(run),
        Err(message) => Ok(fail(run, message).await?),
    }
}

/// Unique per dispatch: the feature, the run, and the time, so a retry is told apart.
fn correlation_id(run: &Run) -> String {
    format!(
        "fb-{}-{}-{}",
        run.feature,
        run.number,
        OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
    )
}

#[allow(clippy::expect_used)] // Set by `execute` before anything reads it.
fn remote(run: &Run) -> &RemoteRun {
    run.remote
        .as_ref()
        .expect("an Actions run has its remote record")
}

struct Follow<'a> {
    github: &'a GitHub,
    actions: &'a ActionsConfig,
    store: &'a Store,
    events: &'a mpsc::UnboundedSender<Event>,
    /// The branch the workflow was dispatched on (where its runs are listed).
    base: String,
    /// The plan file, in the repository.
    plan_path: String,
    /// Where job logs are saved.
    logs: PathBuf,
    /// Job logs are the runner's output: masked like every other output.
    redactor: &'a Redactor,
    seen: Seen,
}

impl Follow<'_> {
    /// Reports where the run stands, once per change.
    fn show(&self, state: &str, url: Option<String>) {
        let _ = self.events.send(Event::Remote {
            state: state.to_string(),
            url,
        });
    }

    /// Polls the run until it completes (`Some`), the bot stops (`None`) or it cannot be
    /// followed (`Err`, a sentence for the thread). Progress goes out as events and into `run`.
    async fn until_done(
        &mut self,
        run: &mut Run,
        cancel: &CancellationToken,
        stopping: &AtomicBool,
    ) -> Result<Option<WorkflowRun>, String> {
        let interval = self.actions.poll_interval;
        let mut wait = Duration::ZERO;
        let mut errors = 0;
        let mut cancel_sent: Option<Instant> = None;
        let mut cancel_seen = false;
        let dispatched = remote(run)
            .dispatched_at
            .unwrap_or_else(OffsetDateTime::now_utc);
        loop {
            if cancel_seen {
                tokio::time::sleep(wait).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => {}
                }
            }
            wait = interval;
            if cancel.is_cancelled() {
                if stopping.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                cancel_seen = true;
            }
            let result = self.poll(run, cancel_seen, &mut cancel_sent).await;
            match result {
                Ok(Some(done)) => return Ok(Some(done)),
                Ok(None) => errors = 0,
                Err(GithubError::RateLimited { retry_after }) => {
                    // Not an error of the run: wait as long as GitHub asks.
                    wait = retry_after.unwrap_or(interval * 4).max(interval);
                    tracing::info!(
                        feature = run.feature.0,
                        wait_secs = wait.as_secs(),
                        "GitHub rate limit; polling later"
                    );
                }
                Err(err @ (GithubError::Server { .. } | GithubError::Network(_))) => {
                    // An outage: keep trying, less often.
                    errors += 1;
                    wait = interval * 2u32.pow(errors.min(5));
                    tracing::warn!(feature = run.feature.0, error = %err, "polling the Actions run failed; trying again");
                }
                Err(err) => {
                    errors += 1;
                    tracing::warn!(feature = run.feature.0, error = %err, "polling the Actions run failed");
                    if errors >= MAX_POLL_ERRORS {
                        return Err(format!(
                            "featurebot lost track of the GitHub Actions run: {err}"
                        ));
                    }
                }
            }
            let waited = (OffsetDateTime::now_utc() - dispatched).unsigned_abs();
            if waited > self.actions.start_timeout && cancel_sent.is_none() {
                let limit = minutes(self.actions.start_timeout);
                match (remote(run).run_id, &self.seen) {
                    (None, _) => {
                        return Err(format!(
                            "the dispatched workflow run did not appear within {limit}; check the repository's Actions tab: is the workflow `{}` enabled, and does its run-name still contain the correlation_id input?",
                            self.actions.workflow
                        ));
                    }
                    (Some(id), Seen::Queued) => {
                        // Nobody will pick it up: do not leave it to start some day.
                        if let Err(err) = self.github.cancel_workflow_run(id).await {
                            tracing::warn!(run_id = id, error = %err, "cancelling the stuck run failed");
                        }
                        return Err(format!(
                            "the GitHub Actions run was still queued after {limit}, so it was cancelled: no runner picked it up; check the workflow's runs-on labels, the repository's runners and its Actions minutes ({})",
                            remote(run).html_url.clone().unwrap_or_default()
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(sent) = cancel_sent {
                if sent.elapsed() > CANCEL_CONFIRM {
                    return Err(format!(
                        "GitHub has not confirmed the cancel after {}; check the run: {}",
                        minutes(CANCEL_CONFIRM),
                        remote(run).html_url.clone().unwrap_or_default()
                    ));
                }
            }
        }
    }

    /// One look at the run. `Ok(Some)` once it has completed. `cancelling`: a person cancelled
    /// the run (decided by the caller before the look, so a shutdown that starts during it is
    /// never taken for a cancel).
    async fn poll(
        &mut self,
        run: &mut Run,
        cancelling: bool,
        cancel_sent: &mut Option<Instant>,
    ) -> Result<Option<WorkflowRun>, GithubError> {
        let actions_run = match remote(run).run_id {
            Some(id) => self.github.workflow_run(id).await?,
            None => {
                let correlation = remote(run).correlation_id.clone();
                let found = self
                    .github
                    .find_workflow_run(&self.actions.workflow, &self.base, &correlation)
                    .await?;
                let Some(found) = found else {
                    return Ok(None);
                };
                if let Some(remote) = run.remote.as_mut() {
                    remote.run_id = Some(found.id);
                    remote.html_url = Some(found.html_url.clone());
                }
                *run = self
                    .store
                    .save_run(run)
                    .await
                    .map_err(|e| GithubError::Unexpected(format!("saving the run: {e}")))?;
                tracing::info!(feature = run.feature.0, run_id = found.id, url = %found.html_url, "Actions run found");
                found
            }
        };
        let url = Some(actions_run.html_url.clone());
        if cancelling && cancel_sent.is_none() && !actions_run.is_completed() {
            self.github.cancel_workflow_run(actions_run.id).await?;
            *cancel_sent = Some(Instant::now());
            self.seen = Seen::Cancelling;
            self.show("cancelling", url.clone());
        }
        if actions_run.is_completed() {
            return Ok(Some(actions_run));
        }
        if self.seen == Seen::Cancelling {
            return Ok(None);
        }
        if actions_run.status != "in_progress" {
            if self.seen != Seen::Queued {
                self.seen = Seen::Queued;
                self.show("queued", url);
            }
            return Ok(None);
        }
        // Running: the job's current step, then the steps ticked on the branch.
        let jobs = self.github.workflow_jobs(actions_run.id).await?;
        let current = jobs
            .iter()
            .flat_map(|j| j.steps.iter())
            .find(|s| s.status == "in_progress")
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let seen = Seen::Running(current.clone());
        if self.seen != seen {
            let state = if current.is_empty() {
                "running".to_string()
            } else {
                format!("running: {current}")
            };
            self.show(&state, url);
            self.seen = seen;
        }
        self.progress(run).await?;
        Ok(None)
    }

    /// Reads the ticked steps of the plan file on the run's branch and reports the new ones.
    async fn progress(&self, run: &mut Run) -> Result<(), GithubError> {
        let Some(text) = self
            .github
            .file_on_branch(&self.plan_path, run.branch.as_str())
            .await?
        else {
            return Ok(()); // The branch is not pushed yet.
        };
        let done = plan::ticked_steps(&text);
        let total = run.steps.len();
        let upto = done.iter().take_while(|d| **d).count().min(total);
        if upto <= run.next_step {
            return Ok(());
        }
        for step in run.next_step..upto {
            run.steps[step].green = Some(true);
            let _ = self.events.send(Event::StepCommitted {
                step,
                total,
                commit: None,
                // Corrected from the job log at the end, which says which steps stayed red.
                green: true,
                summary: String::new(),
            });
        }
        run.next_step = upto;
        if let Some(title) = run.steps.get(upto).map(|s| s.title.clone()) {
            let _ = self.events.send(Event::Phase {
                step: upto,
                total,
                title,
                phase: Phase::Editing,
                usage: Usage::default(),
            });
        }
        *run = self
            .store
            .save_run(run)
            .await
            .map_err(|e| GithubError::Unexpected(format!("saving the run: {e}")))?;
        Ok(())
    }

    /// Records how the run ended: its state, the pull request, and for a failure the log.
    async fn finish(&self, mut run: Run, done: WorkflowRun) -> anyhow::Result<Run> {
        let conclusion = done.conclusion.clone().unwrap_or_default();
        let url = done.html_url.clone();
        // The steps pushed since the last poll, then which of them stayed red.
        if let Err(err) = self.progress(&mut run).await {
            tracing::warn!(feature = run.feature.0, error = %err, "reading the final progress failed");
        }
        let log = self.job_log(&done).await;
        if let Some(log) = &log {
            // Steps whose checks stayed red, as `featurebot agent` printed them.
            for line in log.text.lines() {
                if let Some(step) = red_step(line) {
                    if let Some(record) = run.steps.get_mut(step) {
                        record.green = Some(false);
                    }
                }
            }
        }
        match conclusion.as_str() {
            "success" => {
                let pr = match self
                    .github
                    .pull_request_for_branch(run.branch.as_str())
                    .await
                {
                    Ok(pr) => pr,
                    Err(err) => {
                        tracing::warn!(feature = run.feature.0, error = %err, "finding the pull request failed");
                        None
                    }
                };
                // The runner may have been stopped by a limit before the last step.
                let all_done = run.next_step >= run.steps.len();
                run.state = if all_done {
                    RunState::Finished
                } else {
                    RunState::Stopped
                };
                if !all_done {
                    run.message = Some(format!(
                        "the run on GitHub Actions stopped early; see {url}"
                    ));
                }
                let green = all_done && run.steps.iter().all(|s| s.green == Some(true));
                run.pr_url = pr.as_ref().map(|p| p.url.clone());
                if !green {
                    if let Some(log) = &log {
                        self.report_log(&run, log, "checks failing");
                    }
                }
                let _ = self.events.send(Event::Finished {
                    branch: run.branch.to_string(),
                    pull_request: pr,
                    green,
                    stopped: run.message.clone(),
                });
            }
            "cancelled" => {
                run.state = RunState::Cancelled;
                run.message = Some(format!(
                    "cancelled on GitHub Actions after step {} of {} ({url})",
                    run.next_step,
                    run.steps.len()
                ));
            }
            other => {
                run.state = RunState::Failed;
                let what = if other.is_empty() { "failed" } else { other };
                run.message = Some(format!(
                    "the GitHub Actions run ended `{what}` during step {} of {}; the log is attached, the run is at {url}. Retry resumes from the last pushed step.",
                    (run.next_step + 1).min(run.steps.len()),
                    run.steps.len()
                ));
                match &log {
                    Some(log) => self.report_log(&run, log, what),
                    None => tracing::warn!(feature = run.feature.0, "no job log to attach"),
                }
            }
        }
        tracing::info!(feature = run.feature.0, run = run.number, %conclusion, "Actions run ended");
        Ok(self.store.save_run(&run).await?)
    }

    /// Posts the log's failure excerpt, with the full log attached.
    fn report_log(&self, run: &Run, log: &JobLog, what: &str) {
        let command = match &log.failed_step {
            Some(step) => format!("GitHub Actions job `{}`, step `{step}` ({what})", log.job),
            None => format!("GitHub Actions job `{}` ({what})", log.job),
        };
        let _ = self.events.send(Event::ChecksFailed {
            step: run.next_step.min(run.steps.len().saturating_sub(1)),
            attempt: 0,
            command,
            tail: excerpt(&log.text),
            log: log.path.clone(),
        });
    }

    /// The log of the run's failed job (or its first job), saved beside the store.
    async fn job_log(&self, run: &WorkflowRun) -> Option<JobLog> {
        let jobs = match self.github.workflow_jobs(run.id).await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(run_id = run.id, error = %err, "listing the run's jobs failed");
                return None;
            }
        };
        let job = jobs
            .iter()
            .find(|j| j.conclusion.as_deref() == Some("failure"))
            .or_else(|| jobs.first())?;
        let text = match self.github.job_log(job.id).await {
            Ok(text) => self.redactor.redact(&text),
            Err(err) => {
                tracing::warn!(job_id = job.id, error = %err, "downloading the job log failed");
                return None;
            }
        };
        let dir = &self.logs;
        let path = dir.join(format!("actions-run-{}-job-{}.log", run.id, job.id));
        if let Err(err) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &text)) {
            tracing::warn!(path = %path.display(), error = %err, "saving the job log failed");
        }
        let failed_step = job
            .steps
            .iter()
            .find(|s| s.conclusion.as_deref() == Some("failure"))
            .map(|s| s.name.clone());
        Some(JobLog {
            job: job.name.clone(),
            failed_step,
            text,
            path,
        })
    }
}

struct JobLog {
    job: String,
    /// The job's step that failed, by the jobs API.
    failed_step: Option<String>,
    text: String,
    path: PathBuf,
}

/// "15 minutes", or seconds below a minute.
fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s < 60 => format!("{s} seconds"),
        60..=119 => "1 minute".to_string(),
        s => format!("{} minutes", s / 60),
    }
}

/// The 0-based step of a `featurebot agent` line saying a step was committed with its checks
/// failing: `step 2/5 committed abc123 (checks failing)`, behind the log's timestamp.
fn red_step(line: &str) -> Option<usize> {
    if !line.ends_with("(checks failing)") {
        return None;
    }
    let at = line.find("step ")?;
    let rest = &line[at + 5..];
    let (number, rest) = rest.split_once('/')?;
    if !rest.contains(" committed") {
        return None;
    }
    number.trim().parse::<usize>().ok()?.checked_sub(1)
}

/// What to show of a log, timestamps removed: from the last red check `featurebot agent`
/// reported (its [`CHECKS_FAILED`] line); else the cause of the failure, that is the last lines
/// the failing step printed before the runner's `##[error]` line (a failed install, checkout,
/// or featurebot's own `error:`), within that step's output and without its `##[group]`
/// header; else the log's end.
fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(strip_timestamp).collect();
    let take = |from: usize, to: usize| {
        lines[from..to]
            .iter()
            .filter(|l| !l.starts_with("##[group]") && !l.starts_with("##[endgroup]"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(start) = lines.iter().rposition(|l| l.starts_with(CHECKS_FAILED)) {
        return take(start, (start + EXCERPT_LINES).min(lines.len()));
    }
    if let Some(error) = lines.iter().position(|l| l.starts_with("##[error]")) {
        // The failing step's output begins after its header group closes.
        let section = lines[..error]
            .iter()
            .rposition(|l| l.starts_with("##[endgroup]") || l.starts_with("##[group]"))
            .map_or(0, |i| i + 1);
        let from = section.max(error.saturating_sub(EXCERPT_LINES - 1));
        return take(from, error + 1);
    }
    take(lines.len().saturating_sub(EXCERPT_LINES), lines.len())
}

/// Actions prefixes each log line with an RFC 3339 timestamp and a space.
fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((stamp, rest))
            if stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[4] == b'-' =>
        {
            rest
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn red_steps_are_read_from_the_agent_lines() {
        assert_eq!(
            red_step("2026-11-26T10:00:00.1234567Z step 2/5 committed abc123 (checks failing)"),
            Some(1)
        );
        assert_eq!(red_step("step 3/5 committed abc123 (checks passed)"), None);
        assert_eq!(
            red_step("step 0/5 committed (no changes) (checks failing)"),
            None
        );
    }

    #[test]
    fn the_excerpt_starts_at_the_last_failure_without_timestamps() {
        let log = "2026-11-26T10:00:00.0000000Z setup\n2026-11-26T10:00:01.0000000Z featurebot: checks failed: step 1, attempt 1: `cargo test` failed:\n2026-11-26T10:00:01.0000000Z     assertion failed\n";
        assert_eq!(
            excerpt(log),
            "featurebot: checks failed: step 1, attempt 1: `cargo test` failed:\n    assertion failed"
        );
        assert_eq!(excerpt("a\nb"), "a\nb");
    }

    /// A job whose install step failed: the cause, printed above the runner's closing line,
    /// not only that closing line; nothing of the step's header or the later cleanup.
    #[test]
    fn a_failed_step_shows_the_lines_before_its_error() {
        let log = "\
2026-12-04T10:00:00.0000000Z ##[group]Run actions/checkout@v4
2026-12-04T10:00:01.0000000Z ##[endgroup]
2026-12-04T10:00:02.0000000Z Syncing repository: acme/shop
2026-12-04T10:00:03.0000000Z ##[group]Run cargo install --locked --git https://github.com/x/y featurebot
2026-12-04T10:00:03.0000000Z shell: /usr/bin/bash -e {0}
2026-12-04T10:00:03.0000000Z ##[endgroup]
2026-12-04T10:00:04.0000000Z     Updating git repository `https://github.com/x/y`
2026-12-04T10:00:05.0000000Z error: failed to clone into: /home/runner/.cargo/git/db/y
2026-12-04T10:00:05.0000000Z Caused by: remote: Repository not found.
2026-12-04T10:00:05.0000000Z ##[error]Process completed with exit code 101.
2026-12-04T10:00:06.0000000Z Post job cleanup.
";
        assert_eq!(
            excerpt(log),
            "    Updating git repository `https://github.com/x/y`\nerror: failed to clone into: /home/runner/.cargo/git/db/y\nCaused by: remote: Repository not found.\n##[error]Process completed with exit code 101."
        );
        // A long step shows only its last lines before the error.
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let shown = excerpt(&format!(
            "##[group]Run make\n##[endgroup]\n{long}##[error]Process completed with exit code 2.\n"
        ));
        assert_eq!(shown.lines().count(), EXCERPT_LINES);
        assert!(
            shown.starts_with("line 61\n") && shown.ends_with("exit code 2."),
            "{shown}"
        );
    }
}
