//! The coding agent run: a fixture repository whose test fails until the agent fixes it, the
//! fake LLM scripted with tool calls, a bare repository as the remote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use featurebot::agent::run::Job;
use featurebot::agent::{Event, Human, Phase};
use featurebot::config::{AgentBackend, SandboxMode};
use featurebot::model::{Author, Place, PlanVersion, Run, RunState};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::app::{Builder, TestApp};
use crate::support::git::{commit_and_push, git, git_daemon, BROKEN_ADD};
use crate::support::scripts::{call, finish_steps};
use crate::support::wait::eventually;

const PLAN: &str = "## Summary & goal\nAdd numbers right.\n\n## User stories / acceptance criteria\n- [ ] add 2 3 gives 5\n\n## Implementation steps\n### Backend\n1. Fix the add function\n### Docs\n2. Document add\n\n## Test plan\n- sh test.sh\n";

/// A repository with [`BROKEN_ADD`] and a remote, and an agent that formats app.sh and runs
/// test.sh after each step; tests change the config further before `build`.
pub(crate) fn fixture<'a>() -> Builder<'a> {
    TestApp::builder()
        .with_remote()
        .with_repo(|repo| commit_and_push(repo, &BROKEN_ADD, "fixture"))
        .with_config(|c| {
            c.agent.format = vec!["sed -i 's/[[:space:]]*$//' app.sh".to_string()];
            c.agent.test = vec!["sh test.sh".to_string()];
            c.agent.command_timeout = Duration::from_secs(20);
        })
}

/// Where the run of feature #1 works.
pub(crate) fn worktree(f: &TestApp) -> PathBuf {
    f.config.agent.worktrees_dir.join("1-fix-adding")
}

/// Runs the agent on PLAN and collects its events.
pub(crate) async fn run_agent(
    f: &TestApp,
    cancel: CancellationToken,
    answers: Option<Vec<String>>,
) -> (Run, Vec<Event>) {
    let humans = answers
        .unwrap_or_default()
        .into_iter()
        .map(Human::Answer)
        .collect();
    run_agent_with(f, cancel, humans).await
}

/// Like [`run_agent`], with what the humans say queued up front.
async fn run_agent_with(
    f: &TestApp,
    cancel: CancellationToken,
    humans: Vec<Human>,
) -> (Run, Vec<Event>) {
    let store = f.store();
    let feature = store
        .create_feature(
            "Fix adding",
            Author {
                id: "u".to_string(),
                name: "ada".to_string(),
            },
            Place::Console,
        )
        .await
        .unwrap();
    let runner = f.services().runner(f.config.clone());
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    for human in humans {
        answers_tx.send(human).unwrap();
    }
    let job = Job {
        feature,
        plan: PlanVersion {
            version: 1,
            path: "tasks/20261126-000000-fix-adding.md".to_string(),
            commit: String::new(),
            markdown: PLAN.to_string(),
            at: OffsetDateTime::now_utc(),
        },
        resume: None,
        discussion_url: None,
        follow_up: None,
        branch: None,
        continue_from_ticks: false,
    };
    let run = runner
        .execute(
            job,
            store,
            events_tx,
            answers_rx,
            cancel,
            &std::sync::atomic::AtomicBool::new(false),
        )
        .await
        .unwrap();
    drop(answers_tx);
    let mut events = Vec::new();
    while let Ok(e) = events_rx.try_recv() {
        events.push(e);
    }
    (run, events)
}

