//! The core's protocol: every [`Input`] a front end can send and every [`Output`] it renders.
//!
//! One enum each, so every trigger and every thing shown is visible in one `match`; front ends
//! are translators between people and these two types.

use crate::core::runs::StepDecision;
use crate::model::{Author, Feature, FeatureId, Place, Priority, Run, Status};

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
    /// A decision on step `step` (1-based) of the feature's run, awaiting approval
    /// (`agent.approval = "step"`). The core acts on it only while that step is the one
    /// waiting, so a click under an earlier step's message does nothing.
    StepDecision {
        feature: FeatureId,
        step: u32,
        decision: StepDecision,
    },
    /// Settle the conflict over the plan file that plan `version` was written into: keep the
    /// bot's version (`keep_mine`, committed on top of theirs) or take theirs as the plan.
    SettlePlanConflict {
        feature: FeatureId,
        version: u32,
        keep_mine: bool,
    },
    /// Ask GitHub whether open pull requests were merged or closed.
    RefreshPullRequests,
    /// Add labels (untrusted text; each is cleaned up or refused).
    AddLabels {
        feature: FeatureId,
        labels: Vec<String>,
    },
}

/// Something to show people: what ([`OutputKind`]), about which feature, and where. Front ends
/// render from this alone; they never read the store to show an output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// `None` only for the refusal of a feature that never came to exist (a refused start).
    pub feature: Option<FeatureId>,
    /// Where the feature's conversation is; for a refused start, where it was asked for.
    pub place: Place,
    pub kind: OutputKind,
}

/// What there is to show.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// A feature was created; its conversation begins.
    Started { feature: Feature },
    /// The input was refused, nothing was done.
    Rejected { message: String },
    /// The LLM is working on an answer.
    Typing,
    /// Visible text of the answer being streamed.
    ReplyDelta { text: String },
    /// The whole visible answer, after the last delta.
    Reply { text: String },
    /// The requirements are confirmed; a plan can be generated. `version` is the feature's
    /// latest plan version (0 before the first), which the plan buttons carry.
    Confirmed { summary: String, version: u32 },
    /// A plan is being written.
    PlanStarted { version: u32 },
    /// A plan version is committed (or, when `again`, an existing one is shown again).
    /// `feature` is the feature as it is now (its title, target repository and issue).
    PlanCommitted {
        feature: Feature,
        version: u32,
        path: String,
        commit: String,
        markdown: String,
        again: bool,
    },
    /// Someone else changed the plan file on the remote: plan `version` is committed on
    /// `branch` beside their commit, and waits for the admin to keep one of the two.
    PlanConflict {
        version: u32,
        path: String,
        theirs: String,
        mine: String,
        branch: String,
    },
    /// The plan conflict is settled: `kept_mine`, or their text became plan `version`.
    PlanConflictSettled { version: u32, kept_mine: bool },
    /// The conversation goes on after a confirmation.
    Refining,
    /// Plan `version` was approved; an agent run may start.
    Approved { version: u32 },
    /// Plan `version` was sent back for changes; the conversation is open again.
    ChangesRequested { version: u32 },
    /// The feature was closed without going further.
    Discarded,
    /// An agent run is queued; `position` runs are ahead of it (0: it starts now).
    RunQueued { position: usize },
    /// Progress of the feature's agent run.
    RunEvent { event: crate::agent::Event },
    /// The run ended (finished, stopped by a limit, failed or cancelled); see `run.state`.
    /// `follow_up`: whether Follow up may be offered on its pull request (runs go to the bot's
    /// host).
    RunEnded { run: Run, follow_up: bool },
    /// A run was going when featurebot stopped; it can be resumed or aborted.
    RunInterrupted { run: Run },
    /// The feature's priority or labels changed.
    FeatureUpdated { feature: Feature },
    /// A GitHub issue now mirrors the feature.
    IssueCreated { number: u64, url: String },
    /// The next message will start a follow-up run on the open pull request.
    FollowUpReady,
    /// The feature's pull request was merged or closed on GitHub.
    PullRequestChanged { status: Status },
    /// What changed from the previous plan version of the feature titled `title`, as a
    /// unified diff.
    PlanDiff {
        title: String,
        from: u32,
        to: u32,
        diff: String,
    },
    /// Something worth knowing that did not stop the work.
    Warning { message: String },
    /// The work failed; nothing already said or written is lost.
    Failed { message: String },
}
