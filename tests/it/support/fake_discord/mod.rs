//! An in-process fake Discord: the REST API on one 127.0.0.1 port and the gateway websocket on
//! another, so that tests drive a real serenity client at the wire.
//!
//! The fake holds one guild ([`GUILD_ID`]) with one text channel ([`CHANNEL_ID`]), the bot
//! ([`BOT_ID`], application [`APP_ID`]) and whatever members a test adds. Tests act as Discord's
//! users (`slash_command`, `click`, `user_message`) and then read the state the bot left behind
//! (`messages`, `threads`, `responses`, `requests`). Payloads have the real shapes, snowflakes are
//! strings, and the rules a bot trips over are enforced the way Discord enforces them: the
//! three-second interaction window, one callback per interaction, private threads by default,
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::http;

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
            Some(command) => id_of(&command["id"]),
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
        let id = id_of(&message["id"]);
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
const HEARTBEAT_MS: u64 = 41_250;
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const CALLBACK_WINDOW: Duration = Duration::from_secs(3);
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

const INTENT_GUILDS: u64 = 1 << 0;
const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
const INTENT_GUILD_PRESENCES: u64 = 1 << 8;
const INTENT_GUILD_MESSAGES: u64 = 1 << 9;
const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

const FLAG_SUPPRESS_EMBEDS: u64 = 1 << 2;
const FLAG_EPHEMERAL: u64 = 1 << 6;
const FLAG_LOADING: u64 = 1 << 7;
const FLAG_SUPPRESS_NOTIFICATIONS: u64 = 1 << 12;

/// View channel, send messages (also in threads), embed links, attach files, read history, add
/// reactions, use application commands, create threads.
const EVERYONE_PERMISSIONS: u64 = (1 << 6)
    | (1 << 10)
    | (1 << 11)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 31)
    | (1 << 35)
    | (1 << 36)
    | (1 << 38);
/// What Discord reports for an administrator: every permission.
const ALL_PERMISSIONS: u64 = (1 << 51) - 1;

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

struct MemberInfo {
    name: String,
    roles: Vec<u64>,
    bot: bool,
    joined_at: String,
}

/// A gateway session: what Discord keeps between connections so that a client can resume.
struct Session {
    id: String,
    seq: u64,
    intents: u64,
    /// Every dispatch frame of this session, for replays.
    log: Vec<Value>,
    conn: Option<Conn>,
}

#[derive(Clone)]
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Out>,
}

impl Conn {
    fn send(&self, frame: &Value) {
        let _ = self.tx.send(Out::Text(frame.to_string()));
    }

    fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Out::Close(code, reason.to_string()));
    }
}

/// What a connection task is told to do.
enum Out {
    Text(String),
    Close(u16, String),
    /// Drop the socket without a close frame.
    Drop,
}

struct InteractionState {
    id: u64,
    token: String,
    /// 2 for a command, 3 for a component.
    kind: u64,
    user_id: u64,
    channel_id: u64,
    /// The command name or the custom id.
    name: String,
    /// The message whose component was used.
    source_message: Option<u64>,
    dispatched_at: Instant,
    callback: Option<u64>,
    /// The message `@original` refers to.
    original: Option<u64>,
    /// A deferred response whose loading message the first follow-up replaces.
    loading: bool,
    responses: Vec<Value>,
}

struct State {
    ws_url: String,
    last_id: u64,
    members: BTreeMap<u64, MemberInfo>,
    /// The text channel and the threads, in wire shape.
    channels: BTreeMap<u64, Value>,
    thread_members: BTreeMap<u64, Vec<u64>>,
    /// Messages per channel, oldest first, in REST shape.
    messages: BTreeMap<u64, Vec<Value>>,
    /// Attachment bytes by attachment id.
    files: HashMap<u64, Vec<u8>>,
    commands: Vec<Value>,
    global_commands: Vec<Value>,
    interactions: Vec<InteractionState>,
    requests: Vec<Recorded>,
    typing: HashMap<u64, usize>,
    sessions: Vec<Session>,
    dispatches: Vec<Value>,
    last_dispatch: Option<(String, Value)>,
    next_conn: u64,
    identifies: usize,
    resumes: usize,
    /// Whether the latest IDENTIFY asked for MESSAGE_CONTENT (assumed before any).
    content_intent: bool,
    /// The rate limits, once a test turned them on.
    limiter: Option<Limiter>,
}

impl State {
    fn new(ws_url: String) -> State {
        let now = timestamp();
        let mut members = BTreeMap::new();
        members.insert(
            BOT_ID,
            MemberInfo {
                name: BOT_NAME.to_string(),
                roles: Vec::new(),
                bot: true,
                joined_at: now,
            },
        );
        let mut channels = BTreeMap::new();
        channels.insert(
            CHANNEL_ID,
            json!({
                "id": sf(CHANNEL_ID),
                "type": 0,
                "guild_id": sf(GUILD_ID),
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "topic": null,
                "nsfw": false,
                "last_message_id": null,
                "rate_limit_per_user": 0,
                "parent_id": null,
                "flags": 0,
            }),
        );
        let mut second = channels[&CHANNEL_ID].clone();
        second["id"] = sf(SECOND_CHANNEL_ID);
        second["name"] = json!("product");
        second["position"] = json!(1);
        channels.insert(SECOND_CHANNEL_ID, second);
        State {
            ws_url,
            last_id: 0,
            members,
            channels,
            thread_members: BTreeMap::new(),
            messages: BTreeMap::new(),
            files: HashMap::new(),
            commands: Vec::new(),
            global_commands: Vec::new(),
            interactions: Vec::new(),
            requests: Vec::new(),
            typing: HashMap::new(),
            sessions: Vec::new(),
            dispatches: Vec::new(),
            last_dispatch: None,
            next_conn: 0,
            identifies: 0,
            resumes: 0,
            content_intent: true,
            limiter: None,
        }
    }

    /// A new snowflake: milliseconds since Discord's epoch in the top bits, strictly increasing.
    fn next_id(&mut self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let candidate = ms.saturating_sub(DISCORD_EPOCH_MS) << 22;
        self.last_id = candidate.max(self.last_id + 1);
        self.last_id
    }

    fn require_session(&self, what: &str) {
        if self.sessions.is_empty() {
            panic!("fake discord: {what} before any client identified; call wait_ready() first");
        }
    }

    fn member(&self, user_id: u64) -> &MemberInfo {
        self.members.get(&user_id).unwrap_or_else(|| {
            panic!("fake discord: user {user_id} is not a member; call add_member first")
        })
    }

    fn user(&self, user_id: u64) -> Value {
        match self.members.get(&user_id) {
            Some(m) => user_json(user_id, &m.name, m.bot),
            None => user_json(user_id, &format!("user{user_id}"), false),
        }
    }

    /// The guild member object, with `user` when `with_user`.
    fn member_json(&self, user_id: u64, with_user: bool) -> Value {
        let m = self.member(user_id);
        let mut member = json!({
            "nick": null,
            "avatar": null,
            "banner": null,
            "roles": m.roles.iter().map(|r| sf(*r)).collect::<Vec<_>>(),
            "joined_at": m.joined_at,
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "communication_disabled_until": null,
        });
        if with_user {
            member["user"] = self.user(user_id);
        }
        member
    }

    fn permissions(&self, user_id: u64) -> u64 {
        match self.members.get(&user_id) {
            Some(m) if m.roles.contains(&ADMIN_ROLE) => ALL_PERMISSIONS,
            _ => EVERYONE_PERMISSIONS,
        }
    }

    fn find_message(&self, message_id: u64) -> Option<(u64, Value)> {
        self.messages.iter().find_map(|(channel, messages)| {
            messages
                .iter()
                .find(|m| id_of(&m["id"]) == message_id)
                .map(|m| (*channel, m.clone()))
        })
    }

    fn message_mut(&mut self, channel_id: u64, message_id: u64) -> Option<&mut Value> {
        self.messages
            .get_mut(&channel_id)?
            .iter_mut()
            .find(|m| id_of(&m["id"]) == message_id)
    }

