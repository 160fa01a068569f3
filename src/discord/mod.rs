//! The Discord front end: the only user of serenity.
//!
//! - `handler.rs`: gateway events to core [`Input`]s: `/feature`, messages in feature threads,
//!   button clicks, and the catch-up after a restart. Admin checks happen here.
//! - `render.rs`: core [`Output`]s to Discord calls: streamed replies, buttons, the plan.
//! - `pace.rs`: the renderer's budgets of REST calls, which hold Discord's rate limits.
//! - `buttons.rs`: the buttons' custom ids, which carry the feature and plan version.
//! - `dashboard.rs`: `/tasks` and `/task` as embeds with page buttons.
//! - `text.rs`: Discord's message and name limits.
//!
//! The core never sees a Discord type; this module never decides what a feature is.
//!
//! [`Input`]: crate::core::Input
//! [`Output`]: crate::core::Output

mod buttons;
mod dashboard;
mod handler;
mod pace;
mod render;
pub mod text;

pub use buttons::{Action, Button};

use std::sync::Arc;

use anyhow::{bail, Context};
use serenity::all::{ClientBuilder, GatewayIntents, HttpBuilder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DiscordConfig};
use crate::core::protocol::Output;
use crate::core::App;

/// The gateway events the bot needs. MESSAGE_CONTENT is privileged: turn it on in the
/// developer portal, or every message arrives empty.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT
}

/// The permissions the bot needs in the guild, as in the invite URL: view channels, send
/// messages, send messages in threads, create private threads, manage threads (to archive),
/// embed links, attach files, read message history.
pub const PERMISSIONS: u64 = (1 << 10) // view channel
    | (1 << 11) // send messages
    | (1 << 38) // send messages in threads
    | (1 << 36) // create private threads
    | (1 << 34) // manage threads
    | (1 << 14) // embed links
    | (1 << 15) // attach files
    | (1 << 16); // read message history

/// The URL that invites the bot with the scopes and permissions it needs.
pub fn invite_url(application_id: u64) -> String {
    format!(
        "https://discord.com/oauth2/authorize?client_id={application_id}&scope=bot%20applications.commands&permissions={PERMISSIONS}"
    )
}

/// The bot's application id, asked from Discord with the configured token.
pub async fn application_id(config: &Config) -> anyhow::Result<u64> {
    let (discord, token) = settings(config)?;
    let info = http(&discord, token.expose())
        .get_current_application_info()
        .await
        .context("asking Discord for the application; check DISCORD_TOKEN")?;
    Ok(info.id.get())
}

/// Checks the token against Discord: the bot's name, for `featurebot check`.
pub async fn whoami(config: &Config) -> anyhow::Result<String> {
    let (discord, token) = settings(config)?;
    let me = http(&discord, token.expose())
        .get_current_user()
        .await
        .context("Discord refused the token; check DISCORD_TOKEN")?;
    Ok(me.name.clone())
}

fn settings(config: &Config) -> anyhow::Result<(DiscordConfig, crate::config::Secret)> {
    let Some(discord) = config.discord.clone() else {
        bail!("the config has no [discord] section; add one (see config.toml.example) to run the Discord bot, or use `featurebot console`");
    };
    let Some(token) = discord.token.clone() else {
        bail!("DISCORD_TOKEN is not set; put the bot token from the Discord developer portal in that environment variable");
    };
    Ok((discord, token))
}

/// Runs the bot until `shutdown` is cancelled or the gateway gives up.
pub async fn run(
    config: Arc<Config>,
    app: Arc<App>,
    outputs: mpsc::UnboundedReceiver<Output>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (discord, token) = settings(&config)?;
    let http = http(&discord, token.expose());
    // Shared by the renderer and the handler's catch-up, so they hold Discord's limits together.
    let outbox = render::Inboxes::default();
    let pacer = Arc::new(pace::Pacer::default());
    let bot = Arc::new(handler::Bot::new(
        config.clone(),
        discord.clone(),
        app.clone(),
        shutdown.clone(),
        outbox.clone(),
        pacer.clone(),
    ));
    let mut client = ClientBuilder::new_with_http(http, intents())
        .event_handler_arc(bot.clone())
        .await
        .context("building the Discord client")?;
    let links = render::Links {
        redactor: crate::redact::Redactor::from_config(&config),
        config: config.clone(),
        github: app.github().clone(),
    };
    let renderer = tokio::spawn(render::run(
        client.http.clone(),
        discord,
        links,
        outputs,
        outbox,
        pacer,
    ));
    // Pull requests merged or closed on GitHub move their features, every ten minutes.
    let refresher = {
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => app.handle(crate::core::protocol::Input::RefreshPullRequests).await,
                    () = stop.cancelled() => break,
                }
            }
        })
    };
    let shards = client.shard_manager.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        shards.shutdown_all().await;
    });
    tracing::info!("connecting to Discord");
    let result = client.start().await;
    shutdown.cancel();
    app.shutdown().await;
    refresher.abort();
    renderer.abort();
    result.context("the Discord connection failed; check DISCORD_TOKEN and discord.api_base")
}

/// The REST client. A custom `api_base` goes through serenity's proxy setting, which needs the
/// rate limiter off (serenity's limiter would still call discord.com).
fn http(discord: &DiscordConfig, token: &str) -> serenity::http::Http {
    let builder = HttpBuilder::new(token);
    match &discord.api_base {
        Some(base) => builder
            .proxy(base.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build(),
        None => builder.build(),
    }
}
