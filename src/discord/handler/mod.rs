//! Gateway events to core inputs.
//!
//! Every interaction is answered inside Discord's 3-second deadline before any slow work:
//! refusals are ephemeral and immediate; accepted commands are deferred, accepted clicks get
//! an immediate message. If that first answer fails (the interaction was already answered, or
//! is stale), nothing is done, so a replayed or doubled interaction acts once.
//!
//! Inputs of one feature go through one queue (`queue.rs`), so its messages reach the core in
//! the order Discord delivered them. The slash commands are in `commands.rs`, the clicks in
//! `clicks.rs`, and the catch-up after a (re)start in `catch_up.rs`; this file holds the bot's
//! state, the gateway's entry points and the thread messages.

mod catch_up;
mod clicks;
mod commands;
mod queue;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use serenity::all::{
    ChannelId, ChannelType, CommandInteraction, CommandOptionType, ComponentInteraction, Context,
    CreateAllowedMentions, CreateCommand, CreateCommandOption, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateMessage, CreateThread, EditInteractionResponse,
    EventHandler, GetMessages, GuildId, Interaction, Message, MessageFlags, MessageId, Permissions,
    Ready, RoleId, UserId,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::buttons::{Action, Button};
use super::dashboard;
use super::pace::{Pacer, Route};
use super::render::Inboxes;
use super::text;
use crate::config::{Config, DiscordConfig};
use crate::core::protocol::Input;
use crate::core::queries;
use crate::core::runs::StepDecision;
use crate::core::App;
use crate::lock::LockExt;
use crate::model::{Author, Feature, FeatureId, Place, Speaker, Status};
use crate::plan::Title;
use queue::{Job, QueueState, Queues};

/// The bot's state between events.
pub struct Bot {
    discord: DiscordConfig,
    app: Arc<App>,
    queues: Arc<Queues>,
    /// Button actions accepted and not yet finished, so a second click is told, not obeyed.
    in_flight: Arc<Mutex<HashSet<(FeatureId, Action)>>>,
    config: Arc<Config>,
    /// For cost estimates on feature cards.
    prices: Option<(f64, f64)>,
    /// Non-admins already told that their messages are not used, per thread.
    noticed: Mutex<HashSet<(u64, u64)>>,
    /// Cancelled at shutdown: the catch-up starts no further feature.
    shutdown: CancellationToken,
    /// What the renderer still has to send, per feature: the catch-up's pace.
    outbox: Inboxes,
    /// The renderer's budget of REST calls, which the catch-up's reads take from too.
    pacer: Arc<Pacer>,
}

impl Bot {
    pub fn new(
        config: Arc<Config>,
        discord: DiscordConfig,
        app: Arc<App>,
        shutdown: CancellationToken,
        outbox: Inboxes,
        pacer: Arc<Pacer>,
    ) -> Bot {
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        Bot {
            prices: config.llm.prices,
            config,
            discord,
            queues: Arc::new(Queues {
                app: app.clone(),
                in_flight: in_flight.clone(),
                state: Mutex::new(QueueState::default()),
            }),
            app,
            in_flight,
            noticed: Mutex::new(HashSet::new()),
            shutdown,
            outbox,
            pacer,
        }
    }

    fn is_admin(&self, user: UserId, roles: &[RoleId]) -> bool {
        self.discord.admin_users.contains(&user.get())
            || roles
                .iter()
                .any(|r| self.discord.admin_roles.contains(&r.get()))
    }

    /// Queues `input` behind the feature's earlier inputs. `done` is the in-flight mark that
    /// the queue clears once the core has handled the input.
    fn submit(&self, feature: FeatureId, input: Input, done: Option<(FeatureId, Action)>) {
        self.queues.push(feature, Job::Input { input, done });
    }

    fn feature_in(&self, channel: ChannelId) -> Option<Feature> {
        let place = Place::Discord {
            guild_id: self.discord.guild_id,
            channel_id: 0,
            thread_id: channel.get(),
        };
        self.app.feature_at(&place).ok().flatten()
    }

