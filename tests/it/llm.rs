//! The LLM client against the fake server, through real HTTP on 127.0.0.1.
//!
//! Most checks run once per provider: each is an `async fn(Api)` listed in `for_both_apis!`,
//! which makes an `openai::` and an `anthropic::` test of it.

use std::time::{Duration, Instant};

use featurebot::config::LlmConfig;
use featurebot::llm::{
    Client, FinishReason, LlmError, Message, Request, Response, ToolCall, ToolSpec, Usage,
};
use serde_json::{json, Value};

use crate::support::fake_llm::{Api, FakeLlm, Reply};

const KEY: &str = "sk-test-secret";

macro_rules! for_both_apis {
    ($($name:ident),* $(,)?) => {
        mod openai {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::OpenAi).await;
            })*
        }
        mod anthropic {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Api::Anthropic).await;
            })*
        }
    };
}

for_both_apis!(
    plain_completion,
    request_carries_key_model_and_messages,
    no_key_means_no_key_header,
    streamed_text_arrives_in_pieces,
    stream_split_at_every_byte,
    tool_calls_round_trip,
    text_and_tool_calls_stream_together,
    rate_limit_waits_for_retry_after,
    retry_after_beyond_budget_stops_at_once,
    server_error_then_success,
    server_error_forever_is_unavailable,
    unauthorized_names_the_variable_not_the_key,
    context_too_long,
    other_rejection_carries_a_short_scrubbed_message,
    truncated_answer_is_bad_response,
    malformed_json_is_bad_response,
    empty_answer_is_bad_response,
    slow_headers_time_out,
    stalled_stream_times_out_without_retry_after_text,
    stalled_stream_before_text_is_retried,
    connection_refused_is_unavailable,
    json_answer_to_a_stream_request_is_accepted,
    ping_sends_a_tiny_request,
    default_reply_answers_unscripted_requests,
);

fn client(config: LlmConfig) -> Client {
    Client::new(config).unwrap()
}

fn ask(text: &str) -> Request {
    Request {
        messages: vec![Message::system("You are terse."), Message::user(text)],
        ..Request::default()
    }
}

/// Streams `req` and returns the result with every piece `on_text` received.
async fn stream(client: &Client, req: &Request) -> (Result<Response, LlmError>, Vec<String>) {
    let mut pieces = Vec::new();
    let mut on_text = |piece: &str| pieces.push(piece.to_string());
    let result = client.stream(req, &mut on_text).await;
    (result, pieces)
}

fn messages_path(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "/v1/chat/completions",
        Api::Anthropic => "/v1/messages",
    }
}

fn assert_bad_response(result: Result<Response, LlmError>) {
    match result {
        Err(LlmError::BadResponse(detail)) => assert!(!detail.is_empty()),
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

async fn plain_completion(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text("The quick brown fox".to_string()));
    let response = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap();
    assert_eq!(response.text, "The quick brown fox");
    assert!(response.tool_calls.is_empty());
    assert_eq!(response.finish, FinishReason::Stop);
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 4
        }
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body.get("stream"), None);
}

async fn request_carries_key_model_and_messages(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text("ok".to_string()));
    let mut req = ask("hello");
    req.temperature = Some(0.5);
    req.max_tokens = Some(77);
    client(fake.llm_config()).complete(&req).await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, messages_path(api));
    assert_eq!(request.body["model"], "fake-model");
    assert_eq!(request.body["max_tokens"], 77);
    assert_eq!(request.body["temperature"], 0.5);
    assert_eq!(request.body.get("tools"), None);
    match api {
        Api::OpenAi => {
            assert_eq!(
                request.header("authorization"),
                Some("Bearer sk-test-secret")
            );
            assert_eq!(
                request.body["messages"],
                json!([
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "hello"},
                ])
            );
        }
        Api::Anthropic => {
            assert_eq!(request.header("x-api-key"), Some(KEY));
            assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(request.header("authorization"), None);
            assert_eq!(request.body["system"], "You are terse.");
            assert_eq!(
                request.body["messages"],
                json!([{"role": "user", "content": [{"type": "text", "text": "hello"}]}])
            );
        }
    }

    // Without an override, max_tokens comes from the config.
    fake.push(Reply::Text("ok".to_string()));
    client(fake.llm_config())
        .complete(&ask("again"))
        .await
        .unwrap();
    assert_eq!(fake.requests()[1].body["max_tokens"], 1024);
}

