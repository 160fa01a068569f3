//! From the raw settings to one validated [`Config`]: every key checked, every problem
//! collected (one sentence each, naming the key and the fix), defaults filled in. The agent's
//! section is in `agent.rs`.

use std::collections::HashMap;
use std::path::{Component, PathBuf};
use std::time::Duration;

use url::Url;

use super::agent::validate_agent;
use super::raw::*;
use super::*;
use crate::model::BranchName;

impl RawConfig {
    pub(super) fn validate(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let llm = validate_llm(self.llm, env, &mut problems);
        let mut repo = validate_repo(self.repo, "repo", env, &mut problems);
        let github = self
            .github
            .map(|raw| validate_github(raw, env, &mut problems));
        if let Some(github) = &github {
            repo.token_host = git_host(&github.api_base);
        }
        let targets = validate_targets(self.repos, &repo, github.as_ref(), env, &mut problems);
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
        let discord = self
            .discord
            .map(|raw| validate_discord(raw, env, &mut problems));
        let agent = validate_agent(self.agent, &store_path, &mut problems);
        check_actions_executor(
            &agent,
            github.as_ref(),
            &targets,
            &repo,
            llm.as_ref().map(|l| &l.base_url),
            &mut problems,
        );
        let config = llm.map(|llm| Config {
            llm,
            repo,
            targets,
            store: StoreConfig { path: store_path },
            prompts: PromptsConfig { dir: prompts_dir },
            discord,
            github,
            agent,
        });
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }
}

/// `[llm]`; `None` when its base URL is unusable (the problem is recorded).
fn validate_llm(
    raw: RawLlm,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<LlmConfig> {
    let secret = |name: &str| {
        env.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
    };
    let provider = match raw.provider.as_deref().unwrap_or("openai") {
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
        raw.base_url.as_deref().unwrap_or(default_base),
        problems,
    );
    let model = match raw.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => {
            problems.push(
                "llm.model is missing; name the model to use, e.g. model = \"gpt-4o-mini\" (or set FEATUREBOT__LLM__MODEL)"
                    .to_string(),
            );
            String::new()
        }
    };
    let api_key_env = raw
        .api_key_env
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| match provider {
            Provider::OpenAi => "OPENAI_API_KEY".to_string(),
            Provider::Anthropic => "ANTHROPIC_API_KEY".to_string(),
        });
    let api_key = secret(&api_key_env);
    if api_key.is_some() {
        if let Some(url) = &base_url {
            over_https("llm.base_url", url, &api_key_env, problems);
        }
    }
    let max_context_tokens = positive(
        "llm.max_context_tokens",
        raw.max_context_tokens,
        32_000,
        (1_000, 10_000_000),
        problems,
    );
    let max_output_tokens = positive(
        "llm.max_output_tokens",
        raw.max_output_tokens,
        4_096,
        (64, 1_000_000),
        problems,
    );
    if max_output_tokens * 2 > max_context_tokens {
        problems.push(format!(
            "llm.max_output_tokens ({max_output_tokens}) leaves too little of llm.max_context_tokens ({max_context_tokens}) for the conversation; keep it at most half"
        ));
    }
    let request_timeout = positive(
        "llm.request_timeout_secs",
        raw.request_timeout_secs,
        120,
        (1, 3_600),
        problems,
    );
    let max_retries = positive("llm.max_retries", raw.max_retries, 4, (0, 20), problems);
    let retry_budget = positive(
        "llm.retry_budget_secs",
        raw.retry_budget_secs,
        60,
        (0, 3_600),
        problems,
    );

    let prices = match (raw.input_price_per_mtok, raw.output_price_per_mtok) {
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
    Some(LlmConfig {
        provider,
        base_url: base_url?,
        model,
        api_key_env,
        api_key,
        max_context_tokens: max_context_tokens as usize,
        max_output_tokens: max_output_tokens as u32,
        request_timeout: Duration::from_secs(request_timeout),
        max_retries: max_retries as u32,
        retry_budget: Duration::from_secs(retry_budget),
        prices,
    })
}

/// `[[repos]]`: each entry's name, channels, repository and GitHub repository, with the
/// defaults (`[repo]`'s author, `[github]`'s API base) filled in.
fn validate_targets(
    raws: Vec<RawTarget>,
    repo: &RepoConfig,
    github: Option<&GithubConfig>,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
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
        let default_token_host = repo.token_host.clone();
        let github = match (raw.github_owner.clone(), raw.github_repo.clone()) {
            (None, None) => None,
            (owner, repo) => Some(validate_github(
                RawGithub {
                    api_base: raw
                        .github_api_base
                        .clone()
                        .or_else(|| github.map(|g| g.api_base.to_string())),
                    owner,
                    repo,
                    issue_on_approval: raw
                        .issue_on_approval
                        .or_else(|| github.map(|g| g.issue_on_approval)),
                },
                env,
                problems,
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
                push_url: raw.push_url,
            },
            &key,
            env,
            problems,
        );
        let mut repo = repo;
        repo.token_host = match &github {
            Some(own) => git_host(&own.api_base),
            None => default_token_host.clone(),
        };
        targets.push(Target {
            name,
            repo,
            github,
            channels,
        });
    }

    targets
}

/// What `agent.executor = "github-actions"` needs of the rest of the config.
fn check_actions_executor(
    agent: &AgentConfig,
    github: Option<&GithubConfig>,
    targets: &[Target],
    repo: &RepoConfig,
    base_url: Option<&Url>,
    problems: &mut Vec<String>,
) {
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
    if let Some(url) = &api_base {
        over_https("discord.api_base", url, "DISCORD_TOKEN", problems);
    }
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
    if BranchName::parse(&base_branch).is_err() {
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
        push_url: raw.push_url.filter(|u| !u.trim().is_empty()),
        token_host: "github.com".to_string(),
    }
}

/// The git host of a GitHub API base: `github.com` for `api.github.com`, the host itself for
/// GitHub Enterprise Server (`https://github.example.com/api/v3`), without a leading `api.`
/// (`api.acme.ghe.com` serves `acme.ghe.com`).
pub fn git_host(api_base: &Url) -> String {
    let host = api_base.host_str().unwrap_or("github.com");
    host.strip_prefix("api.").unwrap_or(host).to_string()
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
    if let Some(url) = &api_base {
        over_https("github.api_base", url, "GITHUB_TOKEN", problems);
    }
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

#[allow(clippy::unwrap_used)] // A constant URL that parses.
pub(super) fn unreachable_url() -> Url {
    Url::parse("http://invalid.invalid/").unwrap()
}

/// A secret (`what`) goes to `url` only over HTTPS, or plain HTTP to this machine itself (a
/// local model server, a proxy on the loopback).
fn over_https(key: &str, url: &Url, what: &str, problems: &mut Vec<String>) {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() != "https" && !loopback {
        problems.push(format!(
            "{key} {url} is plain http to another machine, and {what} would travel unencrypted; use https (plain http is allowed only to localhost)"
        ));
    }
}

pub(super) fn parse_base_url(key: &str, value: &str, problems: &mut Vec<String>) -> Option<Url> {
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

pub(super) fn positive(
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
