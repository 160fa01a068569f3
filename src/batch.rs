//! `featurebot agent <plan-file>`: the agent run for scripts and CI, on a plan file written by
//! featurebot, with progress on stderr and the result on stdout.
//!
//! Nobody can answer the agent's questions here: it is told to assume and say so.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::run::{Job, Runner};
use crate::agent::Event;
use crate::config::Config;
use crate::github::Clients;
use crate::llm;
use crate::prompts::Prompts;
use crate::redact::Redactor;
use crate::store::{Author, FeatureId, Place, PlanVersion, Run, RunState, Status, Store};

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

/// Runs the agent on `path` and returns the final run record.
pub async fn run(config: Arc<Config>, path: &Path) -> anyhow::Result<Run> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the plan file {}", path.display()))?;
    let file = parse_plan_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if crate::plan::steps(&file.markdown).is_empty() {
        bail!(
            "{} has no numbered implementation steps under an `Implementation steps` heading",
            path.display()
        );
    }
    let store = Store::open(&config.store.path)?;
    let known = file
        .feature_id
        .and_then(|id| store.feature(id).ok())
        .filter(|f| f.title == file.title);
    let feature = match known {
        Some(feature) => feature,
        None => {
            store
                .create_feature(
                    &file.title,
                    Author {
                        id: "cli".to_string(),
                        name: "featurebot agent".to_string(),
                    },
                    Place::Console,
                )
                .await?
        }
    };
    let relative = path
        .strip_prefix(&config.repo.path)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let plan = PlanVersion {
        version: file.version,
        path: relative,
        commit: String::new(),
        markdown: file.markdown.clone(),
        at: OffsetDateTime::now_utc(),
    };
    // A feature the bot knows moves along; a plan file from elsewhere has no status to keep.
    let id = feature.id;
    if matches!(feature.status, Status::Planned | Status::Approved) {
        let _ = store.set_status(id, Status::Approved).await;
        let _ = store.set_status(id, Status::Running).await;
    }
    let github = Clients::from_config(&config)?;
    let runner = Runner {
        llm: llm::Client::new(config.llm.clone())?,
        prompts: Prompts::load(config.prompts.dir.as_deref())?,
        redactor: Redactor::from_config(&config),
        github,
        config: config.clone(),
    };
    let (events, mut progress) = mpsc::unbounded_channel();
    let (_no_answers, answers) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let printer = tokio::spawn(async move {
        while let Some(event) = progress.recv().await {
            let _ = writeln!(std::io::stderr(), "{}", describe(&event));
        }
    });
    let job = Job {
        feature,
        plan,
        resume: None,
        discussion_url: None,
        follow_up: None,
    };
    let run = runner.execute(job, &store, events, answers, cancel).await?;
    let _ = printer.await;
    if store
        .feature(id)
        .map(|f| f.status == Status::Running)
        .unwrap_or(false)
    {
        let status = match run.state {
            RunState::Finished | RunState::Stopped if run.pr_url.is_some() => Status::PrOpen,
            RunState::Cancelled => Status::Cancelled,
            _ => Status::Failed,
        };
        let _ = store.set_status(id, status).await;
    }
    Ok(run)
}

/// One line about an event, for logs and terminals.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Started {
            branch,
            steps,
            from,
        } => format!(
            "run started on {branch}: {} steps{}",
            steps.len(),
            if *from > 0 {
                format!(", resuming at step {}", from + 1)
            } else {
                String::new()
            }
        ),
        Event::Phase {
            step,
            total,
            title,
            phase,
            ..
        } => {
            if title.is_empty() {
                phase.as_str().to_string()
            } else {
                format!("step {}/{total} {title}: {}", step + 1, phase.as_str())
            }
        }
        Event::ChecksFailed {
            step,
            attempt,
            command,
            tail,
            ..
        } => format!(
            "step {} attempt {}: `{command}` failed:\n{}",
            step + 1,
            attempt + 1,
            crate::agent::backend::last_lines(tail, 15)
        ),
        Event::StepCommitted {
            step,
            total,
            commit,
            green,
            ..
        } => format!(
            "step {}/{total} committed{} ({})",
            step + 1,
            commit
                .as_deref()
                .map(|c| format!(" {}", &c[..c.len().min(12)]))
                .unwrap_or_else(|| " (no changes)".to_string()),
            if *green {
                "checks passed"
            } else {
                "checks failing"
            }
        ),
        Event::Question { text } => format!("the agent asks: {text}"),
        Event::Remote { state, url } => match url {
            Some(url) => format!("GitHub Actions: {state} ({url})"),
            None => format!("GitHub Actions: {state}"),
        },
        Event::AwaitingApproval {
            step,
            total,
            green,
            files,
            ..
        } => format!(
            "step {}/{total} waits for approval ({}, {} file(s) changed)",
            step + 1,
            if *green {
                "checks passed"
            } else {
                "checks failing"
            },
            files.len()
        ),
        Event::Finished {
            branch,
            pull_request,
            green,
            stopped,
        } => {
            let mut line = format!(
                "finished: {branch} pushed, {}",
                if *green {
                    "all checks passed"
                } else {
                    "some checks failing"
                }
            );
            if let Some(pr) = pull_request {
                line.push_str(&format!(", pull request {}", pr.url));
            }
            if let Some(reason) = stopped {
                line.push_str(&format!("; stopped early: {reason}"));
            }
            line
        }
    }
}
