//! The runner side of `agent.executor = "github-actions"`: the workflow file that `featurebot
//! install-workflow` writes into a target repository, the config the runner gets, and the
//! inputs of one dispatch.
//!
//! The bot dispatches the workflow with [`DispatchInputs`]; the runner checks the repository
//! out, installs featurebot, and runs `featurebot agent` on the plan file with the config the bot
//! passed ([`runner_config`]): the same run code as a local run, pushing after every step, so
//! the bot can follow the ticked steps of the plan file on the branch.
//!
//! Invariant: no input reaches a shell script as text. Inputs go through `env:` and the
//! scripts read variables; `${{ inputs.* }}` only appears where GitHub does not run a shell
//! (`run-name`, `concurrency`, `env`). Secrets stay in Actions secrets: the runner config names
//! the environment variables they arrive in and holds none of them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::{
    ActionsConfig, AgentBackend, Config, Install, Provider, RepoConfig, SandboxMode, INSTALL_UNSET,
};

/// The names of the workflow's inputs, in the order it declares them.
/// GitHub allows at most 10 (`you may only define up to 10 inputs for a workflow_dispatch event`).
pub const INPUTS: [&str; 10] = [
    "correlation_id",
    "feature_id",
    "plan_file",
    "plan_version",
    "plan_sha256",
    "branch",
    "resume",
    "config",
    "discussion_url",
    "closes",
];

/// The job's step names, which the bot shows as the run's progress before the agent starts.
pub const STEP_CHECK_OUT: &str = "Check out";
pub const STEP_INSTALL: &str = "Install featurebot";
pub const STEP_CACHE: &str = "Cache featurebot";
pub const STEP_IDENTITY: &str = "Set the commit identity";
pub const STEP_SANDBOX: &str = "Prepare the sandbox";
pub const STEP_RUN: &str = "Run the plan";

/// Where the runner keeps featurebot's store (and the work trees under it) when the workflow
/// does not say: the workflow puts it under `$RUNNER_TEMP`.
pub const RUNNER_STORE: &str = "/tmp/featurebot";

/// The shell script of the install step: exactly the configured version of featurebot on the
/// runner's PATH. An unset source fails the step with what to configure.
pub fn install_script(install: &Install) -> String {
    use crate::agent::backend::shell_quote;
    match install {
        Install::Unset => format!("echo {} >&2\nexit 1", shell_quote(INSTALL_UNSET)),
        Install::Git { url, rev } => format!(
            "if [ ! -x \"$HOME/.featurebot/bin/featurebot\" ]; then\n  cargo install --locked --git {} --rev {rev} --root \"$HOME/.featurebot\" featurebot\nfi\necho \"$HOME/.featurebot/bin\" >> \"$GITHUB_PATH\"",
            shell_quote(url)
        ),
        Install::Release { url, sha256 } => format!(
            "curl -fsSL --retry 3 -o \"$RUNNER_TEMP/featurebot.tar.gz\" {}\necho \"{sha256}  $RUNNER_TEMP/featurebot.tar.gz\" | sha256sum -c -\ntar -xzf \"$RUNNER_TEMP/featurebot.tar.gz\" -C \"$RUNNER_TEMP\" featurebot\nsudo install \"$RUNNER_TEMP/featurebot\" /usr/local/bin/featurebot",
            shell_quote(url)
        ),
        Install::Command(command) => command.clone(),
    }
}

