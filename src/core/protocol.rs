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
