//! `cargo bench --bench core`: what the core costs, measured against the in-process fakes.
//!
//! 1. Overhead per conversation turn: a full turn through `App::handle` (store the message,
//!    fit the transcript, stream the answer, store it) minus a bare streamed request to the same
//!    instant fake LLM.
//! 2. Committing a plan in a repository of 100,000 files (checked out, base branch = HEAD).
//! 3. Opening a store that holds 10,000 features, and listing them.
//! 4. An agent run's steps.
//! 5. The sandbox's cost per command: `true` with and without bubblewrap.
//!
//! Figures are printed as a table; BENCH_QUICK=1 shrinks the sizes for a smoke run.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use featurebot::core::protocol::Input;
use featurebot::llm::{self, Message, Request};
use featurebot::model::{Author, Place, Speaker};
use featurebot::repo;
use featurebot::store::Store;

use support::app::{alice, TestApp};
use support::fake_llm::Reply;
use support::git::{git, repo_config, repo_with_commit};

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "featurebot core benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "measure", "p50", "p99", "max"
    );
    runtime.block_on(turns(if quick { 50 } else { 500 }));
    plan_commit(
        if quick { 2_000 } else { 100_000 },
        if quick { 5 } else { 20 },
    );
    runtime.block_on(store_open(if quick { 500 } else { 10_000 }));
    runtime.block_on(agent_steps(if quick { 5 } else { 50 }));
    runtime.block_on(sandbox_overhead(if quick { 20 } else { 200 }));
}

/// What the sandbox costs a command (section 5): `true` through `exec::run`, in bubblewrap's
/// sandbox and without it, interleaved so both see the same machine.
async fn sandbox_overhead(n: usize) {
    use featurebot::agent::exec::{self, CommandSpec};
    use featurebot::agent::sandbox::Sandbox;
    use featurebot::redact::Redactor;
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let (work, home) = (dir.path().join("work"), dir.path().join("home"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let spec = |sandbox: Option<Sandbox>| CommandSpec {
        line: "true".to_string(),
        dir: work.clone(),
        timeout: Duration::from_secs(20),
        env: Vec::new(),
        max_output_bytes: 1024,
        sandbox,
    };
    let sandboxed = spec(Some(Sandbox {
        work_tree: work.clone(),
        git_dir: work.clone(),
        readable: Vec::new(),
        home: home.clone(),
        network: false,
    }));
    let plain = spec(None);
    let (cancel, redactor) = (CancellationToken::new(), Redactor::default());
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let start = Instant::now();
        assert!(
            exec::run(&plain, &cancel, &redactor, None)
                .await
                .unwrap()
                .success
        );
        without.push(start.elapsed());
        let start = Instant::now();
        let result = exec::run(&sandboxed, &cancel, &redactor, None)
            .await
            .unwrap();
        assert!(result.success, "{}", result.output);
        with.push(start.elapsed());
    }
    row(&format!("command `true`, unsandboxed (n={n})"), without);
    row(
        &format!("command `true`, in bubblewrap's sandbox (n={n})"),
        with,
    );
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

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

async fn turns(n: usize) {
    let mut h = TestApp::builder().build().await;
    h.llm.set_default(Reply::Text(
        "Noted. What should happen when the list is empty?".to_string(),
    ));
    let (id, _) = h.start_feature("Benchmark feature").await;

    let client = llm::Client::new(h.config.llm.clone()).unwrap();
    let request = Request {
        messages: vec![Message::system("s"), Message::user("hello")],
        ..Request::default()
    };
    let mut bare = Vec::new();
    let mut full = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        client.stream(&request, &mut |_| {}).await.unwrap();
        bare.push(start.elapsed());

        let start = Instant::now();
        h.send(Input::Message {
            feature: id,
            author: alice(),
            text: format!("answer number {i}: the list shows a friendly empty state"),
            source_id: Some(format!("m{i}")),
        })
        .await;
        full.push(start.elapsed());
    }
    let overhead: Vec<Duration> = {
        let mut b = bare.clone();
        let mut f = full.clone();
        b.sort();
        f.sort();
        f.iter()
            .zip(&b)
            .map(|(f, b)| f.saturating_sub(*b))
            .collect()
    };
    row(
        &format!("bare streamed LLM request to the fake (n={n})"),
        bare,
    );
    row(
        &format!("full turn through the core (n={n}, transcript grows)"),
        full,
    );
    row("core overhead per turn (quantile of full - bare)", overhead);
}

fn plan_commit(files: usize, commits: usize) {
    let repo = repo_with_commit("main");
    let start = Instant::now();
    fast_import(&repo.path, files);
    git(&repo.path, &["reset", "--quiet", "--hard", "main"]);
    let setup = start.elapsed();
    let count = git(&repo.path, &["ls-files"]).lines().count();
    assert!(count >= files, "the repository has {count} files");
    let cfg = repo_config(&repo);
    let mut samples = Vec::new();
    for i in 0..commits {
        let path = Path::new("tasks").join(format!("20261126-000000-bench-{i}.md"));
        let body = format!("---\nversion: 1\n---\n\n# plan {i}\n");
        let start = Instant::now();
        repo::base::commit_file(
            &cfg,
            &path,
            body.as_bytes(),
            "plan: bench\n\nFeature-Id: 1\n",
        )
        .unwrap();
        samples.push(start.elapsed());
    }
    row(
        &format!(
            "plan commit, {count} files checked out (setup {})",
            fmt(setup)
        ),
        samples,
    );

    // Work tree creation on the same repository: featurebot (git2) against `git worktree add`.
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..3 {
        let start = Instant::now();
        repo::worktree::prepare_worktree(
            &cfg,
            &featurebot::model::BranchName::parse(&format!("bench/ours-{i}")).unwrap(),
            &dir.path().join(format!("ours-{i}")),
            None,
        )
        .unwrap();
        ours.push(start.elapsed());
        let target = dir.path().join(format!("git-{i}"));
        let start = Instant::now();
        git(
            &repo.path,
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                &format!("bench/git-{i}"),
                target.to_str().unwrap(),
                "main",
            ],
        );
        theirs.push(start.elapsed());
    }
    row(
        &format!("work tree creation, {count} files: featurebot (git2)"),
        ours,
    );
    row(
        &format!("work tree creation, {count} files: git worktree add"),
        theirs,
    );
}

