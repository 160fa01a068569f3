//! `cargo bench --bench discord`: the real `featurebot run` binary, as a child process, against
//! the in-process fake Discord and a fake LLM that answers every request at once.
//!
//! 1. Resident memory (VmRSS) once the bot is connected and its command registered.
//! 2. 100 `/feature` commands sent back to back: each one's delay to its deferral, and the time
//!    until all 100 threads hold the bot's first answer.
//! 3. Turn latency with 1, 10 and 100 threads busy at once: in rounds, one MESSAGE_CREATE per
//!    thread, back to back; the delay from each dispatch to the bot's first REST request about
//!    that thread (the typing indicator) and to the answer's POST. Each round's answers are
//!    complete before the next round is sent.
//! 4. Resident memory with 100 live threads, after the rounds.
//! 5. Streaming, with the fake Discord rate-limiting like Discord from here on
//!    ([`RateLimits::DISCORD`]): the fake LLM writes a ~4,000-character answer as SSE chunks over
//!    ~3 s ([`Reply::Paced`]). The delay from its first chunk to the bot's first POST in the
//!    thread, until the whole answer is shown, the PATCH edits per message and their densest
//!    5 s; then 20 such streams at once, with the densest second of REST calls and the 429s.
//! 6. Start-up with 10,000 stored features (each a Discord thread in `gathering` whose last turn
//!    is the person's, so the catch-up also answers every one of them): spawn to READY, to the
//!    command registration and until every stored thread is answered (the catch-up, held to
//!    Discord's limits), the REST calls made, and the resident memory then.
//! 7. Memory with those 10,000 stored features and 100 live threads: after the start-up, 100 of
//!    the stored threads hold conversations for [`MEMORY_LIVE`] (as in part 8), and the resident
//!    memory is sampled.
//! 8. Load: 100 conversations at once for [`LOAD_TIME`] (BENCH_LOAD_SECS to change it), each a
//!    loop of one message, waiting for the complete answer, the next message; the fake LLM
//!    answers at once. Turns completed, errors (REST errors at the fake, warnings and errors in
//!    the bot's log), whether every message got exactly one answer (counted per thread and turn
//!    at the fake Discord), and the resident memory every [`SAMPLE_EVERY`].
//!
//! Figures are printed as a table; BENCH_QUICK=1 takes fewer samples. BENCH_ONLY picks sections
//! (comma-separated): `turns` (parts 1 to 5, streaming included; `streaming` is the same),
//! `startup` (6), `memory` (6 and 7), `load` (8).
//! The binary is the one Cargo builds for this bench (`CARGO_BIN_EXE_featurebot`, the release
//! profile).
//!
//! What the figures leave out: before part 5 the fake Discord has no rate limits (and serenity's
//! limiter is off whenever `discord.api_base` is set; the bot's own pacing still applies), so
//! bursts go through that real Discord would slow down; every REST call is a fresh loopback
//! connection; and the fakes share the machine's cores with the bot.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use featurebot::model::{Author, Place, Speaker};
use featurebot::store::Store;
use support::fake_discord::{FakeDiscord, RateLimits, Recorded, ADMIN_ROLE, CHANNEL_ID, GUILD_ID};
use support::fake_llm::{Api, FakeLlm, Reply};
use support::git::repo_with_commit;

const ADMIN: u64 = 5001;
const FEATURES: usize = 100;
const LEVELS: [usize; 3] = [1, 10, 100];
/// The fake LLM's answer to everything: no confirmation marker, so every turn is a plain one.
const REPLY: &str = "Noted. What should happen when the list is empty?";

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "featurebot Discord benchmark ({} cores, bot and fakes share them)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if wanted("turns") || wanted("streaming") {
        runtime.block_on(run(if quick { 20 } else { 200 }, if quick { 2 } else { 5 }));
    }
    if wanted("startup") || wanted("memory") {
        let live = wanted("memory").then_some(if quick {
            Duration::from_secs(10)
        } else {
            MEMORY_LIVE
        });
        runtime.block_on(startup(if quick { 500 } else { 10_000 }, live));
    }
    if wanted("load") {
        let time = match std::env::var("BENCH_LOAD_SECS") {
            Ok(secs) => Duration::from_secs(secs.parse().expect("BENCH_LOAD_SECS: seconds")),
            Err(_) if quick => Duration::from_secs(20),
            Err(_) => LOAD_TIME,
        };
        runtime.block_on(load(time));
    }
}

/// How long the 100 conversations of the load section last.
const LOAD_TIME: Duration = Duration::from_secs(180);
/// How long the 100 live threads of the memory section talk.
const MEMORY_LIVE: Duration = Duration::from_secs(30);
/// How often the resident memory is sampled while conversations run.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A turn not answered within this long counts as stalled and ends its conversation.
const TURN_LIMIT: Duration = Duration::from_secs(60);

