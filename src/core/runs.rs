//! The core's agent runs: a queue bounded by `agent.max_concurrent_runs`, with a cancel token
//! and an answer channel per run, and the start-up check for runs a stop interrupted.
//!
//! Part of the core: it speaks in [`Output`]s and knows no front end. Every run task is owned
//! here: it is registered before it starts and removed when it ends, and cancelling its token
//! stops it (and the commands it started) within seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::agent::actions::executor;
use crate::agent::run::{Job, Runner};
use crate::agent::{Event, Human};
use crate::config::Executor;
use crate::core::outbox::Outbox;
use crate::core::protocol::OutputKind;
use crate::core::App;
use crate::lock::LockExt;
use crate::model::{FeatureId, PlanVersion, Run, RunState, Status};
use crate::store::Store;

/// The runs of one featurebot process.
pub struct RunQueue {
    runner: Arc<Runner>,
    store: Store,
    out: Outbox,
    slots: Arc<Semaphore>,
    handles: Arc<Mutex<HashMap<FeatureId, Handle>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by [`RunQueue::shutdown`]: runs stopping now are interrupted, not cancelled.
    stopping: Arc<AtomicBool>,
}

struct Handle {
    cancel: CancellationToken,
    answers: mpsc::UnboundedSender<Human>,
    /// What the run waits for from people: one of the `WAITING_*` values.
    waiting: Arc<AtomicU8>,
}

const WAITING_NOTHING: u8 = 0;
const WAITING_ANSWER: u8 = 1;
const WAITING_DECISION: u8 = 2;
const WAITING_FEEDBACK: u8 = 3;

/// A decision on a step awaiting approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDecision {
    Continue,
    /// The next message becomes feedback for a redo of the step.
    Change,
    Abort,
}