async fn no_key_means_no_key_header(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text("ok".to_string()));
    let mut config = fake.llm_config();
    config.api_key = None;
    client(config).complete(&ask("hi")).await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.header("x-api-key"), None);
}

async fn streamed_text_arrives_in_pieces(api: Api) {
    let fake = FakeLlm::start(api).await;
    let text = "Streaming answers arrive in small pieces, h\u{e9}las \u{1f980}.";
    fake.push(Reply::Text(text.to_string()));
    let (result, pieces) = stream(&client(fake.llm_config()), &ask("hi")).await;
    let response = result.unwrap();
    assert!(pieces.len() > 5, "only {} pieces", pieces.len());
    assert_eq!(pieces.concat(), text);
    assert_eq!(response.text, text);
    assert_eq!(response.finish, FinishReason::Stop);
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 8
        }
    );
    let body = &fake.requests()[0].body;
    assert_eq!(body["stream"], true);
    if api == Api::OpenAi {
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }
}

/// A whole answer with comments, every line ending, a multi-line `data:` and multi-byte
/// characters, sent one byte per write.
async fn stream_split_at_every_byte(api: Api) {
    let sample = match api {
        Api::OpenAi => concat!(
            ": a comment\r\n\r\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\r\n\r\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\u{e9}llo \"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"w\u{f6}rld \u{1f980}\"},\"finish_reason\":null}]}\r\r",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n\r\n",
            "data: [DONE]\n\n",
        ),
        Api::Anthropic => concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            ": a comment\r",
            "event: ping\rdata: {\"type\": \"ping\"}\r\r",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"h\u{e9}llo \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\ndata: \"delta\":{\"type\":\"text_delta\",\"text\":\"w\u{f6}rld \u{1f980}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
    };
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Raw(
        sample.as_bytes().chunks(1).map(<[u8]>::to_vec).collect(),
    ));
    let (result, pieces) = stream(&client(fake.llm_config()), &ask("hi")).await;
    let response = result.unwrap();
    assert_eq!(pieces, ["h\u{e9}llo ", "w\u{f6}rld \u{1f980}"]);
    assert_eq!(response.text, "h\u{e9}llo w\u{f6}rld \u{1f980}");
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 3,
            output_tokens: 4
        }
    );
}

async fn tool_calls_round_trip(api: Api) {
    let fake = FakeLlm::start(api).await;
    let calls = vec![
        (
            "read_file".to_string(),
            json!({"path": "src/main.rs", "lines": [1, 20]}),
        ),
        (
            "search".to_string(),
            json!({"query": "caf\u{e9} \u{1f980}", "regex": false}),
        ),
    ];
    fake.push(Reply::ToolCalls(calls.clone()));
    fake.push(Reply::ToolCalls(calls.clone()));
    fake.push(Reply::Text("Done.".to_string()));
    let client = client(fake.llm_config());
    let mut req = ask("look around");
    req.tools = vec![ToolSpec {
        name: "read_file".to_string(),
        description: "Reads a file.".to_string(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    }];

    let whole = client.complete(&req).await.unwrap();
    let (streamed, pieces) = stream(&client, &req).await;
    let streamed = streamed.unwrap();
    assert!(pieces.is_empty());
    for response in [&whole, &streamed] {
        assert_eq!(response.finish, FinishReason::ToolCalls);
        assert_eq!(response.text, "");
        let got: Vec<(String, Value)> = response
            .tool_calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(got, calls);
        assert_ne!(response.tool_calls[0].id, response.tool_calls[1].id);
        assert_eq!(response.usage.output_tokens, 16);
    }
    assert_eq!(whole.tool_calls, streamed.tool_calls);

    // Answer the calls and check the transcript on the wire.
    let mut assistant = Message::assistant("");
    assistant.tool_calls = whole.tool_calls.clone();
    let ids: Vec<String> = whole.tool_calls.iter().map(|c| c.id.clone()).collect();
    req.messages.push(assistant);
    req.messages
        .push(Message::tool_result(ids[0].clone(), "fn main() {}"));
    req.messages
        .push(Message::tool_result(ids[1].clone(), "no match"));
    let done = client.complete(&req).await.unwrap();
    assert_eq!(done.text, "Done.");

    let body = &fake.requests()[2].body;
    match api {
        Api::OpenAi => {
            assert_eq!(
                body["tools"],
                json!([{"type": "function", "function": {
                    "name": "read_file",
                    "description": "Reads a file.",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                }}])
            );
            let messages = body["messages"].as_array().unwrap();
            assert_eq!(messages.len(), 5);
            assert_eq!(messages[2]["role"], "assistant");
            assert_eq!(messages[2]["content"], Value::Null);
            let wire_calls = messages[2]["tool_calls"].as_array().unwrap();
            assert_eq!(wire_calls.len(), 2);
            for (wire, (name, args)) in wire_calls.iter().zip(&calls) {
                assert_eq!(wire["type"], "function");
                assert_eq!(wire["function"]["name"], name.as_str());
                let text = wire["function"]["arguments"].as_str().unwrap();
                assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), args);
            }
            assert_eq!(wire_calls[0]["id"], ids[0].as_str());
            assert_eq!(
                messages[3],
                json!({"role": "tool", "tool_call_id": ids[0], "content": "fn main() {}"})
            );
            assert_eq!(
                messages[4],
                json!({"role": "tool", "tool_call_id": ids[1], "content": "no match"})
            );
        }
        Api::Anthropic => {
            assert_eq!(
                body["tools"],
                json!([{
                    "name": "read_file",
                    "description": "Reads a file.",
                    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
                }])
            );
            assert_eq!(
                body["messages"],
                json!([
                    {"role": "user", "content": [{"type": "text", "text": "look around"}]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": ids[0], "name": "read_file", "input": calls[0].1},
                        {"type": "tool_use", "id": ids[1], "name": "search", "input": calls[1].1},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": ids[0], "content": "fn main() {}"},
                        {"type": "tool_result", "tool_use_id": ids[1], "content": "no match"},
                    ]},
                ])
            );
        }
    }
}

