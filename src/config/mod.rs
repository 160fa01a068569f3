//! Settings: the config file and `FEATUREBOT__SECTION__KEY` variables, parsed once into a
//! validated [`Config`].
//!
//! Everything past start-up reads typed values from here (URLs, paths, durations) and never
//! re-checks them. Secrets are read only from the environment and held in [`Secret`], whose
//! `Debug` and `Display` print a mask, so a config dump in a log cannot leak them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use agent::validate_agent;
use raw::{RawAgent, RawConfig};

mod agent;
mod raw;
mod validate;
pub use validate::git_host;

/// The validated configuration of one featurebot process.
#[derive(Debug, Clone)]
pub struct Config {
    pub llm: LlmConfig,
    pub repo: RepoConfig,
    pub store: StoreConfig,
    pub prompts: PromptsConfig,
    /// Present when the config has a `[discord]` section.
    pub discord: Option<DiscordConfig>,
    /// Present when the config has a `[github]` section.
    pub github: Option<GithubConfig>,
    /// More target repositories, from `[[repos]]`; `repo` and `github` stay the default.
    pub targets: Vec<Target>,
    pub agent: AgentConfig,
}

/// A named target repository from `[[repos]]`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub repo: RepoConfig,
    pub github: Option<GithubConfig>,
    /// Discord channels whose features go to this repository.
    pub channels: Vec<u64>,
}

impl Config {
    /// The repository of target `name`; the default `[repo]` for `None` or an unknown name.
    pub fn repo_of(&self, name: Option<&str>) -> &RepoConfig {
        self.target(name).map_or(&self.repo, |t| &t.repo)
    }

    /// The GitHub repository of target `name`; the default `[github]` for `None`.
    pub fn github_of(&self, name: Option<&str>) -> Option<&GithubConfig> {
        match self.target(name) {
            Some(t) => t.github.as_ref(),
            None => self.github.as_ref(),
        }
    }

    pub fn target(&self, name: Option<&str>) -> Option<&Target> {
        let name = name?;
        self.targets.iter().find(|t| t.name == name)
    }

    /// Which repository a feature started in `channel` goes to, given the `repo` option the
    /// person chose: `Ok(None)` is the default `[repo]`; `Err` says what to choose.
    pub fn target_for(&self, channel: u64, chosen: Option<&str>) -> Result<Option<String>, String> {
        let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        if let Some(chosen) = chosen.map(str::trim).filter(|c| !c.is_empty()) {
            return match self.target(Some(chosen)) {
                Some(t) => Ok(Some(t.name.clone())),
                None if chosen == "default" => Ok(None),
                None => Err(format!(
                    "there is no repository named {chosen:?}; choose one of: default, {}",
                    names.join(", ")
                )),
            };
        }
        let mapped: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.channels.contains(&channel))
            .collect();
        match mapped.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.name.clone())),
            several => Err(format!(
                "this channel's features can go to several repositories ({}); choose one with the repo option",
                several.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// The REST API root; `https://api.github.com` unless GitHub Enterprise or a test.
    pub api_base: Url,
    pub owner: String,
    pub repo: String,
    /// From `GITHUB_TOKEN`.
    pub token: Option<Secret>,
    /// Open a GitHub issue for a feature when its plan is approved.
    pub issue_on_approval: bool,
}

/// How the coding agent runs an approved plan.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub backend: AgentBackend,
    /// Formatter commands, run in the work tree after each step (`sh -c`).
    pub format: Vec<String>,
    /// Test commands, run after the formatters.
    pub test: Vec<String>,
    pub command_timeout: Duration,
    pub max_repair_attempts: u32,
    pub max_concurrent_runs: usize,
    pub max_run: Duration,
    /// Tokens one run may spend.
    pub max_tokens: u64,
    pub max_tool_calls_per_step: u32,
    /// `agent.approval = "step"`: pause after every step for Continue, Change or Abort.
    pub approve_each_step: bool,
    /// Extra environment variables for the commands the agent runs (never secrets).
    pub env: Vec<(String, String)>,
    /// Where work trees are created; default: `<store.path>/worktrees`.
    pub worktrees_dir: PathBuf,
    /// Push the branch after every step's commit, so others can follow the run (set for runs
    /// on GitHub Actions, where the bot reads the progress from the branch).
    pub push_each_step: bool,
    /// Where runs happen.
    pub executor: Executor,
    /// `[agent.github_actions]` as configured, whatever `executor` says: `featurebot
    /// install-workflow` writes the workflow before the executor is switched.
    pub github_actions: ActionsConfig,
    /// How the agent's commands are confined (`agent::sandbox`).
    pub sandbox: SandboxMode,
    /// `agent.network = "on"`: the agent's commands may use the network.
    pub network: bool,
    /// Commands run once per run in the work tree before the first step, sandboxed but with
    /// the network, to fetch dependencies (`cargo fetch`, `npm ci`).
    pub setup: Vec<String>,
}

/// `agent.sandbox`: how the agent's commands are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// The strongest mechanism this host supports (bubblewrap for now); a run is refused when
    /// there is none.
    Auto,
    /// bubblewrap, named.
    Bwrap,
    /// No sandbox: an explicit opt-out, warned about by `check` and on the run card.
    Off,
}

/// Where agent runs happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// On the bot's host, in a work tree under `agent.worktrees_dir`.
    Local,
    /// On GitHub Actions, by dispatching the workflow `featurebot install-workflow` writes
    /// (`agent.github_actions`).
    GithubActions,
}

