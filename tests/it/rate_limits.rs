//! Discord's rate limits: the fake Discord enforces them when asked (real 429s with Discord's
//! headers and body), and the bot, whose serenity limiter is off because `api_base` is set,
//! holds them by itself: many streamed replies at once cause no 429, and a 429 it does get is
//! waited out and retried, so no message is lost.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::{TestApp, ADMIN};
use crate::support::fake_discord::id_of;
use crate::support::fake_discord::{FakeDiscord, RateLimits, CHANNEL_ID};
use crate::support::fake_llm::Reply;
use crate::support::scripts::ask;
use crate::support::wait::eventually;

#[tokio::test]
async fn the_fake_answers_429_like_discord_when_hammered() {
    let discord = FakeDiscord::start().await;
    discord.limit_rates(RateLimits {
        global_per_second: 10,
        ..RateLimits::DISCORD
    });
    let create = format!("/api/v10/channels/{CHANNEL_ID}/messages");

    // A channel's message bucket: five creates, then a 429 scoped to the route.
    let mut created = Vec::new();
    let refused = loop {
        let answer = raw(&discord, "POST", &create, Some(json!({"content": "hi"}))).await;
        if answer.status == 429 {
            break answer;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
        created.push(answer);
        assert!(
            created.len() <= 10,
            "no 429 after {} creates",
            created.len()
        );
    };
    assert!(created.len() >= 5, "{created:?}");
    let first = &created[0];
    assert_eq!(first.header("x-ratelimit-limit"), Some("5"), "{first:?}");
    assert_eq!(
        first.header("x-ratelimit-remaining"),
        Some("4"),
        "{first:?}"
    );
    for name in ["x-ratelimit-reset", "x-ratelimit-reset-after"] {
        let value: f64 = first.header(name).unwrap().parse().unwrap();
        assert!(value > 0.0, "{name}: {first:?}");
    }
    let bucket = first.header("x-ratelimit-bucket").unwrap();
    assert!(created
        .iter()
        .all(|a| a.header("x-ratelimit-bucket") == Some(bucket)));
    assert_eq!(refused.body["message"], "You are being rate limited.");
    assert_eq!(refused.body["global"], false, "{refused:?}");
    let retry_after = refused.body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 5.0, "{refused:?}");
    let header: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(header, retry_after.ceil() as u64, "{refused:?}");
    assert_eq!(refused.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-global"), None);
    assert_eq!(discord.messages(CHANNEL_ID).len(), created.len());

    // The global bucket: requests to routes with buckets of their own still run out of it, and
    // interaction callbacks do not count.
    let routes = [
        "/api/v10/users/@me",
        "/api/v10/gateway",
        "/api/v10/gateway/bot",
    ];
    let mut sent = 0;
    let refused = loop {
        let answer = raw(&discord, "GET", routes[sent % routes.len()], None).await;
        if answer.status == 429 {
            break answer;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
        sent += 1;
        assert!(sent <= 100, "no global 429 after {sent} requests");
    };
    assert_eq!(refused.body["global"], true, "{refused:?}");
    assert_eq!(refused.header("x-ratelimit-global"), Some("true"));
    assert_eq!(refused.header("x-ratelimit-scope"), Some("global"));
    let callback = raw(
        &discord,
        "POST",
        "/api/v10/interactions/1/token/callback",
        Some(json!({"type": 5})),
    )
    .await;
    assert_ne!(callback.status, 429, "{callback:?}");
    assert_eq!(discord.rate_limited(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_replies_streamed_at_once_stay_within_discords_limits() {
    const STREAMS: usize = 20;
    let bot = TestApp::bot().build().await;
    bot.llm.set_default(Reply::Text(
        "Which format should the export use?".to_string(),
    ));
    for i in 0..STREAMS {
        bot.feature(ADMIN, &format!("Stream {i}")).await;
    }
    bot.wait_for("every thread's first question", |b| {
        let threads = b.discord().threads();
        threads.len() == STREAMS
            && threads.iter().all(|t| {
                b.discord()
                    .messages(id_of(&t["id"]))
                    .iter()
                    .any(|m| m["content"].as_str().unwrap_or("").contains("Which format"))
            })
    })
    .await;
    let threads: Vec<u64> = bot
        .discord()
        .threads()
        .iter()
        .map(|t| id_of(&t["id"]))
        .collect();

    // ~4,000 characters over ~2 s per stream: three messages, a few dozen deltas each.
    let text = answer(160);
    bot.discord().limit_rates(RateLimits::DISCORD);
    for _ in 0..STREAMS {
        bot.llm
            .push(Reply::paced(&text, 40, Duration::from_millis(50)));
    }
    for thread in &threads {
        bot.discord()
            .user_message(ADMIN, *thread, "please write it all out")
            .await;
    }
    eventually("every streamed answer in full", HUNG, || {
        threads
            .iter()
            .all(|t| answer_lines(&bot, *t) == expected_lines(&text))
    })
    .await;
    let edits = bot
        .discord()
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/messages/"))
        .count();
    assert!(edits > 0, "nothing was streamed");
    assert_eq!(bot.discord().rate_limited(), 0, "{:#?}", limited(&bot));
}

#[tokio::test]
async fn a_reply_that_meets_a_429_is_retried_and_nothing_is_lost() {
    let bot = TestApp::bot().build().await;
    ask(&bot.llm, "Which format should the export use?");
    let thread = bot.started("Retries").await;
    // Stricter than the bot's model of Discord: one message create and one edit per second per
    // channel, so posting a long answer at once runs into 429s.
    bot.discord().limit_rates(RateLimits {
        messages: 1,
        message_window: Duration::from_secs(1),
        ..RateLimits::DISCORD
    });
    let text = answer(260);
    bot.llm.push(Reply::Text(text.clone()));
    bot.discord()
        .user_message(ADMIN, thread, "please write it all out")
        .await;
    eventually("the whole answer", HUNG, || {
        answer_lines(&bot, thread) == expected_lines(&text)
    })
    .await;
    assert!(bot.discord().rate_limited() > 0, "the fake never said 429");
    let posts = bot
        .discord()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("{thread}/messages")))
        .filter(|r| r.status == 429)
        .count();
    assert!(posts > 0, "{:#?}", limited(&bot));
}

/// An answer of `lines` numbered lines (about 25 characters each).
fn answer(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("line{i:04} of the answer\n"))
        .collect()
}

fn expected_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// The lines of the bot's messages after the person's last message in `thread`, in order.
fn answer_lines(bot: &TestApp, thread: u64) -> Vec<String> {
    let messages = bot.discord().messages(thread);
    let asked = messages
        .iter()
        .rposition(|m| m["author"]["bot"] != true)
        .map_or(0, |i| i + 1);
    messages[asked..]
        .iter()
        .filter(|m| m["author"]["bot"] == true)
        .flat_map(|m| {
            let content = m["content"].as_str().unwrap_or("").to_string();
            content.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The requests the fake refused with 429.
fn limited(bot: &TestApp) -> Vec<String> {
    bot.discord()
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// How long the streams may take; the deadline is only there to end a hung test.
const HUNG: Duration = Duration::from_secs(120);

/// A raw HTTP answer: status, headers (names lowercased) and JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to the fake's REST API with the bot's token, read to the end (the fake closes
/// every connection after its answer).
async fn raw(discord: &FakeDiscord, method: &str, path: &str, body: Option<Value>) -> Answer {
    let addr = discord.api_base().trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bot {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        discord.token(),
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    Answer {
        status: status.parse().unwrap(),
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}