/// The workflow file `featurebot install-workflow` writes.
pub fn workflow_yaml(actions: &ActionsConfig) -> String {
    let secret = &actions.llm_key_secret;
    let indent = |script: &str| -> String {
        script
            .trim()
            .lines()
            .map(|line| format!("          {line}\n"))
            .collect()
    };
    let install = indent(&install_script(&actions.install));
    // A build from git is cached under its commit: the install takes seconds after the first run.
    let cache = match &actions.install {
        Install::Git { rev, .. } => format!(
            "      - name: {STEP_CACHE}\n        uses: actions/cache@v4\n        with:\n          path: ~/.featurebot\n          key: featurebot-${{{{ runner.os }}}}-{rev}\n"
        ),
        _ => String::new(),
    };
    format!(
        r#"# Written by `featurebot install-workflow`: runs featurebot's coding agent on an approved plan
# when the bot dispatches it (agent.executor = "github-actions"). The bot follows the run by the
# ticked steps of the plan file on the pushed branch and by this job's step names.
# Regenerate it with `featurebot install-workflow --write --force` rather than editing it.
name: featurebot
run-name: featurebot ${{{{ inputs.correlation_id }}}}

on:
  workflow_dispatch:
    inputs:
      correlation_id:
        description: "Set by the bot to find this run"
        required: true
        type: string
      feature_id:
        description: "The feature's number in the bot"
        required: true
        type: string
      plan_file:
        description: "The plan file, relative to the repository root"
        required: true
        type: string
      plan_version:
        description: "The plan's version"
        required: true
        type: string
      plan_sha256:
        description: "The approved plan's fingerprint: the runner refuses a plan file that differs"
        required: true
        type: string
      branch:
        description: "The branch the agent commits to"
        required: true
        type: string
      resume:
        description: "\"true\" to continue the branch from its first unticked step"
        required: false
        default: "false"
        type: string
      config:
        description: "featurebot's runner config (TOML, no secrets)"
        required: true
        type: string
      discussion_url:
        description: "Where the feature was discussed, linked from the pull request"
        required: false
        default: ""
        type: string
      closes:
        description: "The GitHub issue the pull request closes, if any"
        required: false
        default: ""
        type: string

permissions:
  contents: write
  pull-requests: write
  issues: write

concurrency:
  group: featurebot-${{{{ inputs.branch }}}}
  cancel-in-progress: false

jobs:
  agent:
    name: featurebot agent
    runs-on: ubuntu-latest
    steps:
      - name: {STEP_CHECK_OUT}
        uses: actions/checkout@v4
        with:
          # Every branch, so that a run's branch pushed earlier is there to resume.
          fetch-depth: 0
          # The token stays out of .git/config, where the agent's commands could read it;
          # featurebot pushes with GITHUB_TOKEN from its own environment.
          persist-credentials: false
{cache}      - name: {STEP_INSTALL}
        run: |
{install}      - name: {STEP_SANDBOX}
        # The agent's commands run in bubblewrap (agent.sandbox); Ubuntu keeps unprivileged
        # user namespaces from programs AppArmor does not know, and bubblewrap needs them.
        run: |
          command -v bwrap >/dev/null || sudo apt-get install -y -qq bubblewrap || {{ sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap; }}
          sudo sysctl -q -w kernel.apparmor_restrict_unprivileged_userns=0 || true
      - name: {STEP_IDENTITY}
        run: |
          git config --global user.name "github-actions[bot]"
          git config --global user.email "41898282+github-actions[bot]@users.noreply.github.com"
      - name: {STEP_RUN}
        env:
          GITHUB_TOKEN: ${{{{ secrets.GITHUB_TOKEN }}}}
          {secret}: ${{{{ secrets.{secret} }}}}
          FEATUREBOT_RUNNER_CONFIG: ${{{{ inputs.config }}}}
          PLAN_FILE: ${{{{ inputs.plan_file }}}}
          PLAN_SHA256: ${{{{ inputs.plan_sha256 }}}}
          BRANCH: ${{{{ inputs.branch }}}}
          RESUME: ${{{{ inputs.resume }}}}
          DISCUSSION_URL: ${{{{ inputs.discussion_url }}}}
          CLOSES: ${{{{ inputs.closes }}}}
        run: |
          printf '%s\n' "$FEATUREBOT_RUNNER_CONFIG" > "$RUNNER_TEMP/featurebot.toml"
          export FEATUREBOT__STORE__PATH="$RUNNER_TEMP/featurebot-store"
          # exec: a cancelled job's signals reach featurebot, which stops the run cleanly.
          set -- --branch "$BRANCH" --plan-sha256 "$PLAN_SHA256"
          if [ "$RESUME" = "true" ]; then set -- "$@" --resume; fi
          if [ -n "$DISCUSSION_URL" ]; then set -- "$@" --discussion-url "$DISCUSSION_URL"; fi
          if [ -n "$CLOSES" ]; then set -- "$@" --closes "$CLOSES"; fi
          exec featurebot --config "$RUNNER_TEMP/featurebot.toml" agent "$@" -- "$PLAN_FILE"
"#
    )
}

