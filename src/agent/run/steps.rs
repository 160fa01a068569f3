//! The steps of one run, one by one: each step's attempts (edit, check, repair), its commit,
//! the admin's decision under `agent.approval = "step"`, and at the end the push and the pull
//! request. A private context object ([`StepLoop`]) holds what every part needs.

use super::*;

/// Where a run reads and writes as it goes: the store, progress out, answers in, and the cancel.
pub(super) struct RunIo<'a> {
    pub(super) store: &'a Store,
    pub(super) events: &'a mpsc::UnboundedSender<Event>,
    pub(super) answers: &'a mut mpsc::UnboundedReceiver<Human>,
    pub(super) cancel: &'a CancellationToken,
}

/// The steps of one run as they are carried out: what every part of the loop needs, gathered
/// once (rust-analyzer's "context object" for a long procedure).
pub(super) struct StepLoop<'a> {
    pub(super) runner: &'a Runner,
    pub(super) job: &'a Job,
    pub(super) run: &'a mut Run,
    pub(super) io: RunIo<'a>,
    /// The prepared work tree.
    pub(super) worktree: PathBuf,
    /// The plan file in the target repository's clone, for the step prompt.
    pub(super) plan_file: PathBuf,
    /// Logs and prompt files, outside the work tree.
    pub(super) scratch: PathBuf,
    /// Where the agent's commands run; `None` with `agent.sandbox = "off"`.
    pub(super) sandbox: Option<Sandbox>,
    pub(super) backend: Backend,
    pub(super) deadline: tokio::time::Instant,
    pub(super) total: usize,
    /// What stopped the run early (a limit, an admin), once something did.
    pub(super) stopped: Option<String>,
}

