//! `[agent]` and `[agent.github_actions]`: the coding agent's backend, checks, limits and
//! executor, validated.

use std::path::Path;
use std::time::Duration;

use super::raw::{RawActions, RawAgent};
use super::validate::positive;
use super::*;

pub(super) fn validate_agent(
    raw: RawAgent,
    store_path: &Path,
    problems: &mut Vec<String>,
) -> AgentConfig {
    let backend = match (raw.backend.as_deref().unwrap_or("builtin"), raw.command) {
        ("builtin", _) => AgentBackend::Builtin,
        ("command", Some(template)) if !template.trim().is_empty() => {
            if !template.contains("{prompt_file}") {
                problems.push(
                    "agent.command must contain {prompt_file} (the file holding the step's instructions); see the examples in config.toml.example"
                        .to_string(),
                );
            }
            AgentBackend::Command(template)
        }
        ("command", _) => {
            problems.push("agent.backend is \"command\" but agent.command is empty; give the command template, e.g. codex exec --full-auto \"$(cat {prompt_file})\"".to_string());
            AgentBackend::Builtin
        }
        (other, _) => {
            problems.push(format!(
                "agent.backend is {other:?}; use \"builtin\" (the configured LLM with tools) or \"command\" (an external coding agent)"
            ));
            AgentBackend::Builtin
        }
    };
    let timeout = positive(
        "agent.command_timeout_secs",
        raw.command_timeout_secs,
        600,
        (1, 86_400),
        problems,
    );
    let repairs = positive(
        "agent.max_repair_attempts",
        raw.max_repair_attempts,
        3,
        (0, 20),
        problems,
    );
    let concurrent = positive(
        "agent.max_concurrent_runs",
        raw.max_concurrent_runs,
        1,
        (1, 64),
        problems,
    );
    let minutes = positive(
        "agent.max_run_minutes",
        raw.max_run_minutes,
        120,
        (1, 10_080),
        problems,
    );
    let tokens = positive(
        "agent.max_tokens",
        raw.max_tokens,
        2_000_000,
        (1_000, 1_000_000_000),
        problems,
    );
    let tool_calls = positive(
        "agent.max_tool_calls_per_step",
        raw.max_tool_calls_per_step,
        60,
        (1, 10_000),
        problems,
    );
    let approve_each_step = match raw.approval.as_deref().unwrap_or("plan") {
        "plan" => false,
        "step" => true,
        other => {
            problems.push(format!(
                "agent.approval is {other:?}; use \"plan\" (approving the plan runs every step) or \"step\" (each step waits for approval)"
            ));
            false
        }
    };
    let mut env: Vec<(String, String)> = raw.env.unwrap_or_default().into_iter().collect();
    env.sort();
    for (key, _) in &env {
        let upper = key.to_ascii_uppercase();
        if ["TOKEN", "SECRET", "PASSWORD", "API_KEY"]
            .iter()
            .any(|s| upper.contains(s))
        {
            problems.push(format!(
                "agent.env has {key}, which looks like a secret; the agent's commands never get secrets, remove it"
            ));
        }
    }
    // The section is checked even while unused, so a switch of `executor` holds no surprise.
    let actions = validate_actions(raw.github_actions.unwrap_or_default(), problems);
    let executor = match raw.executor.as_deref().unwrap_or("local") {
        "local" => Executor::Local,
        "github-actions" => Executor::GithubActions,
        other => {
            problems.push(format!(
                "agent.executor is {other:?}; use \"local\" (runs on the bot's host) or \"github-actions\" (runs dispatched to the target repository's Actions)"
            ));
            Executor::Local
        }
    };
    let sandbox = match raw.sandbox.as_deref().unwrap_or("auto") {
        "auto" => SandboxMode::Auto,
        "bwrap" => SandboxMode::Bwrap,
        "off" => SandboxMode::Off,
        other => {
            problems.push(format!(
                "agent.sandbox is {other:?}; use \"auto\" (the strongest sandbox this host has), \"bwrap\" (bubblewrap) or \"off\" (no sandbox: the agent's commands can read everything featurebot can)"
            ));
            SandboxMode::Auto
        }
    };
    let network = match raw.network.as_deref().unwrap_or("off") {
        "off" => false,
        "on" => true,
        other => {
            problems.push(format!(
                "agent.network is {other:?}; use \"off\" (the agent's commands have no network; agent.setup still does) or \"on\""
            ));
            false
        }
    };
    if approve_each_step && executor == Executor::GithubActions {
        problems.push("agent.approval = \"step\" needs agent.executor = \"local\": a run on GitHub Actions cannot wait for Continue between steps".to_string());
    }
    AgentConfig {
        sandbox,
        network,
        setup: raw.setup.unwrap_or_default(),
        executor,
        github_actions: actions,
        push_each_step: raw.push_each_step.unwrap_or(false),
        backend,
        format: raw.format.unwrap_or_default(),
        test: raw.test.unwrap_or_default(),
        command_timeout: Duration::from_secs(timeout),
        max_repair_attempts: repairs as u32,
        max_concurrent_runs: concurrent as usize,
        max_run: Duration::from_secs(minutes * 60),
        max_tokens: tokens,
        max_tool_calls_per_step: tool_calls as u32,
        approve_each_step,
        env,
        worktrees_dir: raw
            .worktrees_dir
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| store_path.join("worktrees")),
    }
}

