//! Deciding what a failed attempt means and whether to try again.
//!
//! Every failure becomes a [`Failure`]: the [`LlmError`] the caller would see, plus whether
//! another attempt could help. Rate limits (429), server errors (5xx), connection errors and
//! timeouts are transient; everything else is final. [`Retry`] then waits with exponential
//! backoff and full jitter, or exactly as long as `Retry-After` asks, for at most
//! `llm.max_retries` extra attempts and never past `llm.retry_budget`.
//!
//! Invariant: no message built here contains the API key. Error bodies are scrubbed of it in
//! case a server echoes it back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use super::LlmError;
use crate::config::LlmConfig;

/// The first backoff step; each retry doubles it.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest backoff step (a server's `Retry-After` may ask for more).
const MAX_DELAY: Duration = Duration::from_secs(20);
/// How much of a server's error message we repeat to the user.
const MAX_MESSAGE_CHARS: usize = 300;

/// A failed attempt.
#[derive(Debug)]
pub(super) struct Failure {
    pub error: LlmError,
    /// Whether another attempt could succeed.
    pub transient: bool,
    /// How long the server asked us to wait before the next attempt.
    pub retry_after: Option<Duration>,
    /// The request field a 400 named as not supported (OpenAI's `unsupported_parameter`), which
    /// the caller may replace and send again.
    pub unsupported_parameter: Option<String>,
}

impl Failure {
    pub fn fatal(error: LlmError) -> Failure {
        Failure {
            error,
            transient: false,
            retry_after: None,
            unsupported_parameter: None,
        }
    }

    pub fn transient(error: LlmError, retry_after: Option<Duration>) -> Failure {
        Failure {
            error,
            transient: true,
            retry_after,
            unsupported_parameter: None,
        }
    }

    /// The same failure, but final: used once a stream has shown text to the user, as a retry
    /// would show it twice.
    pub fn into_fatal(self) -> Failure {
        Failure::fatal(self.error)
    }
}

/// The retry state of one call.
pub(super) struct Retry {
    max_retries: u32,
    budget: Duration,
    started: Instant,
    retries: u32,
    rng: u64,
}

impl Retry {
    pub fn new(config: &LlmConfig) -> Retry {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Retry {
            max_retries: config.max_retries,
            budget: config.retry_budget,
            started: Instant::now(),
            retries: 0,
            // Xorshift needs a non-zero seed.
            rng: nanos | 1,
        }
    }

    /// The number of the attempt about to be made, from 1.
    pub fn attempt(&self) -> u32 {
        self.retries + 1
    }

    /// Waits before the next attempt, or returns the error to give up with.
    pub async fn wait(&mut self, failure: Failure) -> Result<(), LlmError> {
        if !failure.transient || self.retries >= self.max_retries {
            return Err(failure.error);
        }
        let delay = match failure.retry_after {
            Some(asked) => asked,
            None => self.backoff(),
        };
        let remaining = self.budget.saturating_sub(self.started.elapsed());
        if delay > remaining {
            tracing::warn!(
                attempt = self.attempt(),
                delay_ms = delay.as_millis() as u64,
                remaining_ms = remaining.as_millis() as u64,
                error = %failure.error,
                "llm request failed and the retry budget is spent"
            );
            return Err(failure.error);
        }
        tracing::warn!(
            attempt = self.attempt(),
            delay_ms = delay.as_millis() as u64,
            error = %failure.error,
            "llm request failed, retrying"
        );
        tokio::time::sleep(delay).await;
        self.retries += 1;
        Ok(())
    }

