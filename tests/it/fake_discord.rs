//! The fake Discord against a real serenity client: the smoke tests that show the fake speaks
//! the protocol well enough for serenity (every event reaches the handler, every REST answer
//! parses) and enforces the rules a bot must respect.
//!
//! The bot here is a tiny `EventHandler` written for these tests: it registers two commands on
//! READY, answers `/feature` with a deferral and a follow-up, answers `/plan` by opening a
//! private thread with a file and a button, updates the message when the button is clicked,
//! ignores `/ignored`, and echoes messages that start with `echo `.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use serenity::all::{
    ApplicationId, ButtonStyle, ChannelId, ChannelType, ClientBuilder, CommandInteraction,
    CommandOptionType, ComponentInteraction, Context, CreateActionRow, CreateAttachment,
    CreateButton, CreateCommand, CreateCommandOption, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage,
    CreateThread, EditInteractionResponse, EditMessage, Event, EventHandler, GatewayIntents,
    GetMessages, GuildId, HttpBuilder, InteractionId, Message, MessageId, Ready, RoleId,
    ShardManager, UserId,
};
use serenity::http::{Http, HttpError};

use crate::support::fake_discord::{FakeDiscord, ADMIN_ROLE, APP_ID, BOT_ID, CHANNEL_ID, GUILD_ID};
use crate::support::wait::eventually_some;

