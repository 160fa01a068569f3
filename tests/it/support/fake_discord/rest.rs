//! The fake Discord's REST API: each request is read, recorded, checked against the rate limits
//! and routed: the gateway URL, users, the application, the guild and the application commands
//! here, channels in `channels`, interactions and their webhooks in `interactions`. Refusals
//! are Discord's JSON errors.

use std::time::Instant;

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use super::channels::channel_route;
use super::interactions::{followup, interaction_callback, webhook_message};
use super::limits::Headers;
use super::state::{id_of, is_thread, roles_json, sf, user_json, State};
use super::{Inner, Recorded, APP_ID, BOT_ID, BOT_NAME, GUILD_ID, TOKEN};
use crate::support::http;

/// A request after parsing: the JSON body (or `payload_json`) and any uploaded files.
pub(super) struct Req {
    pub(super) method: String,
    /// The path as sent, with the query.
    target: String,
    /// The path after `/api/v10`, without the query.
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    authorization: Option<String>,
    pub(super) json: Value,
    /// Whether the body was present but not valid JSON.
    bad_json: bool,
    pub(super) files: Vec<Upload>,
}

impl Req {
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `files[n]` part of a multipart body.
pub(super) struct Upload {
    pub(super) index: Option<u64>,
    pub(super) filename: String,
    pub(super) content_type: Option<String>,
    pub(super) bytes: Vec<u8>,
}

pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
}

pub(super) fn ok(body: Value) -> Resp {
    Resp {
        status: 200,
        body: Some(body),
    }
}

pub(super) fn no_content() -> Resp {
    Resp {
        status: 204,
        body: None,
    }
}

pub(super) fn fail(status: u16, code: u64, message: &str) -> Resp {
    Resp {
        status,
        body: Some(json!({"code": code, "message": message})),
    }
}

/// Discord's 50035 "Invalid Form Body", with the error nested along a dotted path such as
/// `components.0.components.1.custom_id`.
pub(super) fn form_error(path: &str, code: &str, message: &str) -> Resp {
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

pub(super) fn unknown_channel() -> Resp {
    fail(404, 10003, "Unknown Channel")
}

pub(super) fn unknown_message() -> Resp {
    fail(404, 10008, "Unknown Message")
}

pub(super) fn unknown_webhook() -> Resp {
    fail(404, 10015, "Unknown Webhook")
}

pub(super) async fn serve_rest(mut socket: TcpStream, inner: &Inner) -> std::io::Result<()> {
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

pub(super) fn route(st: &mut State, req: &Req, at: Instant) -> Resp {
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

pub(super) fn current_user() -> Value {
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

/// The application command routes, for the guild's commands or (`guild` false) the global ones.
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
    Some(match (req.method.as_str(), rest) {
        ("GET", []) => ok(json!(commands(st, guild))),
        ("PUT", []) => overwrite_commands(st, req, guild),
        ("POST", []) => create_command(st, req, guild),
        (method, [command_id]) => command_by_id(st, req, method, command_id, guild)?,
        _ => return None,
    })
}

/// The guild's commands or the global ones.
fn commands(st: &mut State, guild: bool) -> &mut Vec<Value> {
    if guild {
        &mut st.commands
    } else {
        &mut st.global_commands
    }
}

/// PUT: replaces every command; a command of an existing name keeps its id.
fn overwrite_commands(st: &mut State, req: &Req, guild: bool) -> Resp {
    let Some(bodies) = req.json.as_array() else {
        return form_error("_", "BASE_TYPE_ARRAY", "Must be an array.");
    };
    let old = commands(st, guild).clone();
    let mut new = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if let Err((path, message)) = check_command(body) {
            return form_error(&format!("{i}.{path}"), "BASE_TYPE_BAD_LENGTH", &message);
        }
        if new.iter().any(|c: &Value| c["name"] == body["name"]) {
            return form_error(
                &format!("{i}.name"),
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                "Application command names must be unique",
            );
        }
        let existing = old.iter().find(|c| c["name"] == body["name"]);
        let id = existing.map(|c| id_of(&c["id"]));
        new.push(command_json(st, body, id, guild.then_some(GUILD_ID)));
    }
    *commands(st, guild) = new.clone();
    ok(json!(new))
}

/// POST: creates a command (201), or replaces the one of the same name (200).
fn create_command(st: &mut State, req: &Req, guild: bool) -> Resp {
    if let Err((path, message)) = check_command(&req.json) {
        return form_error(&path, "BASE_TYPE_BAD_LENGTH", &message);
    }
    let mut list = commands(st, guild).clone();
    let position = list.iter().position(|c| c["name"] == req.json["name"]);
    let id = position.map(|p| id_of(&list[p]["id"]));
    let command = command_json(st, &req.json, id, guild.then_some(GUILD_ID));
    let status = match position {
        Some(p) => {
            list[p] = command.clone();
            200
        }
        None => {
            list.push(command.clone());
            201
        }
    };
    *commands(st, guild) = list;
    Resp {
        status,
        body: Some(command),
    }
}

/// GET, DELETE or PATCH one command by its id; `None` for another method.
fn command_by_id(
    st: &mut State,
    req: &Req,
    method: &str,
    command_id: &str,
    guild: bool,
) -> Option<Resp> {
    let mut list = commands(st, guild).clone();
    let id = id_of(&json!(command_id));
    let Some(position) = list.iter().position(|c| id_of(&c["id"]) == id) else {
        return Some(fail(404, 10063, "Unknown application command"));
    };
    Some(match method {
        "GET" => ok(list[position].clone()),
        "DELETE" => {
            list.remove(position);
            *commands(st, guild) = list;
            no_content()
        }
        "PATCH" => {
            let mut merged = list[position].clone();
            if let (Some(merged), Some(patch)) = (merged.as_object_mut(), req.json.as_object()) {
                for (k, v) in patch {
                    merged.insert(k.clone(), v.clone());
                }
            }
            if let Err((path, message)) = check_command(&merged) {
                return Some(form_error(&path, "BASE_TYPE_BAD_LENGTH", &message));
            }
            let command = command_json(st, &merged, Some(id), guild.then_some(GUILD_ID));
            list[position] = command.clone();
            *commands(st, guild) = list;
            ok(command)
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
