//! The agent's progress as lines of text, for terminals, logs and the GitHub Actions job log.
//!
//! These lines are an interface: on GitHub Actions the bot reads the job's log and excerpts a
//! red check by its [`CHECKS_FAILED`] line, so `featurebot agent` (which prints them) and the
//! Actions executor (which parses them) both depend on this module, and on nothing of each
//! other.

use crate::agent::Event;

/// How a red check's line on stderr starts, followed by the step, the attempt and the command,
/// then the end of the output, each line indented by four spaces.
pub const CHECKS_FAILED: &str = "featurebot: checks failed";

/// How a failed push after a step starts its line on stderr (`agent.push_each_step`).
pub const PUSH_FAILED: &str = "featurebot: push failed";

/// How the line about files left out of a step's commit starts: they hold a configured secret.
pub const SECRETS_LEFT_OUT: &str = "featurebot: left out";

/// One line about an event, for logs and terminals.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Started {
            branch,
            steps,
            from,
        } => format!(
            "run started on {branch}: {} steps{}",
            steps.len(),
            if *from > 0 {
                format!(", resuming at step {}", from + 1)
            } else {
                String::new()
            }
        ),
        Event::Phase {
            step,
            total,
            title,
            phase,
            ..
        } => {
            if title.is_empty() {
                phase.as_str().to_string()
            } else {
                format!("step {}/{total} {title}: {}", step + 1, phase.as_str())
            }
        }
        Event::ChecksFailed {
            step,
            attempt,
            command,
            tail,
            ..
        } => {
            let mut text = format!(
                "{CHECKS_FAILED}: step {}, attempt {}: `{command}` failed:",
                step + 1,
                attempt + 1,
            );
            for line in crate::agent::backend::last_lines(tail, 15).lines() {
                text.push_str("\n    ");
                text.push_str(line);
            }
            text
        }
        Event::Unconfined => "warning: agent.sandbox = \"off\": this run's commands are not confined and can read whatever featurebot can".to_string(),
        Event::BranchRewritten { theirs } => format!(
            "the branch was force-pushed on the remote (now at {}): the run goes on on top of the rewritten history",
            &theirs[..theirs.len().min(7)]
        ),
        Event::BranchCaughtUp { theirs, merged } => {
            let theirs = &theirs[..theirs.len().min(7)];
            match merged {
                false => format!("the branch has new commits on the remote (up to {theirs}): the run goes on on top of them"),
                true => format!("the branch and the remote's both moved: merged the remote's (up to {theirs}) into it, so nobody's commit is lost"),
            }
        }
        Event::StepPushFailed { step, message } => format!(
            "{PUSH_FAILED} after step {}: {message}; the run goes on",
            step + 1
        ),
        Event::StepCommitted {
            step,
            total,
            commit,
            green,
            ..
        } => format!(
            "step {}/{total} committed{} ({})",
            step + 1,
            commit
                .as_deref()
                .map(|c| format!(" {}", &c[..c.len().min(12)]))
                .unwrap_or_else(|| " (no changes)".to_string()),
            if *green {
                "checks passed"
            } else {
                "checks failing"
            }
        ),
        Event::SecretsLeftOut { step, files } => format!(
            "{SECRETS_LEFT_OUT} of step {}'s commit: {}: each holds one of featurebot's own secrets (a configured token), so it is not committed or pushed; take the value out of the file (read it from the environment instead)",
            step + 1,
            files.join(", ")
        ),
        Event::Question { text } => format!("the agent asks: {text}"),
        Event::Remote { state, url } => match url {
            Some(url) => format!("GitHub Actions: {state} ({url})"),
            None => format!("GitHub Actions: {state}"),
        },
        Event::AwaitingApproval {
            step,
            total,
            green,
            files,
            ..
        } => format!(
            "step {}/{total} waits for approval ({}, {} file(s) changed)",
            step + 1,
            if *green {
                "checks passed"
            } else {
                "checks failing"
            },
            files.len()
        ),
        Event::Finished {
            branch,
            pull_request,
            green,
            stopped,
        } => {
            let mut line = format!(
                "finished: {branch} pushed, {}",
                if *green {
                    "all checks passed"
                } else {
                    "some checks failing"
                }
            );
            if let Some(pr) = pull_request {
                line.push_str(&format!(", pull request {}", pr.url));
            }
            if let Some(reason) = stopped {
                line.push_str(&format!("; stopped early: {reason}"));
            }
            line
        }
    }
}
