//! The domain records and their state machines: features, transcripts, plan versions, runs,
//! and the statuses they move through. No I/O: [`crate::store`] persists these records, and
//! everything else reads and writes them through it.
//!
//! Invariant: a feature's status changes only along the edges [`Status::can_move_to`] allows,
//! and a finished run's outcome becomes a status in one place, [`Status::after_run`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::llm::Usage;

/// A feature's number, shown to users as `#N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeatureId(pub u64);

impl fmt::Display for FeatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for FeatureId {
    type Err = String;

    fn from_str(s: &str) -> Result<FeatureId, String> {
        s.trim()
            .trim_start_matches('#')
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(FeatureId)
            .ok_or_else(|| format!("{s:?} is not a feature number; use the number shown as #N"))
    }
}

/// Where a feature's conversation happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Place {
    Console,
    Discord {
        /// The server; 0 when unknown.
        #[serde(default)]
        guild_id: u64,
        channel_id: u64,
        thread_id: u64,
    },
}

impl Place {
    /// A link people can open to the conversation, when it has one.
    pub fn link(&self) -> Option<String> {
        match self {
            Place::Discord {
                guild_id,
                thread_id,
                ..
            } if *guild_id != 0 => Some(format!(
                "https://discord.com/channels/{guild_id}/{thread_id}"
            )),
            _ => None,
        }
    }
}

/// A person, as the front end knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// A stable id: a Discord user id, or the local user name in the console.
    pub id: String,
    pub name: String,
}

/// Where a feature is in its life. Only [`Store::set_status`] changes it, and only along the
/// edges [`Status::can_move_to`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The requirements conversation is going on.
    Gathering,
    /// The LLM said the requirements are actionable.
    Confirmed,
    /// A plan is committed; `Feature::plan_version` says which.
    Planned,
    Approved,
    Queued,
    Running,
    PrOpen,
    Merged,
    Closed,
    Failed,
    Cancelled,
    Discarded,
}

impl Status {
    /// Whether a feature may move from `self` to `to`.
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Gathering, Confirmed | Planned | Discarded)
                | (Confirmed, Gathering | Planned | Discarded)
                | (Planned, Gathering | Planned | Approved | Discarded)
                | (Approved, Queued | Running | Planned | Discarded | Cancelled)
                | (Queued, Running | Cancelled | Failed)
                | (Running, PrOpen | Closed | Failed | Cancelled)
                | (PrOpen, Merged | Closed | Running | Queued)
                | (Failed | Cancelled, Queued | Gathering | Planned | Discarded)
                | (Closed, PrOpen)
        )
    }

    /// The status a feature takes when its run has ended: the one mapping from a run's outcome
    /// to a feature's life, for runs of the bot and of `featurebot agent` alike.
    pub fn after_run(run: &Run) -> Status {
        match run.state {
            _ if run.pr_url.is_some() => Status::PrOpen,
            // Pushed, with no GitHub configured to propose it: the work is done here.
            RunState::Finished | RunState::Stopped => Status::Closed,
            RunState::Cancelled => Status::Cancelled,
            RunState::Failed | RunState::Interrupted | RunState::Queued | RunState::Running => {
                Status::Failed
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        use Status::*;
        match self {
            Gathering => "gathering",
            Confirmed => "confirmed",
            Planned => "planned",
            Approved => "approved",
            Queued => "queued",
            Running => "running",
            PrOpen => "pr open",
            Merged => "merged",
            Closed => "closed",
            Failed => "failed",
            Cancelled => "cancelled",
            Discarded => "discarded",
        }
    }
}

impl FromStr for Status {
    type Err = String;

    /// Accepts the names [`Status::as_str`] gives, with `_` or `-` for the space.
    fn from_str(s: &str) -> Result<Status, String> {
        use Status::*;
        let name = s.trim().to_lowercase().replace(['_', '-'], " ");
        [
            Gathering, Confirmed, Planned, Approved, Queued, Running, PrOpen, Merged, Closed,
            Failed, Cancelled, Discarded,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
        .ok_or_else(|| format!("{s:?} is not a status"))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    P0,
    P1,
    #[default]
    P2,
    P3,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "p0",
            Priority::P1 => "p1",
            Priority::P2 => "p2",
            Priority::P3 => "p3",
        }
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Priority, String> {
        match s.trim().to_lowercase().as_str() {
            "p0" => Ok(Priority::P0),
            "p1" => Ok(Priority::P1),
            "p2" => Ok(Priority::P2),
            "p3" => Ok(Priority::P3),
            _ => Err(format!("{s:?} is not a priority; use p0 to p3")),
        }
    }
}

/// One feature request and its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub id: FeatureId,
    pub title: String,
    pub requester: Author,
    pub place: Place,
    pub status: Status,
    pub priority: Priority,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The summary the LLM gave when it confirmed the requirements.
    pub summary: Option<String>,
    /// The latest plan version, 0 before the first plan.
    pub plan_version: u32,
    /// The plan file, relative to the repository root, fixed by the first plan.
    pub plan_path: Option<String>,
    /// Tokens spent on this feature so far.
    pub usage: Usage,
    #[serde(default)]
    pub labels: Vec<String>,
    /// The GitHub issue mirroring this feature: number and link.
    #[serde(default)]
    pub issue: Option<(u64, String)>,
    /// The target repository's name from `[[repos]]`; `None` for the default `[repo]`.
    #[serde(default)]
    pub repo: Option<String>,
    /// The plan file was changed on the remote by someone else when the latest version was
    /// written: the admin keeps one of the two before anything is approved.
    #[serde(default)]
    pub plan_conflict: Option<PlanConflict>,
}

/// The plan file changed on the remote by someone else, beside the bot's new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConflict {
    /// The plan version the bot wrote beside theirs.
    pub version: u32,
    /// The latest commit on the remote's base branch that changed the file.
    pub theirs: String,
    /// The bot's version: its commit, on `branch`.
    pub mine: String,
    pub branch: BranchName,
}

