//! The coding agent: turns an approved plan into a branch, commits and a pull request.
//!
//! - `run.rs`: one run, step by step: work tree, backend, formatters and tests, repairs,
//!   per-step commits, limits, push, pull request. Reports [`Event`]s as it goes.
//! - `backend.rs`: who edits the code for a step: the built-in tool loop on the configured LLM,
//!   or an external coding agent command. A step goes in as a [`StepRequest`] and comes back as
//!   a [`StepReport`], so a remote backend can take the same place.
//! - `tools.rs`: the built-in agent's file tools, confined to the work tree.
//! - `paths.rs`: the one resolver of the paths the agent reads and writes in the work tree
//!   (links followed only while they stay inside it, never into `.git`).
//! - `exec.rs`: runs a command with a cleared environment, a timeout and a process-group kill.
//!
//! Invariant: the commands the agent runs never see a secret: their environment is cleared
//! (`exec::clean_env`) and their output is redacted before anyone sees it.

pub mod actions;
pub mod backend;
pub mod exec;
pub mod paths;
pub mod progress;
pub mod run;
pub mod sandbox;
pub mod tools;

use std::path::PathBuf;

use crate::github::PullRequest;
use crate::llm::Usage;

/// What the run is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preparing,
    Editing,
    Formatting,
    Testing,
    Repairing,
    WaitingForAnswer,
    Pushing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing the work tree",
            Phase::Editing => "editing",
            Phase::Formatting => "formatting",
            Phase::Testing => "testing",
            Phase::Repairing => "repairing",
            Phase::WaitingForAnswer => "waiting for an answer",
            Phase::Pushing => "pushing",
        }
    }
}

/// Progress of a run, for the people watching it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        branch: String,
        steps: Vec<String>,
        /// The first step to do (0 for a new run).
        from: usize,
    },
    Phase {
        /// 0-based.
        step: usize,
        total: usize,
        title: String,
        phase: Phase,
        usage: Usage,
    },
    ChecksFailed {
        step: usize,
        attempt: u32,
        command: String,
        /// The end of the output, redacted.
        tail: String,
        /// The full (redacted) log.
        log: PathBuf,
    },
    StepCommitted {
        step: usize,
        total: usize,
        commit: Option<String>,
        green: bool,
        summary: String,
    },
    /// With `agent.push_each_step`: pushing the branch after a step failed. The run goes on;
    /// the push at its end decides.
    StepPushFailed {
        step: usize,
        /// What went wrong, redacted.
        message: String,
    },
    /// Before the run, its branch took in commits others pushed to it (a reviewer's): a
    /// fast-forward to their tip, or a merge of it (`merged`). `theirs` is the remote's tip.
    BranchCaughtUp { theirs: String, merged: bool },
    /// Before the run, its branch followed a rewrite of the remote's (a force-push) to
    /// `theirs`: nothing of the bot's was lost, it had all been pushed.
    BranchRewritten { theirs: String },
    /// These changed files hold one of featurebot's own configured secrets (in their contents
    /// or their name), so the step's commit left them out; they stay, uncommitted, in the work
    /// tree.
    SecretsLeftOut { step: usize, files: Vec<String> },
    /// `agent.sandbox = "off"`: this run's commands are not confined.
    Unconfined,
    /// The agent asks the humans; the run waits for an answer on its answer channel.
    Question { text: String },
    /// A run on GitHub Actions: where it stands there ("queued", "running: Install
    /// featurebot", "cancelling"...), with a link to the run once it is known.
    Remote { state: String, url: Option<String> },
    /// With `agent.approval = "step"`: the step is committed and checked; the run waits for
    /// Continue, Redo or Abort.
    AwaitingApproval {
        step: usize,
        total: usize,
        title: String,
        green: bool,
        /// Files changed by the step: path, lines added, lines removed.
        files: Vec<(String, usize, usize)>,
    },
    Finished {
        branch: String,
        pull_request: Option<PullRequest>,
        green: bool,
        /// Why the run stopped early, if it did.
        stopped: Option<String>,
    },
}

/// What people tell a running agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Human {
    /// The answer to the agent's question.
    Answer(String),
    /// Step approval: go on to the next step.
    Continue,
    /// Step approval: do the step again with this feedback.
    Redo(String),
    /// Step approval: stop here (the work so far is pushed and proposed as a draft).
    Abort,
}

/// One step for a backend to carry out.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub worktree: PathBuf,
    pub plan_markdown: String,
    pub plan_file: PathBuf,
    /// 0-based.
    pub index: usize,
    pub total: usize,
    pub title: String,
    /// Failing check output to repair, or a human's feedback.
    pub feedback: Option<String>,
}

/// What a backend did for a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    pub summary: String,
    pub usage: Usage,
    /// Set when the backend stopped on a limit rather than finishing.
    pub stopped: Option<String>,
}
