//! The config file for tests that run the binary: a [`Config`] written as the TOML that loads
//! back into it, checked on every write, so that a setting the file cannot hold fails loudly
//! instead of being dropped.
//!
//! Secrets are never written: they are environment variables, as in a deployment.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use featurebot::config::{
    AgentBackend, Config, Executor, Install, Provider, RepoConfig, SandboxMode,
};

/// The TOML text of `config`.
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    llm(&mut out, config);
    out.push_str("\n[repo]\n");
    repo(&mut out, &config.repo);
    let _ = writeln!(out, "\n[store]\npath = {:?}", config.store.path);
    if let Some(dir) = &config.prompts.dir {
        let _ = writeln!(out, "\n[prompts]\ndir = {dir:?}");
    }
    if let Some(g) = &config.github {
        let _ = writeln!(
            out,
            "\n[github]\napi_base = {:?}\nowner = {:?}\nrepo = {:?}\nissue_on_approval = {}",
            g.api_base.as_str(),
            g.owner,
            g.repo,
            g.issue_on_approval
        );
    }
    if let Some(d) = &config.discord {
        let _ = writeln!(
            out,
            "\n[discord]\nguild_id = {}\nfeature_channels = {:?}\nadmin_roles = {:?}\nadmin_users = {:?}\nstream_edit_interval_ms = {}",
            d.guild_id,
            d.feature_channels,
            d.admin_roles,
            d.admin_users,
            d.stream_edit_interval.as_millis()
        );
        if let Some(base) = &d.api_base {
            let _ = writeln!(out, "api_base = {:?}", base.as_str());
        }
    }
    agent(&mut out, config);
    for t in &config.targets {
        let _ = writeln!(
            out,
            "\n[[repos]]\nname = {:?}\nchannels = {:?}",
            t.name, t.channels
        );
        repo(&mut out, &t.repo);
        if let Some(g) = &t.github {
            let _ = writeln!(
                out,
                "github_api_base = {:?}\ngithub_owner = {:?}\ngithub_repo = {:?}\nissue_on_approval = {}",
                g.api_base.as_str(),
                g.owner,
                g.repo,
                g.issue_on_approval
            );
        }
    }
    out
}

fn llm(out: &mut String, config: &Config) {
    let l = &config.llm;
    let provider = match l.provider {
        Provider::OpenAi => "openai",
        Provider::Anthropic => "anthropic",
    };
    let _ = writeln!(
        out,
        "[llm]\nprovider = {provider:?}\nbase_url = {:?}\nmodel = {:?}\napi_key_env = {:?}\nmax_context_tokens = {}\nmax_output_tokens = {}\nrequest_timeout_secs = {}\nmax_retries = {}\nretry_budget_secs = {}",
        l.base_url.as_str(),
        l.model,
        l.api_key_env,
        l.max_context_tokens,
        l.max_output_tokens,
        l.request_timeout.as_secs(),
        l.max_retries,
        l.retry_budget.as_secs()
    );
    if let Some((input, output)) = l.prices {
        let _ = writeln!(
            out,
            "input_price_per_mtok = {input:?}\noutput_price_per_mtok = {output:?}"
        );
    }
}

/// The keys `[repo]` and `[[repos]]` share.
fn repo(out: &mut String, r: &RepoConfig) {
    let _ = writeln!(
        out,
        "path = {:?}\nbase_branch = {:?}\nremote = {:?}\ntasks_dir = {:?}\npush_plans = {}\nauthor_name = {:?}\nauthor_email = {:?}",
        r.path, r.base_branch, r.remote, r.tasks_dir, r.push_plans, r.author_name, r.author_email
    );
    if let Some(url) = &r.push_url {
        let _ = writeln!(out, "push_url = {url:?}");
    }
}

fn agent(out: &mut String, config: &Config) {
    let a = &config.agent;
    let _ = writeln!(
        out,
        "\n[agent]\nformat = {:?}\ntest = {:?}\ncommand_timeout_secs = {}\nmax_repair_attempts = {}\nmax_concurrent_runs = {}\nmax_run_minutes = {}\nmax_tokens = {}\nmax_tool_calls_per_step = {}\napproval = {:?}\nworktrees_dir = {:?}\npush_each_step = {}\nexecutor = {:?}",
        a.format,
        a.test,
        a.command_timeout.as_secs(),
        a.max_repair_attempts,
        a.max_concurrent_runs,
        a.max_run.as_secs() / 60,
        a.max_tokens,
        a.max_tool_calls_per_step,
        if a.approve_each_step { "step" } else { "plan" },
        a.worktrees_dir,
        a.push_each_step,
        match a.executor {
            Executor::Local => "local",
            Executor::GithubActions => "github-actions",
        }
    );
    match &a.backend {
        AgentBackend::Builtin => out.push_str("backend = \"builtin\"\n"),
        AgentBackend::Command(command) => {
            let _ = writeln!(out, "backend = \"command\"\ncommand = {command:?}");
        }
    }
    let env: Vec<String> = a.env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    let _ = writeln!(out, "env = {{ {} }}", env.join(", "));
    let sandbox = match a.sandbox {
        SandboxMode::Auto => "auto",
        SandboxMode::Bwrap => "bwrap",
        SandboxMode::Off => "off",
    };
    let _ = writeln!(
        out,
        "sandbox = {sandbox:?}\nnetwork = {:?}\nsetup = {:?}",
        if a.network { "on" } else { "off" },
        a.setup
    );
    let g = &a.github_actions;
    let _ = writeln!(
        out,
        "\n[agent.github_actions]\nworkflow = {:?}\nllm_key_secret = {:?}\npoll_interval_secs = {}\nstart_timeout_secs = {}",
        g.workflow,
        g.llm_key_secret,
        g.poll_interval.as_secs(),
        g.start_timeout.as_secs()
    );
    let _ = match &g.install {
        Install::Unset => Ok(()),
        Install::Git { url, rev } => writeln!(out, "install_git = {url:?}\ninstall_rev = {rev:?}"),
        Install::Release { url, sha256 } => {
            writeln!(out, "install_url = {url:?}\ninstall_sha256 = {sha256:?}")
        }
        Install::Command(command) => writeln!(out, "install = {command:?}"),
    };
}

/// Loads the file at `path` with `secrets` as the environment and checks it is `config`.
pub fn check_round_trip(path: &Path, config: &Config, secrets: &[(String, String)]) {
    let env: HashMap<String, String> = secrets.iter().cloned().collect();
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = Config::load_with_env(path, true, &env)
        .unwrap_or_else(|e| panic!("the test config file does not load: {e}\n{text}"));
    let (want, got) = (format!("{config:#?}"), format!("{loaded:#?}"));
    if want != got {
        let differ: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(w, g)| w != g)
            .map(|(w, g)| format!("  config: {}\n  file:   {}", w.trim(), g.trim()))
            .collect();
        panic!(
            "the config file cannot hold this test's config (extend support/app/toml.rs):\n{}\n{text}",
            differ.join("\n")
        );
    }
}