#[tokio::test]
async fn a_run_goes_red_repairs_and_ends_green_with_the_branch_pushed() {
    let f = fixture().build().await;
    // Step 1: a wrong fix, then the repair after the test fails.
    f.llm.push(call("read_file", json!({"path": "app.sh"})));
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 * $2"}),
    ));
    finish_steps(&f.llm, &["changed the operator"]);
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 * $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["add now adds"]);
    // Step 2: a new file.
    f.llm.push(call(
        "write_file",
        json!({"path": "docs/add.md", "content": "# add\nAdds two numbers.\n"}),
    ));
    finish_steps(&f.llm, &["documented add"]);

    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(run.branch.as_str(), "featurebot/1-fix-adding");
    assert_eq!(run.next_step, 2);
    assert!(
        run.steps.iter().all(|s| s.green == Some(true)),
        "{:?}",
        run.steps
    );
    assert_eq!(run.steps[0].summary.as_deref(), Some("add now adds"));

    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ChecksFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    if let Event::ChecksFailed { tail, command, .. } = failed[0] {
        assert_eq!(command, "sh test.sh");
        assert!(tail.contains("FAIL: add 2 3 gave 6"), "{tail}");
    }
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Phase {
            phase: Phase::Repairing,
            ..
        }
    )));
    // The repair request carried the failing output to the model.
    let bodies: Vec<String> = f
        .llm
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(bodies[3].contains("FAIL: add 2 3 gave 6"), "{}", bodies[3]);
    // Tool results went back with the call ids.
    assert!(bodies[1].contains("\"role\":\"tool\""));

    // One commit per step on the branch, in the remote, formatted by the formatter.
    let remote = f.repo.remote.clone().unwrap();
    let log = git(&remote, &["log", "--format=%s", "featurebot/1-fix-adding"]);
    assert_eq!(
        log.lines().take(2).collect::<Vec<_>>(),
        ["step 2/2: Document add", "step 1/2: Fix the add function"]
    );
    let app = git(&remote, &["show", "featurebot/1-fix-adding:app.sh"]);
    assert_eq!(app, "add() { echo $(( $1 + $2 )); }\n");
    assert!(
        git(&remote, &["show", "featurebot/1-fix-adding:docs/add.md"]).contains("Adds two numbers")
    );
    // The bot's own checkout is untouched.
    assert_eq!(git(&f.repo.path, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(f.repo.path.join("app.sh")).unwrap(),
        "add() { echo $(( $1 - $2 )); }\n"
    );
}

#[tokio::test]
async fn a_step_that_stays_red_is_committed_and_the_run_goes_on() {
    let f = fixture()
        .with_config(|c| c.agent.max_repair_attempts = 1)
        .build()
        .await;
    // Both steps try twice (one repair each); the test stays red throughout.
    finish_steps(&f.llm, &["did nothing"; 4]);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(run.steps[0].green, Some(false));
    assert_eq!(run.steps[1].green, Some(false));
    let failures = events
        .iter()
        .filter(|e| matches!(e, Event::ChecksFailed { .. }))
        .count();
    assert_eq!(failures, 4);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Finished { green: false, .. })));
    assert_eq!(
        run.steps[0].commit, None,
        "nothing changed, nothing committed"
    );
    assert_eq!(run.next_step, 2);
}

#[tokio::test]
async fn file_tools_refuse_to_leave_the_work_tree_and_errors_reach_the_model() {
    let f = fixture()
        .with_config(|c| c.agent.max_repair_attempts = 0)
        .build()
        .await;
    f.llm
        .push(call("read_file", json!({"path": "../../../etc/passwd"})));
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "nowhere", "replace": "x"}),
    ));
    f.llm.push(call(
        "write_file",
        json!({"path": ".git/config", "content": "x"}),
    ));
    finish_steps(&f.llm, &["gave up", "docs"]);
    let (run, _) = run_agent(&f, CancellationToken::new(), None).await;
    let bodies: Vec<String> = f
        .llm
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(bodies[1].contains("not allowed"), "{}", bodies[1]);
    assert!(
        !bodies[1].contains("root:x:0"),
        "no file outside the tree was read"
    );
    assert!(
        bodies[2].contains("does not occur in app.sh"),
        "{}",
        bodies[2]
    );
    assert!(bodies[3].contains("not allowed"));
    assert_eq!(run.state, RunState::Finished);
}

#[tokio::test]
async fn a_repeated_failing_action_stops_the_run_and_keeps_the_work() {
    let f = fixture().build().await;
    f.llm.push(call(
        "write_file",
        json!({"path": "notes.txt", "content": "partial work\n"}),
    ));
    for _ in 0..3 {
        f.llm
            .push(call("read_file", json!({"path": "missing.txt"})));
    }
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Stopped, "{run:?}");
    assert!(run
        .message
        .as_deref()
        .unwrap()
        .contains("repeated a failing action 3 times"));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Finished {
            stopped: Some(_),
            ..
        }
    )));
    let remote = f.repo.remote.clone().unwrap();
    let notes = git(&remote, &["show", "featurebot/1-fix-adding:notes.txt"]);
    assert_eq!(
        notes, "partial work\n",
        "the partial work was committed and pushed"
    );
}

