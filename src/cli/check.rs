//! `featurebot check`: proves each configured service works before people rely on it: the
//! store, the LLM, the agent's sandbox, the repository, and GitHub and Discord when configured.
//!
//! One line per service: `ok` and what was found, or `FAIL` and what to do. The checks only
//! read, except the LLM check, which sends one tiny request.

use std::fmt;

use tokio_util::sync::CancellationToken;

use crate::agent::actions::workflow::workflow_yaml;
use crate::agent::exec::{self, CommandSpec};
use crate::agent::sandbox::{self, Sandbox};
use crate::config::{
    ActionsConfig, Config, Executor, GithubConfig, Install, Provider, RepoConfig, INSTALL_UNSET,
};
use crate::llm;
use crate::redact::Redactor;
use crate::repo;
use crate::store::{Store, StoreError};

/// The result of checking one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub service: &'static str,
    pub ok: bool,
    /// Works, but not as it should: shown as `warn` (a sandbox turned off).
    pub warning: bool,
    pub detail: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.ok, self.warning) {
            (false, _) => "FAIL",
            (true, true) => "warn",
            (true, false) => "ok  ",
        };
        write!(f, "{status} {:<6} {}", self.service, self.detail)
    }
}

/// Checks the store, the LLM and the repository, in that order.
pub async fn run(config: &Config) -> Vec<Line> {
    let mut lines = vec![Line {
        service: "config",
        ok: true,
        warning: false,
        detail: "valid".to_string(),
    }];

    let path = config.store.path.clone();
    lines.push(match Store::open(&path) {
        Ok(store) => {
            let count = store.features().map(|f| f.len()).unwrap_or_default();
            Line {
                service: "store",
                ok: true,
                warning: false,
                detail: format!("{} ({count} features)", path.display()),
            }
        }
        Err(StoreError::Locked { .. }) => Line {
            service: "store",
            ok: true,
            warning: false,
            detail: format!("{} is open in a running featurebot", path.display()),
        },
        Err(err) => Line {
            service: "store",
            ok: false,
            warning: false,
            detail: err.to_string(),
        },
    });

    let provider = match config.llm.provider {
        Provider::OpenAi => "openai",
        Provider::Anthropic => "anthropic",
    };
    let where_ = format!(
        "{provider} model {} at {}",
        config.llm.model, config.llm.base_url
    );
    lines.push(match llm::Client::new(config.llm.clone()) {
        Ok(client) => match client.ping().await {
            Ok(()) => Line {
                service: "llm",
                ok: true,
                warning: false,
                detail: where_,
            },
            Err(err) => Line {
                service: "llm",
                ok: false,
                warning: false,
                detail: format!("{where_}: {err}"),
            },
        },
        Err(err) => Line {
            service: "llm",
            ok: false,
            warning: false,
            detail: format!("{err:#}"),
        },
    });

    lines.push(sandbox_line(config).await);
    lines.push(repo_line(None, &config.repo).await);
    for target in &config.targets {
        lines.push(repo_line(Some(&target.name), &target.repo).await);
    }
    if let Some(github) = &config.github {
        lines.push(github_line(None, github).await);
    }
    for target in &config.targets {
        if let Some(github) = &target.github {
            lines.push(github_line(Some(&target.name), github).await);
        }
    }
    if config.agent.executor == Executor::GithubActions {
        let actions = &config.agent.github_actions;
        lines.push(actions_line(None, config, &config.repo, config.github.as_ref(), actions).await);
        for target in &config.targets {
            lines.push(
                actions_line(
                    Some(&target.name),
                    config,
                    &target.repo,
                    target.github.as_ref(),
                    actions,
                )
                .await,
            );
        }
    }
    if config.discord.is_some() {
        lines.push(match crate::discord::whoami(config).await {
            Ok(name) => Line {
                service: "discord",
                ok: true,
                warning: false,
                detail: format!("logged in as {name}"),
            },
            Err(err) => Line {
                service: "discord",
                ok: false,
                warning: false,
                detail: format!("{err:#}"),
            },
        });
    }
    lines
}

/// Which sandbox the agent's commands get, proven: one sandboxed command tries to read a file
/// outside its work tree and to connect to a listener on this host's loopback, and both must
/// fail (the connection only with `agent.network = "off"`).
async fn sandbox_line(config: &Config) -> Line {
    let agent = &config.agent;
    let line = |ok, warning, detail: String| Line {
        service: "sandbox",
        ok,
        warning,
        detail,
    };
    match sandbox::available(agent.sandbox) {
        Ok(false) => {
            return line(
                true,
                true,
                "off (agent.sandbox = \"off\"): the agent's commands run unconfined, as featurebot's user, and can read whatever it can; set agent.sandbox = \"auto\" to confine them".to_string(),
            )
        }
        Err(err) => return line(false, false, err),
        Ok(true) => {}
    }
    match prove_sandbox(agent.network).await {
        Ok(detail) => line(true, false, detail),
        Err(err) => line(false, false, err),
    }
}