/// Whether a section is to run: all of them, unless BENCH_ONLY names some (comma-separated:
/// `turns` for parts 1 to 5, `startup`, `load`, `memory`).
fn wanted(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == section),
        Err(_) => true,
    }
}

/// The bot as a child process, with its log in a file (a full pipe would stall it).
struct Bot {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Bot {
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "featurebot exited ({status}); its log:\n{}",
                read_log(&self.log)
            );
        }
    }

    /// Polls `condition` every few milliseconds until it holds; panics after `limit`.
    async fn wait_for(&mut self, what: &str, limit: Duration, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !condition() {
            self.assert_alive();
            if Instant::now() >= deadline {
                let log = read_log(&self.log);
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "timed out waiting for {what}; the end of the bot's log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn run(samples: usize, stream_samples: usize) {
    let discord = FakeDiscord::start().await;
    discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
    let llm = FakeLlm::start(Api::OpenAi).await;
    llm.set_default(Reply::Text(REPLY.to_string()));
    let repo = repo_with_commit("main");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &llm, &repo.path, &discord);
    let mut bot = start(&config, dir.path(), &discord).await;

    tokio::select! {
        () = discord.wait_ready() => {}
        status = bot.child.wait() => {
            panic!("featurebot exited ({status:?}) before connecting; its log:\n{}", read_log(&bot.log))
        }
    }
    bot.wait_for("the slash command", Duration::from_secs(20), || {
        !discord.commands().is_empty()
    })
    .await;
    let idle = rss_kib(bot.pid);

    let threads = create_features(&mut bot, &discord, true).await;

    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "turn latency (dispatch to ...)", "p50", "p99", "max"
    );
    let mut answers: HashMap<u64, usize> = threads.iter().map(|t| (*t, 1)).collect();
    let mut per_turn = Vec::new();
    for k in LEVELS {
        let cpu_before = (cpu_time("self"), cpu_time(&bot.pid.to_string()));
        let sent = turns(&mut bot, &discord, &threads[..k], samples, &mut answers).await;
        let cpu = (
            cpu_time("self") - cpu_before.0,
            cpu_time(&bot.pid.to_string()) - cpu_before.1,
        );
        let requests = discord.requests();
        let first = delays(&sent, &requests, |_| true);
        let posted = delays(&sent, &requests, |r| {
            r.method == "POST" && r.path.ends_with("/messages")
        });
        let n = sent.len();
        row(
            &format!("{k:>3} thread(s) busy: first REST request (n={n})"),
            first,
        );
        row(
            &format!("{k:>3} thread(s) busy: answer POSTed (n={n})"),
            posted,
        );
        per_turn.push((k, n, count_per_turn(&sent, &requests), cpu));
    }

    let busy = rss_kib(bot.pid);
    let peak = status_kib(bot.pid, "VmHWM:");
    println!();
    println!("{:<58} {:>10}", "measure", "value");
    value_row("resident memory, connected, no feature (VmRSS)", &kib(idle));
    value_row(
        &format!("resident memory, {FEATURES} live threads after the rounds (VmRSS)"),
        &kib(busy),
    );
    value_row("resident memory, peak (VmHWM)", &kib(peak));
    for (k, n, (typing, posts, edits, other), (bench_cpu, bot_cpu)) in per_turn {
        value_row(
            &format!("CPU per turn at {k} busy: bot / this process (fakes)"),
            &format!(
                "{} / {}",
                fmt(bot_cpu / n as u32),
                fmt(bench_cpu / n as u32)
            ),
        );
        value_row(
            &format!("REST calls per turn at {k} busy: typing/POST/PATCH/other"),
            &format!(
                "{:.2}/{:.2}/{:.2}/{:.2}",
                typing as f64 / n as f64,
                posts as f64 / n as f64,
                edits as f64 / n as f64,
                other as f64 / n as f64
            ),
        );
    }
    streaming(&mut bot, &discord, &llm, &threads, stream_samples).await;
    let requests = discord.requests();
    let limited = requests.iter().filter(|r| r.status == 429).count();
    let failed: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.status >= 400 || r.status == 0)
        .collect();
    value_row(
        "REST requests the fake received",
        &requests.len().to_string(),
    );
    value_row(
        "  of which 429 (the fake rate-limits from part 5 on)",
        &limited.to_string(),
    );
    value_row(
        "  of which errors (status >= 400, or none)",
        &failed.len().to_string(),
    );
    for r in failed.iter().take(5) {
        println!("    {} {} {} {}", r.status, r.method, r.path, r.body);
    }

    bot.child.start_kill().unwrap();
    let _ = bot.child.wait().await;
    let log = read_log(&bot.log);
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    value_row(
        "warnings and errors in the bot's log",
        &complaints.len().to_string(),
    );
    for line in complaints.iter().take(5) {
        println!("    {line}");
    }
}