#[tokio::test]
async fn a_question_waits_for_the_answer() {
    let f = fixture().build().await;
    f.llm
        .push(call("ask_human", json!({"question": "Plus or minus?"})));
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["plus, as answered", "docs"]);
    let (run, events) =
        run_agent(&f, CancellationToken::new(), Some(vec!["plus".to_string()])).await;
    assert!(events.contains(&Event::Question {
        text: "Plus or minus?".to_string()
    }));
    let body = f.llm.requests()[1].body.to_string();
    assert!(body.contains("\"content\":\"plus\""), "{body}");
    assert_eq!(run.steps[0].green, Some(true));
}

#[tokio::test]
async fn cancel_during_a_long_test_stops_the_run_and_its_processes() {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("sleeper.pid");
    let f = fixture()
        .with_config(|c| {
            // Unconfined, so the host sees the sleeper's pid; the sandboxed case is below.
            c.agent.sandbox = SandboxMode::Off;
            c.agent.test = vec![format!("sleep 60 & echo $! > {}; wait", pid_file.display())]
        })
        .build()
        .await;
    finish_steps(&f.llm, &["nothing"]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let watched = pid_file.clone();
    tokio::spawn(async move {
        eventually("the long test to start", Duration::from_secs(20), || {
            watched.exists()
        })
        .await;
        trigger.cancel();
    });
    let (run, _) = run_agent(&f, cancel, None).await;
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.message.as_deref(), Some("cancelled at step 1 of 2"));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    wait_until_gone(pid.trim()).await;
}

async fn wait_until_gone(pid: &str) {
    let alive = || {
        std::process::Command::new("kill")
            .args(["-0", pid])
            .status()
            .unwrap()
            .success()
    };
    eventually(
        &format!("process {pid} to be gone after the cancel"),
        Duration::from_secs(10),
        || !alive(),
    )
    .await;
}

/// The processes a sandboxed command leaves behind die with it: nothing of the command's
/// marked sleeper is left on the host after a cancel.
#[tokio::test]
async fn cancel_during_a_long_sandboxed_test_stops_every_process_in_the_sandbox() {
    let marker = format!("{}.{}", 60 + std::process::id() % 1000, std::process::id());
    let f = fixture()
        .with_config(|c| c.agent.test = vec![format!("touch started; sleep {marker} & wait")])
        .build()
        .await;
    finish_steps(&f.llm, &["nothing"]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let started = worktree(&f).join("started");
    tokio::spawn(async move {
        eventually("the long test to start", Duration::from_secs(20), || {
            started.exists()
        })
        .await;
        trigger.cancel();
    });
    let sleepers = move || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == format!("sleep\0{marker}\0").as_bytes())
            .count()
    };
    let (run, _) = run_agent(&f, cancel, None).await;
    assert_eq!(run.state, RunState::Cancelled);
    eventually(
        "the sandboxed sleeper to be gone after the cancel",
        Duration::from_secs(10),
        || sleepers() == 0,
    )
    .await;
}

#[tokio::test]
async fn the_command_backend_runs_an_external_agent_per_step() {
    // Installed like a real one: a program on PATH.
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("fake-agent");
    std::fs::write(
        &script,
        "#!/bin/sh\n# A stand-in for codex/claude/aider: reads the prompt, edits the tree.\ngrep -q 'Do step' \"$1\" || exit 9\nif [ \"$2\" = 1 ]; then sed -i 's/\\$1 - \\$2/$1 + $2/' app.sh; else echo docs > docs.md; fi\necho \"agent step $2 done; secret env: ${OPENAI_API_KEY:-none}\"\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let f = fixture()
        .with_config(|c| {
            c.agent.env.push(("PATH".to_string(), path));
            c.agent.backend = AgentBackend::Command("fake-agent {prompt_file} {step}".to_string())
        })
        .build()
        .await;
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(run.steps.iter().all(|s| s.green == Some(true)));
    assert!(run.steps[0]
        .summary
        .as_deref()
        .unwrap()
        .contains("agent step 1 done; secret env: none"));
    assert!(
        f.llm.requests().is_empty(),
        "the external agent, not the LLM, did the work"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StepCommitted { step: 1, .. })));
    assert!(Path::new(&worktree(&f)).join("docs.md").exists());
}

