//! An in-process fake LLM server that speaks OpenAI's chat completions and Anthropic's
//! messages over real HTTP on 127.0.0.1, so tests drive the production client at the wire.
//!
//! Each request takes the next scripted [`Reply`] (or the default one) and is recorded. The
//! server is the hand-written HTTP of [`super::http`], so that tests control every byte and
//! every flush: it reads one request per connection, always answers `Connection: close`, and
//! streams without a `Content-Length`, so the end of a stream is the end of the connection.
//!
//! Speaking OpenAI, a model whose name says it is one of OpenAI's reasoning models (`o1…`,
//! `o3…`, `o4…`, `gpt-5…`) keeps the rules those models keep: a request with `max_tokens`, or
//! with a `temperature` other than 1, is refused with OpenAI's own 400 (and takes no scripted
//! reply), and the model spends [`REASONING_TOKENS`] thinking before it writes, so a smaller
//! `max_completion_tokens` gets an empty answer that stopped for `length`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use featurebot::config::{LlmConfig, Provider, Secret};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::http;
pub use super::http::Recorded;

/// The tokens a fake reasoning model thinks before its first visible word.
pub const REASONING_TOKENS: u64 = 64;

/// Which wire protocol the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// A running fake; clones share the server, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeLlm {
    api: Api,
    addr: SocketAddr,
    state: Arc<State>,
    _server: Arc<http::Server>,
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete answer: SSE in small pieces when the request asked for a stream, JSON
    /// otherwise. Usage is 10 input tokens and one output token per word.
    Text(String),
    /// An answer made of tool calls (name, arguments), streamed as realistic fragments.
    ToolCalls(Vec<(String, Value)>),
    /// Some text followed by tool calls in the same answer.
    TextAndToolCalls(String, Vec<(String, Value)>),
    /// Any status with these headers and body (JSON content type unless a header says
    /// otherwise).
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Starts the answer with this text, then closes the connection without the end marker
    /// (a non-streaming request gets half of the JSON).
    Truncated(String),
    /// Status 200, `text/event-stream`, then these chunks verbatim, flushed one by one with a
    /// millisecond between them so that the client sees them as separate reads.
    Raw(Vec<Vec<u8>>),
    /// Status 200, `text/event-stream`, then these chunks verbatim, flushed one by one with
    /// `gap` between them: a model that writes at a realistic pace. The instant each such
    /// answer's first chunk was flushed is kept (see [`FakeLlm::paced_starts`]).
    Paced { chunks: Vec<Vec<u8>>, gap: Duration },
    /// Waits before answering at all (before the status line).
    Slow { delay: Duration, then: Box<Reply> },
    /// Status 200, `text/event-stream`, these chunks, then silence for `hold` with the
    /// connection open: a server that hangs mid-stream.
    Stalled {
        chunks: Vec<Vec<u8>>,
        hold: Duration,
    },
}

