//! The fake Discord's gateway: one websocket per connection with HELLO, heartbeats, IDENTIFY
//! (READY and GUILD_CREATE) and RESUME; sessions that outlive their connection and replay what a
//! client missed; and dispatches, sent to every session whose intents cover them.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::rest::current_user;
use super::state::{flags, id_of, sf, State, FLAG_EPHEMERAL};
use super::{Inner, APP_ID, BOT_ID, GUILD_ID, TOKEN};

const HEARTBEAT_MS: u64 = 41_250;

const INTENT_GUILDS: u64 = 1 << 0;
const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
const INTENT_GUILD_PRESENCES: u64 = 1 << 8;
const INTENT_GUILD_MESSAGES: u64 = 1 << 9;
const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

/// A gateway session: what Discord keeps between connections so that a client can resume.
pub(super) struct Session {
    pub(super) id: String,
    seq: u64,
    intents: u64,
    /// Every dispatch frame of this session, for replays.
    log: Vec<Value>,
    pub(super) conn: Option<Conn>,
}

#[derive(Clone)]
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) tx: mpsc::UnboundedSender<Out>,
}

impl Conn {
    pub(super) fn send(&self, frame: &Value) {
        let _ = self.tx.send(Out::Text(frame.to_string()));
    }

    fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Out::Close(code, reason.to_string()));
    }
}

/// What a connection task is told to do.
pub(super) enum Out {
    Text(String),
    Close(u16, String),
    /// Drop the socket without a close frame.
    Drop,
}

impl State {
    /// Sends a dispatch to every session whose intents cover it, logging it for replays.
    pub(super) fn dispatch(&mut self, t: &str, d: Value) {
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
    pub(super) fn dispatch_message(&mut self, t: &str, message: &Value) {
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
pub(super) fn hide_content(message: &mut Value) {
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

pub(super) async fn serve_gateway(socket: TcpStream, inner: Arc<Inner>) {
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
