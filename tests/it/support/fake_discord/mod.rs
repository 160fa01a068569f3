//! An in-process fake Discord: the REST API on one 127.0.0.1 port and the gateway websocket on
//! another, so that tests drive a real serenity client at the wire.
//!
//! The fake holds one guild ([`GUILD_ID`]) with one text channel ([`CHANNEL_ID`]), the bot
//! ([`BOT_ID`], application [`APP_ID`]) and whatever members a test adds. Tests act as Discord's
//! users (`slash_command`, `click`, `user_message`) and then read the state the bot left behind
//! (`messages`, `threads`, `responses`, `requests`). Payloads have the real shapes, snowflakes are
//! strings, and the rules a bot trips over are enforced the way Discord enforces them: the
//! three-second interaction window, one callback per interaction, a thread's `type` required,
//! message and component limits, empty messages, ephemeral messages that never reach the gateway.
//!
//! The REST server is the hand-written HTTP/1.1 of [`super::http`]: one request per connection,
//! `Connection: close`, every request recorded, unknown routes answered with a 404 that names
//! them. The gateway keeps sessions the way Discord does: every dispatch is logged per session
//! with its sequence number, a dropped connection leaves the session resumable, and a RESUME
//! replays what the client missed. Frames are plain JSON text (no zlib).
//!
//! Rate limits are off unless a test or bench asks for them ([`FakeDiscord::limit_rates`]); then
//! the fake limits like Discord: a global bucket per bot (interaction callbacks and follow-ups
//! exempt), a bucket per route and top-level resource (message creates and message edits per
//! channel), `X-RateLimit-*` headers on every answer, and a real 429 when a bucket is empty.
//!
//! The fake is a folder: this file is the API the tests use ([`FakeDiscord`], its constants and
//! types). `state` holds the guild, its members, channels, threads and messages; `rest` reads,
//! records and routes REST requests, with the application commands; `channels` serves the
//! channel, thread and message routes and `messages` makes and edits the bot's messages within
//! Discord's limits; `interactions` has the interaction callbacks, follow-ups, webhook edits and
//! token lifetimes; `gateway` the websocket sessions and RESUME replays; `limits` the rate
//! limiter.

mod channels;
mod gateway;
mod interactions;
mod limits;
mod messages;
mod rest;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http;
use channels::create_thread;
use gateway::{serve_gateway, Out};
use interactions::{buttons, command_options};
use limits::Limiter;
use rest::serve_rest;
use state::{is_thread, sf, timestamp, MemberInfo, State};

/// The one guild the bot is in.
pub const GUILD_ID: u64 = 1_100_000_000_000_000_001;
/// A text channel (`#general`) in the guild.
pub const CHANNEL_ID: u64 = 1_100_000_000_000_000_002;
/// A second text channel of the guild ("product").
pub const SECOND_CHANNEL_ID: u64 = 1_100_000_000_000_000_006;
/// The bot's user id.
pub const BOT_ID: u64 = 1_100_000_000_000_000_003;
/// The application id (deliberately not the bot's user id, so that mixing them up fails).
pub const APP_ID: u64 = 1_100_000_000_000_000_004;
/// A role with the Administrator permission.
pub const ADMIN_ROLE: u64 = 1_100_000_000_000_000_005;

/// A running fake; clones share it, and the servers stop when the last clone is dropped.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
    _servers: Arc<[http::Server; 2]>,
}

/// An interaction the fake dispatched.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
    pub dispatched_at: Instant,
}

/// One REST request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path as sent, with `/api/v10` and the query string.
    pub path: String,
    /// The JSON body (for multipart, the `payload_json` part); `Null` when empty, a string when
    /// not JSON.
    pub body: Value,
    /// When the request had been read in full.
    pub at: Instant,
    /// The HTTP status the fake answered (0 if it never did).
    pub status: u16,
}

/// The rate limits the fake applies once [`FakeDiscord::limit_rates`] is called. Windows are
/// Discord's: a bucket's window opens with its first request and refills when it ends.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Requests per second per bot, over all routes but interaction callbacks and follow-ups.
    pub global_per_second: u32,
    /// Message creates per channel in `message_window`, and as many message edits (a bucket of
    /// their own).
    pub messages: u32,
    pub message_window: Duration,
}