/// The streamed answer's pieces: ~4,000 characters in [`STREAM_CHUNKS`] pieces, one every
/// [`STREAM_GAP`], so about 3 s; it ends with [`STREAM_END`].
const STREAM_CHUNKS: usize = 150;
const STREAM_GAP: Duration = Duration::from_millis(20);
const STREAM_END: &str = "END-OF-ANSWER";
/// How many threads stream at once in the second part.
const STREAMS: usize = 20;

/// A long answer in OpenAI's chat completions SSE format, as the fake writes `Reply::Text`:
/// the role with the first piece, one `content` delta per piece, the finish, the usage, `[DONE]`.
fn paced_answer() -> Reply {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 4_000 - STREAM_END.len() - 1 {
        // Lines of ten words, so that the bot splits the answer at line ends.
        text.push_str(&format!(
            "word{i:04}{}",
            if i % 10 == 9 { '\n' } else { ' ' }
        ));
        i += 1;
    }
    text.push_str(STREAM_END);
    let chars: Vec<char> = text.chars().collect();
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let chunk = json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n").into_bytes()
    };
    let mut chunks: Vec<Vec<u8>> = chars
        .chunks(chars.len().div_ceil(STREAM_CHUNKS))
        .enumerate()
        .map(|(i, piece)| {
            let piece: String = piece.iter().collect();
            if i == 0 {
                chunk(json!({"role": "assistant", "content": piece}), json!(null))
            } else {
                chunk(json!({"content": piece}), json!(null))
            }
        })
        .collect();
    chunks.push(chunk(json!({}), json!("stop")));
    let words = text.split_whitespace().count();
    let usage = json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
    });
    chunks.push(format!("data: {usage}\n\n").into_bytes());
    chunks.push(b"data: [DONE]\n\n".to_vec());
    Reply::Paced {
        chunks,
        gap: STREAM_GAP,
    }
}

/// How many of the bot's messages in `thread` end a streamed answer, in their final state.
fn streamed(discord: &FakeDiscord, thread: u64) -> usize {
    discord
        .messages(thread)
        .iter()
        .filter(|m| {
            m["author"]["bot"] == true && m["content"].as_str().unwrap_or("").ends_with(STREAM_END)
        })
        .count()
}

/// The bot's PATCH edits of messages in `thread` from `from` on, by message path, in order.
fn edits_by_message(requests: &[Recorded], thread: u64, from: Instant) -> Vec<Vec<Instant>> {
    let prefix = format!("/api/v10/channels/{thread}/messages/");
    let mut by: Vec<(String, Vec<Instant>)> = Vec::new();
    for r in requests
        .iter()
        .filter(|r| r.at >= from && r.method == "PATCH" && r.path.starts_with(&prefix))
    {
        match by.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, ats)) => ats.push(r.at),
            None => by.push((r.path.clone(), vec![r.at])),
        }
    }
    by.into_iter().map(|(_, ats)| ats).collect()
}

/// When the requests to `thread` from `from` on with this method and route (Discord's per-channel
/// message buckets: POST creates, PATCH edits) arrived, in order.
fn message_calls(requests: &[Recorded], thread: u64, from: Instant, method: &str) -> Vec<Instant> {
    let create = format!("/api/v10/channels/{thread}/messages");
    requests
        .iter()
        .filter(|r| r.at >= from && r.method == method)
        .filter(|r| match method {
            "POST" => r.path == create,
            _ => r.path.starts_with(&format!("{create}/")),
        })
        .map(|r| r.at)
        .collect()
}