impl Reply {
    /// An OpenAI SSE stream of `text` in `pieces` chunks, `gap` apart.
    pub fn paced(text: &str, pieces: usize, gap: Duration) -> Reply {
        let chars: Vec<char> = text.chars().collect();
        let event = |delta: Value, finish: Value| {
            let chunk = json!({
                "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            format!("data: {chunk}\n\n").into_bytes()
        };
        let mut chunks: Vec<Vec<u8>> = chars
            .chunks(chars.len().div_ceil(pieces))
            .map(|c| {
                event(
                    json!({"content": c.iter().collect::<String>()}),
                    Value::Null,
                )
            })
            .collect();
        chunks.push(event(json!({}), json!("stop")));
        chunks.push(b"data: [DONE]\n\n".to_vec());
        Reply::Paced { chunks, gap }
    }
}

impl FakeLlm {
    pub async fn start(api: Api) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let server = http::serve(listener, state.clone(), move |socket, state| async move {
            // A client that hangs up early is not the fake's problem.
            let _ = serve(socket, api, &state).await;
        });
        FakeLlm {
            api,
            addr,
            state,
            _server: Arc::new(server),
        }
    }

    pub fn base_url(&self) -> String {
        match self.api {
            Api::OpenAi => format!("http://{}/v1", self.addr),
            Api::Anthropic => format!("http://{}", self.addr),
        }
    }

    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Drops the recorded requests, so a long run does not keep every transcript it was sent.
    #[allow(dead_code)] // Used by benches/discord.rs, not by the tests.
    pub fn forget_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// When the first chunk of each [`Reply::Paced`] answer was flushed, in that order.
    #[allow(dead_code)] // Used by benches/discord.rs, not by the tests.
    pub fn paced_starts(&self) -> Vec<Instant> {
        self.state.paced_starts.lock().unwrap().clone()
    }

    pub fn llm_config(&self) -> LlmConfig {
        LlmConfig {
            provider: match self.api {
                Api::OpenAi => Provider::OpenAi,
                Api::Anthropic => Provider::Anthropic,
            },
            base_url: url::Url::parse(&format!("{}/", self.base_url())).unwrap(),
            model: "fake-model".to_string(),
            api_key_env: "FAKE_LLM_API_KEY".to_string(),
            api_key: Some(Secret::new("sk-test-secret")),
            max_context_tokens: 32_000,
            max_output_tokens: 1024,
            request_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_budget: Duration::from_secs(10),
            prices: None,
        }
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    paced_starts: Mutex<Vec<Instant>>,
}

async fn serve(mut socket: TcpStream, api: Api, state: &State) -> std::io::Result<()> {
    let request = Recorded::from(http::read_request(&mut socket).await?);
    let stream = request.body.get("stream") == Some(&Value::Bool(true));
    let model = request.body["model"]
        .as_str()
        .unwrap_or("fake-model")
        .to_string();
    let reasoning = api == Api::OpenAi && is_reasoning_model(&model);
    if let Some(refusal) = reasoning
        .then(|| reasoning_refusal(&request.body))
        .flatten()
    {
        state.requests.lock().unwrap().push(request);
        return write_status(&mut socket, 400, &[], refusal.to_string().as_bytes()).await;
    }
    // A reasoning model thinks first; a budget spent on that leaves nothing to say.
    let starved = request.body["max_completion_tokens"]
        .as_u64()
        .filter(|budget| reasoning && *budget <= REASONING_TOKENS);
    let reply = {
        let next = state.script.lock().unwrap().pop_front();
        next.or_else(|| state.default.lock().unwrap().clone())
    };
    state.requests.lock().unwrap().push(request);
    let mut reply = reply.unwrap_or_else(|| Reply::Status {
        status: 500,
        headers: Vec::new(),
        body: json!({"error": {"message": "fake llm: no scripted reply", "type": "server_error"}})
            .to_string(),
    });
    while let Reply::Slow { delay, then } = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    let answer = Answer { api, model: &model };
    if let Some(budget) = starved.filter(|_| {
        matches!(
            reply,
            Reply::Text(_) | Reply::ToolCalls(_) | Reply::TextAndToolCalls(..)
        )
    }) {
        return answer.starved(&mut socket, stream, budget).await;
    }
    match reply {
        Reply::Text(text) => answer.complete(&mut socket, stream, &text, &[], true).await,
        Reply::ToolCalls(calls) => answer.complete(&mut socket, stream, "", &calls, true).await,
        Reply::TextAndToolCalls(text, calls) => {
            answer
                .complete(&mut socket, stream, &text, &calls, true)
                .await
        }
        Reply::Truncated(text) => {
            answer
                .complete(&mut socket, stream, &text, &[], false)
                .await
        }
        Reply::Status {
            status,
            headers,
            body,
        } => write_status(&mut socket, status, &headers, body.as_bytes()).await,
        Reply::Raw(chunks) => write_chunks(&mut socket, "text/event-stream", &chunks, true).await,
        Reply::Paced { chunks, gap } => {
            http::write_stream_head(&mut socket, "text/event-stream").await?;
            for (i, chunk) in chunks.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                socket.write_all(chunk).await?;
                socket.flush().await?;
                if i == 0 {
                    state.paced_starts.lock().unwrap().push(Instant::now());
                }
            }
            socket.shutdown().await
        }
        Reply::Stalled { chunks, hold } => {
            http::write_stream_head(&mut socket, "text/event-stream").await?;
            for chunk in chunks {
                socket.write_all(&chunk).await?;
                socket.flush().await?;
            }
            tokio::time::sleep(hold).await;
            socket.shutdown().await
        }
        Reply::Slow { .. } => unreachable!("slow replies were unwrapped above"),
    }
}

/// Whether `model` names one of OpenAI's reasoning models.
fn is_reasoning_model(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|prefix| model.starts_with(prefix))
}