    fn store_message(&mut self, channel_id: u64, message: Value) {
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel["last_message_id"] = message["id"].clone();
            if is_thread(channel) {
                let count = channel["message_count"].as_u64().unwrap_or(0) + 1;
                channel["message_count"] = json!(count);
                channel["total_message_sent"] = json!(count);
            }
        }
        self.messages.entry(channel_id).or_default().push(message);
    }

    fn store_user_message(&mut self, user_id: u64, channel_id: u64, content: &str) -> Value {
        self.member(user_id);
        if !self.channels.contains_key(&channel_id) {
            panic!("fake discord: unknown channel {channel_id}");
        }
        let id = self.next_id();
        let mut message = base_message(id, channel_id, self.user(user_id));
        message["content"] = json!(content);
        self.fill_mentions(&mut message);
        self.store_message(channel_id, message.clone());
        message
    }

    /// Fills `mentions` and `mention_roles` from `<@id>` and `<@&id>` in the content.
    fn fill_mentions(&self, message: &mut Value) {
        let content = message["content"].as_str().unwrap_or_default().to_string();
        let mut users = Vec::new();
        let mut roles = Vec::new();
        for piece in content.split("<@").skip(1) {
            let Some((inner, _)) = piece.split_once('>') else {
                continue;
            };
            if let Some(role) = inner.strip_prefix('&') {
                if let Ok(role) = role.parse::<u64>() {
                    roles.push(sf(role));
                }
            } else if let Ok(user) = inner.trim_start_matches('!').parse::<u64>() {
                if self.members.contains_key(&user) {
                    users.push(self.user(user));
                }
            }
        }
        message["mentions"] = json!(users);
        message["mention_roles"] = json!(roles);
    }

    /// Sends a dispatch to every session whose intents cover it, logging it for replays.
    fn dispatch(&mut self, t: &str, d: Value) {
        let needs = intents_needed(t, &d);
        for session in &mut self.sessions {
            if session.intents & needs != needs {
                continue;
            }
            let mut d = d.clone();
            if t.starts_with("MESSAGE_") && session.intents & INTENT_MESSAGE_CONTENT == 0 {
                hide_content(&mut d);
            }
            session.seq += 1;
            let frame = json!({"op": 0, "t": t, "s": session.seq, "d": d});
            if let Some(conn) = &session.conn {
                conn.send(&frame);
            }
            session.log.push(frame.clone());
            self.dispatches.push(frame);
        }
        self.last_dispatch = Some((t.to_string(), d));
    }

    /// Dispatches a message event (with `guild_id` and the author's `member`) unless ephemeral.
    fn dispatch_message(&mut self, t: &str, message: &Value) {
        if flags(message) & FLAG_EPHEMERAL != 0 {
            return;
        }
        let mut d = message.clone();
        d["guild_id"] = sf(GUILD_ID);
        let author = id_of(&message["author"]["id"]);
        if self.members.contains_key(&author) && message.get("webhook_id").is_none() {
            d["member"] = self.member_json(author, false);
        }
        self.dispatch(t, d);
    }

    fn dispatch_interaction(
        &mut self,
        kind: u64,
        user_id: u64,
        channel_id: u64,
        name: &str,
        data: Value,
        message: Option<Value>,
    ) -> Interaction {
        let Some(channel) = self.channels.get(&channel_id).cloned() else {
            panic!("fake discord: unknown channel {channel_id}");
        };
        let mut member = self.member_json(user_id, true);
        member["permissions"] = json!(self.permissions(user_id).to_string());
        let id = self.next_id();
        let token = format!("fake-interaction-token-{id}");
        let mut partial_channel = channel;
        partial_channel["permissions"] = json!(self.permissions(user_id).to_string());
        let mut payload = json!({
            "id": sf(id),
            "application_id": sf(APP_ID),
            "type": kind,
            "data": data,
            "guild_id": sf(GUILD_ID),
            "channel": partial_channel,
            "channel_id": sf(channel_id),
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": ALL_PERMISSIONS.to_string(),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": sf(GUILD_ID)},
            "context": 0,
            "attachment_size_limit": MAX_FILE_BYTES,
        });
        let source_message = message.as_ref().map(|m| id_of(&m["id"]));
        if let Some(message) = message {
            payload["message"] = message;
        }
        let dispatched_at = Instant::now();
        self.interactions.push(InteractionState {
            id,
            token: token.clone(),
            kind,
            user_id,
            channel_id,
            name: name.to_string(),
            source_message,
            dispatched_at,
            callback: None,
            original: None,
            loading: false,
            responses: Vec::new(),
        });
        self.dispatch("INTERACTION_CREATE", payload);
        Interaction {
            id,
            token,
            dispatched_at,
        }
    }

    /// The message as the bot may see it: without MESSAGE_CONTENT, others' content is empty.
    fn visible(&self, message: &Value) -> Value {
        let mut message = message.clone();
        if !self.content_intent {
            hide_content(&mut message);
        }
        message
    }

    fn guild_json(&self, all_members: bool) -> Value {
        let members: Vec<Value> = self
            .members
            .keys()
            .filter(|id| all_members || **id == BOT_ID)
            .map(|id| self.member_json(*id, true))
            .collect();
        let (threads, channels): (Vec<Value>, Vec<Value>) =
            self.channels.values().cloned().partition(is_thread);
        let threads: Vec<Value> = threads
            .into_iter()
            .filter(|t| t["thread_metadata"]["archived"] != true)
            .collect();
        // Two halves, because one `json!` this large exceeds the macro recursion limit.
        let mut guild = json!({
            "id": sf(GUILD_ID),
            "name": "Fake Guild",
            "icon": null,
            "icon_hash": null,
            "splash": null,
            "discovery_splash": null,
            "owner_id": sf(BOT_ID + 100),
            "afk_channel_id": null,
            "afk_timeout": 300,
            "widget_enabled": false,
            "widget_channel_id": null,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": roles_json(),
            "emojis": [],
            "features": [],
            "mfa_level": 0,
            "application_id": null,
            "system_channel_id": sf(CHANNEL_ID),
            "system_channel_flags": 0,
            "rules_channel_id": null,
            "max_presences": null,
            "max_members": 500_000,
            "vanity_url_code": null,
            "description": null,
            "banner": null,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": null,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "nsfw_level": 0,
            "stickers": [],
            "premium_progress_bar_enabled": false,
        });
        let state = json!({
            "safety_alerts_channel_id": null,
            "incidents_data": null,
            "joined_at": self.members[&BOT_ID].joined_at,
            "large": false,
            "unavailable": false,
            "member_count": self.members.len(),
            "voice_states": [],
            "members": members,
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": true,
        });
        if let (Some(guild), Value::Object(state)) = (guild.as_object_mut(), state) {
            guild.extend(state);
        }
        guild
    }
}

/// The intents a session must have to receive a dispatch.
fn intents_needed(t: &str, d: &Value) -> u64 {
    match t {
        "GUILD_CREATE" | "CHANNEL_CREATE" | "CHANNEL_UPDATE" | "CHANNEL_DELETE"
        | "THREAD_CREATE" | "THREAD_UPDATE" | "THREAD_DELETE" => INTENT_GUILDS,
        // Without GUILD_MEMBERS, only changes about the bot itself arrive.
        "THREAD_MEMBERS_UPDATE" => {
            let about_bot = d["added_members"]
                .as_array()
                .is_some_and(|a| a.iter().all(|m| id_of(&m["user_id"]) == BOT_ID));
            if about_bot {
                INTENT_GUILDS
            } else {
                INTENT_GUILDS | INTENT_GUILD_MEMBERS
            }
        }
        t if t.starts_with("MESSAGE_") => INTENT_GUILD_MESSAGES,
        _ => 0,
    }
}

/// Empties what MESSAGE_CONTENT guards, unless the bot wrote or is mentioned in the message.
fn hide_content(message: &mut Value) {
    let by_bot = id_of(&message["author"]["id"]) == BOT_ID;
    let mentions_bot = message["mentions"]
        .as_array()
        .is_some_and(|m| m.iter().any(|u| id_of(&u["id"]) == BOT_ID));
    if by_bot || mentions_bot || message.get("author").is_none() {
        return;
    }
    for (field, empty) in [
        ("content", json!("")),
        ("embeds", json!([])),
        ("attachments", json!([])),
        ("components", json!([])),
    ] {
        if message.get(field).is_some() {
            message[field] = empty;
        }
    }
}

fn sf(id: u64) -> Value {
    Value::String(id.to_string())
}

/// A snowflake from a string or a number; 0 when neither.
fn id_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn flags(message: &Value) -> u64 {
    message["flags"].as_u64().unwrap_or(0)
}

fn is_thread(channel: &Value) -> bool {
    matches!(channel["type"].as_u64(), Some(10..=12))
}

fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": sf(id),
        "username": name,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { json!(name) },
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
    })
}