impl StepLoop<'_> {
    /// Step `index`: its attempts, its commit, and with `agent.approval = "step"` the admin's
    /// decision, redone as often as the admin asks for changes.
    pub(super) async fn step(&mut self, index: usize) -> anyhow::Result<()> {
        let agent = &self.runner.config.agent;
        let title = self.run.steps[index].title.clone();
        // A follow-up's request is the step's instructions from the first attempt on.
        let mut instructions = self.run.follow_up.clone();
        let mut redo = 0u32;
        loop {
            let before = self.runner.repo(self.job).head_id(&self.worktree).await?;
            let (green, summary) = self.attempts(index, &title, instructions.take()).await?;
            self.commit(index, &title, green, &summary, redo).await?;
            if self.stopped.is_some() || !agent.approve_each_step {
                return Ok(());
            }
            match self.decision(index, &title, green, &before).await? {
                Some(Human::Redo(change)) => {
                    instructions = Some(change);
                    redo += 1;
                }
                Some(Human::Abort) | None => {
                    self.stopped = Some(format!(
                        "stopped by an admin after step {} of {}",
                        index + 1,
                        self.total
                    ));
                    return Ok(());
                }
                Some(Human::Continue) | Some(Human::Answer(_)) => return Ok(()),
            }
        }
    }

    /// Edit, then check, then repair with the failure as feedback, up to
    /// `agent.max_repair_attempts`; returns whether the checks passed, and the step's summary.
    async fn attempts(
        &mut self,
        index: usize,
        title: &str,
        mut feedback: Option<String>,
    ) -> anyhow::Result<(bool, String)> {
        let agent = &self.runner.config.agent;
        let total = self.total;
        let mut summary = String::new();
        for attempt in 0..=agent.max_repair_attempts {
            if self.io.cancel.is_cancelled() {
                anyhow::bail!("cancelled");
            }
            let phase = if attempt == 0 {
                Phase::Editing
            } else {
                Phase::Repairing
            };
            self.phase(index, title, phase);
            let request = StepRequest {
                worktree: self.worktree.clone(),
                plan_markdown: self.job.plan.markdown.clone(),
                plan_file: self.plan_file.clone(),
                index,
                total,
                title: title.to_string(),
                feedback: feedback.take(),
            };
            let report = self.edit(&request).await?;
            self.run.usage.add(report.usage);
            if !report.summary.trim().is_empty() {
                summary = report.summary.clone();
            }
            if let Some(limit) = report.stopped {
                self.stopped = Some(limit);
                break;
            }
            self.phase(index, title, Phase::Testing);
            let checks = backend::run_checks(
                agent,
                &self.worktree,
                self.io.cancel,
                &self.runner.redactor,
                &self.scratch,
                self.sandbox.as_ref(),
            )
            .await?;
            if checks.green {
                return Ok((true, summary));
            }
            if let Some((command, tail, log)) = checks.failure {
                let _ = self.io.events.send(Event::ChecksFailed {
                    step: index,
                    attempt,
                    command: command.clone(),
                    tail: tail.clone(),
                    log,
                });
                feedback = Some(format!("`{command}` failed:\n{tail}"));
            }
            if self.run.usage.input_tokens + self.run.usage.output_tokens >= agent.max_tokens {
                self.stopped =
                    Some("the run's token budget (agent.max_tokens) is spent".to_string());
                break;
            }
        }
        Ok((false, summary))
    }

    /// One call of the backend on `request`, within the run's time limit.
    async fn edit(&mut self, request: &StepRequest) -> anyhow::Result<StepReport> {
        let agent = &self.runner.config.agent;
        let spent = self.run.usage.input_tokens + self.run.usage.output_tokens;
        let mut tools = Tools {
            agent,
            llm: &self.runner.llm,
            prompts: &self.runner.prompts,
            redactor: &self.runner.redactor,
            cancel: self.io.cancel,
            events: self.io.events,
            answers: self.io.answers,
            scratch: &self.scratch,
            sandbox: self.sandbox.as_ref(),
            tokens_left: agent.max_tokens.saturating_sub(spent),
        };
        match tokio::time::timeout_at(self.deadline, self.backend.run_step(request, &mut tools))
            .await
        {
            Ok(report) => report,
            Err(_) => Ok(StepReport {
                stopped: Some(format!(
                    "the run reached its time limit of {} minutes (agent.max_run_minutes)",
                    agent.max_run.as_secs() / 60
                )),
                ..StepReport::default()
            }),
        }
    }

    /// Commits the step, green or not (so stopping never loses work), saves the record, and
    /// pushes with `agent.push_each_step`.
    async fn commit(
        &mut self,
        index: usize,
        title: &str,
        green: bool,
        summary: &str,
        redo: u32,
    ) -> anyhow::Result<()> {
        let (job, runner, total) = (self.job, self.runner, self.total);
        if green {
            tick_plan_file(&self.worktree, &job.plan.path, index);
        }
        let redone = if redo > 0 {
            format!(" (redo {redo})")
        } else {
            String::new()
        };
        let message = match &self.run.follow_up {
            Some(_) => format!(
                "follow-up: {}{redone}",
                title.trim_start_matches("Follow-up: ")
            ),
            None => format!("step {}/{}: {}{redone}", index + 1, total, title),
        };
        let Committed {
            id: commit,
            left_out,
        } = runner.commit(job, &self.worktree, &message).await?;
        if !left_out.is_empty() {
            tracing::warn!(step = index + 1, files = ?left_out, "left files holding a configured secret out of the step's commit");
            let _ = self.io.events.send(Event::SecretsLeftOut {
                step: index,
                files: left_out,
            });
        }
        let summary = runner.redactor.redact(summary);
        let step = &mut self.run.steps[index];
        step.green = Some(green);
        if commit.is_some() {
            step.commit = commit.clone();
        }
        step.summary = Some(summary.clone());
        *self.run = self.io.store.save_run(self.run).await?;
        let pushed = commit.is_some() && runner.config.agent.push_each_step;
        let _ = self.io.events.send(Event::StepCommitted {
            step: index,
            total,
            commit,
            green,
            summary,
        });
        if pushed {
            runner
                .push_step(job, &self.run.branch, index, self.io.events)
                .await;
        }
        Ok(())
    }

    /// Step approval: shows what the step changed since `before` and waits for a decision.
    async fn decision(
        &mut self,
        index: usize,
        title: &str,
        green: bool,
        before: &str,
    ) -> anyhow::Result<Option<Human>> {
        let files = self
            .runner
            .repo(self.job)
            .diff_stat(&self.worktree, before)
            .await
            .unwrap_or_default();
        let _ = self.io.events.send(Event::AwaitingApproval {
            step: index,
            total: self.total,
            title: title.to_string(),
            green,
            files,
        });
        tokio::select! {
            d = next_decision(self.io.answers) => Ok(d),
            () = self.io.cancel.cancelled() => anyhow::bail!("cancelled"),
        }
    }

    /// Pushes the branch and opens (or updates) the pull request; the run is then finished, or
    /// stopped when a limit or an admin stopped it.
    pub(super) async fn finish(self, started: Instant) -> anyhow::Result<()> {
        let StepLoop {
            runner,
            job,
            run,
            io,
            total,
            stopped,
            ..
        } = self;
        let _ = io.events.send(Event::Phase {
            step: run.next_step.min(total - 1),
            total,
            title: String::new(),
            phase: Phase::Pushing,
            usage: run.usage,
        });
        let all_green = run.next_step == total && run.steps.iter().all(|s| s.green == Some(true));
        runner
            .repo(job)
            .push_branch(&run.branch)
            .await
            .context("pushing the run's branch")?;
        // Every run of this branch, this one as it is now, for the description.
        let mut history = io.store.runs(run.feature)?;
        history.retain(|r| r.number != run.number && r.branch == run.branch);
        history.push(run.clone());
        let pull_request = match runner.github_for(job) {
            Some(github) => Some(
                runner
                    .open_pull_request(
                        github,
                        job,
                        &history,
                        !all_green || stopped.is_some(),
                        started.elapsed(),
                    )
                    .await?,
            ),
            None => None,
        };
        run.pr_url = pull_request.as_ref().map(|p| p.url.clone());
        run.state = if stopped.is_some() {
            RunState::Stopped
        } else {
            RunState::Finished
        };
        run.message = stopped.clone();
        let _ = io.events.send(Event::Finished {
            branch: run.branch.to_string(),
            pull_request,
            green: all_green,
            stopped,
        });
        Ok(())
    }

    fn phase(&self, index: usize, title: &str, phase: Phase) {
        let _ = self.io.events.send(Event::Phase {
            step: index,
            total: self.total,
            title: title.to_string(),
            phase,
            usage: self.run.usage,
        });
    }
}