/// `[agent.github_actions]`: the workflow runs are dispatched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsConfig {
    /// The workflow's file name under `.github/workflows/`.
    pub workflow: String,
    /// How the runner gets featurebot.
    pub install: Install,
    /// The Actions secret holding the LLM API key on the runner.
    pub llm_key_secret: String,
    /// How often the run is polled while nothing changes (backing off on rate limits).
    pub poll_interval: Duration,
    /// A dispatched run that has not started after this long is reported as stuck.
    pub start_timeout: Duration,
}

/// How the GitHub Actions runner gets featurebot: exactly the version the bot runs, from a
/// source the user pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// Not configured: `install-workflow` and `check` refuse, naming the options.
    Unset,
    /// `cargo install` from a git repository at a commit (`install_git`, `install_rev`),
    /// cached between runs under that commit.
    Git { url: String, rev: String },
    /// A release archive holding the `featurebot` binary (`install_url`), checked against its
    /// SHA-256 (`install_sha256`).
    Release { url: String, sha256: String },
    /// A shell command of your own (`install`), which you pin.
    Command(String),
}

/// What to do about an unset install source.
pub const INSTALL_UNSET: &str = "agent.github_actions has no install source, so the runner cannot install featurebot: set install_git and install_rev (a repository with featurebot and the full commit id the bot runs), or install_url and install_sha256 (a release archive and its checksum), or install (a command of your own)";

impl AgentConfig {
    /// The defaults, for configs built in code (tests, tools).
    pub fn with_defaults(store_path: &Path) -> AgentConfig {
        validate_agent(RawAgent::default(), store_path, &mut Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentBackend {
    /// The tool-calling loop on the configured LLM.
    Builtin,
    /// An external coding agent run once per step. Placeholders: `{prompt_file}`,
    /// `{worktree}`, `{step}`, `{plan_file}`.
    Command(String),
}

/// Which wire protocol the LLM server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Any OpenAI-compatible chat-completions server: OpenAI, Ollama, vLLM, llama.cpp, LM Studio,
    /// OpenRouter.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: Provider,
    /// For `openai` the URL that `/chat/completions` is appended to (it usually ends in `/v1`);
    /// for `anthropic` the URL that `/v1/messages` is appended to.
    pub base_url: Url,
    pub model: String,
    /// The environment variable the key was read from, named in error messages.
    pub api_key_env: String,
    /// `None` when the variable is unset or empty: fine for local servers.
    pub api_key: Option<Secret>,
    /// The transcript sent to the model is fitted into this many tokens (estimated).
    pub max_context_tokens: usize,
    /// Upper bound on the tokens of one answer (`max_tokens` or `max_completion_tokens` on the
    /// wire, see `llm::openai`).
    pub max_output_tokens: u32,
    /// Time allowed for one HTTP request, streaming included.
    pub request_timeout: Duration,
    /// Attempts after the first on 429, 5xx and connection errors.
    pub max_retries: u32,
    /// Total time retries may take, waits included.
    pub retry_budget: Duration,
    /// USD per million input and output tokens, for cost estimates; `None` when not configured.
    pub prices: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// The target repository: a clone the bot may commit to.
    pub path: PathBuf,
    pub base_branch: String,
    pub remote: String,
    /// Relative to the repository root; never contains `..`.
    pub tasks_dir: PathBuf,
    pub push_plans: bool,
    pub author_name: String,
    pub author_email: String,
    /// From `GITHUB_TOKEN`; used as the password when pushing over HTTPS to `token_host`.
    pub github_token: Option<Secret>,
    /// Where pushes (and fetches) go: `repo.push_url`, or the remote's URL as the clone's git
    /// config had it when featurebot started (`repo::Repos` reads it once), never as it is at
    /// push time.
    pub push_url: Option<String>,
    /// The only host the GitHub token is offered to, over HTTPS: `github.com`, or the host of
    /// `github.api_base` for GitHub Enterprise (without its `api.`).
    pub token_host: String,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PromptsConfig {
    /// A folder whose `<name>.md` files replace the built-in prompts of the same name.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// The server the bot serves; its slash commands are registered there.
    pub guild_id: u64,
    /// Channels where `/feature` is allowed; empty means any channel of the guild.
    pub feature_channels: Vec<u64>,
    /// Members with one of these roles are admins.
    pub admin_roles: Vec<u64>,
    /// These users are admins.
    pub admin_users: Vec<u64>,
    /// Where REST calls go (`<api_base>/api/v10/...`); `None` means Discord itself, with
    /// serenity's rate limiter. A custom base is for proxies that rate-limit themselves, and
    /// for tests.
    pub api_base: Option<Url>,
    /// A streamed reply is edited at most this often.
    pub stream_edit_interval: Duration,
    /// From `DISCORD_TOKEN`.
    pub token: Option<Secret>,
}

/// A secret value from the environment. It prints as `***` and is only readable through
/// [`Secret::expose`], so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every problem found in the settings, one sentence each, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Loads `path` (which may be absent when `required` is false) and the process environment.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::load_with_env(path, required, &env)
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with_env(
        path: &Path,
        required: bool,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let one = |problem: String| ConfigError {
            problems: vec![problem],
        };
        if required && !path.is_file() {
            return Err(one(format!(
                "config file {} not found; copy config.toml.example there and edit it, or pass --config PATH",
                path.display()
            )));
        }
        let overrides: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("FEATUREBOT__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from(path.to_path_buf()).required(required))
            .add_source(
                config::Environment::with_prefix("FEATUREBOT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| {
                one(format!(
                    "{}: {e}; compare with config.toml.example",
                    path.display()
                ))
            })?;
        raw.validate(env)
    }
}