const ALICE: u64 = 4242;
const BOB: u64 = 4343;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connects_and_registers_commands() {
    let fake = FakeDiscord::start().await;
    let bot = Bot::start(&fake).await;

    let commands = bot
        .until("the commands", || {
            let commands = fake.commands();
            (commands.len() == 2).then_some(commands)
        })
        .await;
    assert_eq!(commands[0]["name"], "feature");
    assert_eq!(commands[0]["options"][0]["name"], "idea");
    assert_eq!(commands[1]["name"], "plan");
    assert_eq!(commands[0]["application_id"], APP_ID.to_string());
    assert_eq!(commands[0]["guild_id"], GUILD_ID.to_string());
    let put = format!("/api/v10/applications/{APP_ID}/guilds/{GUILD_ID}/commands");
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.method == "PUT" && r.path == put && r.body[0]["name"] == "feature"));
    assert_eq!((fake.identifies(), fake.resumes()), (1, 0));

    let wrong = HttpBuilder::new("not-the-token")
        .proxy(fake.api_base())
        .ratelimiter_disabled(true)
        .build();
    assert_eq!(refusal(wrong.get_current_user().await), (401, 0));
    let me = http(&fake).get_current_user().await.unwrap();
    assert_eq!(me.id, UserId::new(BOT_ID));

    // A route the fake does not know answers 404 and is recorded, so surprises are visible.
    let surprise = http(&fake).get_guild(GuildId::new(GUILD_ID)).await;
    assert_eq!(refusal(surprise).0, 404);
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("GET", format!("/api/v10/guilds/{GUILD_ID}").as_str(), 404)
    );
    assert_events_parse(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_command_is_deferred_then_followed_up_and_the_rules_hold() {
    let fake = FakeDiscord::start().await;
    fake.add_member(ALICE, "alice", &[ADMIN_ROLE]);
    let bot = Bot::start(&fake).await;
    bot.until("the commands", || {
        (fake.commands().len() == 2).then_some(())
    })
    .await;

    let asked = fake
        .slash_command(ALICE, CHANNEL_ID, "feature", json!({"idea": "dark mode"}))
        .await;
    let command = bot.until("the command", || bot.command(asked.id)).await;
    assert_eq!(command.user.id, UserId::new(ALICE));
    let member = command.member.as_ref().unwrap();
    assert!(member.roles.contains(&RoleId::new(ADMIN_ROLE)));
    assert_eq!(command.channel_id, ChannelId::new(CHANNEL_ID));
    assert_eq!(command.guild_id, Some(GuildId::new(GUILD_ID)));
    assert_eq!(command.data.name, "feature");
    assert_eq!(command.data.options[0].value.as_str(), Some("dark mode"));

    let responses = bot
        .until("the follow-up", || {
            let responses = fake.responses(&asked);
            (responses.len() == 2).then_some(responses)
        })
        .await;
    assert_eq!(responses[0]["kind"], "callback");
    assert_eq!(responses[0]["type"], 5);
    assert_eq!(responses[0]["status"], 204);
    assert!(responses[0]["delay_ms"].as_u64().unwrap() < 3000);
    assert_eq!(responses[1]["kind"], "followup");
    assert_eq!(responses[1]["status"], 200);
    // The follow-up replaced the loading message rather than adding one.
    let messages = fake.messages(CHANNEL_ID);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["content"], "noted: dark mode");
    assert_eq!(messages[0]["flags"], 0);
    assert_eq!(messages[0]["author"]["id"], BOT_ID.to_string());
    assert_eq!(responses[1]["message_id"], messages[0]["id"]);
    let callback = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/callback"))
        .unwrap();
    assert!(callback.at >= asked.dispatched_at);

    let http = http(&fake);
    let again = json!({"type": 4, "data": {"content": "again"}});
    let second = http
        .create_interaction_response(InteractionId::new(asked.id), &asked.token, &again, vec![])
        .await;
    assert_eq!(refusal(second), (400, 40060));

    let ignored = fake
        .slash_command(ALICE, CHANNEL_ID, "ignored", Value::Null)
        .await;
    bot.until("the ignored command", || bot.command(ignored.id))
        .await;
    fake.age_interaction(&ignored, Duration::from_millis(3100));
    let late = http
        .create_interaction_response(
            InteractionId::new(ignored.id),
            &ignored.token,
            &again,
            vec![],
        )
        .await;
    assert_eq!(refusal(late), (404, 10062));
    let tried = fake.responses(&ignored);
    assert_eq!(tried.len(), 1);
    assert_eq!(tried[0]["status"], 404);
    assert!(tried[0]["delay_ms"].as_u64().unwrap() >= 3000);
    assert_eq!(fake.messages(CHANNEL_ID).len(), 1);

    // Follow-ups and edits work for 15 minutes, then the token is dead.
    fake.age_interaction(&asked, Duration::from_secs(15 * 60 + 1));
    http.set_application_id(ApplicationId::new(APP_ID));
    let stale = http
        .create_followup_message(&asked.token, &json!({"content": "late"}), vec![])
        .await;
    assert_eq!(refusal(stale), (401, 50027));
    assert_events_parse(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_decide_what_the_gateway_shows() {
    let fake = FakeDiscord::start().await;
    fake.add_member(BOB, "bob", &[ADMIN_ROLE]);
    let bot = Bot::start_with(
        &fake,
        GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES,
    )
    .await;

    // Without MESSAGE_CONTENT, others' messages arrive empty unless they mention the bot.
    let secret = fake.user_message(BOB, CHANNEL_ID, "echo secret").await;
    let seen = bot.until("the message", || bot.message(secret)).await;
    assert_eq!(seen.content, "");
    let mention = format!("<@{BOT_ID}> echo hi");
    let called = fake.user_message(BOB, CHANNEL_ID, &mention).await;
    let seen = bot.until("the mention", || bot.message(called)).await;
    assert_eq!(seen.content, mention);

    // Without GUILD_PRESENCES, GUILD_CREATE lists only the bot among the members.
    let guild = fake
        .dispatches()
        .into_iter()
        .find(|f| f["t"] == "GUILD_CREATE")
        .unwrap();
    let members = guild["d"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["user"]["id"], BOT_ID.to_string());
    assert_events_parse(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_thread_gets_a_file_and_a_button_that_can_be_clicked() {
    let fake = FakeDiscord::start().await;
    fake.add_member(ALICE, "alice", &[]);
    let bot = Bot::start(&fake).await;
    bot.until("the commands", || {
        (fake.commands().len() == 2).then_some(())
    })
    .await;

    let asked = fake
        .slash_command(ALICE, CHANNEL_ID, "plan", Value::Null)
        .await;
    bot.until("the answer", || {
        fake.responses(&asked)
            .iter()
            .any(|r| r["kind"] == "edit_original" && r["status"] == 200)
            .then_some(())
    })
    .await;

    let threads = fake.threads();
    assert_eq!(threads.len(), 1);
    let thread = &threads[0];
    assert_eq!(thread["type"], 12);
    assert_eq!(thread["name"], "plan: dark mode");
    assert_eq!(thread["parent_id"], CHANNEL_ID.to_string());
    assert_eq!(thread["members"], json!([BOT_ID, ALICE]));
    assert_eq!(thread["archived"], false);
    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/api/v10/channels/{CHANNEL_ID}/threads"))
        .unwrap();
    assert_eq!(create.body["type"], 12, "{:?}", create.body);

    let thread_id: u64 = thread["id"].as_str().unwrap().parse().unwrap();
    let posted = fake.messages(thread_id);
    assert_eq!(posted.len(), 1);
    let plan = &posted[0];
    assert_eq!(plan["content"], "plan v2");
    assert!(!plan["edited_timestamp"].is_null());
    assert_eq!(plan["attachments"][0]["filename"], "plan.md");
    assert_eq!(plan["attachments"][0]["content"], "# Plan\n\n1. search\n");
    assert_eq!(
        plan["components"][0]["components"][0]["custom_id"],
        "approve"
    );
    let upload = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with(&format!("{thread_id}/messages")))
        .unwrap();
    assert_eq!(upload.body["attachments"][0]["filename"], "plan.md");

    // The answer was ephemeral: stored with flag 64, never dispatched.
    let responses = fake.responses(&asked);
    assert_eq!(responses[0]["type"], 5);
    assert_eq!(responses[0]["body"]["data"]["flags"], 64);
    let answer = fake.messages(CHANNEL_ID).pop().unwrap();
    assert_eq!(answer["flags"], 64);
    assert_eq!(answer["content"], format!("see <#{thread_id}>"));
    assert!(!fake
        .dispatches()
        .iter()
        .any(|f| f["t"] == "MESSAGE_CREATE" && f["d"]["id"] == answer["id"]));

    let plan_id: u64 = plan["id"].as_str().unwrap().parse().unwrap();
    let clicked = fake.click(ALICE, plan_id, "approve").await;
    let component = bot.until("the click", || bot.component(clicked.id)).await;
    assert_eq!(component.user.id, UserId::new(ALICE));
    assert_eq!(component.message.id, MessageId::new(plan_id));
    let updated = bot
        .until("the update", || {
            let message = fake.messages(thread_id).pop()?;
            (message["content"] == "approved").then_some(message)
        })
        .await;
    assert_eq!(updated["components"], json!([]));
    // serenity's UpdateMessage always sends `"attachments": []`, which removes the file
    // (serenity-rs/serenity#3068); a bot that must keep it acknowledges (6) and edits.
    assert_eq!(updated["attachments"], json!([]));
    assert_eq!(fake.responses(&clicked)[0]["type"], 7);
    assert_events_parse(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_messages_reach_the_handler_and_so_do_the_bots_own() {
    let fake = FakeDiscord::start().await;
    fake.add_member(BOB, "bob", &[ADMIN_ROLE]);
    let bot = Bot::start(&fake).await;

    let id = fake.user_message(BOB, CHANNEL_ID, "echo hello").await;
    let seen = bot.until("the message", || bot.message(id)).await;
    assert_eq!(seen.content, "echo hello");
    assert_eq!(seen.author.id, UserId::new(BOB));
    assert!(!seen.author.bot);
    assert_eq!(seen.guild_id, Some(GuildId::new(GUILD_ID)));
    let member = seen.member.as_ref().unwrap();
    assert!(member.roles.contains(&RoleId::new(ADMIN_ROLE)));

    let own = bot
        .until("the bot's own message", || {
            bot.messages()
                .into_iter()
                .find(|m| m.author.id == UserId::new(BOT_ID))
        })
        .await;
    assert!(own.author.bot);
    assert_eq!(own.content, "you said hello");
    assert_eq!(fake.messages(CHANNEL_ID).len(), 2);
    assert_eq!(fake.typing_count(CHANNEL_ID), 1);
    assert_events_parse(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_and_replays_what_was_missed() {
    let fake = FakeDiscord::start().await;
    fake.add_member(BOB, "bob", &[]);
    let bot = Bot::start(&fake).await;

    let first = fake.user_message(BOB, CHANNEL_ID, "one").await;
    bot.until("the first message", || bot.message(first)).await;

    fake.drop_connection().await;
    let second = fake.user_message(BOB, CHANNEL_ID, "two").await;
    fake.wait_ready().await;
    bot.until("the missed message", || bot.message(second))
        .await;
    assert_eq!((fake.identifies(), fake.resumes()), (1, 1));
    assert_eq!(bot.count(second), 1);

    // Discord may deliver an event twice; the handler sees the same message again.
    fake.replay_last_dispatch().await;
    bot.until("the duplicate", || (bot.count(second) == 2).then_some(()))
        .await;

    let third = fake.user_message_offline(BOB, CHANNEL_ID, "three");
    let after = ChannelId::new(CHANNEL_ID)
        .messages(
            &http(&fake),
            GetMessages::new().after(MessageId::new(first)).limit(10),
        )
        .await
        .unwrap();
    let ids: Vec<u64> = after.iter().map(|m| m.id.get()).collect();
    assert_eq!(ids, vec![third, second], "newest first");
    assert_eq!(after[0].content, "three");
    assert_eq!(bot.count(third), 0);
    assert_events_parse(&fake);
}

#[tokio::test]
async fn discords_limits_are_enforced() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    let channel = ChannelId::new(CHANNEL_ID);
    let send = |body: Value| {
        let http = &http;
        async move { http.send_message(channel, vec![], &body).await }
    };
    let button =
        |id: String, label: &str| json!({"type": 2, "style": 1, "custom_id": id, "label": label});
    let row = |n: usize| json!({"type": 1, "components": (0..n).map(|i| button(format!("b{i}"), "ok")).collect::<Vec<_>>()});

    assert_eq!(
        refusal(send(json!({"content": "x".repeat(2001)})).await),
        (400, 50035)
    );
    assert_eq!(refusal(send(json!({})).await), (400, 50006));
    assert_eq!(refusal(send(json!({"content": "  "})).await), (400, 50006));
    let six_rows: Vec<Value> = (0..6)
        .map(|r| json!({"type": 1, "components": [button(format!("r{r}"), "ok")]}))
        .collect();
    assert_eq!(
        refusal(send(json!({"content": "x", "components": six_rows})).await),
        (400, 50035)
    );
    assert_eq!(
        refusal(send(json!({"components": [row(6)]})).await),
        (400, 50035)
    );
    let long_id = json!({"type": 1, "components": [button("i".repeat(101), "ok")]});
    assert_eq!(
        refusal(send(json!({"components": [long_id]})).await),
        (400, 50035)
    );
    let long_label = json!({"type": 1, "components": [button("b".into(), &"l".repeat(81))]});
    assert_eq!(
        refusal(send(json!({"components": [long_label]})).await),
        (400, 50035)
    );
    let twins =
        json!({"type": 1, "components": [button("b".into(), "1"), button("b".into(), "2")]});
    assert_eq!(
        refusal(send(json!({"components": [twins]})).await),
        (400, 50035)
    );
    let big_embed = json!({"title": "t", "description": "d".repeat(4097)});
    assert_eq!(
        refusal(send(json!({"embeds": [big_embed]})).await),
        (400, 50035)
    );
    let private = |name: String| CreateThread::new(name).kind(ChannelType::PrivateThread);
    let thread = channel.create_thread(&http, private("n".repeat(101))).await;
    assert_eq!(refusal(thread), (400, 50035));
    // A thread without a starting message needs its type: the default is going away.
    let untyped = channel.create_thread(&http, CreateThread::new("n")).await;
    match untyped {
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(response))) => {
            assert_eq!(response.status_code.as_u16(), 400);
            assert_eq!(response.error.code, 50035);
            assert_eq!(response.error.message, "Invalid Form Body");
            let error = &response.error.errors[0];
            assert_eq!(
                (
                    error.path.as_str(),
                    error.code.as_str(),
                    error.message.as_str()
                ),
                ("type", "BASE_TYPE_REQUIRED", "This field is required")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fake.messages(CHANNEL_ID).is_empty());
    assert!(fake.threads().is_empty());

    // Within the limits, everything is accepted and parses.
    let fine = send(json!({"content": "x".repeat(2000), "components": [row(5)]}))
        .await
        .unwrap();
    assert_eq!(fine.components[0].components.len(), 5);
    let thread = channel
        .create_thread(&http, private("n".repeat(100)))
        .await
        .unwrap();
    assert_eq!(thread.kind, serenity::all::ChannelType::PrivateThread);
}

/// The test bot: a handle on what its handler saw.
struct Bot {
    seen: Arc<Mutex<Vec<Seen>>>,
    _shards: Arc<ShardManager>,
}

#[derive(Clone)]
enum Seen {
    Command(Box<CommandInteraction>),
    Component(Box<ComponentInteraction>),
    Message(Box<Message>),
    /// A serenity call in the handler failed (often a payload it could not parse).
    Failure(String),
}

impl Bot {
    /// Starts a real serenity client against the fake and waits until it is connected.
    async fn start(fake: &FakeDiscord) -> Bot {
        let intents = GatewayIntents::GUILDS
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT
            | GatewayIntents::GUILD_MEMBERS;
        Bot::start_with(fake, intents).await
    }

    async fn start_with(fake: &FakeDiscord, intents: GatewayIntents) -> Bot {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let http = HttpBuilder::new(fake.token())
            .proxy(fake.api_base())
            .ratelimiter_disabled(true)
            .build();
        let handler = Handler { seen: seen.clone() };
        let mut client = ClientBuilder::new_with_http(http, intents)
            .event_handler(handler)
            .await
            .unwrap();
        let shards = client.shard_manager.clone();
        tokio::spawn(async move { client.start().await });
        fake.wait_ready().await;
        Bot {
            seen,
            _shards: shards,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn command(&self, id: u64) -> Option<CommandInteraction> {
        self.seen().into_iter().find_map(|s| match s {
            Seen::Command(c) if c.id.get() == id => Some(*c),
            _ => None,
        })
    }

    fn component(&self, id: u64) -> Option<ComponentInteraction> {
        self.seen().into_iter().find_map(|s| match s {
            Seen::Component(c) if c.id.get() == id => Some(*c),
            _ => None,
        })
    }

    fn messages(&self) -> Vec<Message> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Message(m) => Some(*m),
                _ => None,
            })
            .collect()
    }

    fn message(&self, id: u64) -> Option<Message> {
        self.messages().into_iter().find(|m| m.id.get() == id)
    }

    /// How many times the handler saw the message with this id.
    fn count(&self, id: u64) -> usize {
        self.messages().iter().filter(|m| m.id.get() == id).count()
    }

    /// Polls `check` until it gives a value; fails at once if the handler failed, and after
    /// ten seconds otherwise.
    async fn until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        eventually_some(what, Duration::from_secs(10), || {
            let value = check();
            if value.is_none() {
                let failure = self.seen().into_iter().find_map(|s| match s {
                    Seen::Failure(f) => Some(f),
                    _ => None,
                });
                if let Some(failure) = failure {
                    panic!("waiting for {what}: the handler failed: {failure}");
                }
            }
            value
        })
        .await
    }
}

struct Handler {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Handler {
    fn push(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn check(&self, what: &str, result: serenity::Result<()>) {
        if let Err(err) = result {
            self.push(Seen::Failure(format!("{what}: {err:?}")));
        }
    }

    async fn answer(&self, ctx: &Context, command: &CommandInteraction) -> serenity::Result<()> {
        match command.data.name.as_str() {
            "feature" => {
                command.defer(&ctx.http).await?;
                let idea = command.data.options[0].value.as_str().unwrap_or_default();
                let followup =
                    CreateInteractionResponseFollowup::new().content(format!("noted: {idea}"));
                command.create_followup(&ctx.http, followup).await?;
            }
            "plan" => {
                command.defer_ephemeral(&ctx.http).await?;
                let parent = ChannelId::new(CHANNEL_ID);
                let thread = parent
                    .create_thread(
                        &ctx.http,
                        CreateThread::new("plan: dark mode").kind(ChannelType::PrivateThread),
                    )
                    .await?;
                thread
                    .id
                    .add_thread_member(&ctx.http, command.user.id)
                    .await?;
                let file = CreateAttachment::bytes(b"# Plan\n\n1. search\n".to_vec(), "plan.md");
                let buttons = CreateActionRow::Buttons(vec![CreateButton::new("approve")
                    .label("Approve")
                    .style(ButtonStyle::Success)]);
                let message = CreateMessage::new()
                    .content("plan v1")
                    .add_file(file)
                    .components(vec![buttons]);
                let mut posted = thread.id.send_message(&ctx.http, message).await?;
                posted
                    .edit(&ctx.http, EditMessage::new().content("plan v2"))
                    .await?;
                let answer =
                    EditInteractionResponse::new().content(format!("see <#{}>", thread.id));
                command.edit_response(&ctx.http, answer).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, _: Ready) {
        let idea = CreateCommandOption::new(CommandOptionType::String, "idea", "What to build")
            .required(true);
        let commands = vec![
            CreateCommand::new("feature")
                .description("Propose a feature")
                .add_option(idea),
            CreateCommand::new("plan").description("Write a plan"),
        ];
        let result = GuildId::new(GUILD_ID)
            .set_commands(&ctx.http, commands)
            .await;
        self.check("registering commands", result.map(|_| ()));
    }

    async fn interaction_create(&self, ctx: Context, interaction: serenity::all::Interaction) {
        match interaction {
            serenity::all::Interaction::Command(command) => {
                self.push(Seen::Command(Box::new(command.clone())));
                let result = self.answer(&ctx, &command).await;
                self.check("answering a command", result);
            }
            serenity::all::Interaction::Component(component) => {
                self.push(Seen::Component(Box::new(component.clone())));
                let update = CreateInteractionResponseMessage::new()
                    .content("approved")
                    .components(vec![]);
                let result = component
                    .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(update))
                    .await;
                self.check("answering a click", result);
            }
            _ => {}
        }
    }

    async fn message(&self, ctx: Context, message: Message) {
        self.push(Seen::Message(Box::new(message.clone())));
        if let Some(said) = message.content.strip_prefix("echo ") {
            if !message.author.bot {
                let typing = message.channel_id.broadcast_typing(&ctx.http).await;
                self.check("typing", typing);
                let reply = message
                    .channel_id
                    .say(&ctx.http, format!("you said {said}"));
                self.check("echoing", reply.await.map(|_| ()));
            }
        }
    }
}

/// A serenity `Http` for the test itself, built the way the bot builds its own.
fn http(fake: &FakeDiscord) -> Http {
    HttpBuilder::new(fake.token())
        .proxy(fake.api_base())
        .ratelimiter_disabled(true)
        .build()
}

/// The status and Discord error code of a refused request.
fn refusal<T: std::fmt::Debug>(result: serenity::Result<T>) -> (u16, isize) {
    match result {
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(response))) => {
            (response.status_code.as_u16(), response.error.code)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every dispatch the fake sent parses as an event serenity knows, so none was silently
/// dropped as `Event::Unknown`.
fn assert_events_parse(fake: &FakeDiscord) {
    let dispatches = fake.dispatches();
    assert!(!dispatches.is_empty());
    for frame in dispatches {
        let event = json!({"t": frame["t"], "d": frame["d"]});
        match serde_json::from_value::<Event>(event) {
            Ok(Event::Unknown(_)) | Err(_) => panic!("serenity cannot parse {frame:#}"),
            Ok(_) => {}
        }
    }
}
