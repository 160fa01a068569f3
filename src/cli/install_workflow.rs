//! `featurebot install-workflow [--write [--force]] [--repo NAME]`: the GitHub Actions workflow
//! that runs the agent (`agent.executor = "github-actions"`), printed, or written into the
//! target repository's clone with what to do next.

use crate::agent::actions::workflow;
use crate::config::{Config, Install, INSTALL_UNSET};

/// What to print: the workflow itself, or, with `write`, where it was written and the next
/// steps. `repo` names a `[[repos]]` entry instead of `[repo]`.
pub fn run(
    config: &Config,
    write: bool,
    force: bool,
    repo: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(name) = repo {
        if config.target(Some(name)).is_none() {
            anyhow::bail!("there is no [[repos]] entry named {name:?}");
        }
    }
    let actions = &config.agent.github_actions;
    if actions.install == Install::Unset {
        anyhow::bail!("{INSTALL_UNSET}; see the README's \"Runs on GitHub Actions\"");
    }
    if !write {
        return Ok(workflow::workflow_yaml(actions));
    }
    let repo_cfg = config.repo_of(repo);
    let written = workflow::write_workflow(repo_cfg, actions, force)?;
    Ok(format!(
        "{}\n",
        workflow::next_steps(repo_cfg, actions, &written)
    ))
}
