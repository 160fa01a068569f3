//! The buttons under the bot's messages and their custom ids.
//!
//! A custom id is `fb:<action>:<feature>:<plan version>`. Everything a click needs is in it,
//! so buttons keep working after a restart, and a click on a superseded plan's button can say
//! which version is current instead of acting.

use std::fmt;
use std::str::FromStr;

use crate::model::FeatureId;

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    GeneratePlan,
    KeepRefining,
    Approve,
    RequestChanges,
    Discard,
    CancelRun,
    ResumeRun,
    AbortRun,
    CreateIssue,
    FollowUp,
    StepContinue,
    StepChange,
    StepAbort,
    KeepMine,
    TakeTheirs,
}

impl Action {
    fn code(self) -> &'static str {
        match self {
            Action::GeneratePlan => "plan",
            Action::KeepRefining => "refine",
            Action::Approve => "approve",
            Action::RequestChanges => "changes",
            Action::Discard => "discard",
            Action::CancelRun => "cancel",
            Action::ResumeRun => "resume",
            Action::AbortRun => "abort",
            Action::CreateIssue => "issue",
            Action::FollowUp => "followup",
            Action::StepContinue => "continue",
            Action::StepChange => "change",
            Action::StepAbort => "stop",
            Action::KeepMine => "mine",
            Action::TakeTheirs => "theirs",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Action::GeneratePlan => "Generate plan",
            Action::KeepRefining => "Keep refining",
            Action::Approve => "Approve agent run",
            Action::RequestChanges => "Request changes",
            Action::Discard => "Discard",
            Action::CancelRun => "Cancel run",
            Action::ResumeRun => "Resume run",
            Action::AbortRun => "Abort run",
            Action::CreateIssue => "Create GitHub issue",
            Action::FollowUp => "Follow up",
            Action::StepContinue => "Continue",
            Action::StepChange => "Change this step",
            Action::StepAbort => "Abort",
            Action::KeepMine => "Keep mine on top",
            Action::TakeTheirs => "Take theirs",
        }
    }
}

/// A parsed custom id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Button {
    pub action: Action,
    pub feature: FeatureId,
    /// The plan version the button belongs to (for the confirmation buttons: the latest plan
    /// when they were posted, 0 before the first; for run buttons: the run number).
    pub version: u32,
}

impl fmt::Display for Button {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fb:{}:{}:{}",
            self.action.code(),
            self.feature.0,
            self.version
        )
    }
}

impl FromStr for Button {
    type Err = ();

    fn from_str(s: &str) -> Result<Button, ()> {
        let mut parts = s.split(':');
        if parts.next() != Some("fb") {
            return Err(());
        }
        let action = match parts.next().ok_or(())? {
            "plan" => Action::GeneratePlan,
            "refine" => Action::KeepRefining,
            "approve" => Action::Approve,
            "changes" => Action::RequestChanges,
            "discard" => Action::Discard,
            "cancel" => Action::CancelRun,
            "resume" => Action::ResumeRun,
            "abort" => Action::AbortRun,
            "issue" => Action::CreateIssue,
            "followup" => Action::FollowUp,
            "continue" => Action::StepContinue,
            "change" => Action::StepChange,
            "stop" => Action::StepAbort,
            "mine" => Action::KeepMine,
            "theirs" => Action::TakeTheirs,
            _ => return Err(()),
        };
        let feature = parts.next().ok_or(())?.parse::<u64>().map_err(|_| ())?;
        let version = parts.next().ok_or(())?.parse::<u32>().map_err(|_| ())?;
        if parts.next().is_some() || feature == 0 {
            return Err(());
        }
        Ok(Button {
            action,
            feature: FeatureId(feature),
            version,
        })
    }
}
