//! The terminal front end: the same conversation as in Discord, on stdin and stdout.
//!
//! Lines typed (or piped) become messages; `/plan` asks for the plan, `/quit` leaves. Replies
//! stream as they arrive. The session ends with exit code 0 once a plan is committed, after
//! printing its path and commit id, so the console is scriptable. Diagnostics go to stderr.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::core::protocol::{Input, Output, OutputKind};
use crate::core::App;
use crate::model::{Author, FeatureId, Place, Status};

/// How a console session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A plan was committed.
    Planned { path: String, commit: String },
    /// The user typed `/quit` before a plan was committed.
    Quit { feature: Option<FeatureId> },
    /// Input ended before a plan was committed (exit code 2, so scripts notice).
    InputEnded { feature: Option<FeatureId> },
}

/// What the console does with a line typed by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Plan,
    Approve,
    /// Settle a plan conflict: keep the bot's version (`true`) or take theirs.
    Settle(bool),
    Quit,
    Help,
    Say(String),
    Nothing,
    Unknown(String),
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let trimmed = line.trim();
        match trimmed {
            "" => Command::Nothing,
            "/plan" => Command::Plan,
            "/approve" => Command::Approve,
            "/keep-mine" => Command::Settle(true),
            "/take-theirs" => Command::Settle(false),
            "/quit" | "/exit" => Command::Quit,
            "/help" | "/?" => Command::Help,
            _ if trimmed.starts_with('/') && !trimmed.contains(' ') => {
                Command::Unknown(trimmed.to_string())
            }
            _ => Command::Say(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }
}

const HELP: &str = "type your answers; /plan writes the plan (a warning if the requirements are not confirmed yet), /approve runs the coding agent on it, /keep-mine or /take-theirs settles a plan file someone else changed, /quit leaves";

/// Runs a console session: starts a feature titled `title` (asked for when `None`), or
/// continues feature `resume`.
pub async fn run(
    app: Arc<App>,
    mut outputs: mpsc::UnboundedReceiver<Output>,
    title: Option<String>,
    resume: Option<FeatureId>,
) -> anyhow::Result<Outcome> {
    let user = local_user();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut ui = Ui::default();

    let feature = match resume {
        Some(id) => resume_feature(&app, &mut outputs, &mut ui, id).await?,
        None => {
            let title = match title {
                Some(title) => title,
                None => {
                    ui.prompt("feature title: ");
                    lines.next_line().await?.unwrap_or_default()
                }
            };
            let input = Input::Start {
                title,
                requester: user.clone(),
                place: Place::Console,
                repo: None,
            };
            drive(&app, &mut outputs, &mut ui, input).await;
            match ui.feature {
                Some(id) => id,
                None => return Ok(Outcome::InputEnded { feature: None }),
            }
        }
    };
    ui.note(HELP);

    loop {
        ui.prompt("> ");
        let Some(line) = lines.next_line().await? else {
            // Input ended: a success once a plan is committed.
            if let Some(done) = ui.planned.take() {
                return Ok(done);
            }
            ui.note(&format!(
                "input ended before a plan was committed; continue with: featurebot console --resume {feature}"
            ));
            return Ok(Outcome::InputEnded {
                feature: Some(feature),
            });
        };
        let input = match Command::parse(&line) {
            Command::Nothing => continue,
            Command::Help => {
                ui.note(HELP);
                continue;
            }
            Command::Unknown(cmd) => {
                ui.note(&format!("unknown command {cmd}; {HELP}"));
                continue;
            }
            Command::Quit => {
                ui.note(&format!(
                    "feature #{feature} is saved; continue with: featurebot console --resume {feature}"
                ));
                return Ok(Outcome::Quit {
                    feature: Some(feature),
                });
            }
            Command::Plan => Input::GeneratePlan {
                feature,
                force: true,
            },
            Command::Approve => {
                approve(&app, &mut outputs, &mut ui, feature).await?;
                continue;
            }
            Command::Settle(keep_mine) => Input::SettlePlanConflict {
                feature,
                version: app.feature(feature)?.plan_version,
                keep_mine,
            },
            Command::Say(text) => Input::Message {
                feature,
                author: user.clone(),
                text,
                source_id: None,
            },
        };
        drive(&app, &mut outputs, &mut ui, input).await;
    }
}