async fn text_and_tool_calls_stream_together(api: Api) {
    let fake = FakeLlm::start(api).await;
    let calls = vec![("write_plan".to_string(), json!({"title": "Add dark mode"}))];
    fake.push(Reply::TextAndToolCalls(
        "Let me write that down.".to_string(),
        calls,
    ));
    let (result, pieces) = stream(&client(fake.llm_config()), &ask("plan it")).await;
    let response = result.unwrap();
    assert_eq!(pieces.concat(), "Let me write that down.");
    assert_eq!(response.text, "Let me write that down.");
    assert_eq!(response.finish, FinishReason::ToolCalls);
    assert_eq!(
        response
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), &c.arguments))
            .collect::<Vec<_>>(),
        [("write_plan", &json!({"title": "Add dark mode"}))]
    );
}

fn status(code: u16, headers: &[(&str, &str)], body: Value) -> Reply {
    Reply::Status {
        status: code,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_string(),
    }
}

async fn rate_limit_waits_for_retry_after(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(status(
        429,
        &[("Retry-After", "1")],
        json!({"error": {"message": "slow down"}}),
    ));
    fake.push(Reply::Text("finally".to_string()));
    let started = Instant::now();
    let response = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(response.text, "finally");
    assert_eq!(fake.requests().len(), 2);
}

async fn retry_after_beyond_budget_stops_at_once(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(status(
        429,
        &[("retry-after", "60")],
        json!({"error": {"message": "quota"}}),
    ));
    let started = Instant::now();
    let error = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    // It gave up at once rather than waiting the minute the server asked for.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        matches!(error, LlmError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(60)),
        "{error:?}"
    );
    assert!(error.to_string().contains("60s"), "{error}");
    assert_eq!(fake.requests().len(), 1);
}

async fn server_error_then_success(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(status(500, &[], json!({"error": {"message": "boom"}})));
    fake.push(status(503, &[], json!({"error": {"message": "busy"}})));
    fake.push(Reply::Text("recovered".to_string()));
    let (result, pieces) = stream(&client(fake.llm_config()), &ask("hi")).await;
    assert_eq!(result.unwrap().text, "recovered");
    assert_eq!(pieces.concat(), "recovered");
    assert_eq!(fake.requests().len(), 3);
}

