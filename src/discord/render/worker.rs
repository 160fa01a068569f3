//! One thread's worker: shows its feature's outputs in order, keeping a streamed reply, the
//! typing indicator and an agent run's card up to date, every call through the shared pacer.

use super::messages::{
    awaiting_approval, checks_failed, confirmed, feature_updated, intro, plan_conflict,
    plan_conflict_settled, plan_diff, plan_message, pull_request_changed, question, run_ended,
    run_interrupted, run_queued, run_row, run_summary, secrets_left_out, step_push_failed,
    truncate, Shown,
};
use super::*;
use crate::model::Run;

/// How often the typing indicator is renewed (Discord shows it for about 10 seconds).
pub(super) const TYPING_EVERY: Duration = Duration::from_secs(8);

pub(super) struct Worker {
    pub(super) links: Links,
    pub(super) http: Arc<Http>,
    /// Shared by all workers.
    pub(super) pacer: Arc<Pacer>,
    pub(super) thread: ChannelId,
    pub(super) interval: Duration,
    pub(super) stream: Stream,
    /// While set, the typing indicator is renewed.
    pub(super) typing_until: Option<Instant>,
    /// Typing was just sent: the next renewal is a full period away.
    pub(super) typing_reset: bool,
    /// The agent run's status card, edited in place.
    pub(super) card: Option<Card>,
}

/// The message that shows an agent run's progress.
pub(super) struct Card {
    pub(super) id: MessageId,
    pub(super) run_started: Instant,
    pub(super) branch: String,
    pub(super) steps: Vec<(String, Option<bool>)>,
    pub(super) current: String,
    pub(super) tokens: u64,
    pub(super) edited_at: Instant,
}

/// The reply being streamed: the messages posted for it and what each shows.
#[derive(Default)]
pub(super) struct Stream {
    pub(super) text: String,
    pub(super) posted: Vec<Posted>,
    /// When the last message has text not yet shown, the earliest time to edit it.
    pub(super) pending: Option<Instant>,
}

pub(super) struct Posted {
    pub(super) id: MessageId,
    pub(super) shown: String,
    pub(super) edited_at: Instant,
}

impl Worker {
    /// Shows the feature's outputs in order, keeping streams, typing and the run card up, and
    /// ends (removing the inbox) once nothing is waiting and nothing is in progress.
    pub(super) async fn run(mut self, id: FeatureId, inboxes: Inboxes, wake: Arc<Notify>) {
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

    pub(super) async fn apply(&mut self, output: Output) {
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
            OutputKind::Started { feature } => self.post(intro(&feature)).await,
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
                let (text, row) = confirmed(feature, version, &summary);
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
                let shown = Shown {
                    path: &path,
                    link: link.as_deref(),
                    commit: &commit,
                    markdown: &markdown,
                    issue_button,
                };
                self.post(plan_message(&f, version, &shown)).await;
            }
            OutputKind::PlanDiff {
                title,
                from,
                to,
                diff,
            } => {
                self.post(plan_diff(feature, &title, from, to, diff)).await;
            }
            OutputKind::PlanConflict {
                version,
                path,
                theirs,
                mine,
                branch,
            } => {
                let message = plan_conflict(feature, version, &path, &theirs, &mine, &branch);
                self.post(message).await;
            }
            OutputKind::PlanConflictSettled { version, kept_mine } => {
                self.post(plan_conflict_settled(version, kept_mine)).await;
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
                self.post(pull_request_changed(status)).await;
            }
            OutputKind::FeatureUpdated { feature } => self.post(feature_updated(&feature)).await,
            OutputKind::Refining
            | OutputKind::Approved { .. }
            | OutputKind::ChangesRequested { .. }
            | OutputKind::FollowUpReady => {
                // The click's own answer already said so in the thread.
            }
            OutputKind::RunQueued { position } => {
                self.end_stream().await;
                self.post_card(feature, position).await;
            }
            OutputKind::RunEvent { event } => self.run_event(feature, event).await,
            OutputKind::RunEnded { run, follow_up } => {
                let summary = run_summary(&run);
                self.end_card(&run, &summary);
                self.edit_card(feature, true, false).await;
                self.post(run_ended(feature, &run, &summary, follow_up))
                    .await;
                self.card = None;
            }
            OutputKind::RunInterrupted { run } => self.post(run_interrupted(feature, &run)).await,
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

    /// Posts a new run's card (with its Cancel button) and keeps it for editing.
    async fn post_card(&mut self, feature: FeatureId, position: usize) {
        let (line, message) = run_queued(feature, position);
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

    /// The card's last state: how the run ended, its steps, and its Actions run's link.
    fn end_card(&mut self, run: &Run, summary: &str) {
        let Some(card) = self.card.as_mut() else {
            return;
        };
        card.current = summary.to_string();
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
                let mut message = checks_failed(step, attempt, &command, &tail);
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
            Event::Unconfined => {
                let text = format!(
                    "⚠️ {}",
                    crate::agent::progress::describe(&Event::Unconfined)
                );
                self.post(CreateMessage::new().content(text)).await;
            }
            event @ (Event::BranchCaughtUp { .. } | Event::BranchRewritten { .. }) => {
                let text = format!("↪️ {}", crate::agent::progress::describe(&event));
                self.post(CreateMessage::new().content(text)).await;
            }
            Event::StepPushFailed { step, message } => {
                self.post(step_push_failed(step, &message)).await;
            }
            Event::SecretsLeftOut { step, files } => {
                self.post(secrets_left_out(step, &files)).await;
            }
            Event::Question { text } => self.post(question(&text)).await,
            Event::AwaitingApproval {
                step,
                total,
                title,
                green,
                files,
            } => {
                let message = awaiting_approval(feature, step, total, &title, green, &files);
                self.post(message).await;
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

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