/// `--resume`: shows the feature and its conversation so far, then answers what is unanswered.
async fn resume_feature(
    app: &App,
    outputs: &mut mpsc::UnboundedReceiver<Output>,
    ui: &mut Ui,
    id: FeatureId,
) -> anyhow::Result<FeatureId> {
    let feature = app
        .feature(id)
        .context("looking up the feature to resume")?;
    ui.say(&format!(
        "resuming feature #{id}: {} ({})",
        feature.title, feature.status
    ));
    for turn in app.transcript(id)? {
        let text = crate::conversation::read_reply(&turn.text).visible;
        ui.say(&format!("[{}] {}", turn.author, text));
    }
    ui.feature = Some(id);
    drive(app, outputs, ui, Input::Resume { feature: id }).await;
    if matches!(feature.status, Status::Planned) {
        ui.say("this feature already has a plan; send a message to change it, or /quit");
    }
    Ok(id)
}

/// `/approve`: approves the current plan and, when a run starts, shows it until it ends.
async fn approve(
    app: &App,
    outputs: &mut mpsc::UnboundedReceiver<Output>,
    ui: &mut Ui,
    feature: FeatureId,
) -> anyhow::Result<()> {
    let version = app.feature(feature)?.plan_version;
    drive(app, outputs, ui, Input::Approve { feature, version }).await;
    if ui.run_started {
        // The run goes on in the background: show it until it ends.
        while let Some(output) = outputs.recv().await {
            let ended = matches!(
                output.kind,
                OutputKind::RunEnded { .. } | OutputKind::Failed { .. }
            );
            ui.show(output);
            if ended {
                break;
            }
        }
    }
    Ok(())
}

/// Handles one input, printing its outputs as they arrive.
async fn drive(
    app: &App,
    outputs: &mut mpsc::UnboundedReceiver<Output>,
    ui: &mut Ui,
    input: Input,
) {
    let work = app.handle(input);
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            Some(output) = outputs.recv() => ui.show(output),
            () = &mut work => break,
        }
    }
    while let Ok(output) = outputs.try_recv() {
        ui.show(output);
    }
}

/// The terminal's state: which feature, whether a reply is mid-line, whether a plan landed.
#[derive(Default)]
struct Ui {
    feature: Option<FeatureId>,
    mid_reply: bool,
    planned: Option<Outcome>,
    run_started: bool,
}

