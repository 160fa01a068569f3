//! `featurebot run` as a process: SIGTERM shuts it down cleanly, and what was going on is
//! picked up by the next start.

use std::process::Stdio;
use std::time::{Duration, Instant};

use featurebot::model::{FeatureId, RunState, Status};
use featurebot::store::Store;
use serde_json::json;
use tokio::process::Child;

use crate::support::app::{TestApp, ADMIN};
use crate::support::fake_discord::{id_of, CHANNEL_ID};
use crate::support::fake_llm::Reply;
use crate::support::scripts::{ask, call, confirm, plan_reply};
use crate::support::wait::eventually;

/// The process starts and stops more slowly than a bot in the test's own process.
const PATIENCE: Duration = Duration::from_secs(30);

/// `featurebot run`, logging warnings to a piped stderr.
fn start(app: &TestApp) -> Child {
    let mut command = app.command(&["run"]);
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command.spawn().unwrap()
}

#[tokio::test]
async fn sigterm_stops_the_bot_cleanly_and_the_run_is_resumable_after() {
    let app = TestApp::builder()
        .with_remote()
        .with_discord()
        .config_file()
        .with_config(|c| {
            c.llm.request_timeout = Duration::from_secs(60);
            c.llm.max_retries = 0;
        })
        .build()
        .await;
    let (discord, llm) = (app.discord(), &app.llm);

    let mut bot = start(&app);
    discord.wait_ready().await;
    eventually("the commands", PATIENCE, || !discord.commands().is_empty()).await;
    ask(llm, "Which format?");
    confirm(llm, &["CSV"]);
    plan_reply(llm);
    discord
        .slash_command(
            ADMIN,
            CHANNEL_ID,
            "feature",
            json!([{"name": "title", "type": 3, "value": "Export CSV"}]),
        )
        .await;
    eventually("the thread", PATIENCE, || discord.threads().len() == 1).await;
    let thread = id_of(&discord.threads()[0]["id"]);
    eventually("the question", PATIENCE, || {
        discord.messages(thread).len() >= 2
    })
    .await;
    discord.user_message(ADMIN, thread, "CSV").await;
    eventually("the confirmation", PATIENCE, || {
        app.button_in(thread, "fb:plan:").is_some()
    })
    .await;
    let (message, id) = app.button_in(thread, "fb:plan:").unwrap();
    discord.click(ADMIN, message, &id).await;
    eventually("the plan", PATIENCE, || {
        app.button_in(thread, "fb:approve:").is_some()
    })
    .await;
    // The run's first step waits on a slow LLM when the stop comes.
    llm.push(Reply::Slow {
        delay: Duration::from_secs(60),
        then: Box::new(call("finish_step", json!({"summary": "late"}))),
    });
    let (message, id) = app.button_in(thread, "fb:approve:").unwrap();
    discord.click(ADMIN, message, &id).await;
    eventually("the run", PATIENCE, || {
        app.button_in(thread, "fb:cancel:").is_some()
    })
    .await;
    eventually("the agent's request", PATIENCE, || {
        llm.requests().len() >= 4
    })
    .await;

    let pid = bot.id().unwrap().to_string();
    let stopped_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(25), bot.wait())
        .await
        .expect("the bot did not stop after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(25));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(bot.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(!stderr.contains("sk-test-secret"), "{stderr}");

    // The run was checkpointed as still going, so the next start offers to resume it.
    {
        let store = Store::open(&app.store_path()).unwrap();
        let run = store.runs(FeatureId(1)).unwrap().pop().unwrap();
        assert_eq!(run.state, RunState::Running, "{run:?}");
        assert_eq!(store.feature(FeatureId(1)).unwrap().status, Status::Running);
    }
    let _bot = start(&app);
    eventually("the resume offer", PATIENCE, || {
        app.button_in(thread, "fb:resume:").is_some()
    })
    .await;
}