async fn prove_sandbox(network: bool) -> Result<String, String> {
    const MARK: &str = "featurebot-check-outside-the-work-tree";
    const RAN: &str = "featurebot-check-sandbox-ran";
    let dir =
        tempfile_dir().map_err(|e| format!("making a folder for the sandbox's proof: {e}"))?;
    let (work, home, outside) = (dir.join("work"), dir.join("home"), dir.join("outside.txt"));
    for d in [&work, &home] {
        std::fs::create_dir_all(d).map_err(|e| format!("making {}: {e}", d.display()))?;
    }
    std::fs::write(&outside, MARK).map_err(|e| format!("writing {}: {e}", outside.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("listening on the loopback for the sandbox's proof: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let spec = CommandSpec {
        line: format!(
            "echo {RAN}; cat {}; timeout 5 git ls-remote http://127.0.0.1:{port}/proof.git; true",
            outside.display()
        ),
        dir: work.clone(),
        timeout: std::time::Duration::from_secs(20),
        env: Vec::new(),
        max_output_bytes: 16 * 1024,
        sandbox: Some(Sandbox {
            work_tree: work.clone(),
            git_dir: work,
            readable: Vec::new(),
            home,
            network,
        }),
    };
    let ran = exec::run(&spec, &CancellationToken::new(), &Redactor::default(), None).await;
    // Whatever connected has connected by now: the command waited for its answer.
    let connected = if accepted.is_finished() {
        accepted.await.unwrap_or(false)
    } else {
        accepted.abort();
        false
    };
    let _ = std::fs::remove_dir_all(&dir);
    let result = ran.map_err(|e| format!("the sandboxed command did not start: {e}"))?;
    if !result.output.contains(RAN) {
        return Err(format!(
            "the sandboxed command did not run: {}",
            result.output.trim()
        ));
    }
    if result.output.contains(MARK) {
        return Err("a sandboxed command read a file outside its work tree; the sandbox does not hold here: report this, and set agent.sandbox = \"off\" only if you accept it".to_string());
    }
    match (network, connected) {
        (false, true) => Err("a sandboxed command reached this host's network although agent.network is \"off\"; the sandbox does not hold here".to_string()),
        (false, false) => Ok("bubblewrap, network off: a command reading a file outside its work tree and connecting to this host were both refused".to_string()),
        (true, _) => Ok("bubblewrap, network on (agent.network = \"on\"): a command reading a file outside its work tree was refused; the network is open to it".to_string()),
    }
}

/// A fresh folder under the system's temporary one.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "featurebot-check-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Inspects one target repository; `name` is `None` for the default `[repo]`.
async fn repo_line(name: Option<&str>, cfg: &RepoConfig) -> Line {
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    let owned = cfg.clone();
    let inspected = tokio::task::spawn_blocking(move || repo::base::inspect(&owned)).await;
    let (ok, detail) = match inspected {
        Ok(Ok(status)) => {
            let mut detail = format!(
                "{} on {}, {} at {}",
                cfg.path.display(),
                status.head,
                cfg.base_branch,
                &status.base_commit[..status.base_commit.len().min(12)]
            );
            let mut ok = true;
            if cfg.push_plans {
                match &status.remote_url {
                    Some(url) => detail.push_str(&format!(", pushes to {} ({url})", cfg.remote)),
                    None => {
                        ok = false;
                        detail.push_str(&format!(
                            "; push_plans is set but remote {:?} does not exist: add it with git remote add, or set the remote key",
                            cfg.remote
                        ));
                    }
                }
            }
            (ok, detail)
        }
        Ok(Err(err)) => (false, err.to_string()),
        Err(err) => (false, format!("the check panicked: {err}")),
    };
    Line {
        service: "repo",
        ok,
        warning: false,
        detail: format!("{prefix}{detail}"),
    }
}

/// For runs on GitHub Actions: this featurebot's workflow is on the base branch at GitHub, and
/// the runner can reach the LLM.
async fn actions_line(
    name: Option<&str>,
    config: &Config,
    repo: &RepoConfig,
    github: Option<&GithubConfig>,
    actions: &ActionsConfig,
) -> Line {
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    let path = format!(".github/workflows/{}", actions.workflow);
    let found = match github.map(crate::github::GitHub::new) {
        None => Err("no GitHub repository is configured for it".to_string()),
        Some(Err(err)) => Err(format!("{err:#}")),
        Some(Ok(client)) => client
            .file_on_branch(&path, &repo.base_branch)
            .await
            .map_err(|e| e.to_string()),
    };
    let (mut ok, mut detail) = match found {
        Ok(Some(text)) if text == workflow_yaml(actions) => {
            (true, format!("{path} is on {}", repo.base_branch))
        }
        // An older featurebot's workflow lacks inputs this one sends: GitHub would refuse
        // every dispatch.
        Ok(Some(_)) => (
            false,
            format!(
                "{path} on {} is not the workflow this featurebot writes (an older version, or edited by hand): run featurebot install-workflow --write --force, then commit and push it",
                repo.base_branch
            ),
        ),
        Ok(None) => (
            false,
            format!(
                "{path} is not on {} at GitHub: run featurebot install-workflow --write, then commit and push it",
                repo.base_branch
            ),
        ),
        Err(err) => (false, err),
    };
    if actions.install == Install::Unset {
        ok = false;
        detail.push_str(&format!("; {INSTALL_UNSET}"));
    }
    let host = config.llm.base_url.host_str().unwrap_or_default();
    if matches!(
        host,
        "localhost" | "127.0.0.1" | "[::1]" | "::1" | "0.0.0.0"
    ) {
        ok = false;
        detail.push_str(&format!(
            "; llm.base_url is on {host}, which a GitHub runner cannot reach: give it an address the runner can reach"
        ));
    }
    Line {
        service: "actions",
        ok,
        warning: false,
        detail: format!("{prefix}{detail}"),
    }
}

/// Tries one GitHub repository; `name` is `None` for the default `[github]`.
async fn github_line(name: Option<&str>, cfg: &GithubConfig) -> Line {
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    let result = match crate::github::GitHub::new(cfg) {
        Ok(client) => client.check().await.map_err(|e| e.to_string()),
        Err(err) => Err(format!("{err:#}")),
    };
    let (ok, detail) = match result {
        Ok(found) => (true, found),
        Err(detail) => (false, detail),
    };
    Line {
        service: "github",
        ok,
        warning: false,
        detail: format!("{prefix}{detail}"),
    }
}