impl Ui {
    fn show(&mut self, output: Output) {
        let Output { feature, kind, .. } = output;
        match kind {
            OutputKind::Started { feature } => {
                self.feature = Some(feature.id);
                self.note(&format!(
                    "feature #{} started: {}",
                    feature.id, feature.title
                ));
            }
            OutputKind::Rejected { message, .. } => self.note(&format!("refused: {message}")),
            OutputKind::PlanConflict {
                version,
                path,
                theirs,
                mine,
                branch,
            } => self.note(&format!(
                "someone else changed {path} on the remote (commit {theirs}); plan version {version} is on branch {branch} (commit {mine}): /keep-mine commits it over their change, /take-theirs makes their text the plan"
            )),
            OutputKind::PlanConflictSettled { version, kept_mine } => self.note(&match kept_mine {
                true => format!("plan version {version} is committed on top of their change"),
                false => format!("their text is plan version {version} now"),
            }),
            OutputKind::Typing => {}
            OutputKind::ReplyDelta { text, .. } => {
                if !self.mid_reply {
                    self.write("\nfeaturebot: ");
                    self.mid_reply = true;
                }
                self.write(&text);
            }
            OutputKind::Reply { .. } => {
                if self.mid_reply {
                    self.write("\n");
                    self.mid_reply = false;
                }
            }
            OutputKind::Confirmed { .. } => {
                self.note("requirements confirmed; type /plan to write the plan, or keep refining");
            }
            OutputKind::PlanStarted { version, .. } => {
                self.note(&format!("writing the plan (version {version})..."))
            }
            OutputKind::PlanCommitted {
                version,
                path,
                commit,
                markdown,
                again,
                ..
            } => {
                if again {
                    self.note(&format!(
                        "nothing changed since plan version {version}; here it is again"
                    ));
                }
                self.write(&format!("\n{markdown}\n\n"));
                self.say(&format!("plan version {version} committed"));
                self.say(&format!("path: {path}"));
                self.say(&format!("commit: {commit}"));
                self.planned = Some(Outcome::Planned { path, commit });
            }
            OutputKind::PlanDiff { from, to, diff, .. } => {
                self.say(&format!("changes from plan version {from} to {to}:"));
                self.write(&diff);
            }
            OutputKind::FeatureUpdated { feature } => self.note(&format!(
                "priority {}, labels: {}",
                feature.priority.as_str(),
                feature.labels.join(", ")
            )),
            OutputKind::IssueCreated { number, url, .. } => {
                self.say(&format!("GitHub issue #{number}: {url}"))
            }
            OutputKind::PullRequestChanged { status, .. } => {
                self.note(&format!("the pull request is now {status}"))
            }
            OutputKind::FollowUpReady => {
                self.note("say what to change: your next message starts a follow-up run")
            }
            OutputKind::Refining => self.note("ok, keep refining"),
            OutputKind::Approved { version, .. } => {
                self.note(&format!("plan version {version} approved"))
            }
            OutputKind::ChangesRequested { version, .. } => self.note(&format!(
                "plan version {version} reopened; say what to change"
            )),
            OutputKind::Discarded => {
                let feature = feature.map(|f| f.to_string()).unwrap_or_default();
                self.note(&format!("feature #{feature} discarded"))
            }
            OutputKind::RunQueued { position, .. } => {
                self.run_started = true;
                if position == 0 {
                    self.note("agent run starting");
                } else {
                    self.note(&format!("agent run queued; {position} ahead of it"));
                }
            }
            OutputKind::RunEvent { event, .. } => {
                self.note(&crate::agent::progress::describe(&event))
            }
            OutputKind::RunEnded { run, .. } => {
                self.run_started = false;
                self.say(&format!("run {:?}; branch: {}", run.state, run.branch));
                if let Some(url) = &run.pr_url {
                    self.say(&format!("pull request: {url}"));
                }
                if let Some(message) = &run.message {
                    self.note(message);
                }
            }
            OutputKind::RunInterrupted { run, .. } => self.note(&format!(
                "run {} was interrupted: {}",
                run.number,
                run.message.as_deref().unwrap_or_default()
            )),
            OutputKind::Warning { message, .. } => self.note(&format!("warning: {message}")),
            OutputKind::Failed { message, .. } => {
                if self.mid_reply {
                    self.write("\n");
                    self.mid_reply = false;
                }
                self.note(&format!("error: {message}"))
            }
        }
    }

    /// A line of the product's output, on stdout.
    fn say(&mut self, line: &str) {
        self.write(&format!("{line}\n"));
    }

    /// A note about the session, on stderr so piped stdout stays clean.
    fn note(&mut self, line: &str) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// A prompt, only when a person is typing: piped input gets none.
    fn prompt(&mut self, text: &str) {
        if !std::io::stdin().is_terminal() {
            return;
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "{text}");
        let _ = err.flush();
    }

    fn write(&mut self, text: &str) {
        let mut out = std::io::stdout();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// The person at the terminal, from `USER` (or `USERNAME`), `local` if neither is set.
fn local_user() -> Author {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "local".to_string());
    Author {
        id: format!("console:{name}"),
        name,
    }
}
