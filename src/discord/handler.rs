//! Gateway events to core inputs.
//!
//! Every interaction is answered inside Discord's 3-second deadline before any slow work:
//! refusals are ephemeral and immediate; accepted commands are deferred, accepted clicks get
//! an immediate message. If that first answer fails (the interaction was already answered, or
//! is stale), nothing is done, so a replayed or doubled interaction acts once.
//!
//! Inputs of one feature go through one queue, so its messages reach the core in the order
//! Discord delivered them.
//!
//! After a (re)start, the catch-up feeds the core what was said in open feature threads while
//! the bot was away, [`CATCH_UP_AT_ONCE`] features at a time. A thread's catch-up holds a place
//! in its queue, so a live message there waits behind the messages posted before it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use serenity::all::{
    ChannelId, CommandInteraction, CommandOptionType, ComponentInteraction, Context,
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
use crate::model::{Author, Feature, FeatureId, Place, RunState, Speaker, Status};
use crate::plan::Title;

/// How many features the catch-up works on at once. Each fetches its thread's missed messages
/// (a REST call per page, plus one per author for the roles) and waits until the core has
/// answered them (an LLM call when a message is unanswered). Four keep the catch-up to a small
/// share of what Discord allows a bot (about 50 requests a second) and of the LLM provider's
/// rate limit, so live conversations keep the rest, while one thread's network waits still
/// overlap another's.
const CATCH_UP_AT_ONCE: usize = 4;

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

    async fn register_commands(&self, ctx: &Context) {
        let mut command = CreateCommand::new("feature")
            .description("Start a feature: featurebot asks questions in a private thread, then writes the plan")
            .default_member_permissions(Permissions::ADMINISTRATOR)
            .dm_permission(false)
            .add_option(
                CreateCommandOption::new(CommandOptionType::String, "title", "What should be built, in a few words")
                    .required(true)
                    .max_length(crate::plan::MAX_TITLE_CHARS as u16),
            );
        if !self.config.targets.is_empty() {
            let mut repo = CreateCommandOption::new(
                CommandOptionType::String,
                "repo",
                "The repository this feature is for (when the channel maps to several)",
            )
            .add_string_choice("default", "default");
            for target in self.config.targets.iter().take(24) {
                repo = repo.add_string_choice(&target.name, &target.name);
            }
            command = command.add_option(repo);
        }
        let status_choices = [
            "gathering",
            "confirmed",
            "planned",
            "approved",
            "queued",
            "running",
            "pr_open",
            "merged",
            "closed",
            "failed",
            "cancelled",
            "discarded",
        ];
        let mut status = CreateCommandOption::new(
            CommandOptionType::String,
            "status",
            "Only features in this status",
        );
        for name in status_choices {
            status = status.add_string_choice(name.replace('_', " "), name);
        }
        let priority = priority_option("Only features of this priority");
        let tasks = CreateCommand::new("tasks")
            .description("List the features, newest first")
            .default_member_permissions(Permissions::ADMINISTRATOR)
            .dm_permission(false)
            .add_option(status)
            .add_option(priority);
        let set_priority = priority_option("Set the feature's priority");
        let task = CreateCommand::new("task")
            .description("Show this thread's feature: status, plan versions, runs, tokens")
            .default_member_permissions(Permissions::ADMINISTRATOR)
            .dm_permission(false)
            .add_option(set_priority)
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::String,
                    "add_labels",
                    "Labels to add, separated by commas",
                )
                .max_length(200),
            );
        let guild = GuildId::new(self.discord.guild_id);
        match guild
            .set_commands(&ctx.http, vec![command, tasks, task])
            .await
        {
            Ok(_) => tracing::info!(guild = guild.get(), "slash commands registered"),
            Err(err) => {
                tracing::error!(guild = guild.get(), error = %err, "registering slash commands failed; check discord.guild_id and that the bot was invited with the applications.commands scope")
            }
        }
    }

    async fn feature_command(&self, ctx: &Context, cmd: &CommandInteraction) {
        let roles = roles_of(cmd.member.as_deref());
        let raw_title = string_option(cmd, "title").unwrap_or_default();
        let refusal = if cmd.guild_id.map(|g| g.get()) != Some(self.discord.guild_id) {
            Some("featurebot serves another server".to_string())
        } else if !self.is_admin(cmd.user.id, roles) {
            Some("only featurebot admins can start a feature; ask an admin, or to be added to discord.admin_users or discord.admin_roles".to_string())
        } else if !self.discord.feature_channels.is_empty()
            && !self
                .discord
                .feature_channels
                .contains(&cmd.channel_id.get())
        {
            let channels: Vec<String> = self
                .discord
                .feature_channels
                .iter()
                .map(|c| format!("<#{c}>"))
                .collect();
            Some(format!(
                "/feature is not allowed in this channel; use it in {}",
                channels.join(", ")
            ))
        } else {
            Title::parse(raw_title).err()
        };
        let chosen = string_option(cmd, "repo");
        let target = self.config.target_for(cmd.channel_id.get(), chosen);
        let refusal = refusal.or_else(|| target.clone().err());
        if let Some(message) = refusal {
            tracing::info!(user = cmd.user.id.get(), %message, "/feature refused");
            let _ = cmd
                .create_response(&ctx.http, ephemeral(&message))
                .await
                .map_err(|e| tracing::warn!(error = %e, "answering /feature failed"));
            return;
        }
        let Ok(title) = Title::parse(raw_title) else {
            return;
        };
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        );
        if let Err(err) = cmd.create_response(&ctx.http, defer).await {
            // Already answered (a replayed event) or too late: do nothing twice.
            tracing::warn!(error = %err, interaction = cmd.id.get(), "deferring /feature failed; not acting on it");
            return;
        }
        let thread = cmd
            .channel_id
            .create_thread(
                &ctx.http,
                CreateThread::new(text::thread_name(title.as_str())).invitable(false),
            )
            .await;
        let thread = match thread {
            Ok(thread) => thread,
            Err(err) => {
                tracing::error!(error = %err, "creating the feature thread failed");
                let _ = cmd
                    .edit_response(
                        &ctx.http,
                        EditInteractionResponse::new().content(
                            "could not create the private thread; check that featurebot may create private threads in this channel",
                        ),
                    )
                    .await;
                return;
            }
        };
        if let Err(err) = thread.id.add_thread_member(&ctx.http, cmd.user.id).await {
            tracing::warn!(error = %err, "adding the requester to the thread failed");
        }
        let _ = cmd
            .edit_response(
                &ctx.http,
                EditInteractionResponse::new()
                    .content(format!("Started <#{}>: {title}", thread.id.get())),
            )
            .await
            .map_err(|e| tracing::warn!(error = %e, "following up /feature failed"));
        let input = Input::Start {
            title: title.as_str().to_string(),
            requester: Author {
                id: cmd.user.id.get().to_string(),
                name: display_name(&cmd.user, cmd.member.as_ref().and_then(|m| m.nick.clone())),
            },
            place: Place::Discord {
                guild_id: self.discord.guild_id,
                channel_id: cmd.channel_id.get(),
                thread_id: thread.id.get(),
            },
            repo: target.ok().flatten(),
        };
        let app = self.app.clone();
        tokio::spawn(async move { app.handle(input).await });
    }

    /// `/tasks [status] [priority]` and `/task`: answered at once, for the caller only.
    async fn dashboard_command(&self, ctx: &Context, cmd: &CommandInteraction) {
        let roles = roles_of(cmd.member.as_deref());
        let response = if !self.is_admin(cmd.user.id, roles) {
            ephemeral("only featurebot admins can see the features")
        } else if cmd.data.name == "task" {
            match self.feature_in(cmd.channel_id) {
                None => {
                    ephemeral("/task works inside a feature's thread; use /tasks to list them all")
                }
                Some(feature) => return self.task_command(ctx, cmd, feature.id).await,
            }
        } else {
            let filter = queries::Filter {
                status: string_option(cmd, "status").and_then(|s| s.parse().ok()),
                priority: string_option(cmd, "priority").and_then(|p| p.parse().ok()),
            };
            return self.tasks_command(ctx, cmd, filter).await;
        };
        if let Err(err) = cmd.create_response(&ctx.http, response).await {
            tracing::warn!(error = %err, "answering a dashboard command failed");
        }
    }

    /// `/tasks`: refreshes pull-request states from GitHub (briefly), then lists.
    async fn tasks_command(
        &self,
        ctx: &Context,
        cmd: &CommandInteraction,
        filter: queries::Filter,
    ) {
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        );
        if let Err(err) = cmd.create_response(&ctx.http, defer).await {
            tracing::warn!(error = %err, "deferring /tasks failed; not acting on it");
            return;
        }
        let refresh = self.app.handle(Input::RefreshPullRequests);
        if tokio::time::timeout(std::time::Duration::from_secs(10), refresh)
            .await
            .is_err()
        {
            tracing::warn!("refreshing pull requests took too long; listing what is known");
        }
        let edit = match self.app.list(filter, 0) {
            Ok(listing) => {
                let (embed, rows) = dashboard::page(&listing, filter);
                EditInteractionResponse::new().embed(embed).components(rows)
            }
            Err(err) => EditInteractionResponse::new()
                .content(format!("reading the features failed: {err}")),
        };
        if let Err(err) = cmd.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %err, "answering /tasks failed");
        }
    }

    /// `/task [priority] [add_labels]`: applies the changes, then shows the card.
    async fn task_command(&self, ctx: &Context, cmd: &CommandInteraction, feature: FeatureId) {
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        );
        if let Err(err) = cmd.create_response(&ctx.http, defer).await {
            tracing::warn!(error = %err, "deferring /task failed; not acting on it");
            return;
        }
        if let Some(priority) = string_option(cmd, "priority").and_then(|p| p.parse().ok()) {
            self.app
                .handle(Input::SetPriority { feature, priority })
                .await;
        }
        if let Some(labels) = string_option(cmd, "add_labels") {
            self.app
                .handle(Input::AddLabels {
                    feature,
                    labels: vec![labels.to_string()],
                })
                .await;
        }
        let edit = match self.app.card(feature, self.prices) {
            Ok(card) => EditInteractionResponse::new()
                .embed(dashboard::card(&card))
                .components(vec![dashboard::priority_menu(&card.feature)]),
            Err(err) => {
                EditInteractionResponse::new().content(format!("reading the feature failed: {err}"))
            }
        };
        if let Err(err) = cmd.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %err, "answering /task failed");
        }
    }

    /// The priority menu on a feature card.
    async fn priority_select(&self, ctx: &Context, click: &ComponentInteraction) {
        let roles = roles_of(click.member.as_ref());
        let chosen = match &click.data.kind {
            serenity::all::ComponentInteractionDataKind::StringSelect { values } => {
                values.first().cloned()
            }
            _ => None,
        };
        let feature = click
            .data
            .custom_id
            .strip_prefix("fbp:")
            .and_then(|id| id.parse::<u64>().ok())
            .map(FeatureId);
        if !self.is_admin(click.user.id, roles) {
            let refusal = ephemeral("only featurebot admins can change a feature");
            if let Err(err) = click.create_response(&ctx.http, refusal).await {
                tracing::warn!(error = %err, "answering the priority menu failed");
            }
            return;
        }
        let (Some(feature), Some(priority)) = (feature, chosen.and_then(|p| p.parse().ok())) else {
            return;
        };
        // The change may wait on git and GitHub: acknowledge within Discord's deadline first,
        // then show the updated card in place.
        if let Err(err) = click
            .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
            .await
        {
            tracing::warn!(error = %err, "acknowledging the priority menu failed; not acting on it");
            return;
        }
        self.app
            .handle(Input::SetPriority { feature, priority })
            .await;
        let edit = match self.app.card(feature, self.prices) {
            Ok(card) => EditInteractionResponse::new()
                .embed(dashboard::card(&card))
                .components(vec![dashboard::priority_menu(&card.feature)]),
            Err(err) => {
                EditInteractionResponse::new().content(format!("reading the feature failed: {err}"))
            }
        };
        if let Err(err) = click.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %err, "showing the updated card failed");
        }
    }

    async fn page_click(&self, ctx: &Context, click: &ComponentInteraction) {
        let roles = roles_of(click.member.as_ref());
        let response = match dashboard::parse_page_id(&click.data.custom_id) {
            _ if !self.is_admin(click.user.id, roles) => {
                ephemeral("only featurebot admins can see the features")
            }
            Some((page, filter)) => self.page_response(filter, page, true),
            None => return,
        };
        if let Err(err) = click.create_response(&ctx.http, response).await {
            tracing::warn!(error = %err, "turning a dashboard page failed");
        }
    }

    fn page_response(
        &self,
        filter: queries::Filter,
        page: usize,
        update: bool,
    ) -> CreateInteractionResponse {
        match self.app.list(filter, page) {
            Ok(listing) => {
                let (embed, rows) = dashboard::page(&listing, filter);
                let message = CreateInteractionResponseMessage::new()
                    .embed(embed)
                    .components(rows);
                if update {
                    CreateInteractionResponse::UpdateMessage(message)
                } else {
                    CreateInteractionResponse::Message(message.ephemeral(true))
                }
            }
            Err(err) => ephemeral(&format!("reading the features failed: {err}")),
        }
    }

    async fn click(&self, ctx: &Context, click: &ComponentInteraction) {
        let Ok(button) = click.data.custom_id.parse::<Button>() else {
            return;
        };
        let roles = roles_of(click.member.as_ref());
        let refusal = if !self.is_admin(click.user.id, roles) {
            Some("only featurebot admins can use these buttons".to_string())
        } else {
            match self.app.feature(button.feature) {
                Err(_) => Some(format!("feature #{} no longer exists", button.feature)),
                // Buttons are only posted in their feature's thread; one elsewhere (a store
                // that was lost and refilled) names some other feature.
                Ok(feature)
                    if !matches!(
                        feature.place,
                        Place::Discord { thread_id, .. } if thread_id == click.channel_id.get()
                    ) =>
                {
                    Some(format!(
                        "this button belongs to another thread; feature #{} has its own buttons there",
                        feature.id
                    ))
                }
                Ok(feature) => self.click_refusal(&feature, button),
            }
        };
        if let Some(message) = refusal {
            let _ = click
                .create_response(&ctx.http, ephemeral(&message))
                .await
                .map_err(|e| tracing::warn!(error = %e, "answering a click failed"));
            return;
        }
        let key = (button.feature, button.action);
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        if !fresh {
            let message = match button.action {
                Action::GeneratePlan => "the plan is already being written; it will appear here",
                _ => "someone just did that; it is being handled",
            };
            let _ = click.create_response(&ctx.http, ephemeral(message)).await;
            return;
        }
        let who = format!("<@{}>", click.user.id.get());
        let (announcement, input) = match button.action {
            Action::GeneratePlan => (
                format!("{who} asked for the plan: writing the plan..."),
                Input::GeneratePlan {
                    feature: button.feature,
                    force: false,
                },
            ),
            Action::KeepRefining => (
                format!("{who} wants to keep refining: tell me what to add or change"),
                Input::KeepRefining {
                    feature: button.feature,
                },
            ),
            Action::Approve => (
                format!("{who} approved plan version {}", button.version),
                Input::Approve {
                    feature: button.feature,
                    version: button.version,
                },
            ),
            Action::RequestChanges => (
                format!(
                    "{who} requested changes to plan version {}: say what to change, and the next plan will be version {}",
                    button.version,
                    button.version + 1
                ),
                Input::RequestChanges {
                    feature: button.feature,
                    version: button.version,
                },
            ),
            Action::Discard => (
                format!("{who} discarded this feature; the thread will be archived"),
                Input::Discard {
                    feature: button.feature,
                },
            ),
            Action::CancelRun => (
                format!("{who} cancelled the agent run; stopping it..."),
                Input::CancelRun {
                    feature: button.feature,
                },
            ),
            Action::ResumeRun => (
                format!("{who} resumed the agent run"),
                Input::ResumeRun {
                    feature: button.feature,
                },
            ),
            Action::AbortRun => (
                format!("{who} aborted the interrupted run"),
                Input::AbortRun {
                    feature: button.feature,
                },
            ),
            Action::StepContinue | Action::StepChange | Action::StepAbort => {
                let (decision, text) = match button.action {
                    Action::StepContinue => (StepDecision::Continue, format!("{who}: continue with the next step")),
                    Action::StepChange => (
                        StepDecision::Change,
                        format!("{who} wants step {} changed: the next admin message says how", button.version),
                    ),
                    _ => (StepDecision::Abort, format!("{who} stopped the run after step {}", button.version)),
                };
                (
                    text,
                    Input::StepDecision {
                        feature: button.feature,
                        decision,
                    },
                )
            }
            Action::FollowUp => (
                format!("{who} wants a follow-up: write what to change, and your next message runs the agent again on the same branch"),
                Input::FollowUp {
                    feature: button.feature,
                },
            ),
            Action::CreateIssue => (
                format!("{who} asked for a GitHub issue: opening it..."),
                Input::CreateIssue {
                    feature: button.feature,
                },
            ),
        };
        let response = CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .content(announcement)
                .allowed_mentions(CreateAllowedMentions::new()),
        );
        if let Err(err) = click.create_response(&ctx.http, response).await {
            tracing::warn!(error = %err, interaction = click.id.get(), "answering a click failed; not acting on it");
            self.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            return;
        }
        tracing::info!(feature = button.feature.0, action = ?button.action, user = click.user.id.get(), "button");
        self.submit(button.feature, input, Some(key));
    }

    /// Why a click on `button` should not act, as a sentence for the clicker.
    fn click_refusal(&self, feature: &Feature, button: Button) -> Option<String> {
        let id = feature.id;
        let current = feature.plan_version;
        let status = feature.status;
        let last_run = self.app.last_run(id).ok().flatten();
        match button.action {
            _ if status == Status::Discarded => Some(format!("feature #{id} was discarded")),
            Action::StepContinue | Action::StepChange | Action::StepAbort
                if status != Status::Running =>
            {
                Some("no run of this feature is waiting for approval".to_string())
            }
            Action::StepContinue | Action::StepChange | Action::StepAbort
                if last_run.as_ref().map(|r| r.next_step + 1) != Some(button.version as usize) =>
            {
                Some("that step is no longer waiting for approval".to_string())
            }
            Action::FollowUp if status != Status::PrOpen => Some(format!(
                "feature #{id} is {status}; a follow-up needs an open pull request"
            )),
            Action::CreateIssue if feature.issue.is_some() => Some(format!(
                "GitHub issue #{} already mirrors this feature",
                feature.issue.as_ref().map_or(0, |i| i.0)
            )),
            Action::CancelRun if !matches!(status, Status::Queued | Status::Running) => {
                Some("no agent run is going for this feature".to_string())
            }
            Action::ResumeRun | Action::AbortRun
                if last_run.as_ref().map(|r| r.number) != Some(button.version) =>
            {
                Some("that run is not the feature's latest".to_string())
            }
            Action::ResumeRun | Action::AbortRun
                if matches!(status, Status::Queued | Status::Running) =>
            {
                Some("a run is already going for this feature".to_string())
            }
            Action::AbortRun
                if last_run.as_ref().map(|r| r.state) != Some(RunState::Interrupted) =>
            {
                Some("that run is already over".to_string())
            }
            Action::GeneratePlan | Action::KeepRefining if current > button.version => Some(
                format!("plan version {current} is already written; use the buttons under it"),
            ),
            Action::GeneratePlan if status == Status::Gathering => Some(
                "the conversation was reopened; wait for the requirements to be confirmed again".to_string(),
            ),
            Action::KeepRefining if status == Status::Gathering => {
                Some("the conversation is already open: just write your message".to_string())
            }
            Action::GeneratePlan | Action::KeepRefining if status != Status::Confirmed => {
                Some(format!("feature #{id} is {status}; this button no longer applies"))
            }
            Action::Approve | Action::RequestChanges | Action::Discard
                if button.version != current =>
            {
                Some(format!(
                    "this is plan version {}; version {current} is current, use the buttons under it",
                    button.version
                ))
            }
            Action::Approve if status == Status::Approved => {
                Some(format!("plan version {current} is already approved"))
            }
            Action::RequestChanges if status == Status::Gathering => {
                Some("changes were already requested: just write what to change".to_string())
            }
            Action::Approve | Action::RequestChanges if status != Status::Planned => {
                Some(format!("feature #{id} is {status}; this button no longer applies"))
            }
            _ => None,
        }
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
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

    /// The features whose threads the catch-up looks at: open conversations in Discord.
    fn open_features(&self) -> Vec<Feature> {
        match self.app.features() {
            Ok(features) => features
                .into_iter()
                .rev()
                .filter(|f| matches!(f.place, Place::Discord { .. }))
                .filter(|f| {
                    matches!(
                        f.status,
                        Status::Gathering | Status::Confirmed | Status::Planned
                    )
                })
                .collect(),
            Err(err) => {
                tracing::error!(error = %err, "reading features for the catch-up failed");
                Vec::new()
            }
        }
    }

    /// After a (re)start: feeds the messages posted in open feature threads while the bot was
    /// away, in order, then answers any message left without an answer; [`CATCH_UP_AT_ONCE`]
    /// features at a time, each finished (answered) before the next one starts. A feature
    /// that a live message caught up first is skipped.
    async fn catch_up(&self, ctx: &Context, features: Vec<Feature>) {
        let count = features.len();
        // Fetched messages carry no member, so the authors' roles are asked for, once each.
        let roles = Mutex::new(HashMap::new());
        futures_util::stream::iter(features)
            .for_each_concurrent(CATCH_UP_AT_ONCE, |feature| {
                let roles = &roles;
                async move {
                    if self.shutdown.is_cancelled() {
                        return;
                    }
                    let Some(gate) = self.queues.claim_catch_up(feature.id) else {
                        return;
                    };
                    let missed = self.missed(ctx, &feature, roles).await;
                    let _ = gate.inputs.send(missed);
                    let _ = gate.handled.await;
                    // Answered is not yet shown: Discord takes about 40 calls a second, so the
                    // next thread waits until this one's answer is out. Otherwise thousands of
                    // answers would wait in memory, and live threads behind them.
                    tokio::select! {
                        () = self.outbox.delivered(feature.id) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                }
            })
            .await;
        tracing::info!(features = count, "catch-up done");
    }

    /// The inputs that catch a feature up: each admin's message posted in its thread after the
    /// last one the transcript holds, oldest first, then a resume (which answers the last
    /// message if nothing did).
    async fn missed(
        &self,
        ctx: &Context,
        feature: &Feature,
        roles_of: &Mutex<HashMap<UserId, Vec<RoleId>>>,
    ) -> Vec<Input> {
        let resume = Input::Resume {
            feature: feature.id,
        };
        let Place::Discord { thread_id, .. } = feature.place else {
            return vec![resume];
        };
        let thread = ChannelId::new(thread_id);
        let transcript = self.app.transcript(feature.id).unwrap_or_default();
        let mut after = transcript
            .iter()
            .filter(|t| t.speaker == Speaker::User)
            .filter_map(|t| t.source_id.as_deref()?.parse::<u64>().ok())
            .max()
            .unwrap_or(thread_id);
        drop(transcript);
        let mut missed = Vec::new();
        loop {
            let fetch = || {
                thread.messages(
                    &ctx.http,
                    GetMessages::new().after(MessageId::new(after)).limit(100),
                )
            };
            let page = match self.pacer.required(thread, Route::Other, fetch).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(feature = feature.id.0, error = %err, "fetching missed messages failed");
                    break;
                }
            };
            let count = page.len();
            let newest = page.iter().map(|m| m.id.get()).max();
            missed.extend(page.into_iter().filter(|m| !m.author.bot));
            match newest {
                Some(newest) if count == 100 => after = newest,
                _ => break,
            }
        }
        missed.sort_by_key(|m| m.id.get());
        let mut inputs = Vec::new();
        for msg in missed {
            let known = roles_of
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&msg.author.id)
                .cloned();
            let roles = match known {
                Some(roles) => roles,
                // Admin users need no lookup. A failed lookup is not cached as "no roles",
                // which would pass over that admin's messages in every thread.
                None if self.is_admin(msg.author.id, &[]) => Vec::new(),
                None => {
                    let guild = GuildId::new(self.discord.guild_id);
                    let lookup = || guild.member(&ctx.http, msg.author.id);
                    match self.pacer.required(thread, Route::Other, lookup).await {
                        Ok(member) => {
                            roles_of
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(msg.author.id, member.roles.clone());
                            member.roles
                        }
                        Err(err) => {
                            tracing::warn!(feature = feature.id.0, user = msg.author.id.get(), error = %err, "looking up a member's roles failed; their missed message is not answered");
                            Vec::new()
                        }
                    }
                }
            };
            if !self.is_admin(msg.author.id, &roles) || msg.content.trim().is_empty() {
                continue;
            }
            tracing::info!(
                feature = feature.id.0,
                message = msg.id.get(),
                "answering a message posted while offline"
            );
            inputs.push(Input::Message {
                feature: feature.id,
                author: Author {
                    id: msg.author.id.get().to_string(),
                    name: display_name(&msg.author, None),
                },
                text: msg.content,
                source_id: Some(msg.id.get().to_string()),
            });
        }
        inputs.push(resume);
        inputs
    }
}