/// Who spoke a turn of the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Assistant,
}

/// One message of the requirements conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub seq: u64,
    pub speaker: Speaker,
    /// The author's display name (for assistant turns, the bot).
    pub author: String,
    pub text: String,
    /// The front end's id of the message this turn came from, for de-duplication.
    pub source_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One committed version of a feature's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanVersion {
    pub version: u32,
    /// Relative to the repository root.
    pub path: String,
    pub commit: String,
    pub markdown: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One agent run of a feature's approved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub feature: FeatureId,
    /// 1 for the feature's first run, then 2...
    pub number: u32,
    pub plan_version: u32,
    pub branch: BranchName,
    pub worktree: String,
    pub steps: Vec<StepRecord>,
    /// The index of the next step to do.
    pub next_step: usize,
    pub state: RunState,
    pub pr_url: Option<String>,
    /// What ended the run, in a sentence, when it ended other than by success.
    pub message: Option<String>,
    pub usage: Usage,
    /// For a follow-up run: what the person asked to change.
    #[serde(default)]
    pub follow_up: Option<String>,
    /// For a run on GitHub Actions: how to find it again.
    #[serde(default)]
    pub remote: Option<RemoteRun>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A run dispatched to GitHub Actions. Saved before the dispatch, so a restart finds the run
/// again (by the correlation id in its name) instead of dispatching a second one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRun {
    /// In the workflow run's name (`featurebot <id>`); unique per dispatch.
    pub correlation_id: String,
    /// Set once the dispatch was accepted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub dispatched_at: Option<OffsetDateTime>,
    /// The Actions run, once found.
    pub run_id: Option<u64>,
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub title: String,
    /// `None` until the step is done.
    pub green: Option<bool>,
    pub commit: Option<String>,
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    /// All steps done and the PR is open (a draft when anything stayed red).
    Finished,
    /// A limit (time, tokens, tool calls, a repeated failure) stopped it; the work so far is
    /// pushed in a draft PR.
    Stopped,
    Failed,
    Cancelled,
    /// The bot stopped while the run was going; it can resume from `next_step`.
    Interrupted,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Queued | RunState::Running)
    }
}

/// A branch name git and featurebot accept: a conservative subset of git's ref-name rules,
/// enough to refuse typos and injection. Checked once where a name comes in (the config, the
/// command line, a stored run), never again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(name: &str) -> Result<BranchName, String> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with(['-', '/', '.'])
            && !name.ends_with(['/', '.'])
            && !name.ends_with(".lock")
            && !name.contains("..")
            && !name.contains("//")
            && !name.contains("@{")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'));
        if valid {
            Ok(BranchName(name.to_string()))
        } else {
            Err(format!(
                "{name:?} is not a branch name featurebot accepts (letters, digits, - _ / ., no `..`, not ending in .lock)"
            ))
        }
    }

    /// `featurebot/<id>-<slug>`, the branch of a feature's runs. Valid by construction: the
    /// slug's characters outside `[a-z0-9-]` are dropped.
    pub fn for_feature(id: FeatureId, slug: &str) -> BranchName {
        let slug: String = slug
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let slug = slug.trim_matches('-');
        if slug.is_empty() {
            BranchName(format!("featurebot/{id}"))
        } else {
            BranchName(format!("featurebot/{id}-{slug}"))
        }
    }

    /// `featurebot/plans/<id>`, where a new plan version waits when someone else changed the
    /// plan file on the remote.
    pub fn for_plan(id: FeatureId) -> BranchName {
        BranchName(format!("featurebot/plans/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BranchName {
    type Error = String;

    fn try_from(name: String) -> Result<BranchName, String> {
        BranchName::parse(&name)
    }
}

impl From<BranchName> for String {
    fn from(name: BranchName) -> String {
        name.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
