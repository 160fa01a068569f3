//! The fake Discord's state: the guild with its members, channels, threads and messages, the
//! snowflakes, and the JSON shapes of users, roles, members, messages and the guild.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::gateway::{hide_content, Session};
use super::interactions::InteractionState;
use super::limits::Limiter;
use super::{Recorded, ADMIN_ROLE, BOT_ID, BOT_NAME, CHANNEL_ID, GUILD_ID, SECOND_CHANNEL_ID};

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

pub(super) const FLAG_SUPPRESS_EMBEDS: u64 = 1 << 2;
pub(super) const FLAG_EPHEMERAL: u64 = 1 << 6;
pub(super) const FLAG_LOADING: u64 = 1 << 7;
pub(super) const FLAG_SUPPRESS_NOTIFICATIONS: u64 = 1 << 12;

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
pub(super) const ALL_PERMISSIONS: u64 = (1 << 51) - 1;

pub(super) struct MemberInfo {
    pub(super) name: String,
    pub(super) roles: Vec<u64>,
    pub(super) bot: bool,
    pub(super) joined_at: String,
}

pub(super) struct State {
    pub(super) ws_url: String,
    pub(super) last_id: u64,
    pub(super) members: BTreeMap<u64, MemberInfo>,
    /// The text channel and the threads, in wire shape.
    pub(super) channels: BTreeMap<u64, Value>,
    pub(super) thread_members: BTreeMap<u64, Vec<u64>>,
    /// Messages per channel, oldest first, in REST shape.
    pub(super) messages: BTreeMap<u64, Vec<Value>>,
    /// Attachment bytes by attachment id.
    pub(super) files: HashMap<u64, Vec<u8>>,
    pub(super) commands: Vec<Value>,
    pub(super) global_commands: Vec<Value>,
    pub(super) interactions: Vec<InteractionState>,
    pub(super) requests: Vec<Recorded>,
    pub(super) typing: HashMap<u64, usize>,
    pub(super) sessions: Vec<Session>,
    pub(super) dispatches: Vec<Value>,
    pub(super) last_dispatch: Option<(String, Value)>,
    pub(super) next_conn: u64,
    pub(super) identifies: usize,
    pub(super) resumes: usize,
    /// Whether the latest IDENTIFY asked for MESSAGE_CONTENT (assumed before any).
    pub(super) content_intent: bool,
    /// The rate limits, once a test turned them on.
    pub(super) limiter: Option<Limiter>,
}

impl State {
    pub(super) fn new(ws_url: String) -> State {
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
    pub(super) fn next_id(&mut self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let candidate = ms.saturating_sub(DISCORD_EPOCH_MS) << 22;
        self.last_id = candidate.max(self.last_id + 1);
        self.last_id
    }

    pub(super) fn require_session(&self, what: &str) {
        if self.sessions.is_empty() {
            panic!("fake discord: {what} before any client identified; call wait_ready() first");
        }
    }

    fn member(&self, user_id: u64) -> &MemberInfo {
        self.members.get(&user_id).unwrap_or_else(|| {
            panic!("fake discord: user {user_id} is not a member; call add_member first")
        })
    }

    pub(super) fn user(&self, user_id: u64) -> Value {
        match self.members.get(&user_id) {
            Some(m) => user_json(user_id, &m.name, m.bot),
            None => user_json(user_id, &format!("user{user_id}"), false),
        }
    }

    /// The guild member object, with `user` when `with_user`.
    pub(super) fn member_json(&self, user_id: u64, with_user: bool) -> Value {
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

    pub(super) fn permissions(&self, user_id: u64) -> u64 {
        match self.members.get(&user_id) {
            Some(m) if m.roles.contains(&ADMIN_ROLE) => ALL_PERMISSIONS,
            _ => EVERYONE_PERMISSIONS,
        }
    }

    pub(super) fn find_message(&self, message_id: u64) -> Option<(u64, Value)> {
        self.messages.iter().find_map(|(channel, messages)| {
            messages
                .iter()
                .find(|m| id_of(&m["id"]) == message_id)
                .map(|m| (*channel, m.clone()))
        })
    }

    pub(super) fn message_mut(&mut self, channel_id: u64, message_id: u64) -> Option<&mut Value> {
        self.messages
            .get_mut(&channel_id)?
            .iter_mut()
            .find(|m| id_of(&m["id"]) == message_id)
    }

    pub(super) fn store_message(&mut self, channel_id: u64, message: Value) {
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

    pub(super) fn store_user_message(
        &mut self,
        user_id: u64,
        channel_id: u64,
        content: &str,
    ) -> Value {
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
    pub(super) fn fill_mentions(&self, message: &mut Value) {
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

    /// The message as the bot may see it: without MESSAGE_CONTENT, others' content is empty.
    pub(super) fn visible(&self, message: &Value) -> Value {
        let mut message = message.clone();
        if !self.content_intent {
            hide_content(&mut message);
        }
        message
    }

    pub(super) fn guild_json(&self, all_members: bool) -> Value {
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

pub(super) fn sf(id: u64) -> Value {
    Value::String(id.to_string())
}

/// A snowflake from a string or a number; 0 when neither.
pub(super) fn id_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn flags(message: &Value) -> u64 {
    message["flags"].as_u64().unwrap_or(0)
}

pub(super) fn is_thread(channel: &Value) -> bool {
    matches!(channel["type"].as_u64(), Some(10..=12))
}

pub(super) fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(super) fn user_json(id: u64, name: &str, bot: bool) -> Value {
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

pub(super) fn roles_json() -> Value {
    json!([
        role_json(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, 0),
        role_json(ADMIN_ROLE, "admin", 8, 1),
    ])
}

/// A message with every field serenity requires, empty.
pub(super) fn base_message(id: u64, channel_id: u64, author: Value) -> Value {
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