/// The features' input queues. A feature has an entry while a task is working through its
/// jobs; that task removes the entry when it finds it empty, so an idle feature holds neither a
/// task nor memory, however many features there are.
struct Queues {
    app: Arc<App>,
    in_flight: Arc<Mutex<HashSet<(FeatureId, Action)>>>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    jobs: HashMap<FeatureId, VecDeque<Job>>,
    /// Open features not yet caught up since the last READY.
    to_catch_up: HashSet<FeatureId>,
}

/// What waits in a feature's queue.
enum Job {
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
struct Gate {
    inputs: oneshot::Sender<Vec<Input>>,
    handled: oneshot::Receiver<()>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(self: &Arc<Self>, feature: FeatureId, job: Job) {
        let mut state = self.lock();
        self.push_locked(&mut state, feature, job);
    }

    fn push_locked(self: &Arc<Self>, state: &mut QueueState, feature: FeatureId, job: Job) {
        match state.jobs.entry(feature) {
            Entry::Occupied(mut jobs) => jobs.get_mut().push_back(job),
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([job]));
                tokio::spawn(self.clone().work(feature));
            }
        }
    }

    /// Marks these features as due for a catch-up (at READY).
    fn expect_catch_up(&self, features: impl IntoIterator<Item = FeatureId>) {
        self.lock().to_catch_up.extend(features);
    }

    /// Claims the feature's catch-up, unless it was claimed since the last READY: its place in
    /// the queue is taken now, so whatever is queued later waits for it.
    fn claim_catch_up(self: &Arc<Self>, feature: FeatureId) -> Option<Gate> {
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
    async fn work(self: Arc<Self>, feature: FeatureId) {
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
                        self.in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
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
    async fn handle(&self, input: Input) {
        let app = self.app.clone();
        if let Err(err) = tokio::spawn(async move { app.handle(input).await }).await {
            tracing::error!(error = %err, "handling an input failed");
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

/// A command's string option, when given.
fn string_option<'a>(cmd: &'a CommandInteraction, name: &str) -> Option<&'a str> {
    cmd.data
        .options
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.value.as_str())
}

/// The roles of an interaction's member (none outside a guild).
fn roles_of(member: Option<&serenity::all::Member>) -> &[RoleId] {
    member.map_or(&[], |m| &m.roles)
}

/// A `priority` option with the choices p0 to p3.
fn priority_option(description: &str) -> CreateCommandOption {
    ["p0", "p1", "p2", "p3"].into_iter().fold(
        CreateCommandOption::new(CommandOptionType::String, "priority", description),
        |option, name| option.add_string_choice(name, name),
    )
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
