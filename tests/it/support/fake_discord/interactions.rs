//! Interactions: the INTERACTION_CREATE a test dispatches; the callback, with its three-second
//! window and one callback per interaction; follow-ups, the first of which replaces a deferral's
//! loading message; edits and deletes of `@original` and follow-ups through the webhook; and the
//! 15-minute token lifetime. Every attempt is recorded for [`FakeDiscord::responses`].

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::channels::delete_message;
use super::messages::{edit_message, new_message, MAX_FILE_BYTES};
use super::rest::{fail, form_error, no_content, ok, unknown_message, unknown_webhook, Req, Resp};
use super::state::{base_message, id_of, sf, State, ALL_PERMISSIONS, FLAG_EPHEMERAL, FLAG_LOADING};
use super::{Interaction, APP_ID, BOT_ID, GUILD_ID};

const CALLBACK_WINDOW: Duration = Duration::from_secs(3);
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What the fake keeps of an interaction it dispatched: who used what where, and what was done
/// with its token since.
pub(super) struct InteractionState {
    pub(super) id: u64,
    token: String,
    /// 2 for a command, 3 for a component.
    kind: u64,
    user_id: u64,
    channel_id: u64,
    /// The command name or the custom id.
    pub(super) name: String,
    /// The message whose component was used.
    source_message: Option<u64>,
    pub(super) dispatched_at: Instant,
    callback: Option<u64>,
    /// The message `@original` refers to.
    original: Option<u64>,
    /// A deferred response whose loading message the first follow-up replaces.
    loading: bool,
    pub(super) responses: Vec<Value>,
}

impl State {
    /// Dispatches INTERACTION_CREATE of `kind` (2 a command, 3 a component) by `user_id` in
    /// `channel_id`, and keeps the interaction for its callback and webhooks.
    pub(super) fn dispatch_interaction(
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
}

/// The buttons of a message, in every action row.
pub(super) fn buttons(message: &Value) -> impl Iterator<Item = &Value> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter(|c| c["type"] == 2)
}

/// Turns the test's options into Discord's array, typed from the registered command if any.
pub(super) fn command_options(options: Value, registered: Option<&Value>) -> Vec<Value> {
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

pub(super) fn interaction_callback(
    st: &mut State,
    req: &Req,
    id: &str,
    token: &str,
    at: Instant,
) -> Resp {
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
pub(super) fn interaction_message(st: &State, index: usize, id: u64, channel_id: u64) -> Value {
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

pub(super) fn followup(st: &mut State, req: &Req, app: &str, token: &str, at: Instant) -> Resp {
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

pub(super) fn webhook_message(
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
