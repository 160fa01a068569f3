//! `featurebot run` as a process: SIGTERM shuts it down cleanly, and what was going on is
//! picked up by the next start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use featurebot::model::{FeatureId, RunState, Status};
use featurebot::store::Store;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::fake_discord::id_of;
use crate::support::fake_discord::{FakeDiscord, ADMIN_ROLE, CHANNEL_ID, GUILD_ID};
use crate::support::fake_llm::{Api, FakeLlm, Reply};
use crate::support::git::repo_with_remote;
use crate::support::ids::custom_ids;
use crate::support::scripts::GOOD_PLAN;
use crate::support::wait::eventually;

const ADMIN: u64 = 7001;

fn write_config(dir: &Path, llm: &FakeLlm, repo: &Path, discord: &FakeDiscord) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"FAKE_LLM_KEY\"\nrequest_timeout_secs = 60\nmax_retries = 0\n\n\
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

fn start(config: &Path, discord: &FakeDiscord) -> Child {
    Command::new(env!("CARGO_BIN_EXE_featurebot"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("DISCORD_TOKEN", discord.token())
        .env("FAKE_LLM_KEY", "sk-test-secret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    eventually(what, Duration::from_secs(30), condition).await;
}

fn button(discord: &FakeDiscord, channel: u64, prefix: &str) -> Option<(u64, String)> {
    discord.messages(channel).iter().rev().find_map(|m| {
        let id = custom_ids(m).into_iter().find(|c| c.starts_with(prefix))?;
        Some((id_of(&m["id"]), id))
    })
}

#[tokio::test]
async fn sigterm_stops_the_bot_cleanly_and_the_run_is_resumable_after() {
    let discord = FakeDiscord::start().await;
    discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
    let llm = FakeLlm::start(Api::OpenAi).await;
    let repo = repo_with_remote("main");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &llm, &repo.path, &discord);

    let mut bot = start(&config, &discord);
    discord.wait_ready().await;
    wait_for("the commands", || !discord.commands().is_empty()).await;
    llm.push(Reply::Text("Which format?".to_string()));
    llm.push(Reply::Text("CONFIRMED\n- CSV".to_string()));
    llm.push(Reply::Text(GOOD_PLAN.to_string()));
    discord
        .slash_command(
            ADMIN,
            CHANNEL_ID,
            "feature",
            json!([{"name": "title", "type": 3, "value": "Export CSV"}]),
        )
        .await;
    wait_for("the thread", || discord.threads().len() == 1).await;
    let thread = id_of(&discord.threads()[0]["id"]);
    wait_for("the question", || discord.messages(thread).len() >= 2).await;
    discord.user_message(ADMIN, thread, "CSV").await;
    wait_for("the confirmation", || {
        button(&discord, thread, "fb:plan:").is_some()
    })
    .await;
    let (message, id) = button(&discord, thread, "fb:plan:").unwrap();
    discord.click(ADMIN, message, &id).await;
    wait_for("the plan", || {
        button(&discord, thread, "fb:approve:").is_some()
    })
    .await;
    // The run's first step waits on a slow LLM when the stop comes.
    llm.push(Reply::Slow {
        delay: Duration::from_secs(60),
        then: Box::new(Reply::ToolCalls(vec![(
            "finish_step".to_string(),
            json!({"summary": "late"}),
        )])),
    });
    let (message, id) = button(&discord, thread, "fb:approve:").unwrap();
    discord.click(ADMIN, message, &id).await;
    wait_for("the run", || {
        button(&discord, thread, "fb:cancel:").is_some()
    })
    .await;
    wait_for("the agent's request", || llm.requests().len() >= 4).await;

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
        let store = Store::open(&dir.path().join("store")).unwrap();
        let run = store.runs(FeatureId(1)).unwrap().pop().unwrap();
        assert_eq!(run.state, RunState::Running, "{run:?}");
        assert_eq!(store.feature(FeatureId(1)).unwrap().status, Status::Running);
    }
    let _bot = start(&config, &discord);
    wait_for("the resume offer", || {
        button(&discord, thread, "fb:resume:").is_some()
    })
    .await;
}
