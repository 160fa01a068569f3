//! The bot's messages: creating one (in a channel or through an interaction), editing it, its
//! attachments, and Discord's limits on content, embeds and components, whose refusals are
//! Discord's errors.

use serde_json::{json, Value};

use super::channels::reopen_thread;
use super::interactions::interaction_message;
use super::rest::{fail, form_error, unknown_channel, unknown_message, Resp, Upload};
use super::state::{
    base_message, flags, id_of, sf, timestamp, State, FLAG_EPHEMERAL, FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS, FLAG_SUPPRESS_NOTIFICATIONS,
};
use super::{BOT_ID, GUILD_ID};

pub(super) const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// Creates a bot message from a payload (a channel message, or an interaction's when `via` is
/// its index), stores it and dispatches it unless it is ephemeral.
pub(super) fn new_message(
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
pub(super) fn edit_message(
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