/// The runner's config (TOML, no secrets) that the bot passes as the `config` input: the bot's
/// settings for target `target` (a `[[repos]]` name, or `None` for the default), as one `[repo]`
/// and `[github]` for the checkout the runner works in. The LLM key arrives in the environment
/// variable named like the Actions secret, the GitHub token in `GITHUB_TOKEN`. Runs push after
/// every step and never wait for step approval (nobody can answer on the runner).
pub fn runner_config(config: &Config, target: Option<&str>) -> String {
    use toml::{Table, Value};

    fn table(entries: Vec<(&str, Value)>) -> Value {
        Value::Table(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    fn text(value: &str) -> Value {
        Value::String(value.to_string())
    }
    fn int(value: u64) -> Value {
        Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
    }
    fn list(values: &[String]) -> Value {
        Value::Array(values.iter().map(|v| text(v)).collect())
    }

    let llm = &config.llm;
    let repo = config.repo_of(target);
    let agent = &config.agent;
    let mut root = Table::new();
    root.insert(
        "llm".to_string(),
        table(vec![
            (
                "provider",
                text(match llm.provider {
                    Provider::OpenAi => "openai",
                    Provider::Anthropic => "anthropic",
                }),
            ),
            ("base_url", text(llm.base_url.as_str())),
            ("model", text(&llm.model)),
            ("api_key_env", text(&agent.github_actions.llm_key_secret)),
            ("max_context_tokens", int(llm.max_context_tokens as u64)),
            ("max_output_tokens", int(u64::from(llm.max_output_tokens))),
            ("request_timeout_secs", int(llm.request_timeout.as_secs())),
            ("max_retries", int(u64::from(llm.max_retries))),
            ("retry_budget_secs", int(llm.retry_budget.as_secs())),
        ]),
    );
    root.insert(
        "repo".to_string(),
        table(vec![
            ("path", text(".")),
            ("base_branch", text(&repo.base_branch)),
            // actions/checkout names the remote `origin`, whatever the bot's clone calls it.
            ("remote", text("origin")),
            ("tasks_dir", text(&repo.tasks_dir.to_string_lossy())),
            ("push_plans", Value::Boolean(false)),
            ("author_name", text(&repo.author_name)),
            ("author_email", text(&repo.author_email)),
        ]),
    );
    root.insert(
        "store".to_string(),
        table(vec![("path", text(RUNNER_STORE))]),
    );
    if let Some(github) = config.github_of(target) {
        root.insert(
            "github".to_string(),
            table(vec![
                ("api_base", text(github.api_base.as_str())),
                ("owner", text(&github.owner)),
                ("repo", text(&github.repo)),
            ]),
        );
    }
    let mut agent_entries = match &agent.backend {
        AgentBackend::Builtin => vec![("backend", text("builtin"))],
        AgentBackend::Command(command) => {
            vec![("backend", text("command")), ("command", text(command))]
        }
    };
    agent_entries.extend([
        ("format", list(&agent.format)),
        ("test", list(&agent.test)),
        ("command_timeout_secs", int(agent.command_timeout.as_secs())),
        (
            "max_repair_attempts",
            int(u64::from(agent.max_repair_attempts)),
        ),
        ("max_concurrent_runs", int(1)),
        ("max_run_minutes", int(agent.max_run.as_secs() / 60)),
        ("max_tokens", int(agent.max_tokens)),
        (
            "max_tool_calls_per_step",
            int(u64::from(agent.max_tool_calls_per_step)),
        ),
        ("approval", text("plan")),
        (
            "env",
            Value::Table(
                agent
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
            ),
        ),
        ("push_each_step", Value::Boolean(true)),
        ("executor", text("local")),
        (
            "sandbox",
            text(match agent.sandbox {
                SandboxMode::Auto => "auto",
                SandboxMode::Bwrap => "bwrap",
                SandboxMode::Off => "off",
            }),
        ),
        ("network", text(if agent.network { "on" } else { "off" })),
        ("setup", list(&agent.setup)),
    ]);
    root.insert("agent".to_string(), table(agent_entries));
    let body = toml::to_string(&root).unwrap_or_default();
    format!("# featurebot's config for one run on GitHub Actions, written by the bot.\n{body}")
}

/// The inputs of one dispatch, as the workflow declares them (all strings on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchInputs {
    /// Unique per dispatch: the run is found by its name, `featurebot <correlation_id>`.
    pub correlation_id: String,
    pub feature_id: u64,
    /// Relative to the repository root.
    pub plan_file: String,
    pub plan_version: u32,
    /// The approved plan's [`crate::plan::fingerprint`], which the runner checks.
    pub plan_sha256: String,
    pub branch: String,
    /// Continue the branch from its first unticked step.
    pub resume: bool,
    /// [`runner_config`]'s TOML.
    pub config: String,
    /// Where the feature was discussed, for the pull request.
    pub discussion_url: Option<String>,
    /// The GitHub issue the pull request closes.
    pub closes: Option<u64>,
}

impl DispatchInputs {
    /// The `inputs` object of the dispatch request: the workflow's inputs are all strings, and
    /// GitHub refuses other JSON types for them.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let values = [
            self.correlation_id.clone(),
            self.feature_id.to_string(),
            self.plan_file.clone(),
            self.plan_version.to_string(),
            self.plan_sha256.clone(),
            self.branch.clone(),
            self.resume.to_string(),
            self.config.clone(),
            self.discussion_url.clone().unwrap_or_default(),
            self.closes.map(|n| n.to_string()).unwrap_or_default(),
        ];
        INPUTS
            .iter()
            .zip(values)
            .map(|(name, value)| (name.to_string(), serde_json::Value::String(value)))
            .collect()
    }
}