    /// Full jitter: a uniform wait between zero and the exponential step.
    fn backoff(&mut self) -> Duration {
        let step = BASE_DELAY
            .saturating_mul(1u32 << self.retries.min(16))
            .min(MAX_DELAY);
        let millis = step.as_millis() as u64;
        Duration::from_millis(self.next_random() % (millis + 1))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Maps an HTTP error answer to a failure. `body` is the raw error body.
pub(super) fn classify(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    config: &LlmConfig,
) -> Failure {
    match status {
        401 | 403 => Failure::fatal(LlmError::Unauthorized {
            status,
            key_env: config.api_key_env.clone(),
        }),
        400 | 413 if mentions_context_length(body) => Failure::fatal(LlmError::ContextTooLong),
        429 => Failure::transient(LlmError::RateLimited { retry_after }, retry_after),
        500..=599 => {
            let message = error_message(body, config);
            let detail = if message.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {message}")
            };
            Failure::transient(LlmError::Unavailable { detail }, retry_after)
        }
        400 => Failure {
            unsupported_parameter: unsupported_parameter(body),
            ..Failure::fatal(LlmError::Rejected {
                status,
                message: error_message(body, config),
            })
        },
        _ => Failure::fatal(LlmError::Rejected {
            status,
            message: error_message(body, config),
        }),
    }
}

/// The field OpenAI's error names when it refuses a request field, as in
/// `{"error": {"code": "unsupported_parameter", "param": "max_tokens", ...}}`.
fn unsupported_parameter(body: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = json.get("error")?;
    if error.get("code")?.as_str()? != "unsupported_parameter" {
        return None;
    }
    Some(error.get("param")?.as_str()?.to_string())
}

/// Maps a transport error from reqwest. Its URL is dropped from the text, in case a user put
/// a secret into `llm.base_url`.
pub(super) fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        return Failure::transient(LlmError::Timeout(timeout), None);
    }
    let builder = error.is_builder();
    let error = error.without_url();
    // The top level says "error sending request"; the causes say what actually happened.
    let mut detail = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        cause = inner.source();
    }
    if builder {
        Failure::fatal(LlmError::Unavailable { detail })
    } else {
        Failure::transient(LlmError::Unavailable { detail }, None)
    }
}

/// Reads `Retry-After` (whole or fractional seconds; an HTTP date is ignored) or OpenAI's
/// `retry-after-ms`.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let seconds = match header("retry-after-ms") {
        Some(ms) => ms / 1000.0,
        None => header("retry-after")?,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Pulls the human-readable message out of an error body: `error.message` (OpenAI and
/// Anthropic), a plain `error` string, `message` or `detail` (other servers), else the body
/// itself. Truncated, and scrubbed of the API key.
pub(super) fn error_message(body: &str, config: &LlmConfig) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let from_json = json.as_ref().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("error"),
            v.get("message"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str())
        .map(str::to_string)
    });
    let message = from_json.unwrap_or_else(|| body.trim().to_string());
    let message = match &config.api_key {
        Some(key) if !key.expose().is_empty() => message.replace(key.expose(), "***"),
        _ => message,
    };
    truncate(message.trim(), MAX_MESSAGE_CHARS)
}