async fn server_error_forever_is_unavailable(api: Api) {
    let fake = FakeLlm::start(api).await;
    let config = fake.llm_config();
    let error = client(config.clone())
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    match &error {
        LlmError::Unavailable { detail } => {
            assert!(detail.contains("500"), "{detail}");
            assert!(detail.contains("fake llm: no scripted reply"), "{detail}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), config.max_retries as usize + 1);
}

async fn unauthorized_names_the_variable_not_the_key(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(status(
        401,
        &[],
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
    ));
    let client = client(fake.llm_config());
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Unauthorized { status: 401, key_env } if key_env == "FAKE_LLM_API_KEY"),
        "{error:?}"
    );
    assert!(error.to_string().contains("FAKE_LLM_API_KEY"));
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        format!("{client:?}"),
    ] {
        assert!(!shown.contains(KEY), "{shown}");
    }
    assert_eq!(fake.requests().len(), 1, "a refused key is not retried");

    fake.push(status(403, &[], json!({"error": {"message": "forbidden"}})));
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(error, LlmError::Unauthorized { status: 403, .. }),
        "{error:?}"
    );
}

async fn context_too_long(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(match api {
        Api::OpenAi => status(
            400,
            &[],
            json!({"error": {
                "message": "This model's maximum context length is 8192 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }}),
        ),
        Api::Anthropic => status(
            400,
            &[],
            json!({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 210000 tokens > 200000 maximum",
            }}),
        ),
    });
    let error = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::ContextTooLong), "{error:?}");
    assert_eq!(fake.requests().len(), 1);
}

async fn other_rejection_carries_a_short_scrubbed_message(api: Api) {
    let fake = FakeLlm::start(api).await;
    let long = format!("model not found (key {KEY}) {}", "x".repeat(2000));
    fake.push(status(
        404,
        &[],
        json!({"type": "error", "error": {"type": "not_found_error", "message": long}}),
    ));
    let error = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    match &error {
        LlmError::Rejected { status, message } => {
            assert_eq!(*status, 404);
            assert!(message.starts_with("model not found"), "{message}");
            assert!(message.chars().count() <= 301, "{}", message.len());
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!error.to_string().contains(KEY));
    assert_eq!(fake.requests().len(), 1);
}

async fn truncated_answer_is_bad_response(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Truncated("This answer is cut off".to_string()));
    fake.push(Reply::Truncated("This answer is cut off".to_string()));
    let client = client(fake.llm_config());
    let (result, pieces) = stream(&client, &ask("hi")).await;
    assert_eq!(pieces.concat(), "This answer is cut off");
    assert_bad_response(result);
    assert_bad_response(client.complete(&ask("hi")).await);
    assert_eq!(fake.requests().len(), 2, "a bad answer is not retried");
}

async fn malformed_json_is_bad_response(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Raw(vec![b"{\"choices\": [oops".to_vec()]));
    fake.push(Reply::Raw(vec![b"data: {\"type\": oops}\n\n".to_vec()]));
    let client = client(fake.llm_config());
    assert_bad_response(client.complete(&ask("hi")).await);
    assert_bad_response(stream(&client, &ask("hi")).await.0);
    assert_eq!(fake.requests().len(), 2);
}

async fn empty_answer_is_bad_response(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text(String::new()));
    fake.push(Reply::Text(String::new()));
    let client = client(fake.llm_config());
    assert_bad_response(client.complete(&ask("hi")).await);
    assert_bad_response(stream(&client, &ask("hi")).await.0);
}

fn impatient(fake: &FakeLlm, max_retries: u32) -> LlmConfig {
    LlmConfig {
        request_timeout: Duration::from_secs(1),
        max_retries,
        ..fake.llm_config()
    }
}

async fn slow_headers_time_out(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Slow {
        delay: Duration::from_secs(60),
        then: Box::new(Reply::Text("too late".to_string())),
    });
    let started = Instant::now();
    let error = client(impatient(&fake, 0))
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LlmError::Timeout(d) if d == Duration::from_secs(1)),
        "{error:?}"
    );
    // It did not wait for the server's minute.
    assert!(started.elapsed() < Duration::from_secs(30));
}

fn first_text_event(api: Api, text: &str) -> Vec<u8> {
    match api {
        Api::OpenAi => format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
        ),
        Api::Anthropic => format!(
            "event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
    }
    .into_bytes()
}

async fn stalled_stream_times_out_without_retry_after_text(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Stalled {
        chunks: vec![first_text_event(api, "partial")],
        hold: Duration::from_secs(60),
    });
    fake.push(Reply::Text("must not be asked for".to_string()));
    let started = Instant::now();
    let (result, pieces) = stream(&client(impatient(&fake, 2)), &ask("hi")).await;
    assert!(matches!(result, Err(LlmError::Timeout(_))), "{result:?}");
    assert_eq!(pieces, ["partial"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait out the stall"
    );
    assert_eq!(fake.requests().len(), 1, "text was shown, so no retry");
}

