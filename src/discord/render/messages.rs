//! Pure message builders: outputs become Discord messages (content, embeds, buttons,
//! attachments) here, with no I/O, so what the bot posts can be read and tested as data.

use super::*;
use crate::core::rules;
use crate::model::Run;

/// What a plan message shows of a committed plan version.
pub(super) struct Shown<'a> {
    /// Relative to the repository root.
    pub path: &'a str,
    /// The file on GitHub, when the target repository has one.
    pub link: Option<&'a str>,
    pub commit: &'a str,
    pub markdown: &'a str,
    /// Offer "Create issue" (GitHub configured, no issue yet).
    pub issue_button: bool,
}

/// The plan as an attachment, with a short embed and the buttons that act on this version.
pub(super) fn plan_message(feature: &Feature, version: u32, shown: &Shown) -> CreateMessage {
    let Shown {
        path,
        link,
        commit,
        markdown,
        issue_button,
    } = *shown;
    let slug = Slug::new(&feature.title, feature.id);
    let title: String = feature.title.chars().take(240).collect();
    let steps = crate::plan::steps(markdown).len();
    let embed = CreateEmbed::new()
        .title(format!("Plan: {title}"))
        .field("Version", version.to_string(), true)
        .field(
            "Commit",
            format!("`{}`", &commit[..commit.len().min(12)]),
            true,
        )
        .field("Steps", steps.to_string(), true)
        .field(
            "File",
            match link {
                Some(url) => format!("[{}]({url})", truncate(path, 400)),
                None => format!("`{}`", truncate(path, 1_000)),
            },
            false,
        );
    let mut actions = vec![
        (Action::Approve, ButtonStyle::Success),
        (Action::RequestChanges, ButtonStyle::Secondary),
        (Action::Discard, ButtonStyle::Danger),
    ];
    if issue_button {
        actions.push((Action::CreateIssue, ButtonStyle::Secondary));
    }
    let row = buttons(feature.id, version, &actions);
    CreateMessage::new()
        .content(format!("Plan version {version} is committed."))
        .embed(embed)
        .add_file(CreateAttachment::bytes(
            markdown.as_bytes().to_vec(),
            format!("{slug}.md"),
        ))
        .components(vec![row])
}

pub(super) fn buttons(
    feature: FeatureId,
    version: u32,
    actions: &[(Action, ButtonStyle)],
) -> CreateActionRow {
    CreateActionRow::Buttons(
        actions
            .iter()
            .map(|(action, style)| {
                let id = Button {
                    action: *action,
                    feature,
                    version,
                };
                CreateButton::new(id.to_string())
                    .label(action.label())
                    .style(*style)
            })
            .collect(),
    )
}

