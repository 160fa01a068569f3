//! Who edits the code for a step.
//!
//! - [`Backend::Builtin`]: a tool-calling loop on the configured LLM with the tools of
//!   `tools.rs`, plus `run_checks`, `ask_human` and `finish_step`, which the loop handles.
//! - [`Backend::Command`]: an external coding agent (Codex, Claude Code, aider...) run once per
//!   step from a template, with the step's instructions in a prompt file.
//!
//! Both take a [`StepRequest`] and give a [`StepReport`]; a remote backend would do the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::exec::{self, CommandSpec};
use super::paths;
use super::sandbox::Sandbox;
use super::tools::{self, Call};
use super::{Event, Human, Phase, StepReport, StepRequest};
use crate::config::{AgentBackend, AgentConfig};
use crate::llm::{self, Message, Request, Usage};
use crate::prompts::{self, Prompts};
use crate::redact::Redactor;

/// How long the run waits for a human's answer to a question.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// The same failing tool call this many times ends the step.
const REPEATED_FAILURES: u32 = 3;
/// Output of checks handed to the model, in bytes.
const CHECK_TAIL: usize = 6_000;

/// Everything a backend needs besides the step.
pub struct Tools<'a> {
    pub agent: &'a AgentConfig,
    pub llm: &'a llm::Client,
    pub prompts: &'a Prompts,
    pub redactor: &'a Redactor,
    pub cancel: &'a CancellationToken,
    pub events: &'a mpsc::UnboundedSender<Event>,
    pub answers: &'a mut mpsc::UnboundedReceiver<Human>,
    /// Where logs and prompt files go (outside the work tree).
    pub scratch: &'a Path,
    /// Where commands run; `None` unconfined (`agent.sandbox = "off"`).
    pub sandbox: Option<&'a Sandbox>,
    /// Tokens left in the run's budget.
    pub tokens_left: u64,
}

pub enum Backend {
    Builtin,
    Command(String),
}

impl Backend {
    pub fn from_config(agent: &AgentConfig) -> Backend {
        match &agent.backend {
            AgentBackend::Builtin => Backend::Builtin,
            AgentBackend::Command(template) => Backend::Command(template.clone()),
        }
    }

    pub async fn run_step(
        &self,
        step: &StepRequest,
        t: &mut Tools<'_>,
    ) -> anyhow::Result<StepReport> {
        match self {
            Backend::Builtin => builtin(step, t).await,
            Backend::Command(template) => command(template, step, t).await,
        }
    }
}

/// The instructions for a step, shared by both backends.
pub fn step_prompt(step: &StepRequest) -> String {
    let mut prompt = format!(
        "Here is the approved plan:\n\n{}\n\nDo step {} of {}: {}\n\nDo only this step.",
        step.plan_markdown,
        step.index + 1,
        step.total,
        step.title
    );
    if let Some(feedback) = &step.feedback {
        prompt.push_str(&format!(
            "\n\nThe step was done before, but needs more work. Fix this:\n\n{feedback}"
        ));
    }
    prompt
}

/// The repository's own instructions for coding agents, if it has them. They are read through
/// `paths::resolve` like every file the agent reads: a committed link to a file outside the tree
/// is not followed into the system prompt. Like every file the agent reads, they reach the LLM
/// as written, but for our own secrets.
fn repository_instructions(worktree: &Path, redactor: &Redactor) -> String {
    for name in ["AGENTS.md", "CLAUDE.md"] {
        let file = match paths::resolve(worktree, name) {
            Ok(file) => file,
            Err(why) => {
                tracing::warn!(file = name, reason = %why, "not reading the repository's instructions for agents");
                continue;
            }
        };
        if let Ok(text) = std::fs::read_to_string(file) {
            let text: String = redactor.mask_values(&text).chars().take(20_000).collect();
            return format!("The repository's instructions for agents ({name}):\n\n{text}");
        }
    }
    String::new()
}