async fn stalled_stream_before_text_is_retried(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Stalled {
        chunks: Vec::new(),
        hold: Duration::from_secs(3),
    });
    fake.push(Reply::Text("second time lucky".to_string()));
    let (result, pieces) = stream(&client(impatient(&fake, 1)), &ask("hi")).await;
    assert_eq!(result.unwrap().text, "second time lucky");
    assert_eq!(pieces.concat(), "second time lucky");
    assert_eq!(fake.requests().len(), 2);
}

async fn connection_refused_is_unavailable(api: Api) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let fake = FakeLlm::start(api).await;
    let mut config = fake.llm_config();
    config.base_url = url::Url::parse(&format!("http://127.0.0.1:{port}/v1/")).unwrap();
    config.max_retries = 1;
    let error = client(config).complete(&ask("hi")).await.unwrap_err();
    match &error {
        LlmError::Unavailable { detail } => {
            assert!(detail.to_lowercase().contains("connect"), "{detail}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

async fn json_answer_to_a_stream_request_is_accepted(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(status(
        200,
        &[],
        match api {
            Api::OpenAi => json!({"choices": [{"message": {"content": "all at once"}, "finish_reason": "stop"}]}),
            Api::Anthropic => json!({"content": [{"type": "text", "text": "all at once"}], "stop_reason": "end_turn"}),
        },
    ));
    let (result, pieces) = stream(&client(fake.llm_config()), &ask("hi")).await;
    assert_eq!(result.unwrap().text, "all at once");
    assert_eq!(pieces, ["all at once"]);
}

async fn ping_sends_a_tiny_request(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text("pong".to_string()));
    fake.push(Reply::Text(String::new()));
    fake.push(status(401, &[], json!({"error": {"message": "no"}})));
    let client = client(fake.llm_config());
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    assert!(matches!(
        client.ping().await,
        Err(LlmError::Unauthorized { .. })
    ));
    let body = &fake.requests()[0].body;
    assert_eq!(body["max_tokens"], 8);
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

async fn default_reply_answers_unscripted_requests(api: Api) {
    let fake = FakeLlm::start(api).await;
    fake.push(Reply::Text("scripted".to_string()));
    fake.set_default(Reply::Text("again and again".to_string()));
    let client = client(fake.llm_config());
    assert_eq!(client.complete(&ask("1")).await.unwrap().text, "scripted");
    for _ in 0..3 {
        let (result, _) = stream(&client, &ask("n")).await;
        assert_eq!(result.unwrap().text, "again and again");
    }
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn anthropic_overloaded_event_is_retried_only_before_text() {
    let overloaded = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_vec();
    let fake = FakeLlm::start(Api::Anthropic).await;
    let client = client(fake.llm_config());

    fake.push(Reply::Raw(vec![overloaded.clone()]));
    fake.push(Reply::Text("after the storm".to_string()));
    let (result, pieces) = stream(&client, &ask("hi")).await;
    assert_eq!(result.unwrap().text, "after the storm");
    assert_eq!(pieces.concat(), "after the storm");
    assert_eq!(fake.requests().len(), 2);

    fake.push(Reply::Raw(vec![
        first_text_event(Api::Anthropic, "half"),
        overloaded,
    ]));
    fake.push(Reply::Text("must not be asked for".to_string()));
    let (result, pieces) = stream(&client, &ask("hi")).await;
    match result {
        Err(LlmError::Unavailable { detail }) => assert!(detail.contains("Overloaded"), "{detail}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(pieces, ["half"]);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn openai_stream_without_done_but_with_finish_reason_is_complete() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.push(Reply::Raw(vec![
        first_text_event(Api::OpenAi, "fine"),
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
            .to_vec(),
    ]));
    let (result, _) = stream(&client(fake.llm_config()), &ask("hi")).await;
    let response = result.unwrap();
    assert_eq!(response.text, "fine");
    assert_eq!(response.finish, FinishReason::Length);
}

#[tokio::test]
async fn openai_tool_call_without_id_or_arguments_is_tolerated() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.push(status(
        200,
        &[],
        json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"type": "function", "function": {"name": "list_files"}},
        ]}, "finish_reason": "tool_calls"}]}),
    ));
    let response = client(fake.llm_config())
        .complete(&ask("hi"))
        .await
        .unwrap();
    assert_eq!(
        response.tool_calls,
        [ToolCall {
            id: "call_0".to_string(),
            name: "list_files".to_string(),
            arguments: json!({}),
        }]
    );
}

