//! Settings: the config file and `FEATUREBOT__SECTION__KEY` variables, parsed once into a
//! validated [`Config`].
//!
//! Everything past start-up reads typed values from here (URLs, paths, durations) and never
//! re-checks them. Secrets are read only from the environment and held in [`Secret`], whose
//! `Debug` and `Display` print a mask, so a config dump in a log cannot leak them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

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
    /// The shell command that installs featurebot on the runner.
    pub install: String,
    /// The Actions secret holding the LLM API key on the runner.
    pub llm_key_secret: String,
    /// How often the run is polled while nothing changes (backing off on rate limits).
    pub poll_interval: Duration,
    /// A dispatched run that has not started after this long is reported as stuck.
    pub start_timeout: Duration,
}

/// The default install command: featurebot built from its repository on the runner.
pub const DEFAULT_ACTIONS_INSTALL: &str =
    "cargo install --locked --git https://github.com/featurebot/featurebot featurebot";

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
    /// Upper bound on the tokens of one answer (`max_tokens` on the wire).
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
    /// From `GITHUB_TOKEN`; used as the password when pushing over HTTPS.
    pub github_token: Option<Secret>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    llm: RawLlm,
    repo: RawRepo,
    store: RawStore,
    prompts: RawPrompts,
    discord: Option<RawDiscord>,
    github: Option<RawGithub>,
    agent: RawAgent,
    repos: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    path: Option<String>,
    base_branch: Option<String>,
    remote: Option<String>,
    tasks_dir: Option<String>,
    push_plans: Option<bool>,
    author_name: Option<String>,
    author_email: Option<String>,
    github_api_base: Option<String>,
    github_owner: Option<String>,
    github_repo: Option<String>,
    issue_on_approval: Option<bool>,
    channels: Option<IdList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawGithub {
    api_base: Option<String>,
    owner: Option<String>,
    repo: Option<String>,
    issue_on_approval: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAgent {
    backend: Option<String>,
    command: Option<String>,
    format: Option<Vec<String>>,
    test: Option<Vec<String>>,
    command_timeout_secs: Option<i64>,
    max_repair_attempts: Option<i64>,
    max_concurrent_runs: Option<i64>,
    max_run_minutes: Option<i64>,
    max_tokens: Option<i64>,
    max_tool_calls_per_step: Option<i64>,
    approval: Option<String>,
    env: Option<HashMap<String, String>>,
    worktrees_dir: Option<String>,
    push_each_step: Option<bool>,
    executor: Option<String>,
    github_actions: Option<RawActions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawActions {
    workflow: Option<String>,
    install: Option<String>,
    llm_key_secret: Option<String>,
    poll_interval_secs: Option<i64>,
    start_timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDiscord {
    guild_id: Option<IdList>,
    feature_channels: Option<IdList>,
    admin_roles: Option<IdList>,
    admin_users: Option<IdList>,
    api_base: Option<String>,
    stream_edit_interval_ms: Option<i64>,
}

/// Discord ids as TOML integers, strings, lists of either, or (from the environment) a
/// comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdList {
    One(u64),
    Many(Vec<OneId>),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneId {
    Int(u64),
    Text(String),
}

impl IdList {
    /// The ids, or the first entry that is not one.
    fn parse(&self) -> Result<Vec<u64>, String> {
        let parse_text = |t: &str| -> Result<Vec<u64>, String> {
            t.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
                .collect()
        };
        match self {
            IdList::One(id) => Ok(vec![*id]),
            IdList::Text(t) => parse_text(t),
            IdList::Many(items) => {
                let mut ids = Vec::new();
                for item in items {
                    match item {
                        OneId::Int(id) => ids.push(*id),
                        OneId::Text(t) => ids.extend(parse_text(t)?),
                    }
                }
                Ok(ids)
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLlm {
    provider: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    max_context_tokens: Option<i64>,
    max_output_tokens: Option<i64>,
    request_timeout_secs: Option<i64>,
    max_retries: Option<i64>,
    retry_budget_secs: Option<i64>,
    input_price_per_mtok: Option<f64>,
    output_price_per_mtok: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRepo {
    path: Option<String>,
    base_branch: Option<String>,
    remote: Option<String>,
    tasks_dir: Option<String>,
    push_plans: Option<bool>,
    author_name: Option<String>,
    author_email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPrompts {
    dir: Option<String>,
}

impl RawConfig {
    fn validate(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let secret = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };

        let provider = match self.llm.provider.as_deref().unwrap_or("openai") {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => {
                problems.push(format!(
                    "llm.provider is {other:?}; use \"openai\" (any OpenAI-compatible server) or \"anthropic\""
                ));
                Provider::OpenAi
            }
        };
        let default_base = match provider {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        };
        let base_url = parse_base_url(
            "llm.base_url",
            self.llm.base_url.as_deref().unwrap_or(default_base),
            &mut problems,
        );
        let model = match self.llm.model.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => {
                problems.push(
                    "llm.model is missing; name the model to use, e.g. model = \"gpt-4o-mini\" (or set FEATUREBOT__LLM__MODEL)"
                        .to_string(),
                );
                String::new()
            }
        };
        let api_key_env = self
            .llm
            .api_key_env
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| match provider {
                Provider::OpenAi => "OPENAI_API_KEY".to_string(),
                Provider::Anthropic => "ANTHROPIC_API_KEY".to_string(),
            });
        let api_key = secret(&api_key_env);
        let max_context_tokens = positive(
            "llm.max_context_tokens",
            self.llm.max_context_tokens,
            32_000,
            (1_000, 10_000_000),
            &mut problems,
        );
        let max_output_tokens = positive(
            "llm.max_output_tokens",
            self.llm.max_output_tokens,
            4_096,
            (64, 1_000_000),
            &mut problems,
        );
        if max_output_tokens * 2 > max_context_tokens {
            problems.push(format!(
                "llm.max_output_tokens ({max_output_tokens}) leaves too little of llm.max_context_tokens ({max_context_tokens}) for the conversation; keep it at most half"
            ));
        }
        let request_timeout = positive(
            "llm.request_timeout_secs",
            self.llm.request_timeout_secs,
            120,
            (1, 3_600),
            &mut problems,
        );
        let max_retries = positive(
            "llm.max_retries",
            self.llm.max_retries,
            4,
            (0, 20),
            &mut problems,
        );
        let retry_budget = positive(
            "llm.retry_budget_secs",
            self.llm.retry_budget_secs,
            60,
            (0, 3_600),
            &mut problems,
        );

        let repo = validate_repo(self.repo, "repo", env, &mut problems);
        let github = self
            .github
            .map(|raw| validate_github(raw, env, &mut problems));
        let mut targets = Vec::new();
        for (i, raw) in self.repos.into_iter().enumerate() {
            let name = raw.name.clone().unwrap_or_default();
            let key = format!("repos[{i}]");
            if name.trim().is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                problems.push(format!(
                    "{key}.name {name:?} must be a short name of letters, digits, - _ or ., e.g. \"shop\""
                ));
            }
            if targets.iter().any(|t: &Target| t.name == name) {
                problems.push(format!(
                    "{key}.name {name:?} is used twice; each repository needs its own name"
                ));
            }
            let channels = match raw.channels.as_ref().map(IdList::parse) {
                None => Vec::new(),
                Some(Ok(ids)) => ids,
                Some(Err(bad)) => {
                    problems.push(format!(
                        "{key}.channels has {bad:?}, which is not a Discord channel id"
                    ));
                    Vec::new()
                }
            };
            let github = match (raw.github_owner.clone(), raw.github_repo.clone()) {
                (None, None) => None,
                (owner, repo) => Some(validate_github(
                    RawGithub {
                        api_base: raw
                            .github_api_base
                            .clone()
                            .or_else(|| github.as_ref().map(|g| g.api_base.to_string())),
                        owner,
                        repo,
                        issue_on_approval: raw
                            .issue_on_approval
                            .or_else(|| github.as_ref().map(|g| g.issue_on_approval)),
                    },
                    env,
                    &mut problems,
                )),
            };
            if raw.path.is_none() {
                problems.push(format!(
                    "{key}.path is missing; give the folder of the repository's clone"
                ));
            }
            let repo = validate_repo(
                RawRepo {
                    path: raw.path,
                    base_branch: raw.base_branch,
                    remote: raw.remote,
                    tasks_dir: raw.tasks_dir,
                    push_plans: raw.push_plans,
                    author_name: raw.author_name.or_else(|| Some(repo.author_name.clone())),
                    author_email: raw.author_email.or_else(|| Some(repo.author_email.clone())),
                },
                &key,
                env,
                &mut problems,
            );
            targets.push(Target {
                name,
                repo,
                github,
                channels,
            });
        }

        let store_path = PathBuf::from(self.store.path.as_deref().unwrap_or("featurebot-data"));
        let prompts_dir = self
            .prompts
            .dir
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from);
        if let Some(dir) = &prompts_dir {
            if !dir.is_dir() {
                problems.push(format!(
                    "prompts.dir {} is not a folder; create it or remove the key to use the built-in prompts",
                    dir.display()
                ));
            }
        }

        let prices = match (
            self.llm.input_price_per_mtok,
            self.llm.output_price_per_mtok,
        ) {
            (None, None) => None,
            (Some(i), Some(o)) if i >= 0.0 && o >= 0.0 && i.is_finite() && o.is_finite() => {
                Some((i, o))
            }
            _ => {
                problems.push(
                    "llm.input_price_per_mtok and llm.output_price_per_mtok go together, as non-negative USD per million tokens (e.g. 0.15 and 0.60)"
                        .to_string(),
                );
                None
            }
        };
        let discord = self
            .discord
            .map(|raw| validate_discord(raw, env, &mut problems));
        let agent = validate_agent(self.agent, &store_path, &mut problems);
        if agent.executor == Executor::GithubActions {
            // The runner checks out the repository from GitHub: it needs the plan there, and a
            // GitHub repository to run in.
            if github.is_none() || targets.iter().any(|t| t.github.is_none()) {
                problems.push("agent.executor = \"github-actions\" needs a [github] section (owner, repo, token) naming the repository whose Actions run the agent".to_string());
            }
            // The runner's config travels as a workflow input, which anyone who can read the
            // repository's Actions runs sees: no credentials may ride in an address.
            if let Some(url) = &base_url {
                if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
                    problems.push("llm.base_url carries credentials or a query; with agent.executor = \"github-actions\" it is passed to the runner as a workflow input anyone with access to the Actions runs can read: put the key in llm.api_key_env's variable instead".to_string());
                }
            }
            if !repo.push_plans || targets.iter().any(|t| !t.repo.push_plans) {
                problems.push("agent.executor = \"github-actions\" needs repo.push_plans = true: the runner reads the plan from the pushed base branch".to_string());
            }
        }

        let Some(base_url) = base_url.filter(|_| problems.is_empty()) else {
            return Err(ConfigError { problems });
        };
        Ok(Config {
            llm: LlmConfig {
                provider,
                base_url,
                model,
                api_key_env,
                api_key,
                max_context_tokens: max_context_tokens as usize,
                max_output_tokens: max_output_tokens as u32,
                request_timeout: Duration::from_secs(request_timeout),
                max_retries: max_retries as u32,
                retry_budget: Duration::from_secs(retry_budget),
                prices,
            },
            repo,
            targets,
            store: StoreConfig { path: store_path },
            prompts: PromptsConfig { dir: prompts_dir },
            discord,
            github,
            agent,
        })
    }
}

fn validate_discord(
    raw: RawDiscord,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> DiscordConfig {
    let mut ids = |key: &str, value: Option<IdList>| -> Vec<u64> {
        match value.map(|v| v.parse()) {
            None => Vec::new(),
            Some(Ok(ids)) => ids,
            Some(Err(bad)) => {
                problems.push(format!(
                    "{key} has {bad:?}, which is not a Discord id; copy ids with Discord's developer mode (right click, Copy ID)"
                ));
                Vec::new()
            }
        }
    };
    let guild = ids("discord.guild_id", raw.guild_id);
    let feature_channels = ids("discord.feature_channels", raw.feature_channels);
    let admin_roles = ids("discord.admin_roles", raw.admin_roles);
    let admin_users = ids("discord.admin_users", raw.admin_users);
    let guild_id = match guild.as_slice() {
        [id] => *id,
        _ => {
            problems.push(
                "discord.guild_id must be the one id of your Discord server (right click the server, Copy Server ID)"
                    .to_string(),
            );
            0
        }
    };
    if admin_roles.is_empty() && admin_users.is_empty() {
        problems.push(
            "discord.admin_roles and discord.admin_users are both empty, so nobody could use the bot; list at least one admin user or role id"
                .to_string(),
        );
    }
    let api_base = raw
        .api_base
        .filter(|b| !b.trim().is_empty() && b.trim() != "https://discord.com")
        .and_then(|b| parse_base_url("discord.api_base", &b, problems));
    let interval = positive(
        "discord.stream_edit_interval_ms",
        raw.stream_edit_interval_ms,
        1_200,
        (200, 60_000),
        problems,
    );
    DiscordConfig {
        guild_id,
        feature_channels,
        admin_roles,
        admin_users,
        api_base,
        stream_edit_interval: Duration::from_millis(interval),
        token: env
            .get("DISCORD_TOKEN")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(Secret::new),
    }
}

fn validate_repo(
    raw: RawRepo,
    key: &str,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> RepoConfig {
    let path = PathBuf::from(raw.path.as_deref().unwrap_or("."));
    let base_branch = raw.base_branch.unwrap_or_else(|| "main".to_string());
    if !is_branch_name(&base_branch) {
        problems.push(format!(
            "{key}.base_branch {base_branch:?} is not a valid branch name; use a name like \"main\""
        ));
    }
    let remote = raw.remote.unwrap_or_else(|| "origin".to_string());
    if remote.trim().is_empty() {
        problems.push(format!(
            "{key}.remote is empty; name the git remote to push to, e.g. \"origin\""
        ));
    }
    let tasks_dir = raw.tasks_dir.unwrap_or_else(|| "tasks".to_string());
    let tasks_dir_path = PathBuf::from(&tasks_dir);
    if tasks_dir.trim().is_empty()
        || tasks_dir_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        problems.push(format!(
            "{key}.tasks_dir {tasks_dir:?} must be a relative folder inside the repository without `..`, e.g. \"tasks\""
        ));
    }
    let author_name = raw.author_name.unwrap_or_else(|| "featurebot".to_string());
    let author_email = raw
        .author_email
        .unwrap_or_else(|| "featurebot@localhost".to_string());
    if author_name.trim().is_empty() || author_name.contains(['<', '>', '\n']) {
        problems.push(format!(
            "{key}.author_name must be a non-empty name without <, > or newlines"
        ));
    }
    if !author_email.contains('@') || author_email.contains(['<', '>', '\n', ' ']) {
        problems.push(format!(
            "{key}.author_email {author_email:?} is not an email address; use e.g. \"featurebot@example.com\""
        ));
    }
    RepoConfig {
        path,
        base_branch,
        remote,
        tasks_dir: tasks_dir_path,
        push_plans: raw.push_plans.unwrap_or(false),
        author_name,
        author_email,
        github_token: env
            .get("GITHUB_TOKEN")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(Secret::new),
    }
}

fn validate_github(
    raw: RawGithub,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> GithubConfig {
    let api_base = parse_base_url(
        "github.api_base",
        raw.api_base.as_deref().unwrap_or("https://api.github.com"),
        problems,
    );
    let mut name = |key: &str, value: Option<String>| -> String {
        match value.map(|v| v.trim().to_string()) {
            Some(v)
                if !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
            {
                v
            }
            _ => {
                problems.push(format!(
                    "{key} is missing or not a GitHub name; for https://github.com/acme/shop use owner = \"acme\", repo = \"shop\""
                ));
                String::new()
            }
        }
    };
    let owner = name("github.owner", raw.owner);
    let repo = name("github.repo", raw.repo);
    GithubConfig {
        // A placeholder when invalid: validation fails as a whole in that case.
        api_base: api_base.unwrap_or_else(unreachable_url),
        owner,
        repo,
        token: env
            .get("GITHUB_TOKEN")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(Secret::new),
        issue_on_approval: raw.issue_on_approval.unwrap_or(false),
    }
}

fn validate_agent(raw: RawAgent, store_path: &Path, problems: &mut Vec<String>) -> AgentConfig {
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
    if approve_each_step && executor == Executor::GithubActions {
        problems.push("agent.approval = \"step\" needs agent.executor = \"local\": a run on GitHub Actions cannot wait for Continue between steps".to_string());
    }
    AgentConfig {
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

fn validate_actions(raw: RawActions, problems: &mut Vec<String>) -> ActionsConfig {
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
    let install = raw
        .install
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ACTIONS_INSTALL.to_string());
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

#[allow(clippy::unwrap_used)] // A constant URL that parses.
fn unreachable_url() -> Url {
    Url::parse("http://invalid.invalid/").unwrap()
}

fn parse_base_url(key: &str, value: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            // Keep a trailing slash so that `Url::join` appends instead of replacing the last
            // path segment.
            let mut url = url;
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Some(url)
        }
        _ => {
            problems.push(format!(
                "{key} {value:?} is not an http(s) URL; use e.g. \"http://localhost:11434/v1\""
            ));
            None
        }
    }
}

fn positive(
    key: &str,
    value: Option<i64>,
    default: u64,
    (min, max): (u64, u64),
    problems: &mut Vec<String>,
) -> u64 {
    match value {
        None => default,
        Some(v) if v >= min as i64 && v <= max as i64 => v as u64,
        Some(v) => {
            problems.push(format!(
                "{key} is {v}; use a whole number from {min} to {max} (default {default})"
            ));
            default
        }
    }
}

/// A conservative subset of git's ref-name rules: enough to refuse typos and injection.
pub fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
}