#[tokio::test]
async fn a_planted_secret_is_masked_in_tool_results_and_check_output() {
    let f = fixture()
        .with_config(|c| {
            c.agent.test = vec!["cat leak.txt; exit 1".to_string()];
            c.agent.max_repair_attempts = 0;
        })
        .build()
        .await;
    let secret = f.config.llm.api_key.clone().unwrap().expose().to_string();
    std::fs::write(f.repo.path.join("leak.txt"), format!("key={secret}\n")).unwrap();
    git(&f.repo.path, &["add", "leak.txt"]);
    git(&f.repo.path, &["commit", "--quiet", "-m", "a leaked key"]);
    git(&f.repo.path, &["push", "--quiet", "origin", "main"]);
    f.llm.push(call("read_file", json!({"path": "leak.txt"})));
    f.llm.push(call(
        "finish_step",
        json!({"summary": format!("found {secret}")}),
    ));
    finish_steps(&f.llm, &["docs"]);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    let sent: String = f
        .llm
        .requests()
        .iter()
        .skip(1)
        .map(|r| r.body.to_string())
        .collect();
    assert!(!sent.contains(&secret), "the key went back to the model");
    assert!(sent.contains("key=***"));
    let shown = format!("{events:?}{run:?}");
    assert!(!shown.contains(&secret), "{shown}");
    for entry in std::fs::read_dir(f.config.agent.worktrees_dir.join("1-fix-adding.logs")).unwrap()
    {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!log.contains(&secret), "a log holds the key");
    }
}

#[tokio::test]
async fn code_holding_token_shapes_is_read_and_committed_unchanged() {
    let f = fixture()
        .with_config(|c| c.agent.max_repair_attempts = 0)
        .build()
        .await;
    // Code that looks like credentials without being ours: a header built from a variable, a
    // test fixture in GitHub's token shape, a key's BEGIN line.
    let fixture_token = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
    let written = format!(
        "const FIXTURE = \"{fixture_token}\";\nconst auth = (token) => ({{ Authorization: \"Bearer \" + token }});\nconst PEM = \"-----BEGIN PRIVATE KEY-----\\nMIIEvg\\n-----END PRIVATE KEY-----\";\n"
    );
    let edited = written.replace("\"Bearer \" + token", "\"Bearer \" + token.trim()");
    f.llm.push(call(
        "write_file",
        json!({"path": "client.js", "content": written}),
    ));
    f.llm.push(call(
        "edit_file",
        json!({"path": "client.js", "search": "\"Bearer \" + token", "replace": "\"Bearer \" + token.trim()"}),
    ));
    f.llm.push(call("read_file", json!({"path": "client.js"})));
    f.llm.push(call("search", json!({"pattern": "ghp_"})));
    finish_steps(&f.llm, &["client", "docs"]);
    let (run, _) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);

    let remote = f.repo.remote.clone().unwrap();
    let committed = git(&remote, &["show", "featurebot/1-fix-adding:client.js"]);
    assert_eq!(committed, edited, "committed byte for byte");
    // The model read back what it wrote: the edit matched, the file and the search came back
    // as they are.
    let results: Vec<String> = f
        .llm
        .requests()
        .iter()
        .filter_map(|r| r.body["messages"].as_array()?.last().cloned())
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(results[1].starts_with("edited client.js"), "{results:#?}");
    for line in edited.lines() {
        assert!(results[2].contains(line), "{line:?} in {results:#?}");
    }
    assert!(
        results[3].contains(&format!(
            "client.js:1: const FIXTURE = \"{fixture_token}\";"
        )),
        "{results:#?}"
    );
}

#[tokio::test]
async fn a_finished_run_opens_a_pull_request_and_a_red_one_a_draft() {
    let f = fixture().with_github().build().await;
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["add adds", "docs"]);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let github = f.github();
    let pulls = github.pulls();
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert_eq!(pr["title"], "Fix adding");
    assert_eq!(pr["draft"], false);
    let body = pr["body"].as_str().unwrap();
    assert!(
        body.contains("- [x] 1. Fix the add function — checks passed"),
        "{body}"
    );
    assert!(body.contains("Feature-Id: 1"));
    assert!(
        body.contains(
            "## Acceptance criteria\n\n| # | Criterion |\n|---|---|\n| 1 | add 2 3 gives 5 |\n"
        ),
        "{body}"
    );
    assert!(body.contains("tasks/20261126-000000-fix-adding.md"));
    assert!(!body.contains("sk-test-secret"));
    assert_eq!(run.pr_url.as_deref(), pr["html_url"].as_str());
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Finished {
            pull_request: Some(_),
            green: true,
            ..
        }
    )));
    let request = github
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(request.body["head"], "featurebot/1-fix-adding");
    assert_eq!(request.body["base"], "main");
}

