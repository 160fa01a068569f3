//! The real Discord bot started against the in-process fakes (Discord, LLM, GitHub) and a
//! temporary git repository, with helpers to drive it the way people do.

use std::sync::Arc;
use std::time::Duration;

use featurebot::config::{Config, DiscordConfig, PromptsConfig, Secret, StoreConfig};
use featurebot::startup::{self, Services};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::fake_discord::{FakeDiscord, ADMIN_ROLE, CHANNEL_ID, GUILD_ID};
use super::fake_github::FakeGithub;
use super::fake_llm::{Api, FakeLlm, Reply};
use super::git::{repo_config, repo_with_remote, TestRepo};
use super::scripts::GOOD_PLAN;

pub const ADMIN: u64 = 5001;
pub const STRANGER: u64 = 5002;

pub struct Bot {
    pub discord: FakeDiscord,
    pub github: FakeGithub,
    pub llm: FakeLlm,
    pub repo: TestRepo,
    pub config: Arc<Config>,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bot {
    pub async fn start() -> Bot {
        Bot::start_with(|_| {}).await
    }

    pub async fn start_with(change: impl FnOnce(&mut DiscordConfig)) -> Bot {
        Bot::start_configured(|c| {
            if let Some(d) = c.discord.as_mut() {
                change(d);
            }
        })
        .await
    }

    pub async fn start_configured(change: impl FnOnce(&mut Config)) -> Bot {
        let discord = FakeDiscord::start().await;
        discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
        discord.add_member(STRANGER, "mallory", &[]);
        let llm = FakeLlm::start(Api::OpenAi).await;
        let repo = repo_with_remote("main");
        let github = FakeGithub::start("acme", "shop").await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            llm: llm.llm_config(),
            repo: repo_config(&repo),
            store: StoreConfig {
                path: dir.path().join("store"),
            },
            prompts: PromptsConfig { dir: None },
            discord: Some(DiscordConfig {
                guild_id: GUILD_ID,
                feature_channels: vec![CHANNEL_ID],
                admin_roles: vec![ADMIN_ROLE],
                admin_users: vec![],
                api_base: Some(url::Url::parse(&discord.api_base()).unwrap()),
                stream_edit_interval: Duration::from_millis(200),
                token: Some(Secret::new(discord.token())),
            }),
            github: Some(github.config()),
            targets: Vec::new(),
            agent: featurebot::config::AgentConfig::with_defaults(&dir.path().join("store")),
        };
        change(&mut config);
        let config = Arc::new(config);
        let (shutdown, task) = launch(&config).await;
        discord.wait_ready().await;
        let bot = Bot {
            discord,
            github,
            llm,
            repo,
            config,
            _dir: dir,
            shutdown,
            task,
        };
        bot.wait_for("the slash command", |b| !b.discord.commands().is_empty())
            .await;
        bot
    }

    /// Stops the bot, lets `while_down` happen, and starts it again on the same store.
    pub async fn restart(mut self, while_down: impl FnOnce(&FakeDiscord)) -> Bot {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
        while_down(&self.discord);
        let (shutdown, task) = launch(&self.config).await;
        self.shutdown = shutdown;
        self.task = task;
        self.discord.wait_ready().await;
        self
    }

    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Bot) -> bool) {
        super::wait::eventually(what, Duration::from_secs(20), || condition(self)).await;
    }

    pub fn thread_id(&self) -> u64 {
        let threads = self.discord.threads();
        assert_eq!(threads.len(), 1, "{threads:?}");
        id_of(&threads[0]["id"])
    }

    /// The bot's messages in the feature thread, in order.
    pub fn bot_messages(&self) -> Vec<Value> {
        self.discord
            .messages(self.thread_id())
            .into_iter()
            .filter(|m| m["author"]["bot"] == true)
            .collect()
    }

    pub fn message_with_button(&self, prefix: &str) -> Option<(u64, String)> {
        self.bot_messages().iter().rev().find_map(|m| {
            let id = custom_ids(m).into_iter().find(|c| c.starts_with(prefix))?;
            Some((id_of(&m["id"]), id))
        })
    }

    /// `/feature title:<title>` by `user` in the feature channel.
    pub async fn feature(&self, user: u64, title: &str) -> super::fake_discord::Interaction {
        self.discord
            .slash_command(
                user,
                CHANNEL_ID,
                "feature",
                json!([{"name": "title", "type": 3, "value": title}]),
            )
            .await
    }

    /// Runs `/feature` and waits for the first question in the new thread.
    pub async fn started(&self, title: &str) -> u64 {
        self.feature(ADMIN, title).await;
        self.wait_for("the thread", |b| b.discord.threads().len() == 1)
            .await;
        self.wait_for("the first question", |b| {
            b.bot_messages()
                .iter()
                .any(|m| m["content"].as_str().unwrap_or("").contains("Which format"))
        })
        .await;
        self.thread_id()
    }

    /// Takes a started feature to confirmed: the Generate plan button is there.
    pub async fn confirmed(&self, thread: u64) {
        self.discord
            .user_message(ADMIN, thread, "CSV, from the dashboard")
            .await;
        self.wait_for("the confirmation buttons", |b| {
            b.message_with_button("fb:plan:").is_some()
        })
        .await;
    }
}

async fn launch(
    config: &Arc<Config>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let store = crate::support::reopen_store(&config.store.path);
    let services = Services::with_store(config, store).unwrap();
    let (app, outputs) = startup::app(config.clone(), services);
    app.recover_runs().await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(featurebot::discord::run(
        config.clone(),
        Arc::new(app),
        outputs,
        shutdown.clone(),
    ));
    (shutdown, task)
}

pub fn id_of(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_u64().unwrap(),
        other => panic!("not an id: {other}"),
    }
}

pub fn custom_ids(message: &Value) -> Vec<String> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["custom_id"].as_str().map(str::to_string))
        .collect()
}

pub fn contents(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn script_conversation(llm: &FakeLlm) {
    llm.push(Reply::Text(
        "Which format should the export use?".to_string(),
    ));
    llm.push(Reply::Text(
        "CONFIRMED\n- export the orders table as CSV".to_string(),
    ));
}

/// Takes a feature to a committed plan and returns the plan message's id.
pub async fn planned(bot: &Bot) -> u64 {
    script_conversation(&bot.llm);
    let thread = bot.started("Export CSV").await;
    bot.confirmed(thread).await;
    bot.llm.push(Reply::Text(GOOD_PLAN.to_string()));
    let (message, id) = bot.message_with_button("fb:plan:").unwrap();
    bot.discord.click(ADMIN, message, &id).await;
    bot.wait_for("the plan", |b| {
        b.message_with_button("fb:approve:1:1").is_some()
    })
    .await;
    bot.message_with_button("fb:approve:1:1").unwrap().0
}
