//! The LLM client: one shared model of messages, tool calls, streams and usage, and one wire
//! implementation per provider API.
//!
//! - `openai.rs`: any OpenAI-compatible `POST {base_url}/chat/completions` server.
//! - `anthropic.rs`: Anthropic's `POST {base_url}/v1/messages`.
//! - `sse.rs`: a Server-Sent Events decoder that copes with events split at any byte.
//! - `retry.rs`: backoff with jitter on 429, 5xx and connection errors, honouring `Retry-After`.
//!
//! Callers build a [`Request`] and get a [`Response`]; streaming hands text deltas to a
//! callback as they arrive and still returns the whole [`Response`] at the end. Errors are
//! [`LlmError`], whose `Display` is a sentence a user can act on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::LlmConfig;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the assistant message that made it.
    Tool,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Tool calls the assistant made in this message (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call this message answers (tool messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message::plain(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::plain(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::plain(Role::Assistant, content)
    }

    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON Schema object describing the arguments.
    pub parameters: serde_json::Value,
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The parsed arguments object.
    pub arguments: serde_json::Value,
}

/// What to send. System messages may appear anywhere in `messages`; providers that take the
/// system prompt separately (Anthropic) lift them out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Overrides `llm.max_output_tokens` for this request.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    /// The answer hit `max_tokens`.
    Length,
    ToolCalls,
    ContentFilter,
    Other,
}

/// Tokens billed for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: FinishReason,
}

/// What went wrong, in terms a caller can branch on and a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM server is rate limiting us and retries ran out{}; wait a minute and try again, or raise your quota", retry_hint(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error(
        "the LLM server refused the API key ({status}); check the {key_env} environment variable"
    )]
    Unauthorized { status: u16, key_env: String },
    #[error("the conversation is too long for the model's context window; lower llm.max_context_tokens or use a model with a larger window")]
    ContextTooLong,
    #[error("the LLM server is unavailable ({detail}); check llm.base_url and that the server is running")]
    Unavailable { detail: String },
    #[error("the LLM server did not answer within {0:?}; raise llm.request_timeout_secs or check the server")]
    Timeout(Duration),
    #[error(
        "the LLM server sent an answer we could not use ({0}); check llm.model and llm.provider"
    )]
    BadResponse(String),
    #[error("the LLM server rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (it asked us to wait {}s)", d.as_secs()),
        None => String::new(),
    }
}

/// One configured LLM endpoint. Cheap to clone: the HTTP client is shared.
#[derive(Debug, Clone)]
pub struct Client {
    config: LlmConfig,
    http: reqwest::Client,
}

// TEMPORARY STUB, replaced by the real client.
impl Client {
    pub fn new(config: LlmConfig) -> anyhow::Result<Client> {
        Ok(Client {
            config,
            http: reqwest::Client::new(),
        })
    }
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }
    pub async fn complete(&self, _req: &Request) -> Result<Response, LlmError> {
        let _ = &self.http;
        Err(LlmError::ContextTooLong)
    }
    pub async fn stream(
        &self,
        _req: &Request,
        _on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Response, LlmError> {
        Err(LlmError::ContextTooLong)
    }
    pub async fn ping(&self) -> Result<(), LlmError> {
        Ok(())
    }
}