#[tokio::test]
async fn a_run_that_stays_red_opens_a_draft() {
    let f = fixture()
        .with_github()
        .with_config(|c| c.agent.max_repair_attempts = 0)
        .build()
        .await;
    finish_steps(&f.llm, &["nothing", "nothing"]);
    let (run, _) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished);
    let pulls = f.github().pulls();
    assert_eq!(pulls[0]["draft"], true);
    assert!(pulls[0]["body"]
        .as_str()
        .unwrap()
        .contains("**checks failing**"));
}

/// A private repository under GitHub Free or Pro has no drafts: the red run's pull request is
/// a normal one that says it is not ready, in its title, its description and a label.
#[tokio::test]
async fn a_red_run_where_github_refuses_drafts_opens_a_pull_request_marked_not_ready() {
    let f = fixture()
        .with_github()
        .with_config(|c| c.agent.max_repair_attempts = 0)
        .build()
        .await;
    f.github().refuse_drafts();
    finish_steps(&f.llm, &["nothing", "nothing"]);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let pulls = f.github().pulls();
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert_eq!(pr["draft"], false);
    assert_eq!(pr["title"], "[WIP] Fix adding");
    let body = pr["body"].as_str().unwrap();
    assert!(body.starts_with("> **Not ready for review.**"), "{body}");
    assert!(body.contains("**checks failing**"), "{body}");
    assert_eq!(pr["labels"][0]["name"], "not ready");
    assert_eq!(pr["labels"].as_array().unwrap().len(), 1);
    assert_eq!(run.pr_url.as_deref(), pr["html_url"].as_str());
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Finished {
            pull_request: Some(_),
            green: false,
            ..
        }
    )));
    // GitHub was asked for the draft first, and refused it.
    let creates: Vec<bool> = f
        .github()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/repos/acme/shop/pulls")
        .map(|r| r.body["draft"].as_bool().unwrap())
        .collect();
    assert_eq!(creates, [true, false]);
}

#[tokio::test]
async fn a_spent_token_budget_ends_in_a_draft_pull_request_with_the_work_so_far() {
    // Each fake answer costs more than this budget: the first one spends it.
    let f = fixture()
        .with_github()
        .with_config(|c| c.agent.max_tokens = 5)
        .build()
        .await;
    f.llm.push(call(
        "write_file",
        json!({"path": "half.txt", "content": "half done\n"}),
    ));
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Stopped, "{run:?}");
    let reason = run.message.clone().unwrap();
    assert!(reason.contains("agent.max_tokens"), "{reason}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Finished {
            stopped: Some(_),
            ..
        }
    )));
    let pulls = f.github().pulls();
    assert_eq!(pulls[0]["draft"], true, "unfinished work is a draft");
    assert!(pulls[0]["body"].as_str().unwrap().contains("not done"));
    let remote = f.repo.remote.clone().unwrap();
    assert_eq!(
        git(&remote, &["show", "featurebot/1-fix-adding:half.txt"]),
        "half done\n"
    );
}

#[tokio::test]
async fn step_approval_waits_redoes_a_step_with_feedback_and_continues() {
    let f = fixture()
        .with_config(|c| {
            c.agent.approve_each_step = true;
            c.agent.max_repair_attempts = 0;
        })
        .build()
        .await;
    // Step 1, first try: nothing useful; the admin asks for a redo.
    finish_steps(&f.llm, &["looked around"]);
    // The redo, with the feedback.
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["fixed"]);
    // Step 2.
    finish_steps(&f.llm, &["docs"]);
    let decisions = vec![
        Human::Redo("add the numbers, do not subtract them".to_string()),
        Human::Continue,
        Human::Continue,
    ];
    let (run, events) = run_agent_with(&f, CancellationToken::new(), decisions).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let waits: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::AwaitingApproval { step, green, .. } => Some((*step, *green)),
            _ => None,
        })
        .collect();
    assert_eq!(waits, [(0, false), (0, true), (1, true)]);
    let redo = f.llm.requests()[1].body.to_string();
    assert!(
        redo.contains("add the numbers, do not subtract them"),
        "{redo}"
    );
    let remote = f.repo.remote.clone().unwrap();
    let log = git(
        &remote,
        &["log", "-2", "--format=%s", "featurebot/1-fix-adding"],
    );
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        // The first try changed nothing (no commit), the redo did, step 2 changed nothing.
        ["step 1/2: Fix the add function (redo 1)", "fixture"]
    );
    let files = events.iter().find_map(|e| match e {
        Event::AwaitingApproval {
            step: 0,
            green: true,
            files,
            ..
        } => Some(files.clone()),
        _ => None,
    });
    assert_eq!(files.unwrap(), [("app.sh".to_string(), 1, 1)]);
}