pub(super) fn run_row(
    feature: FeatureId,
    run: u32,
    actions: &[(Action, ButtonStyle)],
) -> CreateActionRow {
    buttons(feature, run, actions)
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The first message of a feature's thread.
pub(super) fn intro(feature: &Feature) -> CreateMessage {
    CreateMessage::new().content(format!(
        "**{}** (feature #{}), requested by <@{}>.\nAnswer the questions here; only featurebot admins' messages are used.",
        feature.title, feature.id, feature.requester.id
    ))
}

/// The confirmation, with the buttons that write the plan or keep refining.
pub(super) fn confirmed(
    feature: FeatureId,
    version: u32,
    summary: &str,
) -> (String, CreateActionRow) {
    let text = format!("**Requirements confirmed.**\n{summary}");
    let row = buttons(
        feature,
        version,
        &[
            (Action::GeneratePlan, ButtonStyle::Primary),
            (Action::KeepRefining, ButtonStyle::Secondary),
        ],
    );
    (text, row)
}

/// What changed between two plan versions: inline when it fits, attached when it does not.
pub(super) fn plan_diff(
    feature: FeatureId,
    title: &str,
    from: u32,
    to: u32,
    diff: String,
) -> CreateMessage {
    let header = format!("Changes from plan version {from} to {to}:");
    let inline = format!("{header}\n```diff\n{}```", diff.replace("```", "` ` `"));
    if diff.trim().is_empty() {
        CreateMessage::new().content(format!(
            "Plan version {to} has the same text as version {from}."
        ))
    } else if inline.chars().count() <= MESSAGE_LIMIT {
        CreateMessage::new().content(inline)
    } else {
        let slug = Slug::new(title, feature).to_string();
        CreateMessage::new()
            .content(format!("{header} (attached)"))
            .add_file(CreateAttachment::bytes(
                diff.into_bytes(),
                format!("{slug}-v{from}-v{to}.diff"),
            ))
    }
}

/// Someone else changed the plan file on the remote: both commits, and the two ways out.
pub(super) fn plan_conflict(
    feature: FeatureId,
    version: u32,
    path: &str,
    theirs: &str,
    mine: &str,
    branch: &str,
) -> CreateMessage {
    let text = format!(
        "⚠️ Someone else changed `{path}` on the remote (commit `{}`), so plan version {version} did not replace it: it is committed on branch `{branch}` (commit `{}`). **Keep mine on top** commits version {version} over their change; **Take theirs** makes their text the plan (version {}). Nothing can be approved until one is chosen.",
        short(theirs),
        short(mine),
        version + 1
    );
    CreateMessage::new()
        .content(truncate(&text, MESSAGE_LIMIT))
        .components(vec![buttons(
            feature,
            version,
            &[
                (Action::KeepMine, ButtonStyle::Primary),
                (Action::TakeTheirs, ButtonStyle::Secondary),
            ],
        )])
}

/// The plan conflict is settled.
pub(super) fn plan_conflict_settled(version: u32, kept_mine: bool) -> CreateMessage {
    CreateMessage::new().content(match kept_mine {
        true => format!("Plan version {version} is committed on top of the remote's change."),
        false => format!("Their text is plan version {version} now."),
    })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

pub(super) fn pull_request_changed(status: crate::model::Status) -> CreateMessage {
    let text = if status == crate::model::Status::Merged {
        "🎉 The pull request was merged."
    } else {
        "The pull request was closed without merging."
    };
    CreateMessage::new().content(text)
}

pub(super) fn feature_updated(feature: &Feature) -> CreateMessage {
    let mut text = format!("Priority: **{}**", feature.priority.as_str());
    if !feature.labels.is_empty() {
        text.push_str(&format!(" · labels: {}", feature.labels.join(", ")));
    }
    CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT))
}

/// The run card's first line and the card itself, with its Cancel button.
pub(super) fn run_queued(feature: FeatureId, position: usize) -> (String, CreateMessage) {
    let line = if position == 0 {
        "starting".to_string()
    } else {
        format!("queued, {position} run(s) ahead")
    };
    let message = CreateMessage::new()
        .content(format!("**Agent run**: {line}"))
        .components(vec![run_row(
            feature,
            0,
            &[(Action::CancelRun, ButtonStyle::Danger)],
        )])
        .allowed_mentions(CreateAllowedMentions::new());
    (line, message)
}

/// How a run ended, in a few words, for its card.
pub(super) fn run_summary(run: &Run) -> String {
    match run.state {
        RunState::Finished => "finished".to_string(),
        RunState::Stopped => format!("stopped: {}", run.message.clone().unwrap_or_default()),
        RunState::Cancelled => run
            .message
            .clone()
            .unwrap_or_else(|| "cancelled".to_string()),
        _ => format!("failed: {}", run.message.clone().unwrap_or_default()),
    }
}

/// The message after a run: the pull request (with Follow up), the pushed branch, or what
/// stopped it (with Resume when there is something to resume).
pub(super) fn run_ended(
    feature: FeatureId,
    run: &Run,
    summary: &str,
    follow_up: bool,
) -> CreateMessage {
    let text = match (&run.pr_url, run.state) {
        // A follow-up that did not finish: the pull request is still there, as it was.
        (Some(url), RunState::Failed | RunState::Cancelled) => format!(
            "{} The follow-up run {summary}. The pull request stays open: {url}",
            if run.state == RunState::Failed {
                "❌"
            } else {
                "⏹️"
            }
        ),
        (Some(url), _) if follow_up => format!("✅ Pull request: {url}"),
        (Some(url), _) => format!("✅ Pull request: {url}\n-# {}", rules::FOLLOW_UPS_ON_HOST),
        (None, RunState::Finished | RunState::Stopped) => {
            format!("✅ Branch `{}` is pushed.", run.branch)
        }
        (None, RunState::Cancelled) => format!("⏹️ The agent run was {summary}."),
        (None, _) => format!("❌ The agent run {summary}"),
    };
    let message = CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT));
    let buttons: &[(Action, ButtonStyle)] = match (&run.pr_url, run.state) {
        (Some(_), _) if follow_up => &[(Action::FollowUp, ButtonStyle::Primary)],
        (Some(_), _) => &[],
        // A failed run with every step done failed at the push or the pull request: resuming
        // tries those again.
        (None, RunState::Failed) => &[(Action::ResumeRun, ButtonStyle::Primary)],
        (None, RunState::Cancelled) if run.next_step < run.steps.len() => {
            &[(Action::ResumeRun, ButtonStyle::Primary)]
        }
        _ => &[],
    };
    if buttons.is_empty() {
        return message;
    }
    message.components(vec![run_row(feature, run.number, buttons)])
}

