//! Keeps the committed plan file's front matter in step with the feature: status, priority,
//! labels and pull request, so the repository itself is a readable record of what was asked and
//! what happened.
//!
//! Each change is a small commit on the base branch (`plan: <title> (<what changed>)`), through
//! the same one-file commit as the plan itself.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::RepoConfig;
use crate::plan::{self, Meta};
use crate::repo;
use crate::store::{FeatureId, Store};

/// Rewrites the latest plan version's file with the feature's current state and commits it.
/// Does nothing for a feature without a plan. `what` says what changed, for the commit message.
pub async fn refresh(
    repo_cfg: &RepoConfig,
    store: &Store,
    id: FeatureId,
    what: &str,
) -> anyhow::Result<()> {
    let feature = store.feature(id)?;
    let Some(latest) = store.plans(id)?.pop() else {
        return Ok(());
    };
    let pr = store.runs(id)?.into_iter().rev().find_map(|r| r.pr_url);
    let meta = Meta {
        version: latest.version,
        created: latest.at,
        status: feature.status,
        pr,
    };
    let contents = plan::render_file(&feature, &meta, &latest.markdown);
    let message = format!(
        "plan: {} ({what})\n\nFeature-Id: {}\nPlan-Version: {}\n",
        feature.title, feature.id, latest.version
    );
    let cfg = repo_cfg.clone();
    let path = PathBuf::from(&latest.path);
    tokio::task::spawn_blocking(move || {
        repo::commit_file(&cfg, &path, contents.as_bytes(), &message)
    })
    .await
    .context("the git task panicked")?
    .context("updating the plan file's front matter")?;
    Ok(())
}