async fn builtin(step: &StepRequest, t: &mut Tools<'_>) -> anyhow::Result<StepReport> {
    let system = prompts::render(
        &t.prompts.agent,
        &[(
            "instructions",
            &repository_instructions(&step.worktree, t.redactor),
        )],
    );
    let mut messages = vec![Message::system(system), Message::user(step_prompt(step))];
    let mut usage = Usage::default();
    let mut failures: HashMap<String, u32> = HashMap::new();
    for _ in 0..t.agent.max_tool_calls_per_step {
        if t.cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        let spent = usage.input_tokens + usage.output_tokens;
        if spent >= t.tokens_left {
            return Ok(StepReport {
                summary: String::new(),
                usage,
                stopped: Some("the run's token budget (agent.max_tokens) is spent".to_string()),
            });
        }
        let request = Request {
            messages: messages.clone(),
            tools: tools::specs(),
            ..Request::default()
        };
        let response = tokio::select! {
            r = t.llm.complete(&request) => r.map_err(|e| anyhow::Error::new(e).context("the agent's LLM request failed"))?,
            () = t.cancel.cancelled() => anyhow::bail!("cancelled"),
        };
        usage.add(response.usage);
        let mut assistant = Message::assistant(response.text.clone());
        assistant.tool_calls = response.tool_calls.clone();
        messages.push(assistant);
        if response.tool_calls.is_empty() {
            // The model answered without a tool: take its words as the summary.
            return Ok(StepReport {
                summary: response.text,
                usage,
                stopped: None,
            });
        }
        for call in &response.tool_calls {
            let parsed = Call::parse(&call.name, &call.arguments);
            let result = match parsed {
                Err(err) => Err(err),
                Ok(Call::FinishStep { summary }) => {
                    return Ok(StepReport {
                        summary,
                        usage,
                        stopped: None,
                    })
                }
                Ok(Call::RunChecks) => {
                    Ok(t.redactor.redact(&checks_for_model(step, t, usage).await?))
                }
                Ok(Call::AskHuman { question }) => {
                    Ok(t.redactor.redact(&ask_human(&question, t).await?))
                }
                Ok(file_call) => {
                    let file_call = mask_values_in_writes(file_call, t.redactor);
                    let root = step.worktree.clone();
                    tokio::task::spawn_blocking(move || tools::run_file_tool(&root, &file_call))
                        .await
                        .map_err(|e| anyhow::anyhow!("a file tool panicked: {e}"))?
                }
            };
            // The work tree's true bytes, token shapes included (they are often code), but
            // never one of our own secrets. Commands' output and answers were redacted whole.
            let result = result
                .map(|text| t.redactor.mask_values(&text))
                .map_err(|err| t.redactor.mask_values(&err));
            let text = match result {
                Ok(text) => text,
                Err(err) => {
                    let key = format!("{}:{}", call.name, call.arguments);
                    let count = failures.entry(key).or_default();
                    *count += 1;
                    if *count >= REPEATED_FAILURES {
                        return Ok(StepReport {
                            summary: String::new(),
                            usage,
                            stopped: Some(t.redactor.redact(&format!(
                                "the agent repeated a failing action {REPEATED_FAILURES} times ({}: {err})",
                                call.name
                            ))),
                        });
                    }
                    format!("error: {err}")
                }
            };
            messages.push(Message::tool_result(call.id.clone(), text));
        }
    }
    Ok(StepReport {
        summary: String::new(),
        usage,
        stopped: Some(format!(
            "the step used its {} tool calls (agent.max_tool_calls_per_step)",
            t.agent.max_tool_calls_per_step
        )),
    })
}

/// The `run_checks` tool: the formatters and tests, run for the model in the middle of a step,
/// their outcome as the tool's answer.
async fn checks_for_model(
    step: &StepRequest,
    t: &mut Tools<'_>,
    usage: Usage,
) -> anyhow::Result<String> {
    let phase = |phase| Event::Phase {
        step: step.index,
        total: step.total,
        title: step.title.clone(),
        phase,
        usage,
    };
    let _ = t.events.send(phase(Phase::Testing));
    let outcome = run_checks(
        t.agent,
        &step.worktree,
        t.cancel,
        t.redactor,
        t.scratch,
        t.sandbox,
    )
    .await?;
    let _ = t.events.send(phase(Phase::Editing));
    Ok(outcome.for_model())
}

