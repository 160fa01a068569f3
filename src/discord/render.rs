//! Core outputs to Discord: one worker per feature thread, so a slow call in one thread never
//! holds up another, and each thread's messages keep their order.
//!
//! A streamed reply appears as soon as its first text arrives and is then edited at most once
//! per `discord.stream_edit_interval_ms`; past 2,000 characters it continues in a new message
//! (see `text::split`). The typing indicator is renewed while the LLM works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ButtonStyle, ChannelId, CreateActionRow, CreateAllowedMentions, CreateAttachment, CreateButton,
    CreateEmbed, CreateMessage, EditMessage, EditThread, Http, MessageId,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::buttons::{Action, Button};
use super::text::{self, MESSAGE_LIMIT};
use crate::app::Output;
use crate::config::DiscordConfig;
use crate::plan::Slug;
use crate::store::{Feature, FeatureId, Place, Store};

/// How often the typing indicator is renewed (Discord shows it for about 10 seconds).
const TYPING_EVERY: Duration = Duration::from_secs(8);

/// Routes outputs to per-feature workers until the channel closes.
pub async fn run(
    http: Arc<Http>,
    store: Store,
    discord: DiscordConfig,
    mut outputs: mpsc::UnboundedReceiver<Output>,
) {
    let mut workers: HashMap<FeatureId, mpsc::UnboundedSender<Output>> = HashMap::new();
    while let Some(output) = outputs.recv().await {
        let Some(id) = output.feature() else {
            if let Output::Rejected { message, .. } = &output {
                tracing::info!(%message, "input refused");
            }
            continue;
        };
        if let Some(worker) = workers.get(&id) {
            if worker.send(output.clone()).is_ok() {
                continue;
            }
        }
        let Ok(feature) = store.feature(id) else {
            continue;
        };
        let Place::Discord { thread_id, .. } = feature.place else {
            continue;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            http: http.clone(),
            store: store.clone(),
            thread: ChannelId::new(thread_id),
            interval: discord.stream_edit_interval,
            stream: Stream::default(),
            typing_until: None,
        };
        tokio::spawn(worker.run(rx));
        let _ = tx.send(output);
        workers.insert(id, tx);
    }
}

struct Worker {
    http: Arc<Http>,
    store: Store,
    thread: ChannelId,
    interval: Duration,
    stream: Stream,
    /// While set, the typing indicator is renewed.
    typing_until: Option<Instant>,
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
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Output>) {
        let mut typing = tokio::time::interval(TYPING_EVERY);
        loop {
            let pending = self.stream.pending;
            let typing_on = self.typing_until.is_some_and(|t| t > Instant::now());
            tokio::select! {
                output = rx.recv() => match output {
                    Some(output) => self.apply(output).await,
                    None => break,
                },
                () = sleep_until(pending), if pending.is_some() => self.sync(false).await,
                _ = typing.tick(), if typing_on => self.type_now().await,
            }
        }
    }

    async fn apply(&mut self, output: Output) {
        match output {
            Output::Started { feature } => {
                let intro = format!(
                    "**{}** (feature #{}), requested by <@{}>.\nAnswer the questions here; only featurebot admins' messages are used.",
                    feature.title, feature.id, feature.requester.id
                );
                self.post(CreateMessage::new().content(intro)).await;
            }
            Output::Typing { .. } => {
                // Typing stops by itself after 10 s; this keeps it up for at most 10 minutes.
                self.typing_until = Some(Instant::now() + Duration::from_secs(600));
                self.type_now().await;
            }
            Output::ReplyDelta { text, .. } => {
                self.stream.text.push_str(&text);
                self.sync(false).await;
            }
            Output::Reply { text, .. } => {
                self.typing_until = None;
                if !text.is_empty() {
                    self.stream.text = text;
                }
                self.sync(true).await;
                self.stream = Stream::default();
            }
            Output::Confirmed { feature, summary } => {
                self.end_stream().await;
                let version = self.feature(feature).map_or(0, |f| f.plan_version);
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
            Output::PlanStarted { .. } => {
                self.typing_until = Some(Instant::now() + Duration::from_secs(600));
                self.type_now().await;
            }
            Output::PlanCommitted {
                feature,
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
                let Some(f) = self.feature(feature) else {
                    return;
                };
                self.post(plan_message(&f, version, &path, &commit, &markdown))
                    .await;
            }
            Output::Discarded { .. } => {
                self.end_stream().await;
                let archive = EditThread::new().archived(true).locked(true);
                if let Err(err) = self.thread.edit_thread(&self.http, archive).await {
                    tracing::warn!(thread = self.thread.get(), error = %err, "archiving the thread failed");
                }
            }
            Output::Refining { .. } | Output::Approved { .. } | Output::ChangesRequested { .. } => {
                // The click's own answer already said so in the thread.
            }
            Output::Rejected { message, .. } | Output::Warning { message, .. } => {
                self.end_stream().await;
                self.post(CreateMessage::new().content(format!("⚠️ {message}")))
                    .await;
            }
            Output::Failed { message, .. } => {
                self.end_stream().await;
                self.post(CreateMessage::new().content(format!("❌ {message}")))
                    .await;
            }
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

    /// Brings the posted messages up to date with the streamed text. Without `force`, the last
    /// message is edited at most once per interval; earlier messages are final and edited now.
    async fn sync(&mut self, force: bool) {
        self.stream.pending = None;
        let chunks = text::split(&self.stream.text, MESSAGE_LIMIT);
        let now = Instant::now();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            match self.stream.posted.get(i) {
                Some(posted) if posted.shown == *chunk => {}
                Some(posted) => {
                    let due = posted.edited_at + self.interval;
                    if last && !force && now < due {
                        self.stream.pending = Some(due);
                        continue;
                    }
                    let id = posted.id;
                    let edit = EditMessage::new().content(chunk.as_str());
                    match self.thread.edit_message(&self.http, id, edit).await {
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
                    match self.thread.send_message(&self.http, message).await {
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

    async fn type_now(&self) {
        if let Err(err) = self.thread.broadcast_typing(&self.http).await {
            tracing::debug!(error = %err, "typing indicator failed");
        }
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
        if let Err(err) = self.thread.send_message(&self.http, message).await {
            tracing::warn!(thread = self.thread.get(), error = %err, "posting to the thread failed");
        }
    }

    fn feature(&self, id: FeatureId) -> Option<Feature> {
        self.store.feature(id).ok()
    }
}

/// The plan as an attachment, with a short embed and the buttons that act on this version.
fn plan_message(
    feature: &Feature,
    version: u32,
    path: &str,
    commit: &str,
    markdown: &str,
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
        .field("File", format!("`{}`", truncate(path, 1_000)), false);
    let row = buttons(
        feature.id,
        version,
        &[
            (Action::Approve, ButtonStyle::Success),
            (Action::RequestChanges, ButtonStyle::Secondary),
            (Action::Discard, ButtonStyle::Danger),
        ],
    );
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

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
