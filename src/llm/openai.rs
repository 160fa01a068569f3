//! The OpenAI chat-completions wire format, spoken by OpenAI and by most self-hosted servers
//! (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter).
//!
//! `POST {base_url}chat/completions` with a bearer key when one is set. Tool calls travel as
//! `tool_calls` whose `function.arguments` is a JSON *string*; tool results are messages of
//! role `tool`. A streamed answer is a series of `chat.completion.chunk` events ending in
//! `data: [DONE]`; tool calls arrive as fragments keyed by `index`. Parsing is lenient where
//! servers are known to differ (missing ids, arguments sent as an object, no `[DONE]`).
//!
//! The answer's token limit travels as `max_completion_tokens` to OpenAI's own API, whose
//! reasoning models (o1, o3, o4-mini, the gpt-5 family) refuse the older `max_tokens` with a 400
//! `unsupported_parameter`, and as `max_tokens` to every other server, as many know only that
//! one. A server that refuses the one sent with that error gets the other once, and the client
//! keeps sending that one ([`TokenLimit`]). `temperature` is sent only when a caller sets it,
//! which none does: reasoning models refuse any but the default.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::retry::{self, Failure};
use super::sse::Event;
use super::{FinishReason, LlmError, Message, Request, Response, Role, ToolCall, Usage};
use crate::config::LlmConfig;

pub(super) fn endpoint(base_url: &Url) -> Result<Url, url::ParseError> {
    base_url.join("chat/completions")
}

/// The headers sent with every request; the key is marked sensitive so it never prints.
pub(super) fn headers(config: &LlmConfig) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some(key) = &config.api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
            anyhow::anyhow!(
                "the {} environment variable holds characters that cannot be sent in an HTTP header",
                config.api_key_env
            )
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// The request field that carries the answer's token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenLimit {
    /// The original field, the only one many OpenAI-compatible servers know.
    MaxTokens,
    /// OpenAI's current field, the only one its reasoning models accept.
    MaxCompletionTokens,
}

impl TokenLimit {
    /// The field to start with: `max_completion_tokens` for OpenAI's own API
    /// (`api.openai.com`), `max_tokens` for every other server.
    pub fn for_base_url(base_url: &Url) -> TokenLimit {
        match base_url.host_str() {
            Some("api.openai.com") => TokenLimit::MaxCompletionTokens,
            _ => TokenLimit::MaxTokens,
        }
    }

    pub fn field(self) -> &'static str {
        match self {
            TokenLimit::MaxTokens => "max_tokens",
            TokenLimit::MaxCompletionTokens => "max_completion_tokens",
        }
    }

    pub fn other(self) -> TokenLimit {
        match self {
            TokenLimit::MaxTokens => TokenLimit::MaxCompletionTokens,
            TokenLimit::MaxCompletionTokens => TokenLimit::MaxTokens,
        }
    }
}

pub(super) fn body(
    config: &LlmConfig,
    request: &Request,
    stream: bool,
    limit: TokenLimit,
) -> Value {
    let mut body = json!({
        "model": config.model,
        "messages": request.messages.iter().map(message).collect::<Vec<_>>(),
    });
    body[limit.field()] = json!(request.max_tokens.unwrap_or(config.max_output_tokens));
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            })
            .collect();
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

fn message(message: &Message) -> Value {
    match message.role {
        Role::System | Role::User => json!({ "role": message.role, "content": message.content }),
        Role::Assistant if message.tool_calls.is_empty() => {
            json!({ "role": "assistant", "content": message.content })
        }
        Role::Assistant => json!({
            "role": "assistant",
            "content": if message.content.is_empty() { Value::Null } else { json!(message.content) },
            "tool_calls": message.tool_calls.iter().map(|call| json!({
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments.to_string() },
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": message.content,
        }),
    }
}

/// Parses a whole (non-streamed) answer.
pub(super) fn parse(bytes: &[u8]) -> Result<Response, LlmError> {
    let answer: Completion = serde_json::from_slice(bytes)
        .map_err(|e| LlmError::BadResponse(format!("the answer is not valid JSON: {e}")))?;
    let choice = answer
        .choices
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::BadResponse("the answer has no choices".to_string()))?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let arguments = match call.function.arguments {
                Value::String(text) => parse_arguments(&call.function.name, &text)?,
                Value::Null => json!({}),
                other => other,
            };
            Ok(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.function.name,
                arguments,
            })
        })
        .collect::<Result<Vec<_>, LlmError>>()?;
    Ok(Response {
        text: choice.message.content.unwrap_or_default(),
        finish: finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: answer.usage.map(Usage::from).unwrap_or_default(),
    })
}

