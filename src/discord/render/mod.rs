//! Core outputs to Discord: one worker per feature thread, so a slow call in one thread never
//! holds up another, and each thread's messages keep their order. A worker runs while its
//! thread has outputs waiting or something in progress (a stream, the typing indicator, a run's
//! card) and ends as soon as it has neither, so idle threads cost nothing.
//!
//! A streamed reply appears as soon as its first text arrives and is then edited at most once
//! per `discord.stream_edit_interval_ms`; past 2,000 characters it continues in a new message
//! (see `text::split`). The typing indicator is renewed while the LLM works.
//!
//! Every call goes through one [`Pacer`] shared by the workers, which keeps them within
//! Discord's limits together: intermediate edits and typing are skipped when no budget is free,
//! new messages and final edits wait for it and are retried after a 429.

mod messages;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serenity::all::{
    ButtonStyle, ChannelId, CreateActionRow, CreateAllowedMentions, CreateAttachment, CreateButton,
    CreateEmbed, CreateMessage, EditMessage, EditThread, Http, Message, MessageId,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buttons::{Action, Button};
use super::pace::{Paced, Pacer, Route};
use super::text::{self, MESSAGE_LIMIT};
use crate::agent::Event;
use crate::config::DiscordConfig;
use crate::core::protocol::{Output, OutputKind};
use crate::github::{Clients, GitHub};
use crate::lock::LockExt;
use crate::model::{Feature, FeatureId, Place, RunState};
use crate::plan::Slug;
use crate::redact::Redactor;

use worker::{Stream, Worker};

/// Routes outputs to per-feature workers until the channel closes. The workers end with it (or
/// when it is aborted), even in the middle of a call waiting for the pacer's budget.
pub async fn run(
    http: Arc<Http>,
    discord: DiscordConfig,
    links: Links,
    mut outputs: mpsc::UnboundedReceiver<Output>,
    inboxes: Inboxes,
    pacer: Arc<Pacer>,
) {
    // The workers stop with this loop, however it ends (the front end aborts it at shutdown).
    let stop = CancellationToken::new();
    let _stopping = stop.clone().drop_guard();
    let worker = |thread_id: u64| Worker {
        http: http.clone(),
        pacer: pacer.clone(),
        thread: ChannelId::new(thread_id),
        interval: discord.stream_edit_interval,
        links: links.clone(),
        stream: Stream::default(),
        typing_until: None,
        typing_reset: false,
        card: None,
    };
    while let Some(output) = outputs.recv().await {
        let Place::Discord { thread_id, .. } = output.place else {
            continue;
        };
        let Some(id) = output.feature else {
            // A refused start: its one message goes to the thread it was asked from.
            let mut once = worker(thread_id);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = once.apply(output) => {}
                    () = stop.cancelled() => {}
                }
            });
            continue;
        };
        if let Some(inbox) = inboxes.lock().get_mut(&id) {
            inbox.outputs.push_back(output);
            inbox.wake.notify_one();
            continue;
        }
        // No worker for this thread: start one. Only this loop adds inboxes, so none appears
        // for `id` meanwhile.
        let wake = Arc::new(Notify::new());
        inboxes.lock().insert(
            id,
            Inbox {
                outputs: VecDeque::from([output]),
                wake: wake.clone(),
            },
        );
        let worker = worker(thread_id);
        // Stopped even mid-call: a call waiting for the pacer's budget must not outlive the
        // router.
        let stop = stop.clone();
        let inboxes = inboxes.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = worker.run(id, inboxes, wake) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The outputs waiting for each thread's worker. A feature has an inbox exactly while its
/// worker runs: the worker removes it, under the lock, when it ends. Shared with the handler,
/// whose catch-up waits for a thread's answers to reach Discord before taking the next thread
/// ([`Inboxes::delivered`]), so that it answers no faster than Discord's limits let the answers
/// out, and live threads never queue behind thousands of catch-up answers.
#[derive(Clone, Default)]
pub struct Inboxes {
    map: Arc<Mutex<HashMap<FeatureId, Inbox>>>,
    /// Notified whenever an inbox goes.
    emptied: Arc<Notify>,
}

impl Inboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FeatureId, Inbox>> {
        self.map.locked()
    }

    /// Returns once the feature has nothing on its way to Discord.
    pub async fn delivered(&self, id: FeatureId) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a removal between the two is not missed.
            emptied.as_mut().enable();
            if !self.lock().contains_key(&id) {
                return;
            }
            emptied.await;
        }
    }
}

struct Inbox {
    outputs: VecDeque<Output>,
    /// Wakes the worker when an output arrives.
    wake: Arc<Notify>,
}

/// Removes a worker's inbox when the worker ends without doing it (a panic, or a stop), so
/// that the thread's next output starts a new worker instead of waiting in a dead one's inbox.
struct Leaving {
    id: FeatureId,
    inboxes: Inboxes,
    done: bool,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        if !self.done {
            self.inboxes.lock().remove(&self.id);
        }
        self.inboxes.emptied.notify_waiters();
    }
}

/// What the renderer needs to link to and to keep secrets out of Discord.
#[derive(Clone)]
pub struct Links {
    pub redactor: Redactor,
    /// For each feature's target repository: its base branch.
    pub config: Arc<crate::config::Config>,
    pub github: Clients,
}

impl Links {
    /// The GitHub client of the feature's target repository, when it has one.
    fn github(&self, feature: &Feature) -> Option<&GitHub> {
        self.github.for_repo(feature.repo.as_deref())
    }
}