/// The most instants of `ats` (sorted) inside any window of length `window`.
fn densest(ats: &[Instant], window: Duration) -> usize {
    (0..ats.len())
        .map(|i| {
            ats[i..]
                .iter()
                .take_while(|t| **t - ats[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The shortest gap between consecutive instants of `ats` (sorted).
fn shortest_gap(ats: &[Instant]) -> Option<Duration> {
    ats.windows(2).map(|w| w[1] - w[0]).min()
}

/// The last request about `thread`'s messages from `from` on: when its answer was complete.
fn last_message_call(requests: &[Recorded], thread: u64, from: Instant) -> Instant {
    let prefix = format!("/api/v10/channels/{thread}/messages");
    requests
        .iter()
        .filter(|r| r.at >= from && r.method != "GET" && r.path.starts_with(&prefix))
        .map(|r| r.at)
        .max()
        .unwrap_or(from)
}

/// Part 5: a paced ~4,000-character answer streamed into one thread `samples` times, then into
/// [`STREAMS`] threads at once, with the fake Discord rate-limiting like Discord from here on.
async fn streaming(
    bot: &mut Bot,
    discord: &FakeDiscord,
    llm: &FakeLlm,
    threads: &[u64],
    samples: usize,
) {
    discord.limit_rates(RateLimits::DISCORD);
    let five = Duration::from_secs(5);
    let thread = threads[0];
    let mut first_post = Vec::new();
    let mut complete = Vec::new();
    let mut edits_per_message = Vec::new();
    let mut densest_edits = 0;
    let mut gap: Option<Duration> = None;
    let mut messages = 0;
    for sample in 0..samples {
        let starts = llm.paced_starts().len();
        llm.push(paced_answer());
        let at = Instant::now();
        discord
            .user_message(ADMIN, thread, "please write the whole specification out")
            .await;
        bot.wait_for("the streamed answer", Duration::from_secs(60), || {
            streamed(discord, thread) > sample
        })
        .await;
        let first_chunk = llm.paced_starts()[starts];
        let requests = discord.requests();
        let posts = message_calls(&requests, thread, at, "POST");
        first_post.push(posts[0].saturating_duration_since(first_chunk));
        messages += posts.len();
        complete.push(last_message_call(&requests, thread, at) - at);
        densest_edits = densest_edits.max(densest(
            &message_calls(&requests, thread, at, "PATCH"),
            five,
        ));
        for ats in edits_by_message(&requests, thread, at) {
            edits_per_message.push(ats.len());
            if let Some(g) = shortest_gap(&ats) {
                gap = Some(gap.map_or(g, |x| x.min(g)));
            }
        }
    }
    println!();
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "streaming (~4,000 chars over ~3 s), Discord's limits", "p50", "p99", "max"
    );
    row(
        &format!("first SSE chunk sent to first POST in the thread (n={samples})"),
        first_post,
    );
    row(
        &format!("message sent to the whole answer shown (n={samples})"),
        complete,
    );
    edits_per_message.sort_unstable();
    value_row(
        &format!("messages per streamed answer (n={samples})"),
        &format!("{:.1}", messages as f64 / samples as f64),
    );
    value_row(
        "PATCH edits per message: min / max",
        &format!(
            "{} / {}",
            edits_per_message.first().unwrap_or(&0),
            edits_per_message.last().unwrap_or(&0)
        ),
    );
    value_row(
        "most edits in the thread in any 5 s (Discord: 5)",
        &densest_edits.to_string(),
    );
    value_row(
        "shortest gap between edits of one message",
        &gap.map(fmt).unwrap_or_else(|| "-".to_string()),
    );

    // STREAMS threads at once.
    let busy = &threads[1..=STREAMS];
    let from = Instant::now();
    for thread in busy {
        llm.push(paced_answer());
        discord
            .user_message(ADMIN, *thread, "please write the whole specification out")
            .await;
    }
    bot.wait_for("the streamed answers", Duration::from_secs(180), || {
        busy.iter().all(|t| streamed(discord, *t) >= 1)
    })
    .await;
    let requests = discord.requests();
    let mut all_edits = Vec::new();
    let mut complete = Vec::new();
    let (mut densest_posts, mut densest_edits) = (0, 0);
    let mut gap: Option<Duration> = None;
    for thread in busy {
        complete.push(last_message_call(&requests, *thread, from) - from);
        densest_posts = densest_posts.max(densest(
            &message_calls(&requests, *thread, from, "POST"),
            five,
        ));
        densest_edits = densest_edits.max(densest(
            &message_calls(&requests, *thread, from, "PATCH"),
            five,
        ));
        for ats in edits_by_message(&requests, *thread, from) {
            if let Some(g) = shortest_gap(&ats) {
                gap = Some(gap.map_or(g, |x| x.min(g)));
            }
            all_edits.extend(ats);
        }
    }
    all_edits.sort();
    let window: Vec<&Recorded> = requests.iter().filter(|r| r.at >= from).collect();
    // Interaction callbacks and follow-ups do not count against Discord's global limit.
    let global: Vec<Instant> = window
        .iter()
        .filter(|r| !r.path.starts_with("/api/v10/interactions/"))
        .filter(|r| !r.path.starts_with("/api/v10/webhooks/"))
        .map(|r| r.at)
        .collect();
    let span = all_edits.last().map_or(Duration::ZERO, |l| *l - from);
    value_row(
        &format!("{STREAMS} streams at once: PATCH edits / per s overall"),
        &format!(
            "{} / {:.1}",
            all_edits.len(),
            all_edits.len() as f64 / span.as_secs_f64()
        ),
    );
    value_row(
        &format!("{STREAMS} streams at once: most REST calls in any 1 s (Discord: 50)"),
        &densest(&global, Duration::from_secs(1)).to_string(),
    );
    value_row(
        &format!("{STREAMS} streams at once: most POSTs / edits, one thread, 5 s"),
        &format!("{densest_posts} / {densest_edits}"),
    );
    value_row(
        &format!("{STREAMS} streams at once: shortest gap, one message"),
        &gap.map(fmt).unwrap_or_else(|| "-".to_string()),
    );
    row(
        &format!("{STREAMS} streams at once: message sent to the whole answer shown"),
        complete,
    );
    value_row(
        &format!("{STREAMS} streams at once: REST calls / answered 429"),
        &format!(
            "{} / {}",
            window.len(),
            window.iter().filter(|r| r.status == 429).count()
        ),
    );
    println!();
}

/// Part 6: a fresh fake Discord and store with `features` open feature threads, then the bot;
/// with `live`, part 7: then 100 of those threads talk for that long.
async fn startup(features: usize, live: Option<Duration>) {
    let discord = FakeDiscord::start().await;
    discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
    let llm = FakeLlm::start(Api::OpenAi).await;
    llm.set_default(Reply::Text(REPLY.to_string()));
    let repo = repo_with_commit("main");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &llm, &repo.path, &discord);
    let store_path = dir.path().join("store");
    let fill = Instant::now();
    let mut threads = Vec::new();
    {
        let store = Store::open(&store_path).unwrap();
        for i in 0..features {
            let title = format!("stored feature {i}");
            let thread_id = discord.add_thread(CHANNEL_ID, &title);
            threads.push(thread_id);
            let feature = store
                .create_feature(
                    &title,
                    Author {
                        id: ADMIN.to_string(),
                        name: "ada".to_string(),
                    },
                    Place::Discord {
                        guild_id: GUILD_ID,
                        channel_id: CHANNEL_ID,
                        thread_id,
                    },
                )
                .await
                .unwrap();
            store
                .append_turn(
                    feature.id,
                    Speaker::User,
                    "ada",
                    "Export the weekly report as CSV, please.",
                    None,
                )
                .await
                .unwrap();
        }
    }
    // sled's background threads let go of the lock a moment after the last handle is dropped.
    drop(support::reopen_store(&store_path));
    let fill = fill.elapsed();

    let spawned = Instant::now();
    let mut bot = start(&config, dir.path(), &discord).await;
    tokio::select! {
        () = discord.wait_ready() => {}
        status = bot.child.wait() => {
            panic!("featurebot exited ({status:?}) before connecting; its log:\n{}", read_log(&bot.log))
        }
    }
    let ready = spawned.elapsed();
    let ready_at = Instant::now();
    let rss_ready = rss_kib(bot.pid);
    bot.wait_for("the slash command", Duration::from_secs(60), || {
        !discord.commands().is_empty()
    })
    .await;
    let registered = spawned.elapsed();
    // Caught up: every stored thread has its answer (a POST each) and nothing has been sent for
    // a second. (A quiet gap alone is no sign: the pacer sends in bursts at Discord's limit.)
    let deadline = Instant::now() + Duration::from_secs(1800);
    let idle_at = loop {
        bot.assert_alive();
        let requests = discord.requests();
        let posts = requests
            .iter()
            .filter(|r| r.at >= ready_at && r.method == "POST" && r.path.ends_with("/messages"))
            .count();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the catch-up: {posts} of {features} threads answered"
        );
        let last = requests.last().map(|r| r.at).unwrap();
        if posts >= features && last.elapsed() >= Duration::from_secs(1) {
            break last;
        }
        drop(requests);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let idle = idle_at - spawned;
    let rss = rss_kib(bot.pid);
    let requests = discord.requests();
    let (mut fetches, mut typing, mut posts, mut other) = (0, 0, 0, 0);
    for r in requests.iter().filter(|r| r.at >= ready_at) {
        match (r.method.as_str(), r.path.rsplit('/').next()) {
            ("GET", Some(last)) if last.starts_with("messages") => fetches += 1,
            ("POST", Some("typing")) => typing += 1,
            ("POST", Some("messages")) => posts += 1,
            _ => other += 1,
        }
    }
    let errors = requests
        .iter()
        .filter(|r| r.status >= 400 || r.status == 0)
        .count();
    let answered = llm.requests().len();

    println!(
        "{:<58} {:>10}",
        format!("start-up, {features} features stored"),
        "value"
    );
    value_row("filling the store (not the bot's time)", &fmt(fill));
    value_row("spawn to READY", &fmt(ready));
    value_row("spawn to the command registered", &fmt(registered));
    value_row(
        "spawn to caught up (every stored thread answered)",
        &fmt(idle),
    );
    value_row(
        "REST calls from READY: GET messages/typing/POST/other",
        &format!("{fetches}/{typing}/{posts}/{other}"),
    );
    value_row(
        "  of which errors (status >= 400, or none)",
        &errors.to_string(),
    );
    value_row(
        "LLM requests (the catch-up answers each feature)",
        &answered.to_string(),
    );
    value_row(
        "resident memory at READY, before the catch-up (VmRSS)",
        &kib(rss_ready),
    );
    value_row("resident memory once caught up (VmRSS)", &kib(rss));
    value_row(
        "  of which anonymous / file-backed (RssAnon / RssFile)",
        &format!(
            "{} / {}",
            kib(status_kib(bot.pid, "RssAnon:")),
            kib(status_kib(bot.pid, "RssFile:"))
        ),
    );
    value_row(
        "resident memory, peak so far (VmHWM)",
        &kib(status_kib(bot.pid, "VmHWM:")),
    );
    value_row("store on disk", &mib(dir_bytes(&store_path)));

    if let Some(live) = live {
        println!();
        let talk = &threads[..FEATURES.min(threads.len())];
        let report = converse(&mut bot, &discord, &llm, talk, live).await;
        report.print(
            &format!(
                "memory: {features} stored, {} of them live for {}",
                talk.len(),
                fmt(live)
            ),
            &discord,
            talk,
        );
        value_row("store on disk after", &mib(dir_bytes(&store_path)));
    }

    bot.child.start_kill().unwrap();
    let _ = bot.child.wait().await;
    let log = read_log(&bot.log);
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    value_row(
        "warnings and errors in the bot's log",
        &complaints.len().to_string(),
    );
    for line in complaints.iter().take(5) {
        println!("    {line}");
    }
}

/// Part 8: [`FEATURES`] conversations at once for `time`, on a fresh bot.
async fn load(time: Duration) {
    let discord = FakeDiscord::start().await;
    discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
    let llm = FakeLlm::start(Api::OpenAi).await;
    llm.set_default(Reply::Text(REPLY.to_string()));
    let repo = repo_with_commit("main");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &llm, &repo.path, &discord);
    let mut bot = start(&config, dir.path(), &discord).await;
    tokio::select! {
        () = discord.wait_ready() => {}
        status = bot.child.wait() => {
            panic!("featurebot exited ({status:?}) before connecting; its log:\n{}", read_log(&bot.log))
        }
    }
    bot.wait_for("the slash command", Duration::from_secs(20), || {
        !discord.commands().is_empty()
    })
    .await;
    let threads = create_features(&mut bot, &discord, false).await;
    let store = dir.path().join("store");
    let store_before = dir_bytes(&store);
    let report = converse(&mut bot, &discord, &llm, &threads, time).await;
    report.print(
        &format!("load: {FEATURES} conversations for {}", fmt(time)),
        &discord,
        &threads,
    );
    value_row(
        "store on disk before / after",
        &format!("{} / {}", mib(store_before), mib(dir_bytes(&store))),
    );

    bot.child.start_kill().unwrap();
    let _ = bot.child.wait().await;
    let log = read_log(&bot.log);
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    value_row(
        "warnings and errors in the bot's log",
        &complaints.len().to_string(),
    );
    for line in complaints.iter().take(5) {
        println!("    {line}");
    }
}

/// What [`converse`] saw.
struct Conversations {
    time: Duration,
    /// Each completed turn's delay from the message to the complete answer.
    latencies: Vec<Duration>,
    /// Conversations that ended on a turn not answered within [`TURN_LIMIT`].
    stalled: usize,
    /// Resident memory (KiB) since the start, every [`SAMPLE_EVERY`] and at the end.
    rss: Vec<(Duration, u64)>,
    /// The fake's REST requests from the start to the end (quiet again).
    requests: std::ops::Range<usize>,
}

impl Conversations {
    fn print(&self, title: &str, discord: &FakeDiscord, threads: &[u64]) {
        let turns = self.latencies.len();
        println!("{title:<58} {:>10} {:>10} {:>10}", "p50", "p99", "max");
        if turns > 0 {
            row(
                "turn: message to complete answer (polled every 10 ms)",
                self.latencies.clone(),
            );
        }
        value_row("turns completed (all threads)", &turns.to_string());
        value_row(
            "turns per second",
            &format!("{:.1}", turns as f64 / self.time.as_secs_f64()),
        );
        value_row(
            &format!("turns not answered within {}", fmt(TURN_LIMIT)),
            &self.stalled.to_string(),
        );
        let (once, never, more) = answers_per_turn(discord, threads);
        value_row(
            "messages answered exactly once / never / more than once",
            &format!("{once} / {never} / {more}"),
        );
        let requests = discord.requests();
        let window = &requests[self.requests.clone()];
        let failed: Vec<&Recorded> = window
            .iter()
            .filter(|r| r.status >= 400 || r.status == 0)
            .collect();
        value_row(
            "REST requests / errors (status >= 400, or none)",
            &format!("{} / {}", window.len(), failed.len()),
        );
        for r in failed.iter().take(5) {
            println!("    {} {} {} {}", r.status, r.method, r.path, r.body);
        }
        let first = self.rss.first().map_or(0, |s| s.1);
        let last = self.rss.last().map_or(0, |s| s.1);
        let max = self.rss.iter().map(|s| s.1).max().unwrap_or(0);
        value_row(
            "resident memory: first / last / max (VmRSS)",
            &format!("{} / {} / {}", kib(first), kib(last), kib(max)),
        );
        let samples: Vec<String> = self
            .rss
            .iter()
            .map(|(at, rss)| format!("{}s {:.1}", at.as_secs(), *rss as f64 / 1024.0))
            .collect();
        println!("    VmRSS (MiB) by time: {}", samples.join(", "));
    }
}

/// Runs one conversation in each of `threads` for `time`, sampling the bot's memory, then waits
/// until the bot is quiet (no REST request for a second).
async fn converse(
    bot: &mut Bot,
    discord: &FakeDiscord,
    llm: &FakeLlm,
    threads: &[u64],
    time: Duration,
) -> Conversations {
    let start = Instant::now();
    let from = discord.request_count();
    let until = start + time;
    let mut tasks = tokio::task::JoinSet::new();
    for thread in threads {
        tasks.spawn(conversation(discord.clone(), *thread, until));
    }
    let mut rss = vec![(Duration::ZERO, rss_kib(bot.pid))];
    let mut next_sample = start + SAMPLE_EVERY;
    let mut latencies = Vec::new();
    let mut stalled = 0;
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => {
                let (mut times, stall) = done.unwrap().unwrap();
                latencies.append(&mut times);
                stalled += usize::from(stall);
            }
            () = tokio::time::sleep_until(next_sample.into()) => {
                bot.assert_alive();
                rss.push((start.elapsed(), rss_kib(bot.pid)));
                next_sample += SAMPLE_EVERY;
                // The fake LLM keeps every request it was sent: transcripts, which pile up.
                llm.forget_requests();
            }
        }
    }
    let elapsed = start.elapsed();
    // Quiet: a late or doubled answer would come now.
    let mut count = discord.request_count();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = discord.request_count();
        if now == count {
            break;
        }
        count = now;
    }
    rss.push((start.elapsed(), rss_kib(bot.pid)));
    Conversations {
        time: elapsed,
        latencies,
        stalled,
        rss,
        requests: from..count,
    }
}

