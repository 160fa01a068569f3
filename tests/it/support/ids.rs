//! The custom ids of the bot's buttons, made by featurebot's own [`Button`], so that a test names
//! the button it means (approve feature 1's plan version 1) instead of typing its encoding.

use featurebot::discord::{Action, Button};
use featurebot::model::FeatureId;
use serde_json::Value;

/// The custom id of the `action` button of `feature` for plan (or run) `version`.
pub fn id(action: Action, feature: u64, version: u32) -> String {
    Button {
        action,
        feature: FeatureId(feature),
        version,
    }
    .to_string()
}

pub fn plan(feature: u64, version: u32) -> String {
    id(Action::GeneratePlan, feature, version)
}

pub fn refine(feature: u64, version: u32) -> String {
    id(Action::KeepRefining, feature, version)
}

pub fn approve(feature: u64, version: u32) -> String {
    id(Action::Approve, feature, version)
}

pub fn changes(feature: u64, version: u32) -> String {
    id(Action::RequestChanges, feature, version)
}

pub fn discard(feature: u64, version: u32) -> String {
    id(Action::Discard, feature, version)
}

pub fn issue(feature: u64, version: u32) -> String {
    id(Action::CreateIssue, feature, version)
}

pub fn resume(feature: u64, run: u32) -> String {
    id(Action::ResumeRun, feature, run)
}

pub fn abort(feature: u64, run: u32) -> String {
    id(Action::AbortRun, feature, run)
}

pub fn step_continue(feature: u64, run: u32) -> String {
    id(Action::StepContinue, feature, run)
}

pub fn step_change(feature: u64, run: u32) -> String {
    id(Action::StepChange, feature, run)
}

pub fn step_abort(feature: u64, run: u32) -> String {
    id(Action::StepAbort, feature, run)
}

/// The buttons a lookup wants.
pub trait Pick {
    fn picks(&self, custom_id: &str) -> bool;
}

/// Any button doing this.
impl Pick for Action {
    fn picks(&self, custom_id: &str) -> bool {
        custom_id.parse::<Button>().is_ok_and(|b| b.action == *self)
    }
}

/// Any button doing this for this feature.
impl Pick for (Action, u64) {
    fn picks(&self, custom_id: &str) -> bool {
        custom_id
            .parse::<Button>()
            .is_ok_and(|b| b.action == self.0 && b.feature == FeatureId(self.1))
    }
}

/// Exactly this custom id.
impl Pick for String {
    fn picks(&self, custom_id: &str) -> bool {
        custom_id == self
    }
}

/// Any custom id starting with this.
impl Pick for &str {
    fn picks(&self, custom_id: &str) -> bool {
        custom_id.starts_with(*self)
    }
}

/// The custom ids of the components of a Discord message, in order.
pub fn custom_ids(message: &Value) -> Vec<String> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["custom_id"].as_str().map(str::to_string))
        .collect()
}