/// The fake's config for one of OpenAI's reasoning models, which refuse `max_tokens`.
fn reasoning(fake: &FakeLlm, model: &str) -> LlmConfig {
    LlmConfig {
        model: model.to_string(),
        ..fake.llm_config()
    }
}

/// The token-limit fields a request carried, e.g. `[("max_tokens", 1024)]`.
fn token_limits(body: &Value) -> Vec<(&'static str, u64)> {
    ["max_tokens", "max_completion_tokens"]
        .into_iter()
        .filter_map(|field| Some((field, body.get(field)?.as_u64()?)))
        .collect()
}

#[tokio::test]
async fn a_reasoning_model_refusing_max_tokens_gets_max_completion_tokens_from_then_on() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.push(Reply::Text("thought it through".to_string()));
    fake.push(Reply::Text("streamed".to_string()));
    fake.push(Reply::Text("from a clone".to_string()));
    let client = client(reasoning(&fake, "o4-mini"));
    let clone = client.clone();

    let answer = client.complete(&ask("hi")).await.unwrap();
    assert_eq!(answer.text, "thought it through");
    let (streamed, _) = stream(&client, &ask("again")).await;
    assert_eq!(streamed.unwrap().text, "streamed");
    assert_eq!(
        clone.complete(&ask("3")).await.unwrap().text,
        "from a clone"
    );

    // The one refusal was OpenAI's own, and the client never paid for it again.
    let requests = fake.requests();
    let limits: Vec<_> = requests.iter().map(|r| token_limits(&r.body)).collect();
    assert_eq!(
        limits,
        [
            vec![("max_tokens", 1024)],
            vec![("max_completion_tokens", 1024)],
            vec![("max_completion_tokens", 1024)],
            vec![("max_completion_tokens", 1024)],
        ]
    );
    assert!(requests.iter().all(|r| r.body.get("temperature").is_none()));
}

#[tokio::test]
async fn a_server_refusing_both_token_fields_is_reported_after_one_switch() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.set_default(status(
        400,
        &[],
        json!({"error": {
            "message": "Unsupported parameter: 'max_completion_tokens' is not supported with this model.",
            "type": "invalid_request_error",
            "param": "max_completion_tokens",
            "code": "unsupported_parameter",
        }}),
    ));
    let error = client(reasoning(&fake, "gpt-5-mini"))
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    match &error {
        LlmError::Rejected {
            status: 400,
            message,
        } => {
            assert!(
                message.contains("'max_completion_tokens' is not supported"),
                "{message}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn other_models_keep_max_tokens_and_their_temperature() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.set_default(Reply::Text("ok".to_string()));
    let mut req = ask("hi");
    req.temperature = Some(0.2);
    let client = client(reasoning(&fake, "gpt-4o"));
    client.complete(&req).await.unwrap();
    client.complete(&req).await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(token_limits(&request.body), [("max_tokens", 1024)]);
        assert_eq!(request.body["temperature"], 0.2f32);
    }
}

#[tokio::test]
async fn a_reasoning_model_refuses_a_temperature_other_than_the_default() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.push(Reply::Text("never sent".to_string()));
    let mut req = ask("hi");
    req.temperature = Some(0.5);
    let mut config = reasoning(&fake, "o3");
    config.max_retries = 0;
    let error = client(config).complete(&req).await.unwrap_err();
    let expected = "Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1) value is supported.";
    assert!(
        matches!(&error, LlmError::Rejected { status: 400, message } if message == expected),
        "{error:?}"
    );
}

#[tokio::test]
async fn ping_passes_with_a_reasoning_model_that_spends_its_budget_thinking() {
    let fake = FakeLlm::start(Api::OpenAi).await;
    fake.push(Reply::Text("pong".to_string()));
    let client = client(reasoning(&fake, "o3-mini"));
    client.ping().await.unwrap();
    let requests = fake.requests();
    let limits: Vec<_> = requests.iter().map(|r| token_limits(&r.body)).collect();
    assert_eq!(
        limits,
        [vec![("max_tokens", 8)], vec![("max_completion_tokens", 8)]]
    );

    // The fake's model did answer nothing: any other caller is told so.
    fake.push(Reply::Text("pong".to_string()));
    let mut req = ask("hi");
    req.max_tokens = Some(8);
    assert_bad_response(client.complete(&req).await);
}