/// What OpenAI answers a reasoning model's request that sets `max_tokens` or a temperature
/// other than the default, word for word.
fn reasoning_refusal(body: &Value) -> Option<Value> {
    if body.get("max_tokens").is_some() {
        return Some(json!({"error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }}));
    }
    let temperature = body.get("temperature").and_then(Value::as_f64)?;
    (temperature != 1.0).then(|| json!({"error": {
        "message": format!("Unsupported value: 'temperature' does not support {temperature} with this model. Only the default (1) value is supported."),
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_value",
    }}))
}

/// Writes a complete answer, as JSON unless `headers` name another content type.
async fn write_status(
    socket: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let headers = http::with_content_type(headers, "application/json");
    http::write_response(socket, status, &headers, body).await
}

/// Writes a 200 whose body ends when the connection closes.
async fn write_chunks(
    socket: &mut TcpStream,
    content_type: &str,
    chunks: &[Vec<u8>],
    pause: bool,
) -> std::io::Result<()> {
    http::write_stream_head(socket, content_type).await?;
    for chunk in chunks {
        socket.write_all(chunk).await?;
        socket.flush().await?;
        if pause {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    socket.shutdown().await
}

/// Renders answers in one API's format.
struct Answer<'a> {
    api: Api,
    model: &'a str,
}

impl Answer<'_> {
    /// An OpenAI answer with no visible text: the whole `budget` went to reasoning.
    async fn starved(
        &self,
        socket: &mut TcpStream,
        stream: bool,
        budget: u64,
    ) -> std::io::Result<()> {
        let usage = json!({
            "prompt_tokens": 10,
            "completion_tokens": budget,
            "total_tokens": 10 + budget,
            "completion_tokens_details": {"reasoning_tokens": budget},
        });
        let choice = |key: &str, content: Value| json!({"index": 0, key: {"role": "assistant", "content": content}, "finish_reason": "length"});
        if !stream {
            let body = json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [choice("message", json!(""))],
                "usage": usage,
            });
            return write_status(socket, 200, &[], body.to_string().as_bytes()).await;
        }
        let chunk = |choices: Value, usage: Value| {
            let chunk = json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": choices, "usage": usage,
            });
            format!("data: {chunk}\n\n").into_bytes()
        };
        let events = [
            chunk(json!([choice("delta", json!(""))]), Value::Null),
            chunk(json!([]), usage),
            b"data: [DONE]\n\n".to_vec(),
        ];
        write_chunks(socket, "text/event-stream", &events, false).await
    }

    /// Writes an answer of `text` then `calls`; without `end` it stops short of the end.
    async fn complete(
        &self,
        socket: &mut TcpStream,
        stream: bool,
        text: &str,
        calls: &[(String, Value)],
        end: bool,
    ) -> std::io::Result<()> {
        let usage = (10, text.split_whitespace().count() + 8 * calls.len());
        if stream {
            let events = match self.api {
                Api::OpenAi => self.openai_events(text, calls, usage, end),
                Api::Anthropic => self.anthropic_events(text, calls, usage, end),
            };
            return write_chunks(socket, "text/event-stream", &events, false).await;
        }
        let body = match self.api {
            Api::OpenAi => self.openai_json(text, calls, usage),
            Api::Anthropic => self.anthropic_json(text, calls, usage),
        }
        .to_string();
        if end {
            write_status(socket, 200, &[], body.as_bytes()).await
        } else {
            let half = body.as_bytes()[..body.len() / 2].to_vec();
            write_chunks(socket, "application/json", &[half], false).await
        }
    }

    fn openai_json(&self, text: &str, calls: &[(String, Value)], usage: (usize, usize)) -> Value {
        let mut message = json!({"role": "assistant", "content": text});
        if !calls.is_empty() {
            if text.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({
                        "id": format!("call_{i}"),
                        "type": "function",
                        "function": {"name": name, "arguments": args.to_string()},
                    })
                })
                .collect();
        }
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" },
            }],
            "usage": {
                "prompt_tokens": usage.0,
                "completion_tokens": usage.1,
                "total_tokens": usage.0 + usage.1,
            },
        })
    }

    fn openai_events(
        &self,
        text: &str,
        calls: &[(String, Value)],
        usage: (usize, usize),
        end: bool,
    ) -> Vec<Vec<u8>> {
        let chunk = |delta: Value, finish: Value| {
            let chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            format!("data: {chunk}\n\n").into_bytes()
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for piece in pieces(text, 4) {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        for (i, (name, args)) in calls.iter().enumerate() {
            events.push(chunk(
                json!({"tool_calls": [{
                    "index": i,
                    "id": format!("call_{i}"),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}),
                Value::Null,
            ));
            for fragment in pieces(&args.to_string(), 7) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}),
                    Value::Null,
                ));
            }
        }
        if !end {
            return events;
        }
        let finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        events.push(chunk(json!({}), json!(finish)));
        let usage = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.0,
                "completion_tokens": usage.1,
                "total_tokens": usage.0 + usage.1,
            },
        });
        events.push(format!("data: {usage}\n\n").into_bytes());
        events.push(b"data: [DONE]\n\n".to_vec());
        events
    }

    fn anthropic_json(
        &self,
        text: &str,
        calls: &[(String, Value)],
        usage: (usize, usize),
    ) -> Value {
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for (i, (name, args)) in calls.iter().enumerate() {
            content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": args}));
        }
        json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
            "stop_sequence": null,
            "usage": {"input_tokens": usage.0, "output_tokens": usage.1},
        })
    }

    fn anthropic_events(
        &self,
        text: &str,
        calls: &[(String, Value)],
        usage: (usize, usize),
        end: bool,
    ) -> Vec<Vec<u8>> {
        let event =
            |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n").into_bytes();
        let mut events = vec![event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": usage.0, "output_tokens": 1},
            }}),
        )];
        let mut index = 0;
        if !text.is_empty() || calls.is_empty() {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(event("ping", json!({"type": "ping"})));
            for piece in pieces(text, 4) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            if !end {
                return events;
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        for (i, (name, args)) in calls.iter().enumerate() {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {},
                }}),
            ));
            for fragment in pieces(&args.to_string(), 7) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                ));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        let stop = if calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        events.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": usage.1}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
}

/// Splits `text` into pieces of at most `chars` characters.
fn pieces(text: &str, chars: usize) -> Vec<String> {
    let chars_vec: Vec<char> = text.chars().collect();
    chars_vec
        .chunks(chars)
        .map(|c| c.iter().collect())
        .collect()
}
