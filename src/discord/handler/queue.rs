//! The per-feature input queue: inputs of one feature reach the core one at a time, in the
//! order Discord delivered them; a queue task exists only while its feature has jobs.

use super::*;
use crate::lock::LockExt;

/// The features' input queues. A feature has an entry while a task is working through its
/// jobs; that task removes the entry when it finds it empty, so an idle feature holds neither a
/// task nor memory, however many features there are.
pub(super) struct Queues {
    pub(super) app: Arc<App>,
    pub(super) in_flight: Arc<Mutex<HashSet<(FeatureId, Action)>>>,
    pub(super) state: Mutex<QueueState>,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) jobs: HashMap<FeatureId, VecDeque<Job>>,
    /// Open features not yet caught up since the last READY.
    pub(super) to_catch_up: HashSet<FeatureId>,
}

/// What waits in a feature's queue.
pub(super) enum Job {
    /// An input for the core; `done` is the in-flight mark to clear once it is handled.
    Input {
        input: Input,
        done: Option<(FeatureId, Action)>,
    },
    /// The feature's catch-up: its inputs once fetched. The jobs behind it wait for them.
    CatchUp {
        inputs: oneshot::Receiver<Vec<Input>>,
        handled: oneshot::Sender<()>,
    },
}

/// The claim on a feature's catch-up: send its inputs, then learn when they are handled.
pub(super) struct Gate {
    pub(super) inputs: oneshot::Sender<Vec<Input>>,
    pub(super) handled: oneshot::Receiver<()>,
}

impl Queues {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.locked()
    }

    pub(super) fn push(self: &Arc<Self>, feature: FeatureId, job: Job) {
        let mut state = self.lock();
        self.push_locked(&mut state, feature, job);
    }

    pub(super) fn push_locked(
        self: &Arc<Self>,
        state: &mut QueueState,
        feature: FeatureId,
        job: Job,
    ) {
        match state.jobs.entry(feature) {
            Entry::Occupied(mut jobs) => jobs.get_mut().push_back(job),
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([job]));
                tokio::spawn(self.clone().work(feature));
            }
        }
    }

    /// Marks these features as due for a catch-up (at READY).
    pub(super) fn expect_catch_up(&self, features: impl IntoIterator<Item = FeatureId>) {
        self.lock().to_catch_up.extend(features);
    }

    /// Claims the feature's catch-up, unless it was claimed since the last READY: its place in
    /// the queue is taken now, so whatever is queued later waits for it.
    pub(super) fn claim_catch_up(self: &Arc<Self>, feature: FeatureId) -> Option<Gate> {
        let mut state = self.lock();
        if !state.to_catch_up.remove(&feature) {
            return None;
        }
        let (send, inputs) = oneshot::channel();
        let (handled, done) = oneshot::channel();
        self.push_locked(&mut state, feature, Job::CatchUp { inputs, handled });
        Some(Gate {
            inputs: send,
            handled: done,
        })
    }

    /// Handles the feature's jobs in order until there are none.
    pub(super) async fn work(self: Arc<Self>, feature: FeatureId) {
        loop {
            let job = {
                let mut state = self.lock();
                let job = state.jobs.get_mut(&feature).and_then(VecDeque::pop_front);
                if job.is_none() {
                    state.jobs.remove(&feature);
                }
                job
            };
            match job {
                None => return,
                Some(Job::Input { input, done }) => {
                    self.handle(input).await;
                    if let Some(key) = done {
                        self.in_flight.locked().remove(&key);
                    }
                }
                Some(Job::CatchUp { inputs, handled }) => {
                    // A catch-up that failed before sending sends nothing: no inputs.
                    for input in inputs.await.unwrap_or_default() {
                        self.handle(input).await;
                    }
                    let _ = handled.send(());
                }
            }
        }
    }

    /// One input, in a task of its own: a panic there loses that input only, not the queue.
    pub(super) async fn handle(&self, input: Input) {
        let app = self.app.clone();
        if let Err(err) = tokio::spawn(async move { app.handle(input).await }).await {
            tracing::error!(error = %err, "handling an input failed");
        }
    }
}
