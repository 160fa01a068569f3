//! Anthropic's Messages API wire format.
//!
//! `POST {base_url}v1/messages` with `x-api-key` and `anthropic-version`. Unlike OpenAI, the
//! system prompt is a separate `system` field, `max_tokens` is required, and the roles must
//! alternate: tool calls are `tool_use` blocks of an assistant message and tool results are
//! `tool_result` blocks of a user message, so consecutive messages of one role are merged. A
//! streamed answer is a series of named events (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`); tool arguments arrive as
//! `input_json_delta` fragments.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::retry::{self, Failure};
use super::sse::Event;
use super::{FinishReason, LlmError, Request, Response, Role, ToolCall, Usage};
use crate::config::LlmConfig;

const API_VERSION: &str = "2023-06-01";

pub(super) fn endpoint(base_url: &Url) -> Result<Url, url::ParseError> {
    base_url.join("v1/messages")
}

/// The headers sent with every request; the key is marked sensitive so it never prints.
pub(super) fn headers(config: &LlmConfig) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    );
    if let Some(key) = &config.api_key {
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            anyhow::anyhow!(
                "the {} environment variable holds characters that cannot be sent in an HTTP header",
                config.api_key_env
            )
        })?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-api-key"), value);
    }
    Ok(headers)
}

pub(super) fn body(config: &LlmConfig, request: &Request, stream: bool) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect();
    let mut messages: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let text = (!message.content.is_empty())
            .then(|| json!({ "type": "text", "text": message.content }));
        let (role, blocks): (&str, Vec<Value>) = match message.role {
            Role::System => continue,
            Role::User => ("user", text.into_iter().collect()),
            Role::Assistant => (
                "assistant",
                text.into_iter()
                    .chain(message.tool_calls.iter().map(|call| {
                        json!({
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.name,
                            "input": call.arguments,
                        })
                    }))
                    .collect(),
            ),
            Role::Tool => {
                let mut result = json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                });
                if !message.content.is_empty() {
                    result["content"] = json!(message.content);
                }
                ("user", vec![result])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = json!({
        "model": config.model,
        "max_tokens": request.max_tokens.unwrap_or(config.max_output_tokens),
        "messages": messages
            .into_iter()
            .map(|(role, content)| json!({ "role": role, "content": content }))
            .collect::<Vec<_>>(),
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// Parses a whole (non-streamed) answer.
pub(super) fn parse(bytes: &[u8]) -> Result<Response, LlmError> {
    let answer: Answer = serde_json::from_slice(bytes)
        .map_err(|e| LlmError::BadResponse(format!("the answer is not valid JSON: {e}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in answer.content.unwrap_or_default() {
        match block {
            Block::Text { text: part } => text.push_str(&part),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: if input.is_null() { json!({}) } else { input },
            }),
            Block::Other => {}
        }
    }
    Ok(Response {
        text,
        finish: finish_reason(answer.stop_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: answer.usage.map(WireUsage::into_usage).unwrap_or_default(),
    })
}

/// The state of one streamed answer.
#[derive(Debug, Default)]
pub(super) struct Stream {
    text: String,
    tools: BTreeMap<u64, PartialTool>,
    usage: Usage,
    stop_reason: Option<String>,
    done: bool,
}

#[derive(Debug, Default)]
struct PartialTool {
    id: String,
    name: String,
    json: String,
    /// The `input` of `content_block_start`, used if no fragments follow.
    initial: Value,
}

impl Stream {
    /// Handles one event; returns true once the stream is complete.
    pub fn event(
        &mut self,
        event: &Event,
        on_text: &mut (dyn FnMut(&str) + Send),
        config: &LlmConfig,
    ) -> Result<bool, Failure> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            Failure::fatal(LlmError::BadResponse(format!(
                "a stream event is not valid JSON: {e}"
            )))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    self.usage = wire_usage(usage);
                }
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        self.push_text(text, on_text);
                    }
                    Some("tool_use") => {
                        let field = |name: &str| {
                            block
                                .get(name)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        self.tools.insert(
                            index,
                            PartialTool {
                                id: field("id"),
                                name: field("name"),
                                json: String::new(),
                                initial: block.get("input").cloned().unwrap_or(Value::Null),
                            },
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.push_text(text, on_text);
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.tools.entry(index).or_default().json.push_str(part);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                // Output tokens here are cumulative; some servers repeat the input count too.
                if let Some(n) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output_tokens = n;
                }
                if let Some(usage) = data
                    .get("usage")
                    .filter(|u| u.get("input_tokens").is_some())
                {
                    self.usage.input_tokens = wire_usage(usage).input_tokens;
                }
            }
            "message_stop" => {
                self.done = true;
                return Ok(true);
            }
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let status = match error.get("type").and_then(Value::as_str) {
                    Some("invalid_request_error") => 400,
                    Some("authentication_error") => 401,
                    Some("permission_error") => 403,
                    Some("not_found_error") => 404,
                    Some("request_too_large") => 413,
                    Some("rate_limit_error") => 429,
                    Some("overloaded_error") => 529,
                    _ => 500,
                };
                return Err(retry::classify(status, &data.to_string(), None, config));
            }
            _ => {}
        }
        Ok(false)
    }

    fn push_text(&mut self, text: &str, on_text: &mut (dyn FnMut(&str) + Send)) {
        if !text.is_empty() {
            on_text(text);
            self.text.push_str(text);
        }
    }

    /// Whether any text was handed to the caller.
    pub fn delivered(&self) -> bool {
        !self.text.is_empty()
    }

    /// The whole answer, once the stream has ended.
    pub fn finish(self) -> Result<Response, LlmError> {
        if !self.done {
            return Err(LlmError::BadResponse(
                "the stream ended before message_stop".to_string(),
            ));
        }
        let tool_calls = self
            .tools
            .into_values()
            .map(|tool| {
                let arguments = if !tool.json.trim().is_empty() {
                    serde_json::from_str(&tool.json).map_err(|e| {
                        LlmError::BadResponse(format!(
                            "the input of tool call {:?} is not valid JSON: {e}",
                            tool.name
                        ))
                    })?
                } else if tool.initial.is_object() {
                    tool.initial
                } else {
                    json!({})
                };
                Ok(ToolCall {
                    id: tool.id,
                    name: tool.name,
                    arguments,
                })
            })
            .collect::<Result<Vec<_>, LlmError>>()?;
        Ok(Response {
            finish: finish_reason(self.stop_reason.as_deref(), !tool_calls.is_empty()),
            text: self.text,
            tool_calls,
            usage: self.usage,
        })
    }
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("end_turn") | Some("stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        None if has_tool_calls => FinishReason::ToolCalls,
        None => FinishReason::Stop,
        Some(_) => FinishReason::Other,
    }
}

