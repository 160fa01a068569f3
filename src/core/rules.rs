//! Whether an input may act now: one pure function of the feature, its last run and what is
//! asked.
//!
//! It is asked twice with the same words: by the Discord click path, for the instant answer a
//! click needs inside Discord's three seconds, and by the core under the feature's lock, which
//! is authoritative (two clicks can both pass the first check). A refusal that only says "this
//! was already done" (a second click on Approve) is marked, so the core can ignore it silently
//! and stay idempotent while a front end still tells the clicker.

use crate::model::{Feature, Run, RunState, Status};

/// What an input or a button wants to do, with what it was shown when it was posted: the plan
/// version under a plan's buttons, the run under a run's, the step under a step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    GeneratePlan {
        version: u32,
    },
    KeepRefining {
        version: u32,
    },
    Approve {
        version: u32,
    },
    RequestChanges {
        version: u32,
    },
    Discard {
        version: u32,
    },
    CancelRun,
    ResumeRun {
        run: u32,
    },
    AbortRun {
        run: u32,
    },
    /// A decision on step `step` (1-based) of the running run.
    DecideStep {
        step: u32,
    },
    /// `on_host`: runs go to the bot's host (`agent.executor = "local"`), where follow-ups run.
    FollowUp {
        on_host: bool,
    },
    CreateIssue,
    /// Keep one side of the conflict over plan `version`'s file.
    SettlePlanConflict {
        version: u32,
    },
}

/// Why there is no follow-up when runs go to GitHub Actions.
pub const FOLLOW_UPS_ON_HOST: &str = "follow-ups run on the bot's host only, and runs go to GitHub Actions here: push the change to the pull request's branch yourself, or set agent.executor = \"local\" for follow-ups";

/// Why nothing is approved while the plan file is in conflict.
pub const PLAN_CONFLICT: &str = "the plan file was changed on the remote by someone else: choose Keep mine or Take theirs under the conflict message first, so the plan that runs is the one in the repository";

/// Why an input may not act, as a sentence for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The same thing was already done: nothing is wrong, and the core says nothing.
    pub already_done: bool,
}

/// Whether `intent` may act on `feature`, whose latest run is `last_run`.
pub fn may(feature: &Feature, last_run: Option<&Run>, intent: Intent) -> Result<(), Refusal> {
    let id = feature.id;
    let status = feature.status;
    let current = feature.plan_version;
    let no = |message: String| Err(Refusal::new(message, false));
    let done = |message: String| Err(Refusal::new(message, true));
    match intent {
        Intent::Discard { .. } if status == Status::Discarded => {
            done(format!("feature #{id} was discarded"))
        }
        _ if status == Status::Discarded => no(format!("feature #{id} was discarded")),
        Intent::DecideStep { step } => decide_step(status, last_run, step),
        Intent::FollowUp { .. } if status != Status::PrOpen => no(format!(
            "feature #{id} is {status}; a follow-up needs an open pull request"
        )),
        Intent::FollowUp { on_host: false } => no(FOLLOW_UPS_ON_HOST.to_string()),
        Intent::SettlePlanConflict { version } => match &feature.plan_conflict {
            None => done("the plan conflict is already settled".to_string()),
            Some(conflict) if conflict.version != version || status != Status::Planned => no(
                format!("this conflict is over plan version {version}, which is no longer current; use the buttons under the latest plan")
            ),
            Some(_) => Ok(()),
        },
        Intent::Approve { .. } if feature.plan_conflict.is_some() => no(PLAN_CONFLICT.to_string()),
        Intent::CreateIssue => match &feature.issue {
            Some((number, _)) => done(format!(
                "GitHub issue #{number} already mirrors this feature"
            )),
            None => Ok(()),
        },
        Intent::CancelRun if !matches!(status, Status::Queued | Status::Running) => {
            no("no agent run is going for this feature".to_string())
        }
        Intent::ResumeRun { run } | Intent::AbortRun { run } => run_control(
            feature,
            last_run,
            run,
            matches!(intent, Intent::AbortRun { .. }),
        ),
        Intent::GeneratePlan { version } | Intent::KeepRefining { version } => {
            let refining = matches!(intent, Intent::KeepRefining { .. });
            match status {
                _ if current > version => no(format!(
                    "plan version {current} is already written; use the buttons under it"
                )),
                Status::Gathering if refining => {
                    done("the conversation is already open: just write your message".to_string())
                }
                Status::Gathering => no(
                    "the conversation was reopened; wait for the requirements to be confirmed again"
                        .to_string(),
                ),
                Status::Confirmed => Ok(()),
                _ => no(format!("feature #{id} is {status}; this no longer applies")),
            }
        }
        Intent::Approve { version } | Intent::RequestChanges { version }
            if version != current || current == 0 =>
        {
            no(stale_plan(feature, version))
        }
        Intent::Discard { version } if version != current => no(stale_plan(feature, version)),
        Intent::Approve { .. } if status == Status::Approved => {
            done(format!("plan version {current} is already approved"))
        }
        Intent::RequestChanges { .. } if status == Status::Gathering => {
            done("changes were already requested: just write what to change".to_string())
        }
        Intent::Approve { .. } | Intent::RequestChanges { .. } if status != Status::Planned => {
            no(format!("feature #{id} is {status}; this no longer applies"))
        }
        Intent::Discard { .. } if !status.can_move_to(Status::Discarded) => no(format!(
            "feature #{id} is {status}; it cannot be discarded now"
        )),
        _ => Ok(()),
    }
}

impl Refusal {
    fn new(message: String, already_done: bool) -> Refusal {
        Refusal {
            message,
            already_done,
        }
    }
}

/// A button under plan `version` when another is current (or none is).
fn stale_plan(feature: &Feature, version: u32) -> String {
    match feature.plan_version {
        0 => format!("feature #{} has no plan yet", feature.id),
        current => format!(
            "this is plan version {version}; version {current} is current, use the buttons under it"
        ),
    }
}

fn decide_step(status: Status, last_run: Option<&Run>, step: u32) -> Result<(), Refusal> {
    if status != Status::Running {
        return Err(Refusal::new(
            "no run of this feature is waiting for approval".to_string(),
            false,
        ));
    }
    if last_run.map(|r| r.next_step + 1) != Some(step as usize) {
        return Err(Refusal::new(
            "that step is no longer waiting for approval".to_string(),
            false,
        ));
    }
    Ok(())
}

/// Resume or abort run number `run`.
fn run_control(
    feature: &Feature,
    last_run: Option<&Run>,
    run: u32,
    abort: bool,
) -> Result<(), Refusal> {
    let no = |message: &str| Err(Refusal::new(message.to_string(), false));
    let Some(last) = last_run.filter(|r| r.number == run) else {
        let what = if abort { "abort" } else { "resume" };
        return match last_run {
            None => no(&format!("feature #{} has no run to {what}", feature.id)),
            Some(_) => no("that run is not the feature's latest"),
        };
    };
    if matches!(feature.status, Status::Queued | Status::Running) {
        return no("a run is already going for this feature");
    }
    if abort {
        return match last.state {
            RunState::Interrupted => Ok(()),
            _ => Err(Refusal::new("that run is already over".to_string(), true)),
        };
    }
    // A failed run whose steps are all done failed at the push or the pull request: resuming
    // it tries those again.
    let resumable = matches!(
        last.state,
        RunState::Interrupted | RunState::Failed | RunState::Cancelled | RunState::Stopped
    ) && (last.next_step < last.steps.len() || last.state == RunState::Failed);
    if resumable {
        Ok(())
    } else {
        no(&format!("feature #{} has no run to resume", feature.id))
    }
}
