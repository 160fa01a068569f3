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
use crate::model::{Feature, FeatureId, Place, RunState};
use crate::plan::Slug;
use crate::redact::Redactor;

/// How often the typing indicator is renewed (Discord shows it for about 10 seconds).
const TYPING_EVERY: Duration = Duration::from_secs(8);

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
        self.map.lock().unwrap_or_else(|p| p.into_inner())
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

struct Worker {
    links: Links,
    http: Arc<Http>,
    /// Shared by all workers.
    pacer: Arc<Pacer>,
    thread: ChannelId,
    interval: Duration,
    stream: Stream,
    /// While set, the typing indicator is renewed.
    typing_until: Option<Instant>,
    /// Typing was just sent: the next renewal is a full period away.
    typing_reset: bool,
    /// The agent run's status card, edited in place.
    card: Option<Card>,
}

/// The message that shows an agent run's progress.
struct Card {
    id: MessageId,
    run_started: Instant,
    branch: String,
    steps: Vec<(String, Option<bool>)>,
    current: String,
    tokens: u64,
    edited_at: Instant,
}

/// The reply being streamed: the messages posted for it and what each shows.
#[derive(Default)]
struct Stream {
    text: String,
    posted: Vec<Posted>,
    /// When the last message has text not yet shown, the earliest time to edit it.
    pending: Option<Instant>,
}

struct Posted {
    id: MessageId,
    shown: String,
    edited_at: Instant,
}

impl Worker {
    /// Shows the feature's outputs in order, keeping streams, typing and the run card up, and
    /// ends (removing the inbox) once nothing is waiting and nothing is in progress.
    async fn run(mut self, id: FeatureId, inboxes: Inboxes, wake: Arc<Notify>) {
        let mut typing = tokio::time::interval(TYPING_EVERY);
        // A thread without typing must not pile up ticks that would all fire at once later.
        typing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving = Leaving {
            id,
            inboxes: inboxes.clone(),
            done: false,
        };
        loop {
            let next = {
                let mut map = inboxes.lock();
                let next = map.get_mut(&id).and_then(|i| i.outputs.pop_front());
                if next.is_none() && self.is_idle() {
                    map.remove(&id);
                    leaving.done = true;
                    return; // `leaving` tells the waiters.
                }
                next
            };
            match next {
                Some(output) => self.apply(output).await,
                None => {
                    let pending = self.stream.pending;
                    tokio::select! {
                        () = wake.notified() => {}
                        () = sleep_until(pending), if pending.is_some() => self.sync(false).await,
                        _ = typing.tick(), if self.typing_until.is_some() => {
                            // Typing that outlived its answer (none came) ends here, so an idle
                            // worker ends too instead of waiting forever.
                            if self.typing_until.is_some_and(|t| t > Instant::now()) {
                                self.type_now().await;
                            } else {
                                self.typing_until = None;
                            }
                        }
                    }
                }
            }
            if std::mem::take(&mut self.typing_reset) {
                typing.reset();
            }
        }
    }

    /// Nothing in progress: no stream, no typing, no run card.
    fn is_idle(&self) -> bool {
        self.stream.text.is_empty()
            && self.stream.pending.is_none()
            && self.typing_until.is_none()
            && self.card.is_none()
    }