/// What [`write_workflow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created(PathBuf),
    Replaced(PathBuf),
    /// The file already was this workflow.
    Unchanged(PathBuf),
}

impl Written {
    pub fn path(&self) -> &Path {
        match self {
            Written::Created(p) | Written::Replaced(p) | Written::Unchanged(p) => p,
        }
    }
}

/// The workflow's path in a clone of the target repository.
pub fn workflow_path(repo: &RepoConfig, actions: &ActionsConfig) -> PathBuf {
    repo.path
        .join(".github")
        .join("workflows")
        .join(&actions.workflow)
}

/// Writes [`workflow_yaml`] into the clone at `repo.path`. A different file of that name is
/// kept unless `force`.
pub fn write_workflow(
    repo: &RepoConfig,
    actions: &ActionsConfig,
    force: bool,
) -> anyhow::Result<Written> {
    let path = workflow_path(repo, actions);
    let yaml = workflow_yaml(actions);
    let existed = match std::fs::read(&path) {
        Ok(existing) if existing == yaml.as_bytes() => return Ok(Written::Unchanged(path)),
        Ok(_) if !force => bail!(
            "{} exists and is not the workflow featurebot writes; pass --force to replace it, or set agent.github_actions.workflow to another file name",
            path.display()
        ),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(if existed {
        Written::Replaced(path)
    } else {
        Written::Created(path)
    })
}

/// What to do after writing the workflow, for the person who ran `install-workflow --write`.
pub fn next_steps(repo: &RepoConfig, actions: &ActionsConfig, written: &Written) -> String {
    let what = match written {
        Written::Created(_) => "wrote",
        Written::Replaced(_) => "replaced",
        Written::Unchanged(_) => "already up to date:",
    };
    let shown = written
        .path()
        .strip_prefix(&repo.path)
        .unwrap_or(written.path())
        .display()
        .to_string();
    let secret = &actions.llm_key_secret;
    format!(
        "{what} {}\n\
         Next:\n\
         1. Commit it and push it to {base}, where the bot dispatches its runs:\n   \
            git add {shown} && git commit -m \"Add the featurebot workflow\" && git push {remote} {base}\n\
         2. Add the Actions secret {secret} holding the LLM API key (Settings > Secrets and variables > Actions,\n   \
            or: gh secret set {secret})\n\
         3. Let Actions open pull requests: Settings > Actions > General > Workflow permissions >\n   \
            \"Allow GitHub Actions to create and approve pull requests\"\n\
         4. Set agent.executor = \"github-actions\" in featurebot's config and restart the bot",
        written.path().display(),
        base = repo.base_branch,
        remote = repo.remote,
    )
}