/// The state of one streamed answer.
#[derive(Debug, Default)]
pub(super) struct Stream {
    text: String,
    calls: BTreeMap<usize, PartialCall>,
    usage: Usage,
    finish: Option<String>,
    done: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl Stream {
    /// Handles one event; returns true once the stream is complete.
    pub fn event(
        &mut self,
        event: &Event,
        on_text: &mut (dyn FnMut(&str) + Send),
        config: &LlmConfig,
    ) -> Result<bool, Failure> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            Failure::fatal(LlmError::BadResponse(format!(
                "a stream event is not valid JSON: {e}"
            )))
        })?;
        if let Some(error) = chunk.error {
            // Some servers report failures inside the stream, with the HTTP status as `code`.
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .filter(|code| (400..600).contains(code))
                .unwrap_or(500) as u16;
            let body = json!({ "error": error }).to_string();
            return Err(retry::classify(status, &body, None, config));
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.into();
        }
        let Some(choice) = chunk.choices.unwrap_or_default().into_iter().next() else {
            return Ok(false);
        };
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                on_text(&text);
                self.text.push_str(&text);
            }
            for (position, fragment) in delta.tool_calls.unwrap_or_default().into_iter().enumerate()
            {
                let call = self
                    .calls
                    .entry(fragment.index.unwrap_or(position))
                    .or_default();
                if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name.filter(|_| call.name.is_empty()) {
                        call.name = name;
                    }
                    match function.arguments {
                        Some(Value::String(part)) => call.arguments.push_str(&part),
                        Some(Value::Null) | None => {}
                        Some(whole) => call.arguments = whole.to_string(),
                    }
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(reason);
        }
        Ok(false)
    }

    /// Whether any text was handed to the caller.
    pub fn delivered(&self) -> bool {
        !self.text.is_empty()
    }

    /// The whole answer, once the stream has ended.
    pub fn finish(self) -> Result<Response, LlmError> {
        if !self.done && self.finish.is_none() {
            return Err(LlmError::BadResponse(
                "the stream ended before the answer was complete".to_string(),
            ));
        }
        let tool_calls = self
            .calls
            .into_values()
            .enumerate()
            .map(|(i, call)| {
                Ok(ToolCall {
                    arguments: parse_arguments(&call.name, &call.arguments)?,
                    id: if call.id.is_empty() {
                        format!("call_{i}")
                    } else {
                        call.id
                    },
                    name: call.name,
                })
            })
            .collect::<Result<Vec<_>, LlmError>>()?;
        Ok(Response {
            finish: finish_reason(self.finish.as_deref(), !tool_calls.is_empty()),
            text: self.text,
            tool_calls,
            usage: self.usage,
        })
    }
}

fn parse_arguments(name: &str, text: &str) -> Result<Value, LlmError> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).map_err(|e| {
        LlmError::BadResponse(format!(
            "the arguments of tool call {name:?} are not valid JSON: {e}"
        ))
    })
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("stop") | Some("end_turn") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        None if has_tool_calls => FinishReason::ToolCalls,
        None => FinishReason::Stop,
        Some(_) => FinishReason::Other,
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Option<Vec<Choice>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    tool_calls: Option<Vec<WireCall>>,
}

#[derive(Deserialize)]
struct WireCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<CallFragment>>,
}

#[derive(Deserialize)]
struct CallFragment {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    name: Option<String>,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage {
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(base_url: &str, expected: TokenLimit) {
        let url = Url::parse(base_url).unwrap();
        assert_eq!(TokenLimit::for_base_url(&url), expected, "{base_url}");
    }

    #[test]
    fn openais_own_api_gets_max_completion_tokens_and_other_servers_max_tokens() {
        check(
            "https://api.openai.com/v1/",
            TokenLimit::MaxCompletionTokens,
        );
        check(
            "https://api.openai.com:443/v1",
            TokenLimit::MaxCompletionTokens,
        );
        check("http://localhost:11434/v1/", TokenLimit::MaxTokens);
        check("https://openrouter.ai/api/v1/", TokenLimit::MaxTokens);
        check(
            "https://acme.openai.azure.com/openai/v1/",
            TokenLimit::MaxTokens,
        );
        check(
            "https://api.openai.com.evil.example/v1/",
            TokenLimit::MaxTokens,
        );
    }
}