/// The `ask_human` tool: the question goes to the thread, and the next answer (or, after a
/// while, an instruction to assume) comes back.
async fn ask_human(question: &str, t: &mut Tools<'_>) -> anyhow::Result<String> {
    let _ = t.events.send(Event::Question {
        text: t.redactor.redact(question),
    });
    let answer = tokio::select! {
        a = tokio::time::timeout(ANSWER_TIMEOUT, next_answer(t.answers)) => a.ok().flatten(),
        () = t.cancel.cancelled() => anyhow::bail!("cancelled"),
    };
    Ok(answer.unwrap_or_else(|| {
        "No answer came. Make the most reasonable assumption, state it in your summary, and go on."
            .to_string()
    }))
}

/// `call` with our configured secrets masked in what it would write, so that no secret the
/// model repeats (from an injection) is committed and pushed. Token shapes are written as the
/// model wrote them: `"Bearer " + token` or a test's `ghp_...` fixture is code, not a leak.
fn mask_values_in_writes(call: Call, redactor: &Redactor) -> Call {
    match call {
        Call::WriteFile { path, content } => Call::WriteFile {
            path: redactor.mask_values(&path),
            content: redactor.mask_values(&content),
        },
        Call::EditFile {
            path,
            search,
            replace,
        } => Call::EditFile {
            path: redactor.mask_values(&path),
            search,
            replace: redactor.mask_values(&replace),
        },
        other => other,
    }
}

/// The next answer to a question; approval decisions arriving meanwhile are not answers.
async fn next_answer(answers: &mut mpsc::UnboundedReceiver<Human>) -> Option<String> {
    loop {
        match answers.recv().await? {
            Human::Answer(text) | Human::Redo(text) => return Some(text),
            Human::Continue | Human::Abort => continue,
        }
    }
}

async fn command(
    template: &str,
    step: &StepRequest,
    t: &mut Tools<'_>,
) -> anyhow::Result<StepReport> {
    std::fs::create_dir_all(t.scratch)?;
    let prompt_file = t.scratch.join(format!("step-{}.md", step.index + 1));
    let system = prompts::render(&t.prompts.agent, &[("instructions", "")]);
    std::fs::write(&prompt_file, format!("{system}\n\n{}", step_prompt(step)))?;
    let line = render_command(
        template,
        &prompt_file,
        &step.worktree,
        step.index + 1,
        &step.plan_file,
    );
    let log = t.scratch.join(format!("step-{}-agent.log", step.index + 1));
    let spec = CommandSpec {
        line,
        dir: step.worktree.clone(),
        timeout: t.agent.command_timeout,
        env: t.agent.env.clone(),
        max_output_bytes: 64 * 1024,
        sandbox: t.sandbox.cloned(),
    };
    let result = exec::run(&spec, t.cancel, t.redactor, Some(&log)).await?;
    if result.cancelled {
        anyhow::bail!("cancelled");
    }
    let tail = last_lines(&result.output, 20);
    if result.timed_out {
        anyhow::bail!(
            "the agent command did not finish within agent.command_timeout_secs; its last lines:\n{tail}"
        );
    }
    if !result.success {
        anyhow::bail!(
            "the agent command failed (exit code {}); its last lines:\n{tail}",
            result
                .exit_code
                .map_or("none".to_string(), |c| c.to_string())
        );
    }
    Ok(StepReport {
        summary: tail,
        usage: Usage::default(),
        stopped: None,
    })
}

