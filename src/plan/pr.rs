//! The pull request's description: the summary, the plan file's link, the acceptance criteria,
//! each step with its result and commit, the follow-ups, the issue it closes, and what the run
//! cost. Pure: the same runs give the same text.

use std::time::Duration;

use crate::github::GitHub;
use crate::llm::Usage;
use crate::model::{Feature, PlanVersion, Run};
use crate::plan;

/// The pull request's description: what was asked, what was done, what was verified. `runs`
/// are the feature's runs on this branch, oldest first, the current one included: the latest
/// plan run gives the steps, later follow-up runs are listed after them.
pub fn pull_request_body(
    github: &GitHub,
    feature: &Feature,
    plan_version: &PlanVersion,
    discussion_url: Option<&str>,
    runs: &[Run],
    elapsed: Duration,
) -> String {
    let mut body = String::new();
    body.push_str("## Summary\n\n");
    body.push_str(feature.summary.as_deref().unwrap_or(&feature.title));
    body.push_str("\n\n");
    let branch = runs.last().map(|r| r.branch.as_str()).unwrap_or_default();
    body.push_str(&format!(
        "Plan: [{}]({}) (version {})\n",
        plan_version.path,
        github.file_url(branch, &plan_version.path),
        plan_version.version
    ));
    if let Some(url) = discussion_url {
        body.push_str(&format!("Discussion: {url}\n"));
    }
    let result = |green: Option<bool>| match green {
        Some(true) => ("x", "checks passed"),
        Some(false) => ("x", "**checks failing**"),
        None => (" ", "not done"),
    };
    let short = |commit: &Option<String>| {
        commit
            .as_deref()
            .map(|c| format!(" ({})", &c[..c.len().min(7)]))
            .unwrap_or_default()
    };
    let criteria = plan::acceptance_criteria(&plan_version.markdown);
    if !criteria.is_empty() {
        body.push_str("\n## Acceptance criteria\n\n| # | Criterion |\n|---|---|\n");
        for (i, criterion) in criteria.iter().enumerate() {
            body.push_str(&format!(
                "| {} | {} |\n",
                i + 1,
                criterion.replace('|', "\\|")
            ));
        }
    }
    let plan_run = runs.iter().rev().find(|r| r.follow_up.is_none());
    body.push_str("\n## Steps\n\n");
    if let Some(plan_run) = plan_run {
        for (i, step) in plan_run.steps.iter().enumerate() {
            let (tick, result) = result(step.green);
            body.push_str(&format!(
                "- [{tick}] {}. {} — {result}{}\n",
                i + 1,
                step.title,
                short(&step.commit)
            ));
        }
    }
    let follow_ups: Vec<&Run> = runs
        .iter()
        .filter(|r| r.follow_up.is_some() && plan_run.is_none_or(|p| r.number > p.number))
        .collect();
    if !follow_ups.is_empty() {
        body.push_str("\n## Follow-ups\n\n");
        for run in follow_ups {
            for step in &run.steps {
                let (tick, result) = result(step.green);
                body.push_str(&format!(
                    "- [{tick}] {} — {result}{}\n",
                    step.title,
                    short(&step.commit)
                ));
            }
        }
    }
    if let Some((number, _)) = &feature.issue {
        body.push_str(&format!("\nCloses #{number}\n"));
    }
    let usage = runs.iter().fold(Usage::default(), |mut u, r| {
        u.add(r.usage);
        u
    });
    body.push_str(&format!(
        "\nDuration of the last run: {}m{:02}s · Tokens: {} in, {} out\n\nFeature-Id: {}\n",
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60,
        usage.input_tokens,
        usage.output_tokens,
        feature.id
    ));
    body
}