impl RunQueue {
    pub fn new(runner: Runner, store: Store, out: Outbox) -> RunQueue {
        let slots = runner.config.agent.max_concurrent_runs.max(1);
        RunQueue {
            runner: Arc::new(runner),
            store,
            out,
            slots: Arc::new(Semaphore::new(slots)),
            handles: Arc::new(Mutex::new(HashMap::new())),
            tasks: Mutex::new(Vec::new()),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops every run for a shutdown, leaving each one resumable: its record stays `running`,
    /// which the next start reports as interrupted. Waits (up to 20 s) for the runs to stop.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for handle in self.lock().values() {
            handle.cancel.cancel();
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.locked());
        for task in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), task).await;
        }
    }

    pub fn is_active(&self, feature: FeatureId) -> bool {
        self.lock().contains_key(&feature)
    }

    /// Queues a run of the feature's latest plan (or continues `resume`). The feature must be
    /// `approved` (or, to resume, `failed`/`cancelled`); it becomes `queued`, then `running`.
    pub async fn start(
        &self,
        feature: FeatureId,
        resume: Option<Run>,
        follow_up: Option<String>,
    ) -> anyhow::Result<()> {
        if self.is_active(feature) {
            return Ok(());
        }
        let plan = self
            .store
            .plans(feature)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("feature #{feature} has no plan to run"))?;
        // Following a run on GitHub Actions again after a restart: it never stopped running.
        let reattach = resume
            .as_ref()
            .is_some_and(|r| r.state == RunState::Running && r.remote.is_some());
        if !reattach {
            self.store.set_status(feature, Status::Queued).await?;
        }
        let cancel = CancellationToken::new();
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicU8::new(WAITING_NOTHING));
        self.lock().insert(
            feature,
            Handle {
                cancel: cancel.clone(),
                answers: answers_tx,
                waiting: waiting.clone(),
            },
        );
        // Runs beyond the concurrency limit wait; 0 means this one starts now.
        let position = self
            .lock()
            .len()
            .saturating_sub(self.runner.config.agent.max_concurrent_runs);
        self.out.send(feature, OutputKind::RunQueued { position });

        let runner = self.runner.clone();
        let store = self.store.clone();
        let out = self.out.clone();
        let slots = self.slots.clone();
        let handles = self.handles.clone();
        let stopping = self.stopping.clone();
        let task = tokio::spawn(async move {
            let permit = tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                () = cancel.cancelled() => None,
            };
            let result = match permit {
                None => Err(anyhow::anyhow!("cancelled before it started")),
                Some(_permit) => {
                    let task = Task {
                        feature,
                        plan,
                        resume,
                        follow_up,
                        answers: answers_rx,
                        waiting,
                        cancel: cancel.clone(),
                    };
                    run_one(&runner, &store, &out, task, &stopping).await
                }
            };
            handles.locked().remove(&feature);
            if stopping.load(Ordering::SeqCst) {
                // A shutdown, not a decision: the executor saved the run as still `running`,
                // so the next start offers to resume it (or follows it on GitHub again).
                return;
            }
            let status = match &result {
                Ok(run) => Status::after_run(run),
                Err(_) if cancel.is_cancelled() => Status::Cancelled,
                Err(_) => Status::Failed,
            };
            // From `queued` (cancelled early) the feature goes straight to its end state.
            let _ = store.set_status(feature, status).await;
            // The plan file records the outcome and the pull request.
            match crate::plan::file::refresh(
                runner
                    .repos
                    .of(store.feature(feature).ok().and_then(|f| f.repo).as_deref()),
                &store,
                feature,
                status.as_str(),
            )
            .await
            {
                Ok(None) => {}
                Ok(Some(why)) => {
                    tracing::warn!(feature = feature.0, %why, "the plan file is not up to date on the remote")
                }
                Err(err) => {
                    tracing::warn!(feature = feature.0, error = %format!("{err:#}"), "updating the plan file failed")
                }
            }
            match result {
                Ok(run) => {
                    let follow_up = runner.config.agent.executor == Executor::Local;
                    out.send(feature, OutputKind::RunEnded { run, follow_up });
                }
                Err(err) => {
                    out.send(
                        feature,
                        OutputKind::Failed {
                            message: format!("the agent run could not go on: {err:#}"),
                        },
                    );
                }
            }
        });
        let mut tasks = self.tasks.locked();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(())
    }

    /// Cancels the feature's run; returns whether there was one.
    pub fn cancel(&self, feature: FeatureId) -> bool {
        match self.lock().get(&feature) {
            Some(handle) => {
                handle.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Hands a person's message to a run waiting for an answer (or for feedback on a step);
    /// returns whether one was.
    pub fn answer(&self, feature: FeatureId, text: &str) -> bool {
        let handles = self.lock();
        let Some(handle) = handles.get(&feature) else {
            return false;
        };
        let message = match handle.waiting.load(Ordering::SeqCst) {
            WAITING_ANSWER => Human::Answer(text.to_string()),
            WAITING_FEEDBACK => Human::Redo(text.to_string()),
            _ => return false,
        };
        handle.waiting.store(WAITING_NOTHING, Ordering::SeqCst);
        handle.answers.send(message).is_ok()
    }

    /// Applies a decision on a step awaiting approval; returns whether a step was waiting.
    pub fn decide(&self, feature: FeatureId, decision: StepDecision) -> bool {
        let handles = self.lock();
        let Some(handle) = handles.get(&feature) else {
            return false;
        };
        if handle.waiting.load(Ordering::SeqCst) != WAITING_DECISION {
            return false;
        }
        match decision {
            StepDecision::Change => {
                handle.waiting.store(WAITING_FEEDBACK, Ordering::SeqCst);
                true
            }
            StepDecision::Continue | StepDecision::Abort => {
                handle.waiting.store(WAITING_NOTHING, Ordering::SeqCst);
                let human = if decision == StepDecision::Continue {
                    Human::Continue
                } else {
                    Human::Abort
                };
                handle.answers.send(human).is_ok()
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FeatureId, Handle>> {
        self.handles.locked()
    }
}

/// One run's inputs, moved into its task.
struct Task {
    feature: FeatureId,
    plan: PlanVersion,
    resume: Option<Run>,
    follow_up: Option<String>,
    answers: mpsc::UnboundedReceiver<Human>,
    /// What the run waits for from people: one of the `WAITING_*` values.
    waiting: Arc<AtomicU8>,
    cancel: CancellationToken,
}

async fn run_one(
    runner: &Runner,
    store: &Store,
    out: &Outbox,
    task: Task,
    stopping: &AtomicBool,
) -> anyhow::Result<Run> {
    let Task {
        feature,
        plan,
        resume,
        follow_up,
        answers,
        waiting,
        cancel,
    } = task;
    store.set_status(feature, Status::Running).await?;
    let record = store.feature(feature)?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let forward_out = out.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            match event {
                Event::Question { .. } => waiting.store(WAITING_ANSWER, Ordering::SeqCst),
                Event::AwaitingApproval { .. } => waiting.store(WAITING_DECISION, Ordering::SeqCst),
                _ => {}
            }
            forward_out.send(feature, OutputKind::RunEvent { event });
        }
    });
    let job = Job {
        discussion_url: record.place.link(),
        feature: record,
        plan,
        resume,
        follow_up,
        branch: None,
        continue_from_ticks: false,
    };
    let run = match &runner.config.agent.executor {
        Executor::Local => {
            runner
                .execute(job, store, events_tx, answers, cancel, stopping)
                .await
        }
        Executor::GithubActions => {
            executor::execute(runner, job, store, events_tx, cancel, stopping).await
        }
    };
    let _ = forwarder.await;
    run
}

/// The runs a stop left behind.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Local runs, now `interrupted`: people resume or abort them.
    pub interrupted: Vec<Run>,
    /// Runs going on on GitHub Actions, still `running`: the bot follows them again.
    pub remote: Vec<Run>,
}

/// Sorts the runs a stop left behind: local ones are marked interrupted, so people can resume
/// or abort them; dispatched GitHub Actions runs went on without the bot and are followed
/// again (when `remote_runs`, that is when the executor is still `github-actions`).
pub async fn recover(store: &Store, remote_runs: bool) -> anyhow::Result<Recovered> {
    let mut recovered = Recovered::default();
    for mut run in store.active_runs()? {
        let dispatched = run
            .remote
            .as_ref()
            .is_some_and(|r| r.dispatched_at.is_some());
        if dispatched && remote_runs {
            run.state = RunState::Running;
            recovered.remote.push(run);
            continue;
        }
        run.state = RunState::Interrupted;
        run.message = Some(format!(
            "featurebot stopped during step {} of {}",
            (run.next_step + 1).min(run.steps.len()),
            run.steps.len()
        ));
        let run = store.save_run(&run).await?;
        let _ = store.set_status(run.feature, Status::Failed).await;
        recovered.interrupted.push(run);
    }
    Ok(recovered)
}

/// The core's side of a run that stopped: resume it, or give it up.
impl App {
    // Both act only once `App::allowed` has let them through: the latest run is resumable, or
    // interrupted.

    pub(super) async fn resume_run(&self, id: FeatureId) -> anyhow::Result<()> {
        let Some(run) = self.store.runs(id)?.pop() else {
            return Ok(());
        };
        let follow_up = run.follow_up.clone();
        self.runs.start(id, Some(run), follow_up).await
    }

    pub(super) async fn abort_run(&self, id: FeatureId) -> anyhow::Result<()> {
        let Some(mut run) = self.store.runs(id)?.pop() else {
            return Ok(());
        };
        run.state = RunState::Cancelled;
        run.message = Some("aborted after a stop".to_string());
        let run = self.store.save_run(&run).await?;
        let follow_up = self.config.agent.executor == Executor::Local;
        self.emit(id, OutputKind::RunEnded { run, follow_up });
        Ok(())
    }
}