/// A run a stop interrupted, with Resume and Abort.
pub(super) fn run_interrupted(feature: FeatureId, run: &Run) -> CreateMessage {
    let text = format!(
        "⚠️ The agent run was interrupted at step {} of {} when featurebot stopped. Resume it from there, or abort it.",
        (run.next_step + 1).min(run.steps.len()),
        run.steps.len()
    );
    let row = run_row(
        feature,
        run.number,
        &[
            (Action::ResumeRun, ButtonStyle::Primary),
            (Action::AbortRun, ButtonStyle::Danger),
        ],
    );
    CreateMessage::new().content(text).components(vec![row])
}

/// A red check: the command and the end of its output (the whole log is attached by the caller).
pub(super) fn checks_failed(step: usize, attempt: u32, command: &str, tail: &str) -> CreateMessage {
    let tail = crate::agent::backend::last_lines(tail, 30);
    let skip = tail.chars().count().saturating_sub(1_500);
    let tail: String = tail.chars().skip(skip).collect();
    let text = format!(
        "❌ Step {} (attempt {}): `{}` failed\n```\n{}\n```",
        step + 1,
        attempt + 1,
        truncate(command, 200),
        tail.replace("```", "` ` `")
    );
    CreateMessage::new().content(text)
}

pub(super) fn step_push_failed(step: usize, message: &str) -> CreateMessage {
    let text = format!(
        "⚠️ Pushing the branch after step {} failed: {}\nThe run goes on; it pushes again at the end.",
        step + 1,
        truncate(message, 1_500)
    );
    CreateMessage::new().content(text)
}

/// Files the step's commit left out because they hold one of featurebot's own secrets.
pub(super) fn secrets_left_out(step: usize, files: &[String]) -> CreateMessage {
    let files: Vec<String> = files
        .iter()
        .map(|f| format!("`{}`", truncate(f, 200)))
        .collect();
    let text = format!(
        "🔒 Left out of step {}'s commit: {}. Each holds one of featurebot's own secrets (a configured token), so it is not committed or pushed. Ask for a follow-up that reads the value from the environment instead.",
        step + 1,
        files.join(", ")
    );
    CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT))
}

/// The agent's question; an admin's next message in the thread answers it.
pub(super) fn question(text: &str) -> CreateMessage {
    let text = format!(
        "❓ **The agent asks:** {text}\nReply in this thread: an admin's next message is the answer."
    );
    CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT))
}

/// A step waiting for approval (`agent.approval = "step"`): what it changed, and the buttons.
pub(super) fn awaiting_approval(
    feature: FeatureId,
    step: usize,
    total: usize,
    title: &str,
    green: bool,
    files: &[(String, usize, usize)],
) -> CreateMessage {
    let mut text = format!(
        "**Step {}/{total}: {title}** is committed; {}.\n",
        step + 1,
        if green {
            "checks passed ✅"
        } else {
            "checks failing ❌"
        }
    );
    if files.is_empty() {
        text.push_str("No file changed.\n");
    }
    for (path, added, removed) in files.iter().take(20) {
        text.push_str(&format!("`{path}` +{added} −{removed}\n"));
    }
    if files.len() > 20 {
        text.push_str(&format!("and {} more files\n", files.len() - 20));
    }
    text.push_str("Continue, change this step (your next message says how), or abort?");
    let row = run_row(
        feature,
        step as u32 + 1,
        &[
            (Action::StepContinue, ButtonStyle::Success),
            (Action::StepChange, ButtonStyle::Secondary),
            (Action::StepAbort, ButtonStyle::Danger),
        ],
    );
    CreateMessage::new()
        .content(truncate(&text, MESSAGE_LIMIT))
        .components(vec![row])
}