pub(super) fn validate_actions(raw: RawActions, problems: &mut Vec<String>) -> ActionsConfig {
    let install = validate_install(&raw, problems);
    let workflow = raw
        .workflow
        .map(|w| w.trim().to_string())
        .unwrap_or_else(|| "featurebot.yml".to_string());
    if workflow.is_empty()
        || workflow.contains('/')
        || !(workflow.ends_with(".yml") || workflow.ends_with(".yaml"))
    {
        problems.push(format!(
            "agent.github_actions.workflow is {workflow:?}; give the workflow's file name in .github/workflows, e.g. \"featurebot.yml\""
        ));
    }
    let llm_key_secret = raw
        .llm_key_secret
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "FEATUREBOT_LLM_API_KEY".to_string());
    if llm_key_secret.is_empty()
        || !llm_key_secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || llm_key_secret.starts_with("GITHUB_")
    {
        problems.push(format!(
            "agent.github_actions.llm_key_secret is {llm_key_secret:?}; name an Actions secret (letters, digits, _; not starting with GITHUB_), e.g. \"FEATUREBOT_LLM_API_KEY\""
        ));
    }
    let poll = positive(
        "agent.github_actions.poll_interval_secs",
        raw.poll_interval_secs,
        15,
        (1, 3_600),
        problems,
    );
    let start = positive(
        "agent.github_actions.start_timeout_secs",
        raw.start_timeout_secs,
        900,
        (10, 86_400),
        problems,
    );
    ActionsConfig {
        workflow,
        install,
        llm_key_secret,
        poll_interval: Duration::from_secs(poll),
        start_timeout: Duration::from_secs(start),
    }
}

/// The runner's install source: at most one of `install`, `install_git` (with `install_rev`,
/// a full commit id) and `install_url` (HTTPS, with `install_sha256`).
fn validate_install(raw: &RawActions, problems: &mut Vec<String>) -> Install {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let hex = |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit());
    let (command, git, rev, url, sha) = (
        given(&raw.install),
        given(&raw.install_git),
        given(&raw.install_rev),
        given(&raw.install_url),
        given(&raw.install_sha256),
    );
    let sources = [command.is_some(), git.is_some(), url.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if sources > 1 {
        problems.push("agent.github_actions has more than one install source; keep one of install, install_git (with install_rev) and install_url (with install_sha256)".to_string());
    }
    if let Some(command) = command {
        return Install::Command(command);
    }
    if let Some(url) = git {
        return match rev {
            Some(rev) if hex(&rev, 40) => Install::Git {
                url,
                rev: rev.to_ascii_lowercase(),
            },
            other => {
                problems.push(format!(
                    "agent.github_actions.install_rev is {:?}; give the full commit id (40 hex characters) of install_git that the bot runs: a branch or a tag can move, and the runner must install exactly this version",
                    other.unwrap_or_default()
                ));
                Install::Unset
            }
        };
    }
    if let Some(url) = url {
        if !url.starts_with("https://") {
            problems.push(format!(
                "agent.github_actions.install_url {url:?} must be an https:// address"
            ));
        }
        return match sha {
            Some(sha) if hex(&sha, 64) => Install::Release {
                url,
                sha256: sha.to_ascii_lowercase(),
            },
            other => {
                problems.push(format!(
                    "agent.github_actions.install_sha256 is {:?}; give the archive's SHA-256 (64 hex characters, from sha256sum), so the runner refuses any other file",
                    other.unwrap_or_default()
                ));
                Install::Unset
            }
        };
    }
    if rev.is_some() || sha.is_some() {
        problems.push("agent.github_actions.install_rev needs install_git, and install_sha256 needs install_url".to_string());
    }
    Install::Unset
}