    async fn apply(&mut self, output: Output) {
        let Output { feature, kind, .. } = output;
        let Some(feature) = feature else {
            // A refused start: there is no feature, only the refusal to show.
            if let OutputKind::Rejected { message } = kind {
                self.post(CreateMessage::new().content(format!("⚠️ {message}")))
                    .await;
            }
            return;
        };
        match kind {
            OutputKind::Started { feature } => {
                let intro = format!(
                    "**{}** (feature #{}), requested by <@{}>.\nAnswer the questions here; only featurebot admins' messages are used.",
                    feature.title, feature.id, feature.requester.id
                );
                self.post(CreateMessage::new().content(intro)).await;
            }
            OutputKind::Typing => {
                // Typing stops by itself after 10 s; this keeps it up for at most 10 minutes.
                self.typing_until = Some(Instant::now() + Duration::from_secs(600));
                self.type_now().await;
                self.typing_reset = true;
            }
            OutputKind::ReplyDelta { text, .. } => {
                self.stream.text.push_str(&text);
                self.sync(false).await;
            }
            OutputKind::Reply { text, .. } => {
                self.typing_until = None;
                if !text.is_empty() {
                    self.stream.text = text;
                }
                self.sync(true).await;
                self.stream = Stream::default();
            }
            OutputKind::Confirmed { summary, version } => {
                self.end_stream().await;
                let text = format!("**Requirements confirmed.**\n{summary}");
                let row = buttons(
                    feature,
                    version,
                    &[
                        (Action::GeneratePlan, ButtonStyle::Primary),
                        (Action::KeepRefining, ButtonStyle::Secondary),
                    ],
                );
                self.post_with_row(&text, row).await;
            }
            OutputKind::PlanStarted { .. } => {
                self.typing_until = Some(Instant::now() + Duration::from_secs(600));
                self.type_now().await;
                self.typing_reset = true;
            }
            OutputKind::PlanCommitted {
                feature: f,
                version,
                path,
                commit,
                markdown,
                again,
            } => {
                self.typing_until = None;
                if again {
                    self.post(CreateMessage::new().content(format!(
                        "Plan version {version} is the current plan (above)."
                    )))
                    .await;
                    return;
                }
                let github = self.links.github(&f);
                let base = &self.links.config.repo_of(f.repo.as_deref()).base_branch;
                let link = github.as_ref().map(|g| g.file_url(base, &path));
                let issue_button = github.is_some() && f.issue.is_none();
                self.post(plan_message(
                    &f,
                    version,
                    &path,
                    link.as_deref(),
                    &commit,
                    &markdown,
                    issue_button,
                ))
                .await;
            }
            OutputKind::PlanDiff {
                title,
                from,
                to,
                diff,
            } => {
                let header = format!("Changes from plan version {from} to {to}:");
                let inline = format!("{header}\n```diff\n{}```", diff.replace("```", "` ` `"));
                let message = if diff.trim().is_empty() {
                    CreateMessage::new().content(format!(
                        "Plan version {to} has the same text as version {from}."
                    ))
                } else if inline.chars().count() <= MESSAGE_LIMIT {
                    CreateMessage::new().content(inline)
                } else {
                    let slug = Slug::new(&title, feature).to_string();
                    CreateMessage::new()
                        .content(format!("{header} (attached)"))
                        .add_file(CreateAttachment::bytes(
                            diff.into_bytes(),
                            format!("{slug}-v{from}-v{to}.diff"),
                        ))
                };
                self.post(message).await;
            }
            OutputKind::Discarded => {
                self.end_stream().await;
                let archive = EditThread::new().archived(true).locked(true);
                let (http, thread) = (&self.http, self.thread);
                let archived = self
                    .pacer
                    .required(thread, Route::Other, || {
                        thread.edit_thread(http, archive.clone())
                    })
                    .await;
                if let Err(err) = archived {
                    tracing::warn!(thread = self.thread.get(), error = %err, "archiving the thread failed");
                }
            }
            OutputKind::IssueCreated { number, url, .. } => {
                self.post(CreateMessage::new().content(format!("GitHub issue #{number}: {url}")))
                    .await;
            }
            OutputKind::PullRequestChanged { status, .. } => {
                let text = if status == crate::model::Status::Merged {
                    "🎉 The pull request was merged."
                } else {
                    "The pull request was closed without merging."
                };
                self.post(CreateMessage::new().content(text)).await;
            }
            OutputKind::FeatureUpdated { feature } => {
                let mut text = format!("Priority: **{}**", feature.priority.as_str());
                if !feature.labels.is_empty() {
                    text.push_str(&format!(" · labels: {}", feature.labels.join(", ")));
                }
                self.post(CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT)))
                    .await;
            }
            OutputKind::Refining
            | OutputKind::Approved { .. }
            | OutputKind::ChangesRequested { .. }
            | OutputKind::FollowUpReady => {
                // The click's own answer already said so in the thread.
            }
            OutputKind::RunQueued { position } => {
                self.end_stream().await;
                let line = if position == 0 {
                    "starting".to_string()
                } else {
                    format!("queued, {position} run(s) ahead")
                };
                let message = CreateMessage::new()
                    .content(format!("**Agent run**: {line}"))
                    .components(vec![run_row(
                        feature,
                        0,
                        &[(Action::CancelRun, ButtonStyle::Danger)],
                    )])
                    .allowed_mentions(CreateAllowedMentions::new());
                match self.send(message).await {
                    Ok(msg) => {
                        self.card = Some(Card {
                            id: msg.id,
                            run_started: Instant::now(),
                            branch: String::new(),
                            steps: Vec::new(),
                            current: line,
                            tokens: 0,
                            edited_at: Instant::now(),
                        })
                    }
                    Err(err) => {
                        tracing::warn!(thread = self.thread.get(), error = %err, "posting the run card failed")
                    }
                }
            }
            OutputKind::RunEvent { event } => self.run_event(feature, event).await,
            OutputKind::RunEnded { run } => {
                let summary = match run.state {
                    RunState::Finished => "finished".to_string(),
                    RunState::Stopped => {
                        format!("stopped: {}", run.message.clone().unwrap_or_default())
                    }
                    RunState::Cancelled => run
                        .message
                        .clone()
                        .unwrap_or_else(|| "cancelled".to_string()),
                    _ => format!("failed: {}", run.message.clone().unwrap_or_default()),
                };
                if let Some(card) = self.card.as_mut() {
                    card.current = summary.clone();
                    // A run on GitHub Actions keeps its link on the card.
                    if let Some(url) = run.remote.as_ref().and_then(|r| r.html_url.as_deref()) {
                        card.current
                            .push_str(&format!(" · [the Actions run]({url})"));
                    }
                    for (i, step) in run.steps.iter().enumerate() {
                        if let Some(slot) = card.steps.get_mut(i) {
                            slot.1 = step.green;
                        }
                    }
                }
                self.edit_card(feature, true, false).await;
                let text = match (&run.pr_url, run.state) {
                    (Some(url), _) => format!("✅ Pull request: {url}"),
                    (None, RunState::Finished | RunState::Stopped) => {
                        format!("✅ Branch `{}` is pushed.", run.branch)
                    }
                    (None, RunState::Cancelled) => format!("⏹️ The agent run was {summary}."),
                    (None, _) => format!("❌ The agent run {summary}"),
                };
                let mut message = CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT));
                if run.pr_url.is_some() {
                    message = message.components(vec![run_row(
                        feature,
                        run.number,
                        &[(Action::FollowUp, ButtonStyle::Primary)],
                    )]);
                } else if run.state == RunState::Failed
                    || (run.state == RunState::Cancelled && run.next_step < run.steps.len())
                {
                    // A failed run with every step done failed at the push or the pull
                    // request: resuming tries those again.
                    message = message.components(vec![run_row(
                        feature,
                        run.number,
                        &[(Action::ResumeRun, ButtonStyle::Primary)],
                    )]);
                }
                self.post(message).await;
                self.card = None;
            }
            OutputKind::RunInterrupted { run } => {
                let text = format!(
                    "⚠️ The agent run was interrupted at step {} of {} when featurebot stopped. Resume it from there, or abort it.",
                    (run.next_step + 1).min(run.steps.len()),
                    run.steps.len()
                );
                let row = run_row(
                    feature,
                    run.number,
                    &[
                        (Action::ResumeRun, ButtonStyle::Primary),
                        (Action::AbortRun, ButtonStyle::Danger),
                    ],
                );
                self.post(CreateMessage::new().content(text).components(vec![row]))
                    .await;
            }
            OutputKind::Rejected { message, .. } | OutputKind::Warning { message, .. } => {
                self.end_stream().await;
                self.post(CreateMessage::new().content(format!("⚠️ {message}")))
                    .await;
            }
            OutputKind::Failed { message, .. } => {
                self.end_stream().await;
                self.post(CreateMessage::new().content(format!("❌ {message}")))
                    .await;
            }
        }
    }

    async fn run_event(&mut self, feature: FeatureId, event: Event) {
        match event {
            Event::Started {
                branch,
                steps,
                from,
            } => {
                if let Some(card) = self.card.as_mut() {
                    card.branch = branch;
                    card.steps = steps
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| (s, (i < from).then_some(true)))
                        .collect();
                }
                self.edit_card(feature, true, true).await;
            }
            Event::Phase {
                step,
                total,
                title,
                phase,
                usage,
            } => {
                if let Some(card) = self.card.as_mut() {
                    card.current = if title.is_empty() {
                        phase.as_str().to_string()
                    } else {
                        format!("step {}/{total} {title}: {}", step + 1, phase.as_str())
                    };
                    card.tokens = usage.input_tokens + usage.output_tokens;
                }
                self.edit_card(feature, false, true).await;
            }
            Event::StepCommitted { step, green, .. } => {
                if let Some(slot) = self.card.as_mut().and_then(|c| c.steps.get_mut(step)) {
                    slot.1 = Some(green);
                }
                self.edit_card(feature, true, true).await;
            }
            Event::ChecksFailed {
                step,
                attempt,
                command,
                tail,
                log,
            } => {
                let tail = crate::agent::backend::last_lines(&tail, 30);
                let skip = tail.chars().count().saturating_sub(1_500);
                let tail: String = tail.chars().skip(skip).collect();
                let text = format!(
                    "❌ Step {} (attempt {}): `{}` failed\n```\n{}\n```",
                    step + 1,
                    attempt + 1,
                    truncate(&command, 200),
                    tail.replace("```", "` ` `")
                );
                let mut message = CreateMessage::new().content(text);
                if let Ok(bytes) = tokio::fs::read(&log).await {
                    message = message.add_file(CreateAttachment::bytes(
                        bytes,
                        format!("step-{}-checks.log", step + 1),
                    ));
                }
                self.post(message).await;
            }
            Event::Remote { state, url } => {
                if let Some(card) = self.card.as_mut() {
                    card.current = match &url {
                        Some(url) => format!("GitHub Actions: {state} · [the run]({url})"),
                        None => format!("GitHub Actions: {state}"),
                    };
                }
                self.edit_card(feature, true, true).await;
            }
            Event::StepPushFailed { step, message } => {
                let text = format!(
                    "⚠️ Pushing the branch after step {} failed: {}\nThe run goes on; it pushes again at the end.",
                    step + 1,
                    truncate(&message, 1_500)
                );
                self.post(CreateMessage::new().content(text)).await;
            }
            Event::Question { text } => {
                let text = format!(
                    "❓ **The agent asks:** {text}\nReply in this thread: an admin's next message is the answer."
                );
                self.post(CreateMessage::new().content(truncate(&text, MESSAGE_LIMIT)))
                    .await;
            }
            Event::AwaitingApproval {
                step,
                total,
                title,
                green,
                files,
            } => {
                let mut text = format!(
                    "**Step {}/{total}: {title}** is committed; {}.\n",
                    step + 1,
                    if green {
                        "checks passed ✅"
                    } else {
                        "checks failing ❌"
                    }
                );
                if files.is_empty() {
                    text.push_str("No file changed.\n");
                }
                for (path, added, removed) in files.iter().take(20) {
                    text.push_str(&format!("`{path}` +{added} −{removed}\n"));
                }
                if files.len() > 20 {
                    text.push_str(&format!("and {} more files\n", files.len() - 20));
                }
                text.push_str("Continue, change this step (your next message says how), or abort?");
                let row = run_row(
                    feature,
                    step as u32 + 1,
                    &[
                        (Action::StepContinue, ButtonStyle::Success),
                        (Action::StepChange, ButtonStyle::Secondary),
                        (Action::StepAbort, ButtonStyle::Danger),
                    ],
                );
                self.post(
                    CreateMessage::new()
                        .content(truncate(&text, MESSAGE_LIMIT))
                        .components(vec![row]),
                )
                .await;
            }
            Event::Finished { .. } => {}
        }
    }

    /// Edits the run card; without `force`, at most once per interval and only when the budget
    /// allows (the next event shows the state anyway).
    async fn edit_card(&mut self, feature: FeatureId, force: bool, running: bool) {
        let interval = self.interval;
        let Some(card) = self.card.as_mut() else {
            return;
        };
        if !force && card.edited_at.elapsed() < interval {
            return;
        }
        let mut text = String::from("**Agent run**");
        if !card.branch.is_empty() {
            text.push_str(&format!(" on `{}`", card.branch));
        }
        text.push_str(&format!(
            "\n{} · {}s · {} tokens\n",
            card.current,
            card.run_started.elapsed().as_secs(),
            card.tokens
        ));
        for (i, (title, green)) in card.steps.iter().enumerate() {
            let mark = match green {
                Some(true) => "✅",
                Some(false) => "❌",
                None => "▫️",
            };
            text.push_str(&format!("{mark} {}. {}\n", i + 1, title));
        }
        let components = if running {
            vec![run_row(
                feature,
                0,
                &[(Action::CancelRun, ButtonStyle::Danger)],
            )]
        } else {
            Vec::new()
        };
        let edit = EditMessage::new()
            .content(truncate(&text, MESSAGE_LIMIT))
            .components(components);
        let id = card.id;
        card.edited_at = Instant::now();
        let (http, thread) = (&self.http, self.thread);
        let edited = if force {
            self.pacer
                .required(thread, Route::Edit, || {
                    thread.edit_message(http, id, edit.clone())
                })
                .await
        } else {
            match self
                .pacer
                .optional(thread, Route::Edit, || thread.edit_message(http, id, edit))
                .await
            {
                Paced::Done(result) => result,
                Paced::Skipped(_) => return,
            }
        };
        if let Err(err) = edited {
            tracing::warn!(thread = self.thread.get(), error = %err, "editing the run card failed");
        }
    }

    /// Shows what was streamed so far, then forgets the stream.
    async fn end_stream(&mut self) {
        self.typing_until = None;
        if !self.stream.text.is_empty() {
            self.sync(true).await;
        }
        self.stream = Stream::default();
    }

    /// Brings the posted messages up to date with the streamed text. Each message is edited at
    /// most once per interval, and a streamed edit only when the pacer has budget for it (else
    /// it is put off, and the text it would have shown is overtaken); with `force` (the answer
    /// is complete) the edits wait their turn instead of being put off.
    async fn sync(&mut self, force: bool) {
        self.stream.pending = None;
        // The whole text is redacted, so a secret split across deltas is still caught.
        let shown = self.links.redactor.redact(&self.stream.text);
        let chunks = text::split(&shown, MESSAGE_LIMIT);
        for (i, chunk) in chunks.iter().enumerate() {
            match self.stream.posted.get(i) {
                Some(posted) if posted.shown == *chunk => {}
                Some(posted) => {
                    // Every message is edited at most once per interval: a streamed edit waits
                    // for its turn, and the final one (force) waits out the rest of it.
                    let due = posted.edited_at + self.interval;
                    if Instant::now() < due {
                        if !force {
                            self.put_off(due);
                            continue;
                        }
                        tokio::time::sleep_until(due).await;
                    }
                    let id = posted.id;
                    let edit = EditMessage::new().content(chunk.as_str());
                    let (http, thread) = (&self.http, self.thread);
                    let edited = if force {
                        self.pacer
                            .required(thread, Route::Edit, || {
                                thread.edit_message(http, id, edit.clone())
                            })
                            .await
                    } else {
                        let call = || thread.edit_message(http, id, edit);
                        match self.pacer.optional(thread, Route::Edit, call).await {
                            Paced::Done(result) => result,
                            Paced::Skipped(at) => {
                                self.put_off(at);
                                continue;
                            }
                        }
                    };
                    match edited {
                        Ok(_) => {
                            if let Some(p) = self.stream.posted.get_mut(i) {
                                p.shown = chunk.clone();
                                p.edited_at = Instant::now();
                            }
                        }
                        Err(err) => {
                            tracing::warn!(thread = self.thread.get(), error = %err, "editing a streamed message failed")
                        }
                    }
                }
                None => {
                    let message = CreateMessage::new()
                        .content(chunk.as_str())
                        .allowed_mentions(CreateAllowedMentions::new());
                    match self.send(message).await {
                        Ok(msg) => self.stream.posted.push(Posted {
                            id: msg.id,
                            shown: chunk.clone(),
                            edited_at: Instant::now(),
                        }),
                        Err(err) => {
                            tracing::warn!(thread = self.thread.get(), error = %err, "posting a streamed message failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Asks for another sync of the stream at `at` (or earlier, if one is due before).
    fn put_off(&mut self, at: Instant) {
        let pending = self.stream.pending.map_or(at, |p| p.min(at));
        self.stream.pending = Some(pending);
    }

    /// Shows the typing indicator, unless the budget is taken (it is renewed soon anyway).
    async fn type_now(&self) {
        let (http, thread) = (&self.http, self.thread);
        let typed = self
            .pacer
            .optional(thread, Route::Other, || thread.broadcast_typing(http))
            .await;
        if let Paced::Done(Err(err)) = typed {
            tracing::debug!(error = %err, "typing indicator failed");
        }
    }

    /// Posts `message` once the budget allows, retried after a 429.
    async fn send(&self, message: CreateMessage) -> serenity::Result<Message> {
        let (http, thread) = (&self.http, self.thread);
        self.pacer
            .required(thread, Route::Create, || {
                thread.send_message(http, message.clone())
            })
            .await
    }

    /// Posts `text` (split when long) with `row` under its last part.
    async fn post_with_row(&self, text: &str, row: CreateActionRow) {
        let mut chunks = text::split(text, MESSAGE_LIMIT);
        let last = chunks.pop().unwrap_or_default();
        for chunk in chunks {
            self.post(CreateMessage::new().content(chunk)).await;
        }
        self.post(CreateMessage::new().content(last).components(vec![row]))
            .await;
    }

    async fn post(&self, message: CreateMessage) {
        let message = message.allowed_mentions(CreateAllowedMentions::new());
        if let Err(err) = self.send(message).await {
            tracing::warn!(thread = self.thread.get(), error = %err, "posting to the thread failed");
        }
    }
}

/// The plan as an attachment, with a short embed and the buttons that act on this version.
fn plan_message(
    feature: &Feature,
    version: u32,
    path: &str,
    link: Option<&str>,
    commit: &str,
    markdown: &str,
    issue_button: bool,
) -> CreateMessage {
    let slug = Slug::new(&feature.title, feature.id);
    let title: String = feature.title.chars().take(240).collect();
    let steps = crate::plan::steps(markdown).len();
    let embed = CreateEmbed::new()
        .title(format!("Plan: {title}"))
        .field("Version", version.to_string(), true)
        .field(
            "Commit",
            format!("`{}`", &commit[..commit.len().min(12)]),
            true,
        )
        .field("Steps", steps.to_string(), true)
        .field(
            "File",
            match link {
                Some(url) => format!("[{}]({url})", truncate(path, 400)),
                None => format!("`{}`", truncate(path, 1_000)),
            },
            false,
        );
    let mut actions = vec![
        (Action::Approve, ButtonStyle::Success),
        (Action::RequestChanges, ButtonStyle::Secondary),
        (Action::Discard, ButtonStyle::Danger),
    ];
    if issue_button {
        actions.push((Action::CreateIssue, ButtonStyle::Secondary));
    }
    let row = buttons(feature.id, version, &actions);
    CreateMessage::new()
        .content(format!("Plan version {version} is committed."))
        .embed(embed)
        .add_file(CreateAttachment::bytes(
            markdown.as_bytes().to_vec(),
            format!("{slug}.md"),
        ))
        .components(vec![row])
}

fn buttons(feature: FeatureId, version: u32, actions: &[(Action, ButtonStyle)]) -> CreateActionRow {
    CreateActionRow::Buttons(
        actions
            .iter()
            .map(|(action, style)| {
                let id = Button {
                    action: *action,
                    feature,
                    version,
                };
                CreateButton::new(id.to_string())
                    .label(action.label())
                    .style(*style)
            })
            .collect(),
    )
}

fn run_row(feature: FeatureId, run: u32, actions: &[(Action, ButtonStyle)]) -> CreateActionRow {
    buttons(feature, run, actions)
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