fn role_json(id: u64, name: &str, permissions: u64, position: u64) -> Value {
    json!({
        "id": sf(id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": position,
        "permissions": permissions.to_string(),
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

fn roles_json() -> Value {
    json!([
        role_json(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, 0),
        role_json(ADMIN_ROLE, "admin", 8, 1),
    ])
}

/// A message with every field serenity requires, empty.
fn base_message(id: u64, channel_id: u64, author: Value) -> Value {
    json!({
        "id": sf(id),
        "channel_id": sf(channel_id),
        "author": author,
        "content": "",
        "timestamp": timestamp(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
        "components": [],
    })
}

/// The buttons of a message, in every action row.
fn buttons(message: &Value) -> impl Iterator<Item = &Value> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter(|c| c["type"] == 2)
}

/// Turns the test's options into Discord's array, typed from the registered command if any.
fn command_options(options: Value, registered: Option<&Value>) -> Vec<Value> {
    match options {
        Value::Null => Vec::new(),
        Value::Array(options) => options,
        Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| {
                let declared = registered
                    .and_then(|c| c["options"].as_array())
                    .and_then(|o| o.iter().find(|o| o["name"] == name.as_str()))
                    .and_then(|o| o["type"].as_u64());
                let kind = declared.unwrap_or(match &value {
                    Value::Bool(_) => 5,
                    Value::Number(n) if n.is_i64() || n.is_u64() => 4,
                    Value::Number(_) => 10,
                    _ => 3,
                });
                json!({"name": name, "type": kind, "value": value})
            })
            .collect(),
        other => panic!("fake discord: options must be an object or an array, not {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// A request after parsing: the JSON body (or `payload_json`) and any uploaded files.
struct Req {
    method: String,
    /// The path as sent, with the query.
    target: String,
    /// The path after `/api/v10`, without the query.
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    json: Value,
    /// Whether the body was present but not valid JSON.
    bad_json: bool,
    files: Vec<Upload>,
}

impl Req {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `files[n]` part of a multipart body.
struct Upload {
    index: Option<u64>,
    filename: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

struct Resp {
    status: u16,
    body: Option<Value>,
}

fn ok(body: Value) -> Resp {
    Resp {
        status: 200,
        body: Some(body),
    }
}

fn no_content() -> Resp {
    Resp {
        status: 204,
        body: None,
    }
}

fn fail(status: u16, code: u64, message: &str) -> Resp {
    Resp {
        status,
        body: Some(json!({"code": code, "message": message})),
    }
}

/// Discord's 50035 "Invalid Form Body", with the error nested along a dotted path such as
/// `components.0.components.1.custom_id`.
fn form_error(path: &str, code: &str, message: &str) -> Resp {
    let mut errors = json!({"_errors": [{"code": code, "message": message}]});
    for key in path.rsplit('.') {
        let mut map = Map::new();
        map.insert(key.to_string(), errors);
        errors = Value::Object(map);
    }
    Resp {
        status: 400,
        body: Some(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
    }
}

fn unknown_channel() -> Resp {
    fail(404, 10003, "Unknown Channel")
}

fn unknown_message() -> Resp {
    fail(404, 10008, "Unknown Message")
}

fn unknown_webhook() -> Resp {
    fail(404, 10015, "Unknown Webhook")
}

async fn serve_rest(mut socket: TcpStream, inner: &Inner) -> std::io::Result<()> {
    let request = http::read_request(&mut socket).await?;
    let at = Instant::now();
    let req = parse_request(request);
    let (resp, headers) = {
        let mut st = inner.lock();
        // Recorded before routing, so that a request the fake panics on is still listed.
        st.requests.push(Recorded {
            method: req.method.clone(),
            path: req.target.clone(),
            body: req.json.clone(),
            at,
            status: 0,
        });
        let limited = match st.limiter.as_mut() {
            Some(limiter) => limiter.check(&req, at),
            None => Ok(Vec::new()),
        };
        let (resp, headers) = match limited {
            Ok(headers) => (route(&mut st, &req, at), headers),
            Err(refusal) => refusal,
        };
        if let Some(recorded) = st.requests.last_mut() {
            recorded.status = resp.status;
        }
        (resp, headers)
    };
    write_response(&mut socket, resp, headers).await
}

/// Writes the fake's answer: a JSON body when there is one, after the rate-limit headers.
async fn write_response(
    socket: &mut TcpStream,
    resp: Resp,
    headers: Headers,
) -> std::io::Result<()> {
    let mut all = Vec::with_capacity(headers.len() + 1);
    if resp.body.is_some() {
        all.push(("content-type".to_string(), "application/json".to_string()));
    }
    all.extend(headers);
    let body = resp
        .body
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    http::write_response(socket, resp.status, &all, &body).await
}

/// The request as the routes want it: the path after `/api/v10` and the query apart, and the
/// JSON body (for multipart, the `payload_json` part) with any uploaded files.
fn parse_request(request: http::Request) -> Req {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let path = path
        .strip_prefix("/api/v10")
        .unwrap_or("/unversioned")
        .to_string();
    let query = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let content_type = request.header("content-type").unwrap_or_default();
    let (json, bad_json, files) = match http::multipart_boundary(content_type) {
        Some(boundary) => multipart_payload(&request.body, boundary),
        None if request.body.is_empty() => (Value::Null, false, Vec::new()),
        None => match serde_json::from_slice(&request.body) {
            Ok(v) => (v, false, Vec::new()),
            Err(_) => (
                Value::String(String::from_utf8_lossy(&request.body).to_string()),
                true,
                Vec::new(),
            ),
        },
    };
    Req {
        authorization: request.header("authorization").map(str::to_string),
        method: request.method,
        target: request.target,
        path,
        query,
        json,
        bad_json,
        files,
    }
}

/// A multipart body's `payload_json` (and whether it was not JSON) and its `files[n]` parts.
fn multipart_payload(body: &[u8], boundary: &str) -> (Value, bool, Vec<Upload>) {
    let mut payload = Value::Null;
    let mut bad = false;
    let mut files = Vec::new();
    for part in http::parse_multipart(body, boundary) {
        if part.name == "payload_json" {
            match serde_json::from_slice(&part.bytes) {
                Ok(v) => payload = v,
                Err(_) => bad = true,
            }
        } else if part.name.starts_with("file") {
            let index = part
                .name
                .strip_prefix("files[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse().ok());
            files.push(Upload {
                index,
                filename: part.filename.unwrap_or_else(|| "unknown".to_string()),
                content_type: part.content_type,
                bytes: part.bytes,
            });
        }
    }
    (payload, bad, files)
}

/// Extra response headers, name and value.
type Headers = Vec<(String, String)>;

/// Discord's rate limits over the fake's REST API: one global bucket, and one bucket per route
/// and top-level resource (see [`RateLimits`]).
struct Limiter {
    limits: RateLimits,
    global: Bucket,
    /// By route and top-level resource, e.g. `PATCH /channels/{}/messages/:id` and the channel.
    routes: HashMap<(String, String), Bucket>,
}

/// A window of `limit` requests that opens with its first request and lasts `window`.
struct Bucket {
    limit: u32,
    window: Duration,
    remaining: u32,
    /// When the current window ends (a fresh bucket's has ended already).
    reset_at: Instant,
}

impl Bucket {
    fn new(limit: u32, window: Duration, at: Instant) -> Bucket {
        Bucket {
            limit,
            window,
            remaining: limit,
            reset_at: at,
        }
    }

    /// Opens a new window when the last one has ended.
    fn refresh(&mut self, at: Instant) {
        if at >= self.reset_at {
            self.remaining = self.limit;
            self.reset_at = at + self.window;
        }
    }
}

impl Limiter {
    fn new(limits: RateLimits) -> Limiter {
        let now = Instant::now();
        Limiter {
            limits,
            global: Bucket::new(limits.global_per_second, Duration::from_secs(1), now),
            routes: HashMap::new(),
        }
    }

    /// Takes one request from the request's buckets: the `X-RateLimit-*` headers of its route,
    /// or the 429 that Discord answers when a bucket is empty (which takes nothing).
    fn check(&mut self, req: &Req, at: Instant) -> Result<Headers, (Resp, Headers)> {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        // The top-level resource: a channel or guild id, or a webhook's or interaction's id
        // and token. Other ids in the path share the route's bucket.
        let major = match segments.first() {
            Some(&"channels" | &"guilds") => 2,
            Some(&"webhooks" | &"interactions") => 3,
            _ => 1,
        }
        .min(segments.len());
        let template: Vec<&str> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| match i {
                0 => s,
                _ if i < major => "{}",
                _ if s.bytes().all(|b| b.is_ascii_digit()) => ":id",
                _ => s,
            })
            .collect();
        let route = format!("{} /{}", req.method, template.join("/"));
        let resource = segments[..major].join("/");
        // Interaction endpoints are exempt from the global limit, as on Discord.
        let exempt = major == 3;
        let messages = matches!(
            (req.method.as_str(), segments.as_slice()),
            ("POST", ["channels", _, "messages"]) | ("PATCH", ["channels", _, "messages", _])
        );
        let (limit, window) = if messages {
            (self.limits.messages, self.limits.message_window)
        } else {
            (self.limits.global_per_second, Duration::from_secs(1))
        };
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            route.hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        let bucket = self
            .routes
            .entry((route, resource))
            .or_insert_with(|| Bucket::new(limit, window, at));
        bucket.refresh(at);
        self.global.refresh(at);
        let global_empty = !exempt && self.global.remaining == 0;
        let (empty, global) = if global_empty {
            (&self.global, true)
        } else if bucket.remaining == 0 {
            (&*bucket, false)
        } else {
            bucket.remaining -= 1;
            if !exempt {
                self.global.remaining -= 1;
            }
            return Ok(rate_headers(bucket, &hash, at));
        };
        let retry_after = (empty.reset_at - at).as_secs_f64();
        let retry_after = (retry_after * 1000.0).ceil() / 1000.0;
        let mut headers = rate_headers(bucket, &hash, at);
        headers.push(("Retry-After".into(), retry_after.ceil().to_string()));
        headers.push((
            "X-RateLimit-Scope".into(),
            if global { "global" } else { "user" }.into(),
        ));
        if global {
            headers.push(("X-RateLimit-Global".into(), "true".into()));
        }
        let body = json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": global,
        });
        Err((
            Resp {
                status: 429,
                body: Some(body),
            },
            headers,
        ))
    }
}

/// The `X-RateLimit-*` headers that describe `bucket` at `at`.
fn rate_headers(bucket: &Bucket, hash: &str, at: Instant) -> Headers {
    let after = bucket.reset_at.saturating_duration_since(at).as_secs_f64();
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        + after;
    vec![
        ("X-RateLimit-Limit".into(), bucket.limit.to_string()),
        ("X-RateLimit-Remaining".into(), bucket.remaining.to_string()),
        ("X-RateLimit-Reset".into(), format!("{reset:.3}")),
        ("X-RateLimit-Reset-After".into(), format!("{after:.3}")),
        ("X-RateLimit-Bucket".into(), hash.to_string()),
    ]
}

fn route(st: &mut State, req: &Req, at: Instant) -> Resp {
    if req.bad_json {
        return fail(400, 50109, "The request body contains invalid JSON.");
    }
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    // Interaction callbacks and webhooks authenticate by their token, not the bot's.
    let by_token = matches!(segments.first(), Some(&"interactions" | &"webhooks"));
    if !by_token && req.authorization.as_deref() != Some(&format!("Bot {TOKEN}")) {
        return fail(401, 0, "401: Unauthorized");
    }
    let resp = match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["gateway"]) => Some(ok(json!({"url": st.ws_url}))),
        ("GET", ["gateway", "bot"]) => Some(ok(json!({
            "url": st.ws_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1,
            },
        }))),
        ("GET", ["users", "@me"]) => Some(ok(current_user())),
        ("GET", ["users", user]) => Some(get_user(st, user)),
        ("GET", ["applications", "@me"]) => Some(ok(application_json())),
        (_, ["applications", app, "guilds", guild, "commands", rest @ ..]) => {
            if id_of(&json!(guild)) != GUILD_ID {
                Some(fail(404, 10004, "Unknown Guild"))
            } else {
                commands_route(st, req, app, rest, true)
            }
        }
        (_, ["applications", app, "commands", rest @ ..]) => {
            commands_route(st, req, app, rest, false)
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            Some(interaction_callback(st, req, id, token, at))
        }
        ("POST", ["webhooks", app, token]) => Some(followup(st, req, app, token, at)),
        (method, ["webhooks", app, token, "messages", which]) => {
            webhook_message(st, req, method, app, token, which, at)
        }
        ("GET", ["guilds", guild, rest @ ..]) if id_of(&json!(guild)) == GUILD_ID => {
            guild_route(st, rest)
        }
        (_, ["channels", channel, rest @ ..]) => {
            let channel_id = id_of(&json!(channel));
            if st.channels.contains_key(&channel_id) {
                channel_route(st, req, channel_id, rest)
            } else {
                Some(unknown_channel())
            }
        }
        _ => None,
    };
    resp.unwrap_or_else(|| {
        fail(
            404,
            0,
            &format!("fake discord: no route {} {}", req.method, req.target),
        )
    })
}

fn current_user() -> Value {
    let mut user = user_json(BOT_ID, BOT_NAME, true);
    user["verified"] = json!(true);
    user["mfa_enabled"] = json!(false);
    user["email"] = Value::Null;
    user
}

fn get_user(st: &State, user: &str) -> Resp {
    let id = id_of(&json!(user));
    if st.members.contains_key(&id) {
        ok(st.user(id))
    } else {
        fail(404, 10013, "Unknown User")
    }
}

fn application_json() -> Value {
    json!({
        "id": sf(APP_ID),
        "name": BOT_NAME,
        "icon": null,
        "description": "",
        "summary": "",
        "rpc_origins": [],
        "bot_public": false,
        "bot_require_code_grant": false,
        "owner": user_json(BOT_ID + 100, "owner", false),
        "verify_key": "0".repeat(64),
        "team": null,
        "flags": 0,
        "bot": user_json(BOT_ID, BOT_NAME, true),
        "role_connections_verification_url": null,
        "approximate_guild_count": 1,
        "redirect_uris": [],
        "interactions_endpoint_url": null,
    })
}

fn guild_route(st: &State, rest: &[&str]) -> Option<Resp> {
    Some(match rest {
        ["members", user] => {
            let id = id_of(&json!(user));
            if st.members.contains_key(&id) {
                let mut member = st.member_json(id, true);
                member["guild_id"] = sf(GUILD_ID);
                ok(member)
            } else {
                fail(404, 10007, "Unknown Member")
            }
        }
        ["channels"] => ok(json!(st
            .channels
            .values()
            .filter(|c| !is_thread(c))
            .collect::<Vec<_>>())),
        ["roles"] => ok(roles_json()),
        ["threads", "active"] => {
            let threads: Vec<&Value> = st
                .channels
                .values()
                .filter(|c| is_thread(c) && c["thread_metadata"]["archived"] != true)
                .collect();
            ok(json!({"threads": threads, "members": []}))
        }
        _ => return None,
    })
}

// --- Application commands --------------------------------------------------------------------

fn commands_route(
    st: &mut State,
    req: &Req,
    app: &str,
    rest: &[&str],
    guild: bool,
) -> Option<Resp> {
    if id_of(&json!(app)) != APP_ID {
        return Some(fail(403, 50001, "Missing Access"));
    }
    let guild_id = guild.then_some(GUILD_ID);
    let list = |st: &mut State| -> Vec<Value> {
        if guild {
            st.commands.clone()
        } else {
            st.global_commands.clone()
        }
    };
    let save = |st: &mut State, commands: Vec<Value>| {
        if guild {
            st.commands = commands;
        } else {
            st.global_commands = commands;
        }
    };
    Some(match (req.method.as_str(), rest) {
        ("GET", []) => ok(json!(list(st))),
        ("PUT", []) => {
            let Some(bodies) = req.json.as_array() else {
                return Some(form_error("_", "BASE_TYPE_ARRAY", "Must be an array."));
            };
            let old = list(st);
            let mut new = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                if let Err((path, message)) = check_command(body) {
                    return Some(form_error(
                        &format!("{i}.{path}"),
                        "BASE_TYPE_BAD_LENGTH",
                        &message,
                    ));
                }
                if new.iter().any(|c: &Value| c["name"] == body["name"]) {
                    return Some(form_error(
                        &format!("{i}.name"),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    ));
                }
                let existing = old.iter().find(|c| c["name"] == body["name"]);
                let id = existing.map(|c| id_of(&c["id"]));
                new.push(command_json(st, body, id, guild_id));
            }
            save(st, new.clone());
            ok(json!(new))
        }
        ("POST", []) => {
            if let Err((path, message)) = check_command(&req.json) {
                return Some(form_error(&path, "BASE_TYPE_BAD_LENGTH", &message));
            }
            let mut commands = list(st);
            let position = commands.iter().position(|c| c["name"] == req.json["name"]);
            let id = position.map(|p| id_of(&commands[p]["id"]));
            let command = command_json(st, &req.json, id, guild_id);
            let status = match position {
                Some(p) => {
                    commands[p] = command.clone();
                    200
                }
                None => {
                    commands.push(command.clone());
                    201
                }
            };
            save(st, commands);
            Resp {
                status,
                body: Some(command),
            }
        }
        (method, [command_id]) => {
            let mut commands = list(st);
            let id = id_of(&json!(command_id));
            let Some(position) = commands.iter().position(|c| id_of(&c["id"]) == id) else {
                return Some(fail(404, 10063, "Unknown application command"));
            };
            match method {
                "GET" => ok(commands[position].clone()),
                "DELETE" => {
                    commands.remove(position);
                    save(st, commands);
                    no_content()
                }
                "PATCH" => {
                    let mut merged = commands[position].clone();
                    if let (Some(merged), Some(patch)) =
                        (merged.as_object_mut(), req.json.as_object())
                    {
                        for (k, v) in patch {
                            merged.insert(k.clone(), v.clone());
                        }
                    }
                    if let Err((path, message)) = check_command(&merged) {
                        return Some(form_error(&path, "BASE_TYPE_BAD_LENGTH", &message));
                    }
                    let command = command_json(st, &merged, Some(id), guild_id);
                    commands[position] = command.clone();
                    save(st, commands);
                    ok(command)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Discord's rules for a command: a lowercase name of 1 to 32 characters, a description of 1 to
/// 100 for slash commands, at most 25 options, required options first.
fn check_command(body: &Value) -> Result<(), (String, String)> {
    let slash = body["type"].as_u64().unwrap_or(1) == 1;
    check_command_name(&body["name"], slash).map_err(|m| ("name".to_string(), m))?;
    if slash {
        check_description(&body["description"]).map_err(|m| ("description".to_string(), m))?;
    }
    let options = body["options"].as_array().cloned().unwrap_or_default();
    if options.len() > 25 {
        return Err(("options".into(), "Must be 25 or fewer in length.".into()));
    }
    let mut seen_optional = false;
    for (i, option) in options.iter().enumerate() {
        check_command_name(&option["name"], true).map_err(|m| (format!("options.{i}.name"), m))?;
        check_description(&option["description"])
            .map_err(|m| (format!("options.{i}.description"), m))?;
        let required = option["required"] == true;
        if required && seen_optional {
            return Err((
                format!("options.{i}.required"),
                "Required options must be placed before non-required options".into(),
            ));
        }
        seen_optional |= !required;
    }
    Ok(())
}

fn check_command_name(name: &Value, slash: bool) -> Result<(), String> {
    let name = name.as_str().unwrap_or_default();
    let length = name.chars().count();
    if !(1..=32).contains(&length) {
        return Err("Must be between 1 and 32 in length.".into());
    }
    let valid = name
        .chars()
        .all(|c| c == '-' || c == '_' || (c.is_alphanumeric() && !c.is_uppercase()));
    if slash && !valid {
        return Err("Command name is invalid".into());
    }
    Ok(())
}

fn check_description(description: &Value) -> Result<(), String> {
    let length = description.as_str().unwrap_or_default().chars().count();
    if !(1..=100).contains(&length) {
        return Err("Must be between 1 and 100 in length.".into());
    }
    Ok(())
}

fn command_json(st: &mut State, body: &Value, id: Option<u64>, guild: Option<u64>) -> Value {
    let id = id.unwrap_or_else(|| st.next_id());
    let version = st.next_id();
    let mut command = json!({
        "id": sf(id),
        "application_id": sf(APP_ID),
        "version": sf(version),
        "default_member_permissions": body["default_member_permissions"].clone(),
        "type": body["type"].as_u64().unwrap_or(1),
        "name": body["name"],
        "name_localizations": body["name_localizations"].clone(),
        "description": body["description"].as_str().unwrap_or_default(),
        "description_localizations": body["description_localizations"].clone(),
        "nsfw": body["nsfw"] == true,
        "contexts": body["contexts"].clone(),
        "integration_types": body.get("integration_types").cloned().unwrap_or(json!([0])),
    });
    if let Some(guild) = guild {
        command["guild_id"] = sf(guild);
    } else {
        command["dm_permission"] = json!(body["dm_permission"] != false);
    }
    if body["options"].as_array().is_some_and(|o| !o.is_empty()) {
        command["options"] = body["options"].clone();
    }
    command
}

// --- Interactions ----------------------------------------------------------------------------

fn delay_ms(interaction: &InteractionState, at: Instant) -> u64 {
    at.saturating_duration_since(interaction.dispatched_at)
        .as_millis() as u64
}

/// Records an attempt on an interaction and returns the fake's answer unchanged.
fn record(
    st: &mut State,
    index: usize,
    mut entry: Value,
    body: &Value,
    at: Instant,
    resp: Resp,
) -> Resp {
    let interaction = &mut st.interactions[index];
    entry["status"] = json!(resp.status);
    entry["delay_ms"] = json!(delay_ms(interaction, at));
    entry["body"] = body.clone();
    if let Some(answer) = &resp.body {
        if resp.status >= 400 {
            entry["error"] = answer.clone();
        } else if answer.get("id").is_some() {
            entry["message_id"] = answer["id"].clone();
        }
    }
    interaction.responses.push(entry);
    resp
}

fn interaction_callback(st: &mut State, req: &Req, id: &str, token: &str, at: Instant) -> Resp {
    let id = id_of(&json!(id));
    let Some(index) = st
        .interactions
        .iter()
        .position(|i| i.id == id && i.token == token)
    else {
        return fail(404, 10062, "Unknown interaction");
    };
    let kind = req.json["type"].as_u64().unwrap_or(0);
    let entry = json!({"kind": "callback", "type": kind});
    let resp = callback_outcome(st, index, req, kind, at);
    if resp.status < 300 {
        st.interactions[index].callback = Some(kind);
    }
    record(st, index, entry, &req.json, at, resp)
}

fn callback_outcome(st: &mut State, index: usize, req: &Req, kind: u64, at: Instant) -> Resp {
    let interaction = &st.interactions[index];
    if at.saturating_duration_since(interaction.dispatched_at) > CALLBACK_WINDOW {
        return fail(404, 10062, "Unknown interaction");
    }
    if interaction.callback.is_some() {
        return fail(400, 40060, "Interaction has already been acknowledged.");
    }
    let component = interaction.kind == 3;
    let channel_id = interaction.channel_id;
    let source = interaction.source_message;
    let data = req.json.get("data").cloned().unwrap_or(json!({}));
    match kind {
        4 => {
            let message = match new_message(st, channel_id, &data, &req.files, Some(index)) {
                Ok(message) => message,
                Err(resp) => return resp,
            };
            st.interactions[index].original = Some(id_of(&message["id"]));
            no_content()
        }
        5 => {
            let ephemeral = data["flags"].as_u64().unwrap_or(0) & FLAG_EPHEMERAL;
            let id = st.next_id();
            let mut message = interaction_message(st, index, id, channel_id);
            message["flags"] = json!(FLAG_LOADING | ephemeral);
            st.store_message(channel_id, message.clone());
            st.dispatch_message("MESSAGE_CREATE", &message);
            let interaction = &mut st.interactions[index];
            interaction.original = Some(id);
            interaction.loading = true;
            no_content()
        }
        6 if component => {
            st.interactions[index].original = source;
            no_content()
        }
        7 if component => {
            let Some(source) = source else {
                return unknown_message();
            };
            if let Err(resp) = edit_message(st, channel_id, source, &data, &req.files) {
                return resp;
            }
            st.interactions[index].original = Some(source);
            no_content()
        }
        9 => {
            let title = data["title"].as_str().unwrap_or_default().chars().count();
            if data["custom_id"].as_str().is_none() || !(1..=45).contains(&title) {
                return form_error(
                    "data.title",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 45 in length.",
                );
            }
            no_content()
        }
        _ => form_error(
            "type",
            "INTERACTION_RESPONSE_TYPE_INVALID",
            "Interaction response type is invalid for this interaction",
        ),
    }
}

/// An empty message from the bot, sent through the interaction with this index.
fn interaction_message(st: &State, index: usize, id: u64, channel_id: u64) -> Value {
    let interaction = &st.interactions[index];
    let mut message = base_message(id, channel_id, st.user(BOT_ID));
    let mut metadata = json!({
        "id": sf(interaction.id),
        "type": interaction.kind,
        "user": st.user(interaction.user_id),
        "authorizing_integration_owners": {"0": sf(GUILD_ID)},
    });
    if interaction.kind == 2 {
        metadata["name"] = json!(interaction.name);
        metadata["command_type"] = json!(1);
        message["type"] = json!(20);
    } else {
        metadata["interacted_message_id"] = json!(interaction.source_message.map(sf));
        message["type"] = json!(19);
    }
    if let Some(original) = interaction.original {
        metadata["original_response_message_id"] = sf(original);
    }
    message["interaction_metadata"] = metadata;
    message["webhook_id"] = sf(APP_ID);
    message["application_id"] = sf(APP_ID);
    message
}

/// An interaction token works for webhooks (follow-ups and edits) for 15 minutes.
fn token_expired(interaction: &InteractionState, at: Instant) -> Option<Resp> {
    (at.saturating_duration_since(interaction.dispatched_at) > TOKEN_LIFETIME)
        .then(|| fail(401, 50027, "Invalid Webhook Token"))
}

fn interaction_by_token(st: &State, app: &str, token: &str) -> Option<usize> {
    if id_of(&json!(app)) != APP_ID {
        return None;
    }
    st.interactions.iter().position(|i| i.token == token)
}

fn followup(st: &mut State, req: &Req, app: &str, token: &str, at: Instant) -> Resp {
    let Some(index) = interaction_by_token(st, app, token) else {
        return unknown_webhook();
    };
    let entry = json!({"kind": "followup"});
    let resp = followup_outcome(st, index, req, at);
    record(st, index, entry, &req.json, at, resp)
}

fn followup_outcome(st: &mut State, index: usize, req: &Req, at: Instant) -> Resp {
    let interaction = &st.interactions[index];
    if let Some(expired) = token_expired(interaction, at) {
        return expired;
    }
    if interaction.callback.is_none() {
        return unknown_webhook();
    }
    let channel_id = interaction.channel_id;
    if interaction.loading {
        // The first follow-up after a deferral replaces the loading message.
        let Some(original) = interaction.original else {
            return unknown_message();
        };
        return match edit_message(st, channel_id, original, &req.json, &req.files) {
            Ok(message) => {
                st.interactions[index].loading = false;
                ok(message)
            }
            Err(resp) => resp,
        };
    }
    match new_message(st, channel_id, &req.json, &req.files, Some(index)) {
        Ok(message) => ok(message),
        Err(resp) => resp,
    }
}

fn webhook_message(
    st: &mut State,
    req: &Req,
    method: &str,
    app: &str,
    token: &str,
    which: &str,
    at: Instant,
) -> Option<Resp> {
    let Some(index) = interaction_by_token(st, app, token) else {
        return Some(unknown_webhook());
    };
    let interaction = &st.interactions[index];
    let original = which == "@original";
    let message_id = if original {
        interaction.original
    } else {
        Some(id_of(&json!(which)))
    };
    let channel_id = interaction.channel_id;
    let acknowledged = interaction.callback.is_some();
    let expired = token_expired(interaction, at);
    let kind = match (method, original) {
        ("GET", _) => None,
        ("PATCH", true) => Some("edit_original"),
        ("PATCH", false) => Some("edit_followup"),
        ("DELETE", true) => Some("delete_original"),
        ("DELETE", false) => Some("delete_followup"),
        _ => return None,
    };
    let target = message_id.and_then(|id| {
        st.find_message(id)
            .filter(|(channel, _)| *channel == channel_id)
    });
    let resp = match (expired, target) {
        (Some(expired), _) => expired,
        _ if !acknowledged => unknown_webhook(),
        (None, None) => unknown_message(),
        (None, Some((_, message))) => {
            let id = id_of(&message["id"]);
            match method {
                "GET" => ok(message),
                "PATCH" => match edit_message(st, channel_id, id, &req.json, &req.files) {
                    Ok(message) => {
                        if original {
                            st.interactions[index].loading = false;
                        }
                        ok(message)
                    }
                    Err(resp) => resp,
                },
                _ => {
                    delete_message(st, channel_id, id);
                    no_content()
                }
            }
        }
    };
    Some(match kind {
        Some(kind) => record(st, index, json!({"kind": kind}), &req.json, at, resp),
        None => resp,
    })
}

// --- Channels, threads and messages ----------------------------------------------------------

fn channel_route(st: &mut State, req: &Req, channel_id: u64, rest: &[&str]) -> Option<Resp> {
    Some(match (req.method.as_str(), rest) {
        ("GET", []) => ok(st.channels[&channel_id].clone()),
        ("PATCH", []) => patch_channel(st, channel_id, &req.json),
        ("DELETE", []) => {
            let Some(channel) = st.channels.get(&channel_id).cloned() else {
                return Some(unknown_channel());
            };
            if !is_thread(&channel) {
                return Some(fail(403, 50013, "Missing Permissions"));
            }
            st.channels.remove(&channel_id);
            st.messages.remove(&channel_id);
            st.dispatch(
                "THREAD_DELETE",
                json!({
                    "id": channel["id"], "guild_id": sf(GUILD_ID),
                    "parent_id": channel["parent_id"], "type": channel["type"],
                }),
            );
            ok(channel)
        }
        ("POST", ["threads"]) => create_thread(st, channel_id, None, &req.json),
        ("POST", ["messages", message, "threads"]) => {
            let message_id = id_of(&json!(message));
            if st.find_message(message_id).map(|(c, _)| c) != Some(channel_id) {
                return Some(unknown_message());
            }
            create_thread(st, channel_id, Some(message_id), &req.json)
        }
        (method, ["thread-members", user]) => thread_member(st, method, channel_id, user)?,
        ("GET", ["thread-members"]) => {
            let members = st
                .thread_members
                .get(&channel_id)
                .cloned()
                .unwrap_or_default();
            ok(json!(members
                .iter()
                .map(|u| thread_member_json(channel_id, *u))
                .collect::<Vec<_>>()))
        }
        ("POST", ["typing"]) => {
            *st.typing.entry(channel_id).or_default() += 1;
            no_content()
        }
        ("GET", ["messages"]) => get_messages(st, req, channel_id),
        ("POST", ["messages"]) => match new_message(st, channel_id, &req.json, &req.files, None) {
            Ok(message) => ok(message),
            Err(resp) => resp,
        },
        (method, ["messages", message]) => {
            let message_id = id_of(&json!(message));
            let visible = st
                .find_message(message_id)
                .filter(|(c, m)| *c == channel_id && flags(m) & FLAG_EPHEMERAL == 0);
            let Some((_, message)) = visible else {
                return Some(unknown_message());
            };
            match method {
                "GET" => ok(st.visible(&message)),
                "PATCH" => {
                    if id_of(&message["author"]["id"]) != BOT_ID {
                        return Some(fail(
                            403,
                            50005,
                            "Cannot edit a message authored by another user",
                        ));
                    }
                    match edit_message(st, channel_id, message_id, &req.json, &req.files) {
                        Ok(message) => ok(message),
                        Err(resp) => resp,
                    }
                }
                "DELETE" => {
                    delete_message(st, channel_id, message_id);
                    no_content()
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn thread_member_json(thread_id: u64, user_id: u64) -> Value {
    json!({
        "id": sf(thread_id),
        "user_id": sf(user_id),
        "join_timestamp": timestamp(),
        "flags": 0,
    })
}

fn thread_member(st: &mut State, method: &str, channel_id: u64, user: &str) -> Option<Resp> {
    let user_id = if user == "@me" {
        BOT_ID
    } else {
        id_of(&json!(user))
    };
    let thread = st.channels[&channel_id].clone();
    if !is_thread(&thread) {
        return Some(fail(
            400,
            50024,
            "Cannot execute action on this channel type",
        ));
    }
    if !st.members.contains_key(&user_id) {
        return Some(fail(404, 10007, "Unknown Member"));
    }
    let members = st.thread_members.entry(channel_id).or_default();
    Some(match method {
        "GET" => {
            if members.contains(&user_id) {
                ok(thread_member_json(channel_id, user_id))
            } else {
                fail(404, 10007, "Unknown Member")
            }
        }
        "PUT" => {
            if thread["thread_metadata"]["archived"] == true {
                return Some(fail(400, 50083, "Thread is archived"));
            }
            if !members.contains(&user_id) {
                members.push(user_id);
                let count = members.len();
                let mut added = thread_member_json(channel_id, user_id);
                added["member"] = st.member_json(user_id, true);
                if let Some(channel) = st.channels.get_mut(&channel_id) {
                    channel["member_count"] = json!(count.min(50));
                }
                st.dispatch(
                    "THREAD_MEMBERS_UPDATE",
                    json!({
                        "id": sf(channel_id),
                        "guild_id": sf(GUILD_ID),
                        "member_count": count.min(50),
                        "added_members": [added],
                    }),
                );
            }
            no_content()
        }
        "DELETE" => {
            members.retain(|m| *m != user_id);
            let count = members.len();
            st.dispatch(
                "THREAD_MEMBERS_UPDATE",
                json!({
                    "id": sf(channel_id),
                    "guild_id": sf(GUILD_ID),
                    "member_count": count.min(50),
                    "removed_member_ids": [sf(user_id)],
                }),
            );
            no_content()
        }
        _ => return None,
    })
}

fn check_channel_name(name: &Value) -> Result<(), Resp> {
    let length = name.as_str().unwrap_or_default().chars().count();
    if !(1..=100).contains(&length) {
        return Err(form_error(
            "name",
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        ));
    }
    Ok(())
}

/// POST .../threads: a private thread (12) when no `type` is given, as Discord does; a public
/// one (11) when started from a message.
fn create_thread(st: &mut State, parent: u64, message: Option<u64>, body: &Value) -> Resp {
    if is_thread(&st.channels[&parent]) {
        return fail(400, 50024, "Cannot execute action on this channel type");
    }
    if let Err(resp) = check_channel_name(&body["name"]) {
        return resp;
    }
    let kind = match (message, body["type"].as_u64()) {
        (Some(_), _) => 11,
        (None, None) => 12,
        (None, Some(kind @ (10..=12))) => kind,
        (None, Some(_)) => {
            return form_error(
                "type",
                "BASE_TYPE_CHOICES",
                "Value must be one of {10, 11, 12}.",
            )
        }
    };
    let archive = body["auto_archive_duration"].as_u64().unwrap_or(4320);
    if ![60, 1440, 4320, 10080].contains(&archive) {
        return form_error(
            "auto_archive_duration",
            "BASE_TYPE_CHOICES",
            "Value must be one of {60, 1440, 4320, 10080}.",
        );
    }
    let id = match message {
        Some(message) => message,
        None => st.next_id(),
    };
    let now = timestamp();
    let thread = json!({
        "id": sf(id),
        "guild_id": sf(GUILD_ID),
        "parent_id": sf(parent),
        "owner_id": sf(BOT_ID),
        "type": kind,
        "name": body["name"],
        "last_message_id": null,
        "rate_limit_per_user": body["rate_limit_per_user"].as_u64().unwrap_or(0),
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": false,
            "auto_archive_duration": archive,
            "archive_timestamp": now,
            "locked": false,
            "create_timestamp": now,
            "invitable": body["invitable"] != false,
        },
    });
    st.channels.insert(id, thread.clone());
    st.thread_members.insert(id, vec![BOT_ID]);
    let mut event = thread.clone();
    event["newly_created"] = json!(true);
    st.dispatch("THREAD_CREATE", event);
    ok(thread)
}

fn patch_channel(st: &mut State, channel_id: u64, body: &Value) -> Resp {
    let mut channel = st.channels[&channel_id].clone();
    if body.get("name").is_some() {
        if let Err(resp) = check_channel_name(&body["name"]) {
            return resp;
        }
        channel["name"] = body["name"].clone();
    }
    let thread = is_thread(&channel);
    if thread {
        for key in ["archived", "locked", "invitable", "auto_archive_duration"] {
            if let Some(value) = body.get(key) {
                if key == "archived" && channel["thread_metadata"]["archived"] != *value {
                    channel["thread_metadata"]["archive_timestamp"] = json!(timestamp());
                }
                channel["thread_metadata"][key] = value.clone();
            }
        }
    } else if let Some(topic) = body.get("topic") {
        if topic.as_str().is_some_and(|t| t.chars().count() > 1024) {
            return form_error(
                "topic",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 1024 or fewer in length.",
            );
        }
        channel["topic"] = topic.clone();
    }
    if let Some(rate) = body.get("rate_limit_per_user") {
        channel["rate_limit_per_user"] = rate.clone();
    }
    st.channels.insert(channel_id, channel.clone());
    let t = if thread {
        "THREAD_UPDATE"
    } else {
        "CHANNEL_UPDATE"
    };
    st.dispatch(t, channel.clone());
    ok(channel)
}

/// GET messages: `limit` (1 to 100, default 50) around `before`, `after` or `around`, always
/// newest first. With `after`, these are the oldest messages after it.
fn get_messages(st: &State, req: &Req, channel_id: u64) -> Resp {
    let limit = match req.query("limit").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n @ 1..=100)) => n,
        Some(_) => {
            return form_error(
                "limit",
                "NUMBER_TYPE_MAX",
                "int value should be less than or equal to 100.",
            )
        }
    };
    let mut messages: Vec<&Value> = st
        .messages
        .get(&channel_id)
        .into_iter()
        .flatten()
        .filter(|m| flags(m) & FLAG_EPHEMERAL == 0)
        .collect();
    messages.sort_by_key(|m| id_of(&m["id"]));
    let id = |name: &str| req.query(name).and_then(|v| v.parse::<u64>().ok());
    let mut chosen: Vec<&Value> = if let Some(after) = id("after") {
        messages
            .into_iter()
            .filter(|m| id_of(&m["id"]) > after)
            .take(limit)
            .collect()
    } else if let Some(around) = id("around") {
        let split = messages.partition_point(|m| id_of(&m["id"]) < around);
        let start = split.saturating_sub(limit / 2);
        messages.into_iter().skip(start).take(limit).collect()
    } else {
        let before = id("before").unwrap_or(u64::MAX);
        let older: Vec<&Value> = messages
            .into_iter()
            .filter(|m| id_of(&m["id"]) < before)
            .collect();
        older[older.len().saturating_sub(limit)..].to_vec()
    };
    chosen.reverse();
    ok(json!(chosen
        .into_iter()
        .map(|m| st.visible(m))
        .collect::<Vec<_>>()))
}

fn delete_message(st: &mut State, channel_id: u64, message_id: u64) {
    let Some(message) = st.find_message(message_id).map(|(_, m)| m) else {
        return;
    };
    if let Some(messages) = st.messages.get_mut(&channel_id) {
        messages.retain(|m| id_of(&m["id"]) != message_id);
    }
    if flags(&message) & FLAG_EPHEMERAL == 0 {
        st.dispatch(
            "MESSAGE_DELETE",
            json!({"id": sf(message_id), "channel_id": sf(channel_id), "guild_id": sf(GUILD_ID)}),
        );
    }
}

/// Unarchives a thread for a new message, as Discord does, unless it is locked.
fn reopen_thread(st: &mut State, channel_id: u64) -> Result<(), Resp> {
    let Some(channel) = st.channels.get_mut(&channel_id) else {
        return Err(unknown_channel());
    };
    if !is_thread(channel) || channel["thread_metadata"]["archived"] != true {
        return Ok(());
    }
    if channel["thread_metadata"]["locked"] == true {
        return Err(fail(400, 50083, "Thread is archived"));
    }
    channel["thread_metadata"]["archived"] = json!(false);
    channel["thread_metadata"]["archive_timestamp"] = json!(timestamp());
    let channel = channel.clone();
    st.dispatch("THREAD_UPDATE", channel);
    Ok(())
}

/// Creates a bot message from a payload (a channel message, or an interaction's when `via` is
/// its index), stores it and dispatches it unless it is ephemeral.
fn new_message(
    st: &mut State,
    channel_id: u64,
    payload: &Value,
    files: &[Upload],
    via: Option<usize>,
) -> Result<Value, Resp> {
    if !st.channels.contains_key(&channel_id) {
        return Err(unknown_channel());
    }
    // Discord's nonce check: the same nonce from the same author returns the first message.
    if payload["enforce_nonce"] == true && !payload["nonce"].is_null() {
        let same = st.messages.get(&channel_id).and_then(|messages| {
            messages
                .iter()
                .find(|m| m["nonce"] == payload["nonce"] && id_of(&m["author"]["id"]) == BOT_ID)
        });
        if let Some(same) = same {
            return Ok(same.clone());
        }
    }
    let id = st.next_id();
    let mut message = match via {
        Some(index) => interaction_message(st, index, id, channel_id),
        None => base_message(id, channel_id, st.user(BOT_ID)),
    };
    let allowed_flags = FLAG_SUPPRESS_EMBEDS
        | FLAG_SUPPRESS_NOTIFICATIONS
        | if via.is_some() { FLAG_EPHEMERAL } else { 0 };
    message["flags"] = json!(payload["flags"].as_u64().unwrap_or(0) & allowed_flags);
    for key in ["content", "embeds", "components", "tts"] {
        if let Some(value) = payload.get(key).filter(|v| !v.is_null()) {
            message[key] = value.clone();
        }
    }
    if !payload["nonce"].is_null() {
        message["nonce"] = payload["nonce"].clone();
    }
    if let Some(reference) = payload.get("message_reference").filter(|r| !r.is_null()) {
        let referenced = st
            .find_message(id_of(&reference["message_id"]))
            .filter(|(c, _)| *c == channel_id);
        let Some((_, referenced)) = referenced else {
            return Err(form_error(
                "message_reference",
                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                "Unknown message",
            ));
        };
        message["type"] = json!(19);
        message["message_reference"] = json!({
            "type": 0, "message_id": referenced["id"], "channel_id": sf(channel_id),
            "guild_id": sf(GUILD_ID),
        });
        message["referenced_message"] = referenced;
    }
    normalize_embeds(&mut message);
    message["attachments"] = json!(new_attachments(
        st,
        channel_id,
        payload.get("attachments"),
        files,
        &[]
    )?);
    check_message(&message)?;
    if via.is_none() || flags(&message) & FLAG_EPHEMERAL == 0 {
        reopen_thread(st, channel_id)?;
    }
    st.fill_mentions(&mut message);
    st.store_message(channel_id, message.clone());
    st.dispatch_message("MESSAGE_CREATE", &message);
    Ok(message)
}

/// Applies an edit payload to a stored message, checks the result, stores it and dispatches
/// MESSAGE_UPDATE unless it is ephemeral. A loading message stops loading.
fn edit_message(
    st: &mut State,
    channel_id: u64,
    message_id: u64,
    payload: &Value,
    files: &[Upload],
) -> Result<Value, Resp> {
    let Some(mut message) = st
        .find_message(message_id)
        .filter(|(c, _)| *c == channel_id)
        .map(|(_, m)| m)
    else {
        return Err(unknown_message());
    };
    for (key, empty) in [
        ("content", json!("")),
        ("embeds", json!([])),
        ("components", json!([])),
    ] {
        if let Some(value) = payload.get(key) {
            message[key] = if value.is_null() {
                empty
            } else {
                value.clone()
            };
        }
    }
    let mut new_flags = flags(&message) & !FLAG_LOADING;
    if let Some(requested) = payload["flags"].as_u64() {
        new_flags = (new_flags & !FLAG_SUPPRESS_EMBEDS) | (requested & FLAG_SUPPRESS_EMBEDS);
    }
    message["flags"] = json!(new_flags);
    normalize_embeds(&mut message);
    let existing = message["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    message["attachments"] = json!(new_attachments(
        st,
        channel_id,
        payload.get("attachments"),
        files,
        &existing
    )?);
    check_message(&message)?;
    message["edited_timestamp"] = json!(timestamp());
    st.fill_mentions(&mut message);
    if let Some(stored) = st.message_mut(channel_id, message_id) {
        *stored = message.clone();
    }
    st.dispatch_message("MESSAGE_UPDATE", &message);
    Ok(message)
}

fn normalize_embeds(message: &mut Value) {
    if let Some(embeds) = message["embeds"].as_array_mut() {
        for embed in embeds {
            if embed.get("type").is_none() {
                embed["type"] = json!("rich");
            }
        }
    }
}

/// The attachments after a create or an edit: with an `attachments` list, the listed existing
/// ones are kept and `files[n]` are matched to entries with id `n`; without one, the existing
/// attachments stay. Uploaded files no entry names are attached too.
fn new_attachments(
    st: &mut State,
    channel_id: u64,
    listed: Option<&Value>,
    files: &[Upload],
    existing: &[Value],
) -> Result<Vec<Value>, Resp> {
    if files.iter().any(|f| f.bytes.len() > MAX_FILE_BYTES) {
        return Err(fail(413, 40005, "Request entity too large"));
    }
    let mut out = Vec::new();
    let mut used = vec![false; files.len()];
    match listed.and_then(Value::as_array) {
        None => out.extend(existing.iter().cloned()),
        Some(entries) => {
            for (k, entry) in entries.iter().enumerate() {
                let id = id_of(&entry["id"]);
                if let Some(kept) = existing.iter().find(|a| id_of(&a["id"]) == id) {
                    out.push(kept.clone());
                    continue;
                }
                let Some(position) = files
                    .iter()
                    .position(|f| f.index == Some(id) || f.index.is_none() && id == 0)
                else {
                    return Err(form_error(
                        &format!("attachments.{k}.id"),
                        "ATTACHMENT_NOT_FOUND",
                        "Unknown attachment",
                    ));
                };
                used[position] = true;
                out.push(store_file(st, channel_id, &files[position], entry));
            }
        }
    }
    for (position, file) in files.iter().enumerate() {
        if !used[position] {
            out.push(store_file(st, channel_id, file, &Value::Null));
        }
    }
    if out.len() > 10 {
        return Err(form_error(
            "attachments",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        ));
    }
    Ok(out)
}

fn store_file(st: &mut State, channel_id: u64, file: &Upload, entry: &Value) -> Value {
    let id = st.next_id();
    let filename = entry["filename"]
        .as_str()
        .unwrap_or(&file.filename)
        .to_string();
    st.files.insert(id, file.bytes.clone());
    let url = format!("https://cdn.discordapp.com/attachments/{channel_id}/{id}/{filename}");
    json!({
        "id": sf(id),
        "filename": filename,
        "description": entry.get("description").cloned().unwrap_or(Value::Null),
        "size": file.bytes.len(),
        "url": url,
        "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
        "content_type": file.content_type,
    })
}

/// Discord's limits on a message's content, embeds and components, and its refusal of an empty
/// message.
fn check_message(message: &Value) -> Result<(), Resp> {
    let too_long = |path: &str, max: usize| {
        form_error(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {max} or fewer in length."),
        )
    };
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if chars(&message["content"]) > 2000 {
        return Err(too_long("content", 2000));
    }
    let embeds = message["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        return Err(too_long("embeds", 10));
    }
    let mut total = 0;
    for (i, embed) in embeds.iter().enumerate() {
        for (field, max) in [("title", 256), ("description", 4096)] {
            if chars(&embed[field]) > max {
                return Err(too_long(&format!("embeds.{i}.{field}"), max));
            }
            total += chars(&embed[field]);
        }
        if chars(&embed["footer"]["text"]) > 2048 {
            return Err(too_long(&format!("embeds.{i}.footer.text"), 2048));
        }
        if chars(&embed["author"]["name"]) > 256 {
            return Err(too_long(&format!("embeds.{i}.author.name"), 256));
        }
        total += chars(&embed["footer"]["text"]) + chars(&embed["author"]["name"]);
        let fields = embed["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            return Err(too_long(&format!("embeds.{i}.fields"), 25));
        }
        for (j, field) in fields.iter().enumerate() {
            for (key, max) in [("name", 256), ("value", 1024)] {
                let length = chars(&field[key]);
                if length == 0 {
                    return Err(form_error(
                        &format!("embeds.{i}.fields.{j}.{key}"),
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                    ));
                }
                if length > max {
                    return Err(too_long(&format!("embeds.{i}.fields.{j}.{key}"), max));
                }
                total += length;
            }
        }
    }
    if total > 6000 {
        return Err(form_error(
            "embeds",
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        ));
    }
    check_components(&message["components"])?;
    let empty = message["content"]
        .as_str()
        .is_none_or(|c| c.trim().is_empty())
        && embeds.is_empty()
        && message["attachments"].as_array().is_none_or(Vec::is_empty)
        && message["components"].as_array().is_none_or(Vec::is_empty)
        && message.get("sticker_ids").is_none()
        && message.get("poll").is_none();
    if empty && flags(message) & FLAG_LOADING == 0 {
        return Err(fail(400, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

fn check_components(components: &Value) -> Result<(), Resp> {
    let rows = components.as_array().cloned().unwrap_or_default();
    if rows.len() > 5 {
        return Err(form_error(
            "components",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 5 or fewer in length.",
        ));
    }
    let mut custom_ids: Vec<String> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row["type"] != 1 {
            return Err(form_error(
                &format!("components.{i}.type"),
                "UNION_TYPE_CHOICES",
                "Value of field \"type\" must be one of (1,).",
            ));
        }
        let children = row["components"].as_array().cloned().unwrap_or_default();
        if !(1..=5).contains(&children.len()) {
            return Err(form_error(
                &format!("components.{i}.components"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 5 in length.",
            ));
        }
        let selects = children.iter().filter(|c| c["type"] != 2).count();
        if selects > 0 && children.len() > 1 {
            return Err(form_error(
                &format!("components.{i}.components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            ));
        }
        for (j, child) in children.iter().enumerate() {
            let path = format!("components.{i}.components.{j}");
            let link = child["type"] == 2 && child["style"] == 5;
            let custom_id = child["custom_id"].as_str();
            match (link, custom_id) {
                (true, Some(_)) | (false, None) if child["style"] != 6 => {
                    return Err(form_error(
                        &format!("{path}.custom_id"),
                        if link {
                            "BUTTON_LINK_CUSTOM_ID"
                        } else {
                            "BASE_TYPE_REQUIRED"
                        },
                        if link {
                            "A link button cannot have a custom id"
                        } else {
                            "This field is required"
                        },
                    ));
                }
                _ => {}
            }
            if link && child["url"].as_str().is_none() {
                return Err(form_error(
                    &format!("{path}.url"),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ));
            }
            if let Some(custom_id) = custom_id {
                if custom_id.chars().count() > 100 {
                    return Err(form_error(
                        &format!("{path}.custom_id"),
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 100 or fewer in length.",
                    ));
                }
                if custom_ids.iter().any(|c| c == custom_id) {
                    return Err(form_error(
                        &format!("{path}.custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    ));
                }
                custom_ids.push(custom_id.to_string());
            }
            if child["label"]
                .as_str()
                .is_some_and(|l| l.chars().count() > 80)
            {
                return Err(form_error(
                    &format!("{path}.label"),
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 80 or fewer in length.",
                ));
            }
            if child["type"] == 3 && child["options"].as_array().is_some_and(|o| o.len() > 25) {
                return Err(form_error(
                    &format!("{path}.options"),
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 25 in length.",
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

async fn serve_gateway(socket: TcpStream, inner: Arc<Inner>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = {
        let mut st = inner.lock();
        st.next_conn += 1;
        Conn {
            id: st.next_conn,
            tx,
        }
    };
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": HEARTBEAT_MS}});
    if ws.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(text)) => {
                    if ws.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
                // Dropping the socket without a close frame is the point.
                Some(Out::Drop) | None => break,
            },
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => on_gateway_payload(&inner, &conn, &text),
                Some(Ok(WsMessage::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    end_session(&inner, conn.id, code);
                    // Keep reading so that tungstenite answers the close frame.
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let mut st = inner.lock();
    for session in &mut st.sessions {
        if session.conn.as_ref().is_some_and(|c| c.id == conn.id) {
            session.conn = None;
        }
    }
    inner.update_live(&st);
}

fn on_gateway_payload(inner: &Inner, conn: &Conn, text: &str) {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        conn.close(4002, "Error while decoding payload.");
        return;
    };
    match payload["op"].as_u64() {
        Some(1) => conn.send(&json!({"op": 11, "s": null, "t": null, "d": null})),
        Some(2) => identify(inner, conn, &payload["d"]),
        Some(6) => resume(inner, conn, &payload["d"]),
        // Presence, voice state and member requests are accepted and ignored.
        Some(3 | 4 | 8) => {}
        _ => conn.close(4001, "Unknown opcode."),
    }
}

fn token_ok(d: &Value) -> bool {
    let token = d["token"].as_str().unwrap_or_default();
    token.strip_prefix("Bot ").unwrap_or(token) == TOKEN
}

fn identify(inner: &Inner, conn: &Conn, d: &Value) {
    if !token_ok(d) {
        conn.close(4004, "Authentication failed.");
        return;
    }
    let mut st = inner.lock();
    let attached = st
        .sessions
        .iter()
        .any(|s| s.conn.as_ref().is_some_and(|c| c.id == conn.id));
    if attached {
        conn.close(4005, "Already authenticated.");
        return;
    }
    let intents = d["intents"].as_u64().unwrap_or(0);
    st.identifies += 1;
    st.content_intent = intents & INTENT_MESSAGE_CONTENT != 0;
    let session_id = format!("{:032x}", st.next_id());
    let ready = json!({
        "v": 10,
        "user": current_user(),
        "guilds": [{"id": sf(GUILD_ID), "unavailable": true}],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": st.ws_url,
        "shard": d.get("shard").cloned().unwrap_or(json!([0, 1])),
        "application": {"id": sf(APP_ID), "flags": (1 << 19) | (1 << 23)},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["fake"],
        "user_settings": {},
        "auth": {},
    });
    let guild = st.guild_json(intents & INTENT_GUILD_PRESENCES != 0);
    let mut session = Session {
        id: session_id,
        seq: 0,
        intents,
        log: Vec::new(),
        conn: Some(conn.clone()),
    };
    let mut frames = vec![("READY", ready)];
    if intents & INTENT_GUILDS != 0 {
        frames.push(("GUILD_CREATE", guild));
    }
    for (t, d) in frames {
        session.seq += 1;
        let frame = json!({"op": 0, "t": t, "s": session.seq, "d": d});
        conn.send(&frame);
        session.log.push(frame.clone());
        st.dispatches.push(frame);
    }
    st.sessions.push(session);
    inner.update_live(&st);
}

fn resume(inner: &Inner, conn: &Conn, d: &Value) {
    if !token_ok(d) {
        conn.close(4004, "Authentication failed.");
        return;
    }
    let mut st = inner.lock();
    let session_id = d["session_id"].as_str().unwrap_or_default();
    let seq = d["seq"].as_u64().unwrap_or(0);
    let Some(index) = st.sessions.iter().position(|s| s.id == session_id) else {
        conn.send(&json!({"op": 9, "s": null, "t": null, "d": false}));
        return;
    };
    st.resumes += 1;
    let state = &mut *st;
    let session = &mut state.sessions[index];
    if let Some(old) = session.conn.replace(conn.clone()) {
        if old.id != conn.id {
            let _ = old.tx.send(Out::Drop);
        }
    }
    for frame in session.log.iter().filter(|f| f["s"].as_u64() > Some(seq)) {
        conn.send(frame);
    }
    session.seq += 1;
    let resumed = json!({"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake"]}});
    conn.send(&resumed);
    state.dispatches.push(resumed);
    inner.update_live(&st);
}

/// A client closed with a frame: 1000 and 1001 end the session, other codes keep it resumable.
fn end_session(inner: &Inner, conn_id: u64, code: Option<u16>) {
    let mut st = inner.lock();
    if matches!(code, Some(1000 | 1001)) {
        st.sessions
            .retain(|s| s.conn.as_ref().is_none_or(|c| c.id != conn_id));
    } else {
        for session in &mut st.sessions {
            if session.conn.as_ref().is_some_and(|c| c.id == conn_id) {
                session.conn = None;
            }
        }
    }
    inner.update_live(&st);
}