    async fn thread_message(&self, ctx: &Context, msg: &Message) {
        if msg.author.bot || msg.guild_id.map(|g| g.get()) != Some(self.discord.guild_id) {
            return;
        }
        let Some(feature) = self.feature_in(msg.channel_id) else {
            return;
        };
        let roles = msg
            .member
            .as_ref()
            .map(|m| m.roles.clone())
            .unwrap_or_default();
        if !self.is_admin(msg.author.id, &roles) {
            self.notice_non_admin(ctx, msg).await;
            return;
        }
        if msg.content.trim().is_empty() {
            tracing::warn!(
                feature = feature.id.0,
                message = msg.id.get(),
                "empty message ignored; is the Message Content intent on?"
            );
            return;
        }
        // A thread not caught up yet since the start: what was said there while the bot was
        // away goes first (the fetch sees this message too; the core ignores it the second
        // time).
        let gate = self.queues.claim_catch_up(feature.id);
        self.submit(
            feature.id,
            Input::Message {
                feature: feature.id,
                author: Author {
                    id: msg.author.id.get().to_string(),
                    name: display_name(
                        &msg.author,
                        msg.member.as_ref().and_then(|m| m.nick.clone()),
                    ),
                },
                text: msg.content.clone(),
                source_id: Some(msg.id.get().to_string()),
            },
            None,
        );
        if let Some(gate) = gate {
            let missed = self.missed(ctx, &feature, &Mutex::default()).await;
            let _ = gate.inputs.send(missed);
        }
    }

    /// Tells a non-admin, once per thread and without a notification, that their messages
    /// are not used.
    async fn notice_non_admin(&self, ctx: &Context, msg: &Message) {
        let first = self
            .noticed
            .locked()
            .insert((msg.channel_id.get(), msg.author.id.get()));
        if !first {
            return;
        }
        let notice = CreateMessage::new()
            .content("Only featurebot admins' messages are used in this feature's conversation; yours was not.")
            .reference_message(msg)
            .allowed_mentions(CreateAllowedMentions::new())
            .flags(MessageFlags::SUPPRESS_NOTIFICATIONS);
        let send = || msg.channel_id.send_message(&ctx.http, notice.clone());
        if let Err(err) = self
            .pacer
            .required(msg.channel_id, Route::Create, send)
            .await
        {
            tracing::warn!(error = %err, "sending the non-admin notice failed");
        }
    }
}

#[serenity::async_trait]
impl EventHandler for Bot {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, application = ready.application.id.get(), "connected to Discord");
        // Every event is handled in a task of its own (serenity spawns one), so neither the
        // registration nor the catch-up holds up live events.
        let open = self.open_features();
        self.queues.expect_catch_up(open.iter().map(|f| f.id));
        self.register_commands(&ctx).await;
        self.catch_up(&ctx, open).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(cmd) if cmd.data.name == "feature" => {
                self.feature_command(&ctx, &cmd).await
            }
            Interaction::Command(cmd) if cmd.data.name == "tasks" || cmd.data.name == "task" => {
                self.dashboard_command(&ctx, &cmd).await
            }
            Interaction::Component(click) if click.data.custom_id.starts_with("fbt:") => {
                self.page_click(&ctx, &click).await
            }
            Interaction::Component(click) if click.data.custom_id.starts_with("fbp:") => {
                self.priority_select(&ctx, &click).await
            }
            Interaction::Component(click) => self.click(&ctx, &click).await,
            _ => {}
        }
    }

    async fn message(&self, ctx: Context, msg: Message) {
        self.thread_message(&ctx, &msg).await;
    }
}

/// The roles of an interaction's member (none outside a guild).
fn roles_of(member: Option<&serenity::all::Member>) -> &[RoleId] {
    member.map_or(&[], |m| &m.roles)
}

fn ephemeral(message: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .content(message)
            .ephemeral(true),
    )
}

fn display_name(user: &serenity::all::User, nick: Option<String>) -> String {
    nick.or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone())
}