/// Fills the placeholders of a command template with shell-quoted values.
pub fn render_command(
    template: &str,
    prompt_file: &Path,
    worktree: &Path,
    step: usize,
    plan_file: &Path,
) -> String {
    template
        .replace(
            "{prompt_file}",
            &shell_quote(&prompt_file.to_string_lossy()),
        )
        .replace("{worktree}", &shell_quote(&worktree.to_string_lossy()))
        .replace("{step}", &step.to_string())
        .replace("{plan_file}", &shell_quote(&plan_file.to_string_lossy()))
}

/// Single-quotes `value` for `sh`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Runs `agent.setup` once, in order, with the network (in `sandbox`, which allows it):
/// fetching dependencies before the steps' commands run without it. The first failure ends the
/// run with its output.
pub async fn run_setup(
    agent: &AgentConfig,
    worktree: &Path,
    cancel: &CancellationToken,
    redactor: &Redactor,
    scratch: &Path,
    sandbox: Option<Sandbox>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(scratch)?;
    for (i, line) in agent.setup.iter().enumerate() {
        let log = scratch.join(format!("setup-{i}.log"));
        let spec = CommandSpec {
            line: line.clone(),
            dir: worktree.to_path_buf(),
            timeout: agent.command_timeout,
            env: agent.env.clone(),
            max_output_bytes: 64 * 1024,
            sandbox: sandbox.clone(),
        };
        let result = exec::run(&spec, cancel, redactor, Some(&log)).await?;
        if result.cancelled {
            anyhow::bail!("cancelled");
        }
        if !result.success {
            anyhow::bail!(
                "agent.setup's `{line}` failed{}; fix the command (it runs in the work tree, with the network) or remove it. Its last lines:\n{}",
                if result.timed_out { " (timed out: agent.command_timeout_secs)" } else { "" },
                last_lines(&result.output, 20)
            );
        }
    }
    Ok(())
}

/// The result of running the formatters and tests once.
pub struct Checks {
    pub green: bool,
    /// The first failing command, its output tail and its log file.
    pub failure: Option<(String, String, PathBuf)>,
    pub ran: usize,
}

impl Checks {
    fn for_model(&self) -> String {
        match &self.failure {
            None if self.ran == 0 => "no format or test commands are configured".to_string(),
            None => "all formatters and tests passed".to_string(),
            Some((command, tail, _)) => format!("FAILED: {command}\n{tail}"),
        }
    }
}

/// Runs `agent.format` (a formatter that fails is run once more: many fix, then pass), then
/// `agent.test`, stopping at the first failure.
pub async fn run_checks(
    agent: &AgentConfig,
    worktree: &Path,
    cancel: &CancellationToken,
    redactor: &Redactor,
    scratch: &Path,
    sandbox: Option<&Sandbox>,
) -> anyhow::Result<Checks> {
    std::fs::create_dir_all(scratch)?;
    let mut ran = 0;
    let commands = agent
        .format
        .iter()
        .map(|c| (c, true))
        .chain(agent.test.iter().map(|c| (c, false)));
    for (i, (line, is_format)) in commands.enumerate() {
        let log = scratch.join(format!("check-{i}.log"));
        let spec = CommandSpec {
            line: line.clone(),
            dir: worktree.to_path_buf(),
            timeout: agent.command_timeout,
            env: agent.env.clone(),
            max_output_bytes: 256 * 1024,
            sandbox: sandbox.cloned(),
        };
        let mut result = exec::run(&spec, cancel, redactor, Some(&log)).await?;
        if result.cancelled {
            anyhow::bail!("cancelled");
        }
        if !result.success && is_format && !result.timed_out {
            result = exec::run(&spec, cancel, redactor, Some(&log)).await?;
        }
        ran += 1;
        if !result.success {
            let mut tail = tail_bytes(&result.output, CHECK_TAIL);
            if result.timed_out {
                tail.push_str("\n[timed out: agent.command_timeout_secs]");
            }
            return Ok(Checks {
                green: false,
                failure: Some((line.clone(), tail, log)),
                ran,
            });
        }
    }
    Ok(Checks {
        green: true,
        failure: None,
        ran,
    })
}

fn tail_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]\n{}", &text[start..])
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