/// Input tokens include cache reads and writes, which Anthropic counts separately, so that
/// the number says how full the context window was.
fn wire_usage(usage: &Value) -> Usage {
    serde_json::from_value::<WireUsage>(usage.clone())
        .map(WireUsage::into_usage)
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Answer {
    content: Option<Vec<Block>>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn into_usage(self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0)
                + self.cache_creation_input_tokens.unwrap_or(0)
                + self.cache_read_input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[test]
    fn merges_tool_results_into_one_user_message_and_lifts_system() {
        let config_json = |request: &Request| {
            let config = crate::config::LlmConfig {
                provider: crate::config::Provider::Anthropic,
                base_url: Url::parse("http://localhost/").unwrap(),
                model: "m".to_string(),
                api_key_env: "K".to_string(),
                api_key: None,
                max_context_tokens: 1000,
                max_output_tokens: 64,
                request_timeout: std::time::Duration::from_secs(1),
                max_retries: 0,
                retry_budget: std::time::Duration::from_secs(1),
                prices: None,
            };
            body(&config, request, false)
        };
        let mut assistant = Message::assistant("");
        assistant.tool_calls = vec![
            ToolCall {
                id: "a".to_string(),
                name: "read".to_string(),
                arguments: json!({"path": "x"}),
            },
            ToolCall {
                id: "b".to_string(),
                name: "read".to_string(),
                arguments: json!({"path": "y"}),
            },
        ];
        let request = Request {
            messages: vec![
                Message::system("be brief"),
                Message::user("hi"),
                assistant,
                Message::tool_result("a", "one"),
                Message::tool_result("b", ""),
                Message::user("go on"),
                Message::system("and kind"),
            ],
            ..Request::default()
        };
        let body = config_json(&request);
        assert_eq!(body["system"], "be brief\n\nand kind");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "a", "name": "read", "input": {"path": "x"}},
                    {"type": "tool_use", "id": "b", "name": "read", "input": {"path": "y"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "a", "content": "one"},
                    {"type": "tool_result", "tool_use_id": "b"},
                    {"type": "text", "text": "go on"},
                ]},
            ])
        );
    }
}