/// Whether a 400 or 413 body says the prompt did not fit, in the words of the common servers.
fn mentions_context_length(body: &str) -> bool {
    let body = body.to_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "context window",
        "prompt is too long",
        "exceeds the available context size",
    ]
    .iter()
    .any(|phrase| body.contains(phrase))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Provider, Secret};

    fn config() -> LlmConfig {
        LlmConfig {
            provider: Provider::OpenAi,
            base_url: url::Url::parse("http://localhost/v1/").unwrap(),
            model: "m".to_string(),
            api_key_env: "MY_KEY".to_string(),
            api_key: Some(Secret::new("sk-hidden")),
            max_context_tokens: 1000,
            max_output_tokens: 64,
            request_timeout: Duration::from_secs(1),
            max_retries: 3,
            retry_budget: Duration::from_secs(10),
            prices: None,
        }
    }

    fn check(status: u16, body: &str, expected: &str, transient: bool) {
        let failure = classify(status, body, None, &config());
        assert_eq!(format!("{:?}", failure.error), expected, "{status} {body}");
        assert_eq!(failure.transient, transient, "{status} {body}");
    }

    #[test]
    fn classifies_statuses() {
        check(
            401,
            "",
            r#"Unauthorized { status: 401, key_env: "MY_KEY" }"#,
            false,
        );
        check(
            403,
            "sk-hidden",
            r#"Unauthorized { status: 403, key_env: "MY_KEY" }"#,
            false,
        );
        check(429, "", "RateLimited { retry_after: None }", true);
        check(
            400,
            r#"{"error":{"code":"context_length_exceeded","message":"too many"}}"#,
            "ContextTooLong",
            false,
        );
        check(
            413,
            "the request exceeds the available context size",
            "ContextTooLong",
            false,
        );
        check(
            404,
            r#"{"error":{"message":"no such model"}}"#,
            r#"Rejected { status: 404, message: "no such model" }"#,
            false,
        );
        check(
            422,
            r#"{"error":"bad tools"}"#,
            r#"Rejected { status: 422, message: "bad tools" }"#,
            false,
        );
        check(
            400,
            r#"{"detail":"oops"}"#,
            r#"Rejected { status: 400, message: "oops" }"#,
            false,
        );
        check(
            502,
            "<html>bad gateway</html>",
            r#"Unavailable { detail: "HTTP 502: <html>bad gateway</html>" }"#,
            true,
        );
        check(503, "", r#"Unavailable { detail: "HTTP 503" }"#, true);
    }

    #[test]
    fn a_refused_parameter_is_named_only_for_openais_unsupported_parameter() {
        let refused = |status: u16, body: &str| classify(status, body, None, &config());
        let max_tokens = r#"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#;
        let failure = refused(400, max_tokens);
        assert_eq!(failure.unsupported_parameter.as_deref(), Some("max_tokens"));
        assert!(!failure.transient);
        assert!(
            failure
                .error
                .to_string()
                .contains("Use 'max_completion_tokens' instead"),
            "{}",
            failure.error
        );
        let temperature = r#"{"error":{"message":"Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1) value is supported.","type":"invalid_request_error","param":"temperature","code":"unsupported_value"}}"#;
        assert_eq!(refused(400, temperature).unsupported_parameter, None);
        assert_eq!(refused(422, max_tokens).unsupported_parameter, None);
        assert_eq!(refused(400, "max_tokens").unsupported_parameter, None);
    }

    #[test]
    fn error_messages_are_short_and_never_hold_the_key() {
        let body = format!(
            r#"{{"error":{{"message":"key sk-hidden is bad {}"}}}}"#,
            "é".repeat(500)
        );
        let message = error_message(&body, &config());
        assert!(message.starts_with("key *** is bad é"), "{message}");
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
    }

    #[test]
    fn reads_retry_after() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, reqwest::header::HeaderValue::from_static(value));
            }
            retry_after(&map)
        };
        assert_eq!(headers(&[]), None);
        assert_eq!(
            headers(&[("retry-after", "2")]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            headers(&[("retry-after", "0.5")]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            headers(&[("retry-after", "9"), ("retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            None
        );
        assert_eq!(headers(&[("retry-after", "-1")]), None);
    }

    #[test]
    fn backoff_grows_with_full_jitter_up_to_the_cap() {
        let mut retry = Retry::new(&config());
        let mut seen_low = false;
        for retries in 0..12 {
            retry.retries = retries;
            let step = BASE_DELAY.saturating_mul(1 << retries).min(MAX_DELAY);
            for _ in 0..200 {
                let delay = retry.backoff();
                assert!(delay <= step, "{delay:?} > {step:?}");
                seen_low |= delay < step / 2;
            }
        }
        assert!(seen_low, "jitter never went below half a step");
    }

    #[tokio::test]
    async fn gives_up_when_retries_or_budget_run_out() {
        // A zero Retry-After keeps the test from sleeping.
        let transient = || {
            Failure::transient(
                LlmError::RateLimited { retry_after: None },
                Some(Duration::ZERO),
            )
        };
        let mut retry = Retry::new(&config());
        for _ in 0..3 {
            retry.wait(transient()).await.unwrap();
        }
        assert!(retry.wait(transient()).await.is_err());

        let mut retry = Retry::new(&config());
        let asked = Some(Duration::from_secs(11));
        let failure = Failure::transient(LlmError::RateLimited { retry_after: asked }, asked);
        assert!(matches!(
            retry.wait(failure).await,
            Err(LlmError::RateLimited { retry_after }) if retry_after == asked
        ));

        let mut retry = Retry::new(&config());
        let failure = Failure::fatal(LlmError::ContextTooLong);
        assert!(matches!(
            retry.wait(failure).await,
            Err(LlmError::ContextTooLong)
        ));
        assert_eq!(retry.attempt(), 1);
    }
}
