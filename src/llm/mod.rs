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

mod anthropic;
mod openai;
mod retry;
mod sse;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{LlmConfig, Provider};
use openai::TokenLimit;
use retry::{Failure, Retry};

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

/// One configured LLM endpoint. Cheap to clone: the HTTP client is shared, and so is what the
/// client learnt about the server.
#[derive(Debug, Clone)]
pub struct Client {
    config: LlmConfig,
    http: reqwest::Client,
    /// OpenAI only: whether the token limit goes as `max_completion_tokens` (else as
    /// `max_tokens`). Starts from the base URL, and flips for good when the server refuses the
    /// one sent.
    completion_tokens: Arc<AtomicBool>,
}

impl Client {
    /// Builds the client. Fails only when the API key cannot be sent as a header, the API path
    /// cannot be joined to `llm.base_url`, or the TLS stack cannot start.
    pub fn new(config: LlmConfig) -> anyhow::Result<Client> {
        let headers = match config.provider {
            Provider::OpenAi => openai::headers(&config)?,
            Provider::Anthropic => anthropic::headers(&config)?,
        };
        endpoint(&config).context("llm.base_url cannot take the API path")?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("featurebot/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.request_timeout)
            .build()
            .context("starting the HTTP client")?;
        let limit = TokenLimit::for_base_url(&config.base_url);
        Ok(Client {
            config,
            http,
            completion_tokens: Arc::new(AtomicBool::new(limit == TokenLimit::MaxCompletionTokens)),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Asks for a whole answer at once.
    pub async fn complete(&self, req: &Request) -> Result<Response, LlmError> {
        non_empty(self.run(req, None).await?)
    }

    /// Asks for a streamed answer, handing each piece of text to `on_text` as it arrives, and
    /// returns the whole answer (text, tool calls, usage) at the end.
    pub async fn stream(
        &self,
        req: &Request,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Response, LlmError> {
        non_empty(self.run(req, Some(on_text)).await?)
    }

    /// Makes the smallest real request, proving that the URL, key and model work. Any
    /// well-formed answer will do, even an empty one: a reasoning model can spend the whole
    /// budget thinking and answer nothing, with finish reason `length`.
    pub async fn ping(&self) -> Result<(), LlmError> {
        let req = Request {
            messages: vec![Message::user("Reply with the word pong.")],
            max_tokens: Some(8),
            ..Request::default()
        };
        self.run(&req, None).await.map(|_| ())
    }

    async fn run(
        &self,
        req: &Request,
        mut on_text: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<Response, LlmError> {
        let streaming = on_text.is_some();
        let url = endpoint(&self.config).map_err(|e| LlmError::Unavailable {
            detail: format!("llm.base_url cannot take the API path: {e}"),
        })?;
        let mut limit = self.token_limit();
        let mut body = self.body(req, streaming, limit);
        let mut switched = false;
        let mut retry = Retry::new(&self.config);
        loop {
            let attempt = retry.attempt();
            let outcome = match on_text.as_deref_mut() {
                Some(on_text) => self.attempt_stream(&url, &body, attempt, on_text).await,
                None => self.attempt_complete(&url, &body, attempt).await,
            };
            let failure = match outcome {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            // Refused for the token-limit field we chose: the other one, once.
            let refused_limit = self.config.provider == Provider::OpenAi
                && failure.unsupported_parameter.as_deref() == Some(limit.field());
            if refused_limit && !switched {
                switched = true;
                tracing::info!(
                    refused = limit.field(),
                    using = limit.other().field(),
                    "the LLM server refused the token-limit field; sending the other from now on"
                );
                limit = limit.other();
                self.completion_tokens
                    .store(limit == TokenLimit::MaxCompletionTokens, Ordering::Relaxed);
                body = self.body(req, streaming, limit);
                continue;
            }
            retry.wait(failure).await?;
        }
    }

    /// The field the token limit goes in, as far as the client knows now.
    fn token_limit(&self) -> TokenLimit {
        if self.completion_tokens.load(Ordering::Relaxed) {
            TokenLimit::MaxCompletionTokens
        } else {
            TokenLimit::MaxTokens
        }
    }

    fn body(&self, req: &Request, streaming: bool, limit: TokenLimit) -> serde_json::Value {
        match self.config.provider {
            Provider::OpenAi => openai::body(&self.config, req, streaming, limit),
            Provider::Anthropic => anthropic::body(&self.config, req, streaming),
        }
    }

    /// One non-streamed attempt, bounded as a whole by `request_timeout`.
    async fn attempt_complete(
        &self,
        url: &Url,
        body: &serde_json::Value,
        attempt: u32,
    ) -> Result<Response, Failure> {
        let timeout = self.config.request_timeout;
        let whole = async {
            let response = self.send(url, body, attempt).await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| retry::from_reqwest(e, timeout))?;
            self.parse(&bytes).map_err(Failure::fatal)
        };
        tokio::time::timeout(timeout, whole)
            .await
            .unwrap_or_else(|_| Err(Failure::transient(LlmError::Timeout(timeout), None)))
    }

    /// One streamed attempt: `request_timeout` bounds the wait for the headers and each gap
    /// between chunks. Once text has reached `on_text` a failure is final, as a retry would
    /// repeat it.
    async fn attempt_stream(
        &self,
        url: &Url,
        body: &serde_json::Value,
        attempt: u32,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Response, Failure> {
        let timeout = self.config.request_timeout;
        let mut response = self.send(url, body, attempt).await?;
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            // Some servers ignore `stream: true` and answer at once; take that answer whole.
            let bytes = tokio::time::timeout(timeout, response.bytes())
                .await
                .map_err(|_| Failure::transient(LlmError::Timeout(timeout), None))?
                .map_err(|e| retry::from_reqwest(e, timeout))?;
            let answer = self.parse(&bytes).map_err(Failure::fatal)?;
            if !answer.text.is_empty() {
                on_text(&answer.text);
            }
            return Ok(answer);
        }
        let mut state = match self.config.provider {
            Provider::OpenAi => StreamState::OpenAi(openai::Stream::default()),
            Provider::Anthropic => StreamState::Anthropic(anthropic::Stream::default()),
        };
        let read = self.read_stream(&mut response, &mut state, on_text).await;
        match read {
            Ok(()) => state.finish().map_err(Failure::fatal),
            Err(failure) if state.delivered() => Err(failure.into_fatal()),
            Err(failure) => Err(failure),
        }
    }

    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        state: &mut StreamState,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Failure> {
        let timeout = self.config.request_timeout;
        let mut decoder = sse::Decoder::default();
        loop {
            let chunk = tokio::time::timeout(timeout, response.chunk())
                .await
                .map_err(|_| Failure::transient(LlmError::Timeout(timeout), None))?
                .map_err(|e| retry::from_reqwest(e, timeout))?;
            let Some(chunk) = chunk else { break };
            for event in decoder.feed(&chunk) {
                if state.event(&event, on_text, &self.config)? {
                    return Ok(());
                }
            }
        }
        if let Some(event) = decoder.finish() {
            state.event(&event, on_text, &self.config)?;
        }
        Ok(())
    }

    /// Sends the request and waits for the headers; an error status becomes a failure.
    async fn send(
        &self,
        url: &Url,
        body: &serde_json::Value,
        attempt: u32,
    ) -> Result<reqwest::Response, Failure> {
        let timeout = self.config.request_timeout;
        let sent =
            tokio::time::timeout(timeout, self.http.post(url.clone()).json(body).send()).await;
        let response = match sent {
            Err(_) => {
                tracing::debug!(attempt, "llm request timed out before the headers");
                return Err(Failure::transient(LlmError::Timeout(timeout), None));
            }
            Ok(Err(e)) => {
                let failure = retry::from_reqwest(e, timeout);
                tracing::debug!(attempt, error = %failure.error, "llm request failed");
                return Err(failure);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        tracing::debug!(attempt, status, "llm request answered");
        if response.status().is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.headers());
        // The error body only feeds the message; losing it to a timeout is acceptable.
        let body = tokio::time::timeout(timeout, response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(retry::classify(
            status,
            &String::from_utf8_lossy(&body),
            retry_after,
            &self.config,
        ))
    }

    fn parse(&self, bytes: &[u8]) -> Result<Response, LlmError> {
        match self.config.provider {
            Provider::OpenAi => openai::parse(bytes),
            Provider::Anthropic => anthropic::parse(bytes),
        }
    }
}

fn endpoint(config: &LlmConfig) -> Result<Url, url::ParseError> {
    match config.provider {
        Provider::OpenAi => openai::endpoint(&config.base_url),
        Provider::Anthropic => anthropic::endpoint(&config.base_url),
    }
}

/// An answer with neither text nor tool calls is of no use to any caller.
fn non_empty(response: Response) -> Result<Response, LlmError> {
    if response.text.trim().is_empty() && response.tool_calls.is_empty() {
        return Err(LlmError::BadResponse(
            "the answer has neither text nor tool calls".to_string(),
        ));
    }
    Ok(response)
}

/// The decoding state of one streamed answer, per provider.
enum StreamState {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
}

impl StreamState {
    fn event(
        &mut self,
        event: &sse::Event,
        on_text: &mut (dyn FnMut(&str) + Send),
        config: &LlmConfig,
    ) -> Result<bool, Failure> {
        match self {
            StreamState::OpenAi(s) => s.event(event, on_text, config),
            StreamState::Anthropic(s) => s.event(event, on_text, config),
        }
    }

    fn delivered(&self) -> bool {
        match self {
            StreamState::OpenAi(s) => s.delivered(),
            StreamState::Anthropic(s) => s.delivered(),
        }
    }

    fn finish(self) -> Result<Response, LlmError> {
        match self {
            StreamState::OpenAi(s) => s.finish(),
            StreamState::Anthropic(s) => s.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Callers spawn these futures onto the runtime, so they must stay `Send`.
    #[test]
    fn futures_are_send() {
        let config = LlmConfig {
            provider: Provider::OpenAi,
            base_url: Url::parse("http://127.0.0.1:9/v1/").unwrap(),
            model: "m".to_string(),
            api_key_env: "KEY".to_string(),
            api_key: Some(crate::config::Secret::new("sk-very-secret")),
            max_context_tokens: 1000,
            max_output_tokens: 64,
            request_timeout: Duration::from_secs(1),
            max_retries: 0,
            retry_budget: Duration::from_secs(1),
            prices: None,
        };
        let client = Client::new(config).unwrap();
        let req = Request::default();
        let mut on_text = |_: &str| {};
        assert_send(&client.complete(&req));
        assert_send(&client.stream(&req, &mut on_text));
        assert_send(&client.ping());
        assert!(!format!("{client:?}").contains("sk-very-secret"));
    }
}
