//! The plan file in the target repository: reading it back ([`parse_plan_file`], for
//! `featurebot agent`) and keeping its front matter in step with the feature ([`refresh`]):
//! status, priority, labels and pull request, so the repository itself is a readable record of
//! what was asked and what happened.
//!
//! Each change is a small commit on the base branch (`plan: <title> (<what changed>)`), through
//! the same one-file commit as the plan itself.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;

use crate::model::{BranchName, FeatureId, PlanVersion};
use crate::plan::{self, Meta};
use crate::repo::{Guard, Repo};
use crate::store::Store;

/// Rewrites the latest plan version's file with the feature's current state, commits it and,
/// with `push_plans`, pushes it. Does nothing for a feature without a plan. `what` says what
/// changed, for the commit message. Returns what people should hear of it, to follow "the
/// change is saved and committed, but": the push's failure when the commit landed but could
/// not be pushed, or that someone else changed the plan's text on the remote, which is then
/// left as it is (and nothing is committed).
pub async fn refresh(
    repo: &Repo,
    store: &Store,
    id: FeatureId,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let feature = store.feature(id)?;
    let plans = store.plans(id)?;
    let Some(latest) = plans.last() else {
        return Ok(None);
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
    let published = repo
        .publish(
            Path::new(&latest.path),
            contents.into_bytes(),
            &message,
            Some(guard(&feature.title, &plans, None)),
        )
        .await
        .context("updating the plan file's front matter")?;
    if let Some(conflict) = published.conflict {
        return Ok(Some(format!(
            "the plan file {} was changed on the remote by someone else (commit {}), so its front matter is not updated: their text is kept",
            latest.path,
            short(&conflict.theirs)
        )));
    }
    Ok(published
        .push_error
        .map(|err| format!("pushing the plan file failed: {err}")))
}

/// The guard of a publish of `title`'s plan file: the remote's copy is someone else's when its
/// plan text is none of the versions featurebot wrote (`plans`; ticks and front matter aside,
/// see [`plan::fingerprint`]), or is not a plan file featurebot can read. `side_branch`: where
/// a new version goes then.
pub fn guard(title: &str, plans: &[PlanVersion], side_branch: Option<BranchName>) -> Guard {
    let known: HashSet<String> = plans
        .iter()
        .map(|p| plan::fingerprint(&plan::file_body(title, &p.markdown)))
        .collect();
    Guard {
        foreign: Box::new(move |text: &str| match parse_plan_file(text) {
            Ok(file) => !known.contains(&plan::fingerprint(&file.markdown)),
            Err(_) => true,
        }),
        side_branch,
    }
}

/// The first seven characters of a commit id, as git shows them.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// A plan file's front matter and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    pub feature_id: Option<FeatureId>,
    pub title: String,
    pub version: u32,
    pub markdown: String,
}

/// Reads the front matter featurebot writes (`feature_id`, `title`, `version`); a file without
/// one is taken whole as the plan, titled by its first heading.
pub fn parse_plan_file(text: &str) -> Result<PlanFile, String> {
    let mut feature_id = None;
    let mut title = None;
    let mut version = 1;
    let body = match text.strip_prefix("---\n") {
        Some(rest) => {
            let Some(end) = rest.find("\n---\n") else {
                return Err("the front matter has no closing `---` line".to_string());
            };
            for line in rest[..end].lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match key.trim() {
                    "feature_id" => feature_id = value.parse().ok().map(FeatureId),
                    "title" => {
                        title = Some(
                            serde_json::from_str::<String>(value)
                                .unwrap_or_else(|_| value.trim_matches('"').to_string()),
                        )
                    }
                    "version" => version = value.parse().unwrap_or(1),
                    _ => {}
                }
            }
            &rest[end + 5..]
        }
        None => text,
    };
    let title = title
        .or_else(|| {
            body.lines()
                .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string()))
        })
        .filter(|t| !t.is_empty())
        .ok_or("the plan has no title: give it front matter or a `# Title` line")?;
    Ok(PlanFile {
        feature_id,
        title,
        version,
        markdown: body.trim().to_string(),
    })
}