/// One thread's conversation: a message, the complete answer, the next message, until `until`.
/// Returns each turn's delay, and whether it ended on a turn left unanswered.
async fn conversation(discord: FakeDiscord, thread: u64, until: Instant) -> (Vec<Duration>, bool) {
    let mut latencies = Vec::new();
    let mut turn = 0;
    while Instant::now() < until {
        let at = Instant::now();
        let sent = discord
            .user_message(ADMIN, thread, &format!("{LOAD_TURN}{turn}"))
            .await;
        loop {
            let answered = discord.last_message(thread).is_some_and(|m| {
                m["author"]["bot"] == true
                    && m["content"] == REPLY
                    && m["id"].as_str().unwrap().parse::<u64>().unwrap() > sent
            });
            if answered {
                break;
            }
            if at.elapsed() > TURN_LIMIT {
                return (latencies, true);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(at.elapsed());
        turn += 1;
    }
    (latencies, false)
}

/// The start of each message a conversation sends; the turn number follows.
const LOAD_TURN: &str = "load turn ";

/// Over `threads`: how many of the conversations' messages were followed (before the next
/// message) by exactly one, no, and more than one message of the bot.
fn answers_per_turn(discord: &FakeDiscord, threads: &[u64]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for thread in threads {
        let messages = discord.messages(*thread);
        let is_turn = |m: &Value| {
            m["author"]["bot"] != true
                && m["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(LOAD_TURN))
        };
        let mut answers: Option<usize> = None;
        for m in &messages {
            if is_turn(m) {
                if let Some(n) = answers.replace(0) {
                    tally(&mut counts, n);
                }
            } else if m["author"]["bot"] == true {
                if let Some(n) = answers.as_mut() {
                    *n += 1;
                }
            }
        }
        if let Some(n) = answers {
            tally(&mut counts, n);
        }
    }
    counts
}

fn tally(counts: &mut (usize, usize, usize), answers: usize) {
    match answers {
        1 => counts.0 += 1,
        0 => counts.1 += 1,
        _ => counts.2 += 1,
    }
}

/// The size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn write_config(dir: &Path, llm: &FakeLlm, repo: &Path, discord: &FakeDiscord) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"FAKE_LLM_KEY\"\nrequest_timeout_secs = 5\nmax_retries = 1\n\n\
         [repo]\npath = {:?}\nbase_branch = \"main\"\n\n\
         [store]\npath = {:?}\n\n\
         [discord]\nguild_id = {GUILD_ID}\nadmin_roles = [{ADMIN_ROLE}]\nfeature_channels = [{CHANNEL_ID}]\napi_base = \"{}\"\nstream_edit_interval_ms = 200\n",
        llm.base_url(),
        repo,
        dir.join("store"),
        discord.api_base(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(config: &Path, dir: &Path, discord: &FakeDiscord) -> Bot {
    let log = dir.join("featurebot.log");
    let child = Command::new(env!("CARGO_BIN_EXE_featurebot"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("DISCORD_TOKEN", discord.token())
        .env("FAKE_LLM_KEY", "sk-bench")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    Bot { child, pid, log }
}

/// Sends `/feature` [`FEATURES`] times back to back and waits for every thread's first answer;
/// returns the thread ids, oldest first. With `report`, prints the delays.
async fn create_features(bot: &mut Bot, discord: &FakeDiscord, report: bool) -> Vec<u64> {
    let start = Instant::now();
    let mut interactions = Vec::new();
    for i in 0..FEATURES {
        let title = format!("bench feature {i}");
        interactions.push(
            discord
                .slash_command(ADMIN, CHANNEL_ID, "feature", json!({ "title": title }))
                .await,
        );
    }
    bot.wait_for("the threads", Duration::from_secs(60), || {
        discord.threads().len() == FEATURES
    })
    .await;
    let threads: Vec<u64> = discord
        .threads()
        .iter()
        .map(|t| t["id"].as_str().unwrap().parse().unwrap())
        .collect();
    bot.wait_for("every first answer", Duration::from_secs(60), || {
        threads.iter().all(|t| answered(discord, *t) >= 1)
    })
    .await;
    let all = start.elapsed();
    if !report {
        return threads;
    }
    let requests = discord.requests();
    let deferred: Vec<Duration> = interactions
        .iter()
        .map(|i| {
            let prefix = format!("/api/v10/interactions/{}/", i.id);
            requests
                .iter()
                .filter(|r| r.path.starts_with(&prefix) && r.path.ends_with("/callback"))
                .map(|r| r.at.saturating_duration_since(i.dispatched_at))
                .min()
                .unwrap()
        })
        .collect();
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "/feature", "p50", "p99", "max"
    );
    row(
        &format!("dispatch to deferral ({FEATURES} sent back to back)"),
        deferred,
    );
    value_row(
        &format!("{FEATURES} /feature to every thread's first answer"),
        &fmt(all),
    );
    println!();
    threads
}

/// Runs rounds of one message per thread until there are at least `samples`; returns each
/// message's thread and dispatch instant.
async fn turns(
    bot: &mut Bot,
    discord: &FakeDiscord,
    threads: &[u64],
    samples: usize,
    answers: &mut HashMap<u64, usize>,
) -> Vec<(u64, Instant)> {
    let mut sent = Vec::new();
    for round in 0..samples.div_ceil(threads.len()) {
        for thread in threads {
            let at = Instant::now();
            discord
                .user_message(
                    ADMIN,
                    *thread,
                    &format!("answer {round} in a round of {}", threads.len()),
                )
                .await;
            sent.push((*thread, at));
            *answers.entry(*thread).or_default() += 1;
        }
        let expected: Vec<(u64, usize)> = threads.iter().map(|t| (*t, answers[t])).collect();
        bot.wait_for("the round's answers", Duration::from_secs(60), || {
            expected.iter().all(|(t, n)| answered(discord, *t) >= *n)
        })
        .await;
    }
    sent
}

/// How many of the bot's messages in `thread` show the whole answer.
fn answered(discord: &FakeDiscord, thread: u64) -> usize {
    discord
        .messages(thread)
        .iter()
        .filter(|m| m["author"]["bot"] == true && m["content"] == REPLY)
        .count()
}

/// For each sent message, the delay to the first request about its thread that `matches`.
fn delays(
    sent: &[(u64, Instant)],
    requests: &[Recorded],
    matches: impl Fn(&Recorded) -> bool,
) -> Vec<Duration> {
    sent.iter()
        .map(|(thread, at)| {
            let needle = format!("/channels/{thread}/");
            requests
                .iter()
                .filter(|r| r.at > *at && r.path.contains(&needle) && matches(r))
                .map(|r| r.at - *at)
                .min()
                .unwrap_or_else(|| panic!("no matching request for thread {thread}"))
        })
        .collect()
}

/// The requests about the threads in `sent` from its first dispatch on, by kind: typing,
/// message POSTs, message PATCHes, anything else.
fn count_per_turn(sent: &[(u64, Instant)], requests: &[Recorded]) -> (usize, usize, usize, usize) {
    let Some(from) = sent.iter().map(|(_, at)| *at).min() else {
        return (0, 0, 0, 0);
    };
    let needles: Vec<String> = sent
        .iter()
        .map(|(t, _)| format!("/channels/{t}/"))
        .collect();
    let mut counts = (0, 0, 0, 0);
    for r in requests.iter().filter(|r| r.at > from) {
        if !needles.iter().any(|n| r.path.contains(n.as_str())) {
            continue;
        }
        match (r.method.as_str(), r.path.rsplit('/').next()) {
            ("POST", Some("typing")) => counts.0 += 1,
            ("POST", Some("messages")) => counts.1 += 1,
            ("PATCH", _) => counts.2 += 1,
            _ => counts.3 += 1,
        }
    }
    counts
}

/// User plus system CPU time of a process (`self` or a pid) and all its threads, in Linux's
/// fixed 1/100 s ticks.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of /proc/<pid>/status.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        name,
        fmt(pick(0.5)),
        fmt(pick(0.99)),
        fmt(*samples.last().unwrap())
    );
}

fn value_row(name: &str, value: &str) {
    println!("{name:<58} {value:>10}");
}

fn kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}
