//! Loading and validating the config: defaults, environment overrides, secrets, errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use featurebot::config::{Config, Provider};

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(&path, true, &env).map_err(|e| e.to_string())
}

#[test]
fn defaults_fill_everything_but_the_model() {
    let config = load("[llm]\nmodel = \"m\"\n", &[]).unwrap();
    assert_eq!(config.llm.provider, Provider::OpenAi);
    assert_eq!(config.llm.base_url.as_str(), "https://api.openai.com/v1/");
    assert_eq!(config.llm.api_key_env, "OPENAI_API_KEY");
    assert_eq!(config.llm.request_timeout, Duration::from_secs(120));
    assert_eq!(config.repo.base_branch, "main");
    assert_eq!(config.repo.tasks_dir, PathBuf::from("tasks"));
    assert!(!config.repo.push_plans);
    assert_eq!(config.store.path, PathBuf::from("featurebot-data"));
    assert!(config.prompts.dir.is_none());
}

#[test]
fn the_example_config_is_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
            .unwrap();
    let config = load(&example, &[]).unwrap();
    assert_eq!(config.llm.model, "gpt-4o-mini");
}

#[test]
fn environment_variables_override_the_file() {
    let config = load(
        "[llm]\nmodel = \"m\"\nmax_context_tokens = 8000\n[repo]\npush_plans = false\n",
        &[
            ("FEATUREBOT__LLM__MODEL", "llama3"),
            ("FEATUREBOT__LLM__MAX_CONTEXT_TOKENS", "16000"),
            ("FEATUREBOT__REPO__PUSH_PLANS", "true"),
            ("FEATUREBOT__LLM__BASE_URL", "http://localhost:11434/v1"),
        ],
    )
    .unwrap();
    assert_eq!(config.llm.model, "llama3");
    assert_eq!(config.llm.max_context_tokens, 16_000);
    assert!(config.repo.push_plans);
    assert_eq!(config.llm.base_url.as_str(), "http://localhost:11434/v1/");
}

#[test]
fn secrets_come_from_the_environment_and_never_print() {
    let config = load(
        "[llm]\nprovider = \"anthropic\"\nmodel = \"claude\"\n",
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-secret"),
            ("GITHUB_TOKEN", "ghp_secret"),
        ],
    )
    .unwrap();
    assert_eq!(config.llm.base_url.as_str(), "https://api.anthropic.com/");
    assert_eq!(
        config.llm.api_key.as_ref().unwrap().expose(),
        "sk-ant-secret"
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("sk-ant-secret") && !debug.contains("ghp_secret"),
        "{debug}"
    );

    let renamed = load(
        "[llm]\nmodel = \"m\"\napi_key_env = \"MY_KEY\"\n",
        &[("MY_KEY", "k1"), ("OPENAI_API_KEY", "k2")],
    )
    .unwrap();
    assert_eq!(renamed.llm.api_key.unwrap().expose(), "k1");
}

fn check_error(toml: &str, expected: &[&str]) {
    let err = load(toml, &[]).unwrap_err();
    for part in expected {
        assert!(err.contains(part), "{err:?} should mention {part:?}");
    }
}