/// The agent run's own cost per step: a run of `steps` steps against an instant fake LLM and
/// no check commands, minus the time of its LLM requests measured alone.
async fn agent_steps(steps: usize) {
    use featurebot::agent::run::Job;
    use featurebot::redact::Redactor;

    let app = TestApp::builder()
        .with_remote()
        .with_config(|c| c.agent.max_tool_calls_per_step = 10)
        .build()
        .await;
    let (llm, config) = (&app.llm, app.config.clone());
    // Each answer edits a file and finishes the step, in one reply.
    llm.set_default(Reply::ToolCalls(vec![
        (
            "write_file".to_string(),
            serde_json::json!({"path": "notes.txt", "content": "a note\n"}),
        ),
        (
            "finish_step".to_string(),
            serde_json::json!({"summary": "done"}),
        ),
    ]));
    let client = llm::Client::new(config.llm.clone()).unwrap();
    let request = Request {
        messages: vec![Message::system("s"), Message::user("step")],
        tools: featurebot::agent::tools::specs(),
        ..Request::default()
    };
    let start = Instant::now();
    for _ in 0..steps {
        client.complete(&request).await.unwrap();
    }
    let llm_time = start.elapsed();

    let plan_steps: String = (1..=steps)
        .map(|i| format!("{i}. Step number {i}\n"))
        .collect();
    let markdown =
        format!("## Summary & goal\nx\n\n## Implementation steps\n{plan_steps}\n## Test plan\nx\n");
    let store = app.store().clone();
    let feature = store
        .create_feature("Bench run", alice(), Place::Console)
        .await
        .unwrap();
    let mut services = app.services().clone();
    services.redactor = Redactor::default();
    services.github = featurebot::github::Clients::default();
    let runner = services.runner(config.clone());
    let (events, _progress) = tokio::sync::mpsc::unbounded_channel();
    let (_answers_tx, answers) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        feature,
        plan: featurebot::model::PlanVersion {
            version: 1,
            path: "tasks/bench.md".to_string(),
            commit: String::new(),
            markdown,
            at: time::OffsetDateTime::now_utc(),
        },
        resume: None,
        discussion_url: None,
        follow_up: None,
        branch: None,
        continue_from_ticks: false,
    };
    let start = Instant::now();
    let run = runner
        .execute(
            job,
            &store,
            events,
            answers,
            tokio_util::sync::CancellationToken::new(),
            &std::sync::atomic::AtomicBool::new(false),
        )
        .await
        .unwrap();
    let total = start.elapsed();
    assert_eq!(run.next_step, steps, "{run:?}");
    let per_step = total.saturating_sub(llm_time) / steps as u32;
    println!(
        "{:<58} {:>10}",
        format!("agent run overhead per step ({steps} steps, LLM time excluded)"),
        fmt(per_step)
    );
    println!(
        "{:<58} {:>10}",
        "  (whole run incl. work tree, commits, push)",
        fmt(total)
    );
}

/// Adds `files` small files in folders of 1,000 to `main`, with `git fast-import`.
fn fast_import(repo: &Path, files: usize) {
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
    writeln!(stdin, "commit refs/heads/main").unwrap();
    writeln!(
        stdin,
        "committer Bench <bench@test.invalid> 1700000000 +0000"
    )
    .unwrap();
    writeln!(stdin, "data 5\nbulk\n").unwrap();
    writeln!(stdin, "from refs/heads/main^0").unwrap();
    for i in 0..files {
        let content = format!("file {i}\n");
        writeln!(stdin, "M 100644 inline src/d{:03}/f{i}.txt", i / 1_000).unwrap();
        writeln!(stdin, "data {}\n{content}", content.len()).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

async fn store_open(features: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).unwrap();
        for i in 0..features {
            let f = store
                .create_feature(
                    &format!("feature {i}"),
                    Author {
                        id: "u".to_string(),
                        name: "bench".to_string(),
                    },
                    Place::Discord {
                        guild_id: 1,
                        channel_id: 1,
                        thread_id: i as u64,
                    },
                )
                .await
                .unwrap();
            store
                .append_turn(
                    f.id,
                    Speaker::User,
                    "bench",
                    "a request of some length",
                    None,
                )
                .await
                .unwrap();
        }
    }
    let mut open = Vec::new();
    let mut list = Vec::new();
    for _ in 0..5 {
        // Wait until the previous handle's background threads have let go of the lock.
        drop(support::reopen_store(&path));
        let start = Instant::now();
        let store = loop {
            match Store::open(&path) {
                Ok(store) => break store,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        open.push(start.elapsed());
        let start = Instant::now();
        assert_eq!(store.features().unwrap().len(), features);
        list.push(start.elapsed());
    }
    row(&format!("open a store of {features} features"), open);
    row(&format!("list {features} features"), list);
}
