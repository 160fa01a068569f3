//! `featurebot agent <plan-file>`: the agent run for scripts and CI, on a plan file written by
//! featurebot, with progress on stderr and the result on stdout.
//!
//! Nobody can answer the agent's questions here: it is told to assume and say so, and
//! `agent.approval = "step"` does not apply. On GitHub Actions the workflow runs this with
//! `--branch` (the bot's branch), `--plan-sha256` (the approved plan's fingerprint, checked
//! before anything runs) and, to continue a run, `--resume`; the bot reads the job's log,
//! so the lines [`describe`] prints are an interface: a red check starts with
//! [`CHECKS_FAILED`].

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::progress::describe;
use crate::agent::run::Job;
use crate::config::Config;
use crate::model::{Author, BranchName, Place, PlanVersion, Run, Status};
use crate::plan::file::parse_plan_file;
use crate::startup::Services;
use crate::store::Store;

/// What `featurebot agent` was asked besides the plan file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The branch to work on, instead of one named after the feature.
    pub branch: Option<BranchName>,
    /// Continue the branch from its first step not ticked off in its plan file.
    pub resume: bool,
    /// Where the feature was discussed, linked from the pull request.
    pub discussion_url: Option<String>,
    /// The GitHub issue the pull request closes (`Closes #N`).
    pub closes: Option<u64>,
    /// The approved plan's [`crate::plan::fingerprint`]: a plan file whose text differs is
    /// refused before anything runs.
    pub plan_sha256: Option<String>,
}

/// Runs the agent on `path` and returns the final run record.
pub async fn run(config: Arc<Config>, path: &Path, options: &Options) -> anyhow::Result<Run> {
    // Nobody is here to approve steps: every step runs.
    let config = if config.agent.approve_each_step {
        tracing::info!(
            "agent.approval = \"step\" does not apply to featurebot agent; running every step"
        );
        let mut changed = (*config).clone();
        changed.agent.approve_each_step = false;
        Arc::new(changed)
    } else {
        config
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the plan file {}", path.display()))?;
    let file = parse_plan_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(approved) = &options.plan_sha256 {
        let found = crate::plan::fingerprint(&file.markdown);
        if !found.eq_ignore_ascii_case(approved.trim()) {
            bail!(
                "{} is not the approved plan: its text differs from the version that was approved (fingerprint {found}, approved {}). Someone changed the plan file after the approval, or the approved version was never pushed to this branch; push it (repo.push_plans = true), or generate the plan again and approve it",
                path.display(),
                approved.trim()
            );
        }
    }
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
    let author = || Author {
        id: "cli".to_string(),
        name: "featurebot agent".to_string(),
    };
    // A store that does not know the feature (a runner's, new for every run) takes the plan
    // file's number when it is free, so the work tree and the pull request carry the bot's.
    let adopted = match (&known, file.feature_id) {
        (None, Some(id)) => {
            store
                .adopt_feature(id, &file.title, author(), Place::Console)
                .await?
        }
        _ => None,
    };
    let feature = match known.or(adopted) {
        Some(feature) => feature,
        None => {
            store
                .create_feature(&file.title, author(), Place::Console)
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
    let runner = Services::with_store(&config, store.clone())?.runner(config.clone());
    let (events, mut progress) = mpsc::unbounded_channel();
    // No answers will come: a question gets "no answer" at once instead of a long wait.
    let (no_answers, answers) = mpsc::unbounded_channel();
    drop(no_answers);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        interrupted().await;
        stop.cancel();
    });
    let printer = tokio::spawn(async move {
        while let Some(event) = progress.recv().await {
            let _ = writeln!(std::io::stderr(), "{}", describe(&event));
        }
    });
    let mut feature = feature;
    if let Some(number) = options.closes {
        feature.issue = Some((number, String::new()));
    }
    let job = Job {
        feature,
        plan,
        resume: None,
        discussion_url: options.discussion_url.clone(),
        follow_up: None,
        branch: options.branch.clone(),
        continue_from_ticks: options.resume,
    };
    let run = runner
        .execute(
            job,
            &store,
            events,
            answers,
            cancel,
            &AtomicBool::new(false),
        )
        .await?;
    let _ = printer.await;
    if store
        .feature(id)
        .map(|f| f.status == Status::Running)
        .unwrap_or(false)
    {
        let _ = store.set_status(id, Status::after_run(&run)).await;
    }
    Ok(run)
}

/// Ctrl-C, or SIGTERM (what a cancelled GitHub Actions job and `docker stop` send). Never
/// returns when no signal can be listened to.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                Ok(()) = tokio::signal::ctrl_c() => {}
                Some(()) = term.recv() => {}
                else => std::future::pending::<()>().await,
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