#[test]
fn every_error_names_the_key_and_the_fix() {
    check_error("", &["llm.model is missing", "FEATUREBOT__LLM__MODEL"]);
    check_error(
        "[llm]\nmodel = \"m\"\nprovider = \"gemini\"\n",
        &["llm.provider is \"gemini\"", "\"anthropic\""],
    );
    check_error(
        "[llm]\nmodel = \"m\"\nbase_url = \"localhost:8080\"\n",
        &["llm.base_url", "http(s) URL"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\nmax_context_tokens = -5\n",
        &["llm.max_context_tokens is -5"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[repo]\ntasks_dir = \"../out\"\n",
        &["repo.tasks_dir", "without `..`"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[repo]\ntasks_dir = \"/abs\"\n",
        &["repo.tasks_dir"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[repo]\nbase_branch = \"bad..name\"\n",
        &["repo.base_branch"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[repo]\nauthor_email = \"nope\"\n",
        &["repo.author_email"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[prompts]\ndir = \"/no/such/dir\"\n",
        &["prompts.dir"],
    );
    check_error("[llm]\nmodel = \"m\"\ntypo_key = 1\n", &["typo_key"]);
    check_error(
        "[llm]\nmodel = \"m\"\nmax_context_tokens = 4000\nmax_output_tokens = 4000\n",
        &["llm.max_output_tokens (4000)", "at most half"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\ninput_price_per_mtok = 1.0\n",
        &["llm.input_price_per_mtok and llm.output_price_per_mtok go together"],
    );
    // Several problems are reported together.
    check_error("[llm]\nprovider = \"x\"\n", &["llm.provider", "llm.model"]);
}

#[test]
fn a_missing_required_file_says_how_to_create_it() {
    let err = Config::load_with_env(
        &PathBuf::from("/no/such/config.toml"),
        true,
        &HashMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("config.toml.example"), "{err}");
}

#[test]
fn the_discord_section_takes_ids_as_numbers_strings_or_lists() {
    let config = load(
        "[llm]\nmodel = \"m\"\n[discord]\nguild_id = \"42\"\nadmin_roles = [7, \"8\"]\napi_base = \"http://127.0.0.1:9000\"\n",
        &[("FEATUREBOT__DISCORD__ADMIN_USERS", "1, 2"), ("DISCORD_TOKEN", "discord-secret")],
    )
    .unwrap();
    let discord = config.discord.unwrap();
    assert_eq!(discord.guild_id, 42);
    assert_eq!(discord.admin_roles, [7, 8]);
    assert_eq!(discord.admin_users, [1, 2]);
    assert!(discord.feature_channels.is_empty());
    assert_eq!(discord.api_base.unwrap().as_str(), "http://127.0.0.1:9000/");
    assert_eq!(discord.token.unwrap().expose(), "discord-secret");
    assert!(load("[llm]\nmodel = \"m\"\n", &[])
        .unwrap()
        .discord
        .is_none());
}

#[test]
fn the_discord_section_needs_a_guild_and_an_admin() {
    check_error(
        "[llm]\nmodel = \"m\"\n[discord]\nfeature_channels = [\"general\"]\n",
        &[
            "discord.guild_id",
            "discord.admin_roles and discord.admin_users are both empty",
            "\"general\"",
        ],
    );
}

#[test]
fn several_repositories_each_with_channels_and_github() {
    let config = load(
        "[llm]\nmodel = \"m\"\n[github]\nowner = \"acme\"\nrepo = \"main-app\"\n\n[[repos]]\nname = \"shop\"\npath = \"/srv/shop\"\nbase_branch = \"develop\"\ngithub_owner = \"acme\"\ngithub_repo = \"shop\"\nchannels = [\"11\", 12]\n\n[[repos]]\nname = \"docs\"\npath = \"/srv/docs\"\nchannels = [12]\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.targets.len(), 2);
    let shop = &config.targets[0];
    assert_eq!(shop.repo.base_branch, "develop");
    assert_eq!(shop.channels, [11, 12]);
    assert_eq!(shop.github.as_ref().unwrap().repo, "shop");
    assert!(config.targets[1].github.is_none());
    assert_eq!(
        config.repo_of(Some("docs")).path,
        PathBuf::from("/srv/docs")
    );
    assert_eq!(config.repo_of(None).path, PathBuf::from("."));
    assert_eq!(config.github_of(None).unwrap().repo, "main-app");
    assert_eq!(config.target_for(11, None), Ok(Some("shop".to_string())));
    assert!(config
        .target_for(12, None)
        .unwrap_err()
        .contains("several repositories (shop, docs)"));
    assert_eq!(
        config.target_for(12, Some("docs")),
        Ok(Some("docs".to_string()))
    );
    assert_eq!(config.target_for(99, None), Ok(None));
    assert!(config
        .target_for(11, Some("nope"))
        .unwrap_err()
        .contains("no repository named \"nope\""));
}

#[test]
fn bad_repository_entries_are_named() {
    check_error(
        "[llm]\nmodel = \"m\"\n[[repos]]\nname = \"a b\"\n\n[[repos]]\nname = \"x\"\npath = \"/x\"\n[[repos]]\nname = \"x\"\npath = \"/y\"\nbase_branch = \"..\"\n",
        &[
            "repos[0].name \"a b\"",
            "repos[0].path is missing",
            "repos[2].name \"x\" is used twice",
            "repos[2].base_branch",
        ],
    );
}

#[test]
fn runs_move_to_github_actions_with_one_key() {
    use featurebot::config::Executor;
    let config = load(
        "[llm]\nmodel = \"m\"\n[repo]\npush_plans = true\n[github]\nowner = \"acme\"\nrepo = \"shop\"\n[agent]\nexecutor = \"github-actions\"\n[agent.github_actions]\npoll_interval_secs = 5\n",
        &[("GITHUB_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(config.agent.executor, Executor::GithubActions);
    let actions = &config.agent.github_actions;
    assert_eq!(actions.workflow, "featurebot.yml");
    assert_eq!(actions.poll_interval, Duration::from_secs(5));
    assert_eq!(actions.llm_key_secret, "FEATUREBOT_LLM_API_KEY");
    assert_eq!(
        load("[llm]\nmodel = \"m\"\n", &[]).unwrap().agent.executor,
        Executor::Local
    );
}

#[test]
fn github_actions_runs_need_github_and_pushed_plans() {
    check_error(
        "[llm]\nmodel = \"m\"\n[agent]\nexecutor = \"github-actions\"\n",
        &["needs a [github] section", "repo.push_plans = true"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[agent]\nexecutor = \"cloud\"\n",
        &["agent.executor is \"cloud\"", "\"github-actions\""],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[agent]\nexecutor = \"github-actions\"\napproval = \"step\"\n",
        &["agent.approval = \"step\" needs agent.executor = \"local\""],
    );
    // The runner's config is a workflow input others can read: no credentials in addresses.
    check_error(
        "[llm]\nmodel = \"m\"\nbase_url = \"https://bob:hunter2@proxy.example/v1\"\n[agent]\nexecutor = \"github-actions\"\n",
        &["llm.base_url carries credentials", "llm.api_key_env"],
    );
    check_error(
        "[llm]\nmodel = \"m\"\n[agent.github_actions]\nworkflow = \"a/b.yml\"\nllm_key_secret = \"GITHUB_X\"\n",
        &["agent.github_actions.workflow", "agent.github_actions.llm_key_secret"],
    );
}

#[test]
fn secrets_travel_only_over_https_or_to_this_machine() {
    let llm = |base: &str| format!("[llm]\nmodel = \"m\"\nbase_url = \"{base}\"\n");
    let key = [("OPENAI_API_KEY", "sk-test")];
    let err = load(&llm("http://gpu-box:8000/v1"), &key).unwrap_err();
    assert!(
        err.contains("llm.base_url http://gpu-box:8000/v1/ is plain http to another machine, and OPENAI_API_KEY would travel unencrypted"),
        "{err}"
    );
    // Without a key nothing secret goes there; localhost is this machine.
    assert!(load(&llm("http://gpu-box:8000/v1"), &[]).is_ok());
    assert!(load(&llm("http://localhost:11434/v1"), &key).is_ok());
    assert!(load(&llm("http://127.0.0.1:11434/v1"), &key).is_ok());
    assert!(load(&llm("http://[::1]:11434/v1"), &key).is_ok());

    let github = |base: &str| {
        format!("[llm]\nmodel = \"m\"\n\n[github]\nowner = \"acme\"\nrepo = \"shop\"\napi_base = \"{base}\"\n")
    };
    let token = [("GITHUB_TOKEN", "ghp_x")];
    let err = load(&github("http://git.acme.example/api/v3"), &token).unwrap_err();
    assert!(
        err.contains("GITHUB_TOKEN would travel unencrypted"),
        "{err}"
    );
    // The token's git host follows the API's: Enterprise Server, and github.com.
    let config = load(&github("https://git.acme.example/api/v3"), &token).unwrap();
    assert_eq!(config.repo.token_host, "git.acme.example");
    let config = load(&github("https://api.github.com"), &token).unwrap();
    assert_eq!(config.repo.token_host, "github.com");
}