impl RateLimits {
    /// What Discord applies to a bot in practice: 50 requests per second, and 5 message creates
    /// and 5 message edits per channel per 5 seconds.
    pub const DISCORD: RateLimits = RateLimits {
        global_per_second: 50,
        messages: 5,
        message_window: Duration::from_secs(5),
    };
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let ws_url = format!("ws://{}", gateway.local_addr().unwrap());
        let (live, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            api_addr,
            state: Mutex::new(State::new(ws_url)),
            live,
        });
        let rest = http::serve(api, inner.clone(), |socket, inner| async move {
            // A client that hangs up early is not the fake's problem.
            let _ = serve_rest(socket, &inner).await;
        });
        let ws = http::serve(gateway, inner.clone(), serve_gateway);
        FakeDiscord {
            inner,
            _servers: Arc::new([rest, ws]),
        }
    }

    /// The base to hand to `HttpBuilder::proxy`; serenity appends `/api/v10/...`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.inner.api_addr)
    }

    /// The bot token the fake accepts (`Bot <token>` on REST, with or without `Bot ` on IDENTIFY).
    pub fn token(&self) -> &str {
        TOKEN
    }

    /// Adds a (human) member to the guild with these roles.
    pub fn add_member(&self, user_id: u64, name: &str, roles: &[u64]) {
        let mut st = self.inner.lock();
        let joined_at = timestamp();
        st.members.insert(
            user_id,
            MemberInfo {
                name: name.to_string(),
                roles: roles.to_vec(),
                bot: false,
                joined_at,
            },
        );
    }

    /// Creates a private thread under `parent` as if the bot had made it earlier (dispatched to
    /// nobody when no client is connected); returns its id.
    #[allow(dead_code)] // Used by benches/discord.rs, not by the tests.
    pub fn add_thread(&self, parent: u64, name: &str) -> u64 {
        let mut st = self.inner.lock();
        create_thread(&mut st, parent, None, &json!({"name": name, "type": 12}));
        let id = st.last_id;
        assert!(
            st.channels.contains_key(&id),
            "fake discord: no thread {name:?} was created under {parent}"
        );
        id
    }

    /// Waits until a client is connected: it IDENTIFYed and was sent READY and GUILD_CREATE, or it
    /// RESUMEd. Right after [`FakeDiscord::drop_connection`] this waits for the reconnection.
    pub async fn wait_ready(&self) {
        let mut live = self.inner.live.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(20), live.wait_for(|n| *n > 0));
        if !matches!(waited.await, Ok(Ok(_))) {
            panic!(
                "fake discord: no client connected within 20 s; requests so far: {:#?}",
                self.requests()
            );
        }
    }

    /// Dispatches INTERACTION_CREATE for a slash command typed by `user_id` in `channel_id`.
    ///
    /// `options` is either Discord's own array (`[{"name", "type", "value"}]`) or an object of
    /// name to value; for an object, each type comes from the registered command's option of that
    /// name, or else from the JSON value (string 3, integer 4, boolean 5, other number 10).
    pub async fn slash_command(
        &self,
        user_id: u64,
        channel_id: u64,
        name: &str,
        options: Value,
    ) -> Interaction {
        let mut st = self.inner.lock();
        st.require_session("slash_command");
        let registered = st.commands.iter().find(|c| c["name"] == name).cloned();
        let command_id = match &registered {
            Some(command) => state::id_of(&command["id"]),
            None => st.next_id(),
        };
        let options = command_options(options, registered.as_ref());
        let data = json!({
            "id": sf(command_id),
            "name": name,
            "type": 1,
            "options": options,
            "guild_id": sf(GUILD_ID),
        });
        st.dispatch_interaction(2, user_id, channel_id, name, data, None)
    }

    /// Dispatches INTERACTION_CREATE for a click by `user_id` on the button `custom_id` of the
    /// stored message `message_id`. Panics when there is no such enabled button.
    pub async fn click(&self, user_id: u64, message_id: u64, custom_id: &str) -> Interaction {
        let mut st = self.inner.lock();
        st.require_session("click");
        let Some((channel_id, message)) = st.find_message(message_id) else {
            panic!("fake discord: click on unknown message {message_id}");
        };
        let button = buttons(&message).find(|b| b["custom_id"] == custom_id);
        match button {
            None => {
                panic!("fake discord: message {message_id} has no button {custom_id:?}: {message}")
            }
            Some(b) if b["disabled"] == true => {
                panic!("fake discord: button {custom_id:?} on message {message_id} is disabled")
            }
            Some(_) => {}
        }
        let data = json!({"custom_id": custom_id, "component_type": 2});
        st.dispatch_interaction(3, user_id, channel_id, custom_id, data, Some(message))
    }

    /// Dispatches INTERACTION_CREATE for choosing `values` in the string select menu
    /// `custom_id` of a stored message. Panics when the message has no such menu or a value is
    /// not one of its options.
    pub async fn select(
        &self,
        user_id: u64,
        message_id: u64,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        let mut st = self.inner.lock();
        st.require_session("select");
        let Some((channel_id, message)) = st.find_message(message_id) else {
            panic!("fake discord: select on unknown message {message_id}");
        };
        let menu = message["components"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .find(|c| c["type"] == 3 && c["custom_id"] == custom_id)
            .unwrap_or_else(|| panic!("fake discord: message {message_id} has no select menu {custom_id:?}: {message}"));
        for value in values {
            let known = menu["options"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["value"] == *value);
            assert!(
                known,
                "fake discord: {value:?} is not an option of {custom_id:?}: {menu}"
            );
        }
        let data = json!({"custom_id": custom_id, "component_type": 3, "values": values});
        st.dispatch_interaction(3, user_id, channel_id, custom_id, data, Some(message))
    }

    /// Stores a message by `user_id` and dispatches MESSAGE_CREATE; returns its id.
    pub async fn user_message(&self, user_id: u64, channel_id: u64, content: &str) -> u64 {
        let mut st = self.inner.lock();
        st.require_session("user_message");
        let message = st.store_user_message(user_id, channel_id, content);
        let id = state::id_of(&message["id"]);
        st.dispatch_message("MESSAGE_CREATE", &message);
        id
    }

    /// Stores a message by `user_id` without dispatching it, as if posted while the bot was down;
    /// it is visible to GET messages. Returns its id.
    pub fn user_message_offline(&self, user_id: u64, channel_id: u64, content: &str) -> u64 {
        let mut st = self.inner.lock();
        let message = st.store_user_message(user_id, channel_id, content);
        id_of(&message["id"])
    }

    /// Closes every gateway connection abruptly (no close frame), so serenity reconnects and
    /// RESUMEs. The sessions stay resumable: dispatches made meanwhile are logged, and a RESUME
    /// replays every dispatch after the client's `seq`. serenity sends the seq of the last event
    /// it handled, so a resume alone never repeats an event; [`FakeDiscord::replay_last_dispatch`]
    /// does.
    pub async fn drop_connection(&self) {
        let mut st = self.inner.lock();
        for session in &mut st.sessions {
            if let Some(conn) = session.conn.take() {
                let _ = conn.tx.send(Out::Drop);
            }
        }
        self.inner.update_live(&st);
    }

    /// Dispatches the most recent dispatch again with a new seq, as Discord sometimes does.
    pub async fn replay_last_dispatch(&self) {
        let mut st = self.inner.lock();
        let Some((t, d)) = st.last_dispatch.clone() else {
            panic!("fake discord: nothing was dispatched yet");
        };
        st.dispatch(&t, d);
    }

    /// The stored messages of a channel, oldest first, in their current state. Attachments carry
    /// a `content` field with the file's bytes (lossy UTF-8).
    pub fn messages(&self, channel_id: u64) -> Vec<Value> {
        let st = self.inner.lock();
        let Some(messages) = st.messages.get(&channel_id) else {
            return Vec::new();
        };
        messages
            .iter()
            .map(|message| {
                let mut message = message.clone();
                if let Some(attachments) = message["attachments"].as_array_mut() {
                    for attachment in attachments {
                        let bytes = st
                            .files
                            .get(&id_of(&attachment["id"]))
                            .cloned()
                            .unwrap_or_default();
                        attachment["content"] = json!(String::from_utf8_lossy(&bytes));
                    }
                }
                message
            })
            .collect()
    }

    /// The threads, oldest first: the channel objects plus `members` (user ids as numbers, the
    /// bot first), `archived` and `locked`.
    pub fn threads(&self) -> Vec<Value> {
        let st = self.inner.lock();
        st.channels
            .values()
            .filter(|c| is_thread(c))
            .map(|thread| {
                let mut thread = thread.clone();
                let id = id_of(&thread["id"]);
                let members = st.thread_members.get(&id).cloned().unwrap_or_default();
                thread["members"] = json!(members);
                thread["archived"] = thread["thread_metadata"]["archived"].clone();
                thread["locked"] = thread["thread_metadata"]["locked"].clone();
                thread
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// From now on, limits request rates as Discord does, with these limits; every bucket starts
    /// full.
    pub fn limit_rates(&self, limits: RateLimits) {
        self.inner.lock().limiter = Some(Limiter::new(limits));
    }

    /// How many requests the fake answered with 429 Too Many Requests.
    pub fn rate_limited(&self) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.status == 429)
            .count()
    }

    /// How many REST requests the fake has received, without copying them.
    #[allow(dead_code)] // Used by benches/discord.rs, not by the tests.
    pub fn request_count(&self) -> usize {
        self.inner.lock().requests.len()
    }

    /// The newest stored message of a channel in its current state, without copying the others
    /// (attachments without their `content`).
    #[allow(dead_code)] // Used by benches/discord.rs, not by the tests.
    pub fn last_message(&self, channel_id: u64) -> Option<Value> {
        self.inner.lock().messages.get(&channel_id)?.last().cloned()
    }

    /// Everything done with this interaction's token, in order, including refused attempts: each
    /// entry has `kind` ("callback" with its `type`, "followup", "edit_original", "edit_followup",
    /// "delete_original", "delete_followup"), `status` (the HTTP status the fake answered),
    /// `delay_ms` since the dispatch, `body`, and `message_id` or `error` when there is one.
    pub fn responses(&self, interaction: &Interaction) -> Vec<Value> {
        let st = self.inner.lock();
        st.interactions
            .iter()
            .find(|i| i.id == interaction.id)
            .map(|i| i.responses.clone())
            .unwrap_or_default()
    }

    /// The registered guild commands, in their current state.
    pub fn commands(&self) -> Vec<Value> {
        self.inner.lock().commands.clone()
    }

    /// How many times the bot started typing in this channel.
    pub fn typing_count(&self, channel_id: u64) -> usize {
        self.inner
            .lock()
            .typing
            .get(&channel_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every gateway dispatch frame (`op`, `t`, `s`, `d`) sent or logged, over all sessions.
    pub fn dispatches(&self) -> Vec<Value> {
        self.inner.lock().dispatches.clone()
    }

    /// How many IDENTIFYs were accepted.
    pub fn identifies(&self) -> usize {
        self.inner.lock().identifies
    }

    /// How many RESUMEs were accepted.
    pub fn resumes(&self) -> usize {
        self.inner.lock().resumes
    }

    /// Pretends the interaction was dispatched `by` earlier, so that a test of the three-second
    /// rule need not sleep.
    pub fn age_interaction(&self, interaction: &Interaction, by: Duration) {
        let mut st = self.inner.lock();
        if let Some(i) = st.interactions.iter_mut().find(|i| i.id == interaction.id) {
            i.dispatched_at = i.dispatched_at.checked_sub(by).unwrap_or(i.dispatched_at);
        }
    }
}

const TOKEN: &str = "fake-discord-bot-token";
const BOT_NAME: &str = "featurebot";

struct Inner {
    api_addr: SocketAddr,
    state: Mutex<State>,
    /// How many sessions have a live connection.
    live: watch::Sender<usize>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the real failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_live(&self, st: &State) {
        let live = st.sessions.iter().filter(|s| s.conn.is_some()).count();
        self.live.send_replace(live);
    }
}

/// The id in a snowflake field of a payload the fake handed out.
pub fn id_of(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_u64().unwrap(),
        other => panic!("not an id: {other}"),
    }
}

/// The text of each message the fake handed out.
pub fn contents(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect()
}
