//! The settings as written: the config file's and the environment's keys, deserialized with
//! unknown keys refused, before any of them is checked. `validate.rs` turns them into a
//! [`super::Config`].

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) llm: RawLlm,
    pub(super) repo: RawRepo,
    pub(super) store: RawStore,
    pub(super) prompts: RawPrompts,
    pub(super) discord: Option<RawDiscord>,
    pub(super) github: Option<RawGithub>,
    pub(super) agent: RawAgent,
    pub(super) repos: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Option<String>,
    pub(super) path: Option<String>,
    pub(super) base_branch: Option<String>,
    pub(super) remote: Option<String>,
    pub(super) tasks_dir: Option<String>,
    pub(super) push_plans: Option<bool>,
    pub(super) author_name: Option<String>,
    pub(super) author_email: Option<String>,
    pub(super) push_url: Option<String>,
    pub(super) github_api_base: Option<String>,
    pub(super) github_owner: Option<String>,
    pub(super) github_repo: Option<String>,
    pub(super) issue_on_approval: Option<bool>,
    pub(super) channels: Option<IdList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawGithub {
    pub(super) api_base: Option<String>,
    pub(super) owner: Option<String>,
    pub(super) repo: Option<String>,
    pub(super) issue_on_approval: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) backend: Option<String>,
    pub(super) command: Option<String>,
    pub(super) format: Option<Vec<String>>,
    pub(super) test: Option<Vec<String>>,
    pub(super) command_timeout_secs: Option<i64>,
    pub(super) max_repair_attempts: Option<i64>,
    pub(super) max_concurrent_runs: Option<i64>,
    pub(super) max_run_minutes: Option<i64>,
    pub(super) max_tokens: Option<i64>,
    pub(super) max_tool_calls_per_step: Option<i64>,
    pub(super) approval: Option<String>,
    pub(super) env: Option<HashMap<String, String>>,
    pub(super) worktrees_dir: Option<String>,
    pub(super) push_each_step: Option<bool>,
    pub(super) executor: Option<String>,
    pub(super) github_actions: Option<RawActions>,
    pub(super) sandbox: Option<String>,
    pub(super) network: Option<String>,
    pub(super) setup: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawActions {
    pub(super) workflow: Option<String>,
    pub(super) install: Option<String>,
    pub(super) install_git: Option<String>,
    pub(super) install_rev: Option<String>,
    pub(super) install_url: Option<String>,
    pub(super) install_sha256: Option<String>,
    pub(super) llm_key_secret: Option<String>,
    pub(super) poll_interval_secs: Option<i64>,
    pub(super) start_timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDiscord {
    pub(super) guild_id: Option<IdList>,
    pub(super) feature_channels: Option<IdList>,
    pub(super) admin_roles: Option<IdList>,
    pub(super) admin_users: Option<IdList>,
    pub(super) api_base: Option<String>,
    pub(super) stream_edit_interval_ms: Option<i64>,
}

/// Discord ids as TOML integers, strings, lists of either, or (from the environment) a
/// comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum IdList {
    One(u64),
    Many(Vec<OneId>),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneId {
    Int(u64),
    Text(String),
}

impl IdList {
    /// The ids, or the first entry that is not one.
    pub(super) fn parse(&self) -> Result<Vec<u64>, String> {
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
pub(super) struct RawLlm {
    pub(super) provider: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) model: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) max_context_tokens: Option<i64>,
    pub(super) max_output_tokens: Option<i64>,
    pub(super) request_timeout_secs: Option<i64>,
    pub(super) max_retries: Option<i64>,
    pub(super) retry_budget_secs: Option<i64>,
    pub(super) input_price_per_mtok: Option<f64>,
    pub(super) output_price_per_mtok: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRepo {
    pub(super) path: Option<String>,
    pub(super) base_branch: Option<String>,
    pub(super) remote: Option<String>,
    pub(super) tasks_dir: Option<String>,
    pub(super) push_plans: Option<bool>,
    pub(super) author_name: Option<String>,
    pub(super) author_email: Option<String>,
    pub(super) push_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPrompts {
    pub(super) dir: Option<String>,
}
