//! The slash commands, each definition beside its handler: `/feature` opens a feature's
//! private thread and starts its conversation; `/tasks` and `/task` show the dashboard.

use super::*;

impl Bot {
    pub(super) async fn register_commands(&self, ctx: &Context) {
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

    pub(super) async fn feature_command(&self, ctx: &Context, cmd: &CommandInteraction) {
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
        // The type is explicit: Discord's default (private) for a thread without a starting
        // message is documented to become a required field with no default.
        let thread = cmd
            .channel_id
            .create_thread(
                &ctx.http,
                CreateThread::new(text::thread_name(title.as_str()))
                    .kind(ChannelType::PrivateThread)
                    .invitable(false),
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
    pub(super) async fn dashboard_command(&self, ctx: &Context, cmd: &CommandInteraction) {
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
    pub(super) async fn tasks_command(
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
    pub(super) async fn task_command(
        &self,
        ctx: &Context,
        cmd: &CommandInteraction,
        feature: FeatureId,
    ) {
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
        let edit = self.card_edit(feature);
        if let Err(err) = cmd.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %err, "answering /task failed");
        }
    }

    /// The feature's card with its priority menu, as an edit of an interaction's answer.
    pub(super) fn card_edit(&self, feature: FeatureId) -> EditInteractionResponse {
        match self.app.card(feature, self.prices) {
            Ok(card) => EditInteractionResponse::new()
                .embed(dashboard::card(&card))
                .components(vec![dashboard::priority_menu(&card.feature)]),
            Err(err) => {
                EditInteractionResponse::new().content(format!("reading the feature failed: {err}"))
            }
        }
    }
}

/// A command's string option, when given.
pub(super) fn string_option<'a>(cmd: &'a CommandInteraction, name: &str) -> Option<&'a str> {
    cmd.data
        .options
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.value.as_str())
}

/// A `priority` option with the choices p0 to p3.
pub(super) fn priority_option(description: &str) -> CreateCommandOption {
    ["p0", "p1", "p2", "p3"].into_iter().fold(
        CreateCommandOption::new(CommandOptionType::String, "priority", description),
        |option, name| option.add_string_choice(name, name),
    )
}