#[tokio::test]
async fn step_approval_abort_stops_and_keeps_the_work() {
    let f = fixture()
        .with_config(|c| c.agent.approve_each_step = true)
        .build()
        .await;
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["fixed"]);
    let (run, _) = run_agent_with(&f, CancellationToken::new(), vec![Human::Abort]).await;
    assert_eq!(run.state, RunState::Stopped);
    assert_eq!(
        run.message.as_deref(),
        Some("stopped by an admin after step 1 of 2")
    );
    let remote = f.repo.remote.clone().unwrap();
    assert!(git(&remote, &["show", "featurebot/1-fix-adding:app.sh"]).contains("$1 + $2"));
}

/// Serves the fixture's bare remote over `git://` with `hooks` (name, script) installed, so
/// pushes run them as on a real server, and points `origin` there.
async fn serve_remote_with_hooks(
    f: TestApp,
    hooks: &[(&str, String)],
) -> (TestApp, crate::support::git::AbortOnDrop) {
    let remote = f.repo.remote.clone().unwrap();
    for (name, script) in hooks {
        let hook = remote.join("hooks").join(name);
        std::fs::write(&hook, script).unwrap();
        let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&hook, permissions).unwrap();
    }
    let (url, daemon) = git_daemon(f.repo.dir.path()).await;
    git(
        &f.repo.path,
        &["remote", "set-url", "origin", &format!("{url}/remote.git")],
    );
    // featurebot reads the remote's URL when it starts.
    (f.restart().await, daemon)
}

/// The fake LLM's part of a two-step run that goes green at once.
fn script_two_green_steps(f: &TestApp) {
    f.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&f.llm, &["add adds"]);
    f.llm.push(call(
        "write_file",
        json!({"path": "docs/add.md", "content": "# add\n"}),
    ));
    finish_steps(&f.llm, &["documented"]);
}

#[tokio::test]
async fn push_each_step_pushes_the_branch_after_every_step() {
    let f = fixture()
        .with_config(|c| c.agent.push_each_step = true)
        .build()
        .await;
    // The remote logs the tip of every push it receives.
    let pushes = f.dir().join("pushes.log");
    let (f, _daemon) = serve_remote_with_hooks(
        f,
        &[(
            "post-receive",
            format!(
                "#!/bin/sh\nwhile read old new ref; do git log -1 --format=%s \"$new\" >> {}; done\n",
                pushes.display()
            ),
        )],
    )
    .await;
    script_two_green_steps(&f);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let log = std::fs::read_to_string(&pushes).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "step 1/2: Fix the add function",
            "step 2/2: Document add",
            "step 2/2: Document add"
        ],
        "one push per step, then the final push of the same tip"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::StepPushFailed { .. })));
}

#[tokio::test]
async fn a_failed_push_after_a_step_is_reported_and_the_run_goes_on() {
    let f = fixture()
        .with_config(|c| c.agent.push_each_step = true)
        .build()
        .await;
    // The remote refuses the first push only.
    let refused = f.dir().join("refused-once");
    let (f, _daemon) = serve_remote_with_hooks(
        f,
        &[(
            "pre-receive",
            format!(
                "#!/bin/sh\nif [ ! -e {0} ]; then touch {0}; echo 'the server is busy' >&2; exit 1; fi\n",
                refused.display()
            ),
        )],
    )
    .await;
    script_two_green_steps(&f);
    let (run, events) = run_agent(&f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::StepPushFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    let Event::StepPushFailed { step, message } = failed[0] else {
        unreachable!()
    };
    assert_eq!(*step, 0);
    assert!(message.contains("pre-receive hook declined"), "{message}");
    let line = featurebot::agent::progress::describe(failed[0]);
    assert!(
        line.starts_with("featurebot: push failed after step 1: "),
        "{line}"
    );
    // Step 2's push carried both steps.
    let remote = f.repo.remote.clone().unwrap();
    let log = git(&remote, &["log", "--format=%s", "featurebot/1-fix-adding"]);
    assert_eq!(
        log.lines().take(2).collect::<Vec<_>>(),
        ["step 2/2: Document add", "step 1/2: Fix the add function"]
    );
}
