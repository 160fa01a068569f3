//! The built binary: `featurebot console` with piped stdin, `kill -9` and resume, `check`.

use std::time::Duration;

use featurebot::config::{RepoConfig, Target};
use featurebot::model::{FeatureId, Status};
use featurebot::store::Store;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::app::TestApp;
use crate::support::fake_llm::Reply;
use crate::support::git::git;
use crate::support::scripts::{ask, call, confirm, finish_steps, plan_reply, script_to_plan};

fn line_value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} line in {stdout}"))
}

#[tokio::test]
async fn a_piped_console_session_ends_in_a_committed_plan() {
    let s = TestApp::binary().build().await;
    script_to_plan(&s.llm);
    let (status, stdout, stderr) = s
        .run(
            &["console", "--title", "Export CSV"],
            "CSV please\n\n/plan\n",
        )
        .await;
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("featurebot: Which format?"), "{stdout}");
    assert!(!stdout.contains("CONFIRMED"), "{stdout}");
    assert!(stderr.contains("requirements confirmed"), "{stderr}");
    let path = line_value(&stdout, "path: ");
    let commit = line_value(&stdout, "commit: ");
    assert_eq!(commit.len(), 40);
    assert_eq!(git(&s.repo.path, &["rev-parse", "main"]).trim(), commit);
    let file = git(&s.repo.path, &["show", &format!("main:{path}")]);
    assert!(file.contains("## Test plan"));
    // The key went to the server, and nowhere else.
    let auth = s.llm.requests()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret"));
    assert!(!stdout.contains("sk-test-secret") && !stderr.contains("sk-test-secret"));
}

#[tokio::test]
async fn input_that_ends_before_a_plan_exits_2_and_says_how_to_resume() {
    let s = TestApp::binary().build().await;
    ask(&s.llm, "Which format?");
    let (status, _, stderr) = s.run(&["console", "--title", "Export CSV"], "").await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("featurebot console --resume 1"), "{stderr}");
}

#[tokio::test]
async fn the_title_can_come_from_stdin_and_bad_ones_are_refused() {
    let s = TestApp::binary().build().await;
    let (status, _, stderr) = s.run(&["console"], "   \n").await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused: the feature needs a title"),
        "{stderr}"
    );

    ask(&s.llm, "Which format?");
    let (_, stdout, _) = s.run(&["console"], "Export CSV\n/quit\n").await;
    assert!(stdout.contains("Which format?"), "{stdout}");
}

#[tokio::test]
async fn a_kill_9_loses_nothing_and_resume_continues() {
    let s = TestApp::binary().build().await;
    ask(&s.llm, "Which format?");
    // The answer to the next message never comes before the kill.
    s.llm.push(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(Reply::Text("too late".to_string())),
    });
    let mut child = s
        .command(&["console", "--title", "Export CSV"])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"CSV, from the dashboard\n").await.unwrap();
    s.wait_for("the second request at the LLM", |s| {
        s.llm.requests().len() >= 2
    })
    .await;

    // While it runs, a second process cannot open the same store.
    let (status, _, stderr) = s.run_once(&["console", "--title", "Other"], "").await;
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another featurebot process"),
        "{stderr}"
    );

    child.start_kill().unwrap();
    child.wait().await.unwrap();

    confirm(&s.llm, &["CSV export"]);
    plan_reply(&s.llm);
    let (status, stdout, stderr) = s.run(&["console", "--resume", "1"], "/plan\n").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("requirements confirmed"), "{stderr}");
    assert!(stdout.contains("commit: "), "{stdout}");
    // The message sent just before the kill was on disk: the resumed session shows it and
    // the LLM's next answer saw it.
    assert!(stdout.contains("[featurebot] Which format?"), "{stdout}");
    assert!(
        stdout.contains("[tester] CSV, from the dashboard"),
        "{stdout}"
    );
    let last = s.llm.requests()[3].body.to_string();
    assert!(
        last.contains("CSV, from the dashboard"),
        "the resumed answer saw the message"
    );

    let store = Store::open(&s.store_path()).unwrap();
    let transcript = store.transcript(FeatureId(1)).unwrap();
    let answers = transcript
        .iter()
        .filter(|t| t.text == "CSV, from the dashboard")
        .count();
    assert_eq!(answers, 1, "{transcript:?}");
    assert_eq!(
        transcript.len(),
        4,
        "request, question, answer, confirmation"
    );
}

#[tokio::test]
async fn check_reports_one_line_per_service() {
    let s = TestApp::binary().build().await;
    s.llm.push(Reply::Text("ok".to_string()));
    let (status, stdout, stderr) = s.run(&["check"], "").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let services: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        services,
        ["config", "store", "llm", "sandbox", "repo"],
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| l.starts_with("ok")), "{stdout}");
    let sandbox = stdout.lines().find(|l| l.contains(" sandbox ")).unwrap();
    assert!(
        sandbox.ends_with("bubblewrap, network off: a command reading a file outside its work tree and connecting to this host were both refused"),
        "{sandbox}"
    );

    // A repository that is not one fails its line with the fix.
    let elsewhere = tempfile::tempdir().unwrap();
    let s = s
        .reconfigure(|c| c.repo.path = elsewhere.path().to_path_buf())
        .await;
    s.llm.push(Reply::Text("ok".to_string()));
    let (status, stdout, _) = s.run(&["check"], "").await;
    assert_eq!(status.code(), Some(1));
    let repo_line = stdout.lines().find(|l| l.contains(" repo ")).unwrap();
    assert!(
        repo_line.starts_with("FAIL") && repo_line.contains("set repo.path"),
        "{repo_line}"
    );
}

#[tokio::test]
async fn check_warns_when_the_sandbox_is_off_and_proves_the_network_when_on() {
    let s = TestApp::binary().build().await;
    let check = |env: (&str, &str)| {
        s.llm.push(Reply::Text("ok".to_string()));
        let mut cmd = s.command(&["check"]);
        cmd.env(env.0, env.1);
        cmd
    };
    let output = check(("FEATUREBOT__AGENT__SANDBOX", "off"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" sandbox ")).unwrap();
    assert!(
        line.starts_with("warn") && line.contains("unconfined") && line.contains("\"auto\""),
        "{line}"
    );
    assert!(
        output.status.success(),
        "a warning is not a failure: {stdout}"
    );

    let output = check(("FEATUREBOT__AGENT__NETWORK", "on"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" sandbox ")).unwrap();
    assert!(
        line.starts_with("ok") && line.contains("network on") && line.contains("refused"),
        "{line}"
    );
}

/// The bot running unprivileged (as `nobody` when the tests run as root, as CI does): its
/// `check` proves the same sandbox there (bubblewrap then needs user namespaces).
#[tokio::test]
async fn check_proves_the_sandbox_for_a_bot_running_as_nobody() {
    use crate::support::nobody::NobodyBot;
    let bot = NobodyBot::new();
    let mut command = bot.command(&bot.binary);
    command
        .args(["check", "--config"])
        .arg(&bot.config)
        .env("HOME", bot.dir.path())
        .env("OPENAI_API_KEY", "sk-test");
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .expect("setpriv runs featurebot as nobody");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" sandbox "))
        .unwrap_or_else(|| panic!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    assert!(
        line.starts_with("ok") && line.contains("both refused"),
        "{line}"
    );
}

/// OpenAI's reasoning models refuse `max_tokens` (the fake says so as OpenAI does): `check` and
/// a whole session to a plan still work, each process paying for that refusal once.
#[tokio::test]
async fn check_and_a_plan_work_with_an_openai_reasoning_model() {
    let s = TestApp::binary()
        .with_config(|c| c.llm.model = "o3-mini".to_string())
        .build()
        .await;
    let limit_fields = |from: usize| -> Vec<&'static str> {
        s.llm.requests()[from..]
            .iter()
            .map(|r| {
                assert!(r.body.get("temperature").is_none(), "{}", r.body);
                match (
                    r.body.get("max_tokens"),
                    r.body.get("max_completion_tokens"),
                ) {
                    (Some(_), None) => "max_tokens",
                    (None, Some(_)) => "max_completion_tokens",
                    _ => panic!("one token limit expected: {}", r.body),
                }
            })
            .collect()
    };

    // The ping's 8 tokens all go to reasoning: an empty answer, which is fine for a ping.
    s.llm.push(Reply::Text("pong".to_string()));
    let (status, stdout, stderr) = s.run(&["check"], "").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.contains(" llm ")).unwrap();
    assert!(
        line.starts_with("ok") && line.contains("model o3-mini"),
        "{line}"
    );
    assert_eq!(limit_fields(0), ["max_tokens", "max_completion_tokens"]);
    assert_eq!(s.llm.requests()[1].body["max_completion_tokens"], 8);

    script_to_plan(&s.llm);
    let (status, stdout, stderr) = s
        .run(
            &["console", "--title", "Export CSV"],
            "CSV please\n\n/plan\n",
        )
        .await;
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("featurebot: Which format?"), "{stdout}");
    assert!(stdout.contains("commit: "), "{stdout}");
    assert_eq!(
        limit_fields(2),
        [
            "max_tokens",
            "max_completion_tokens",
            "max_completion_tokens",
            "max_completion_tokens"
        ]
    );
}

#[tokio::test]
async fn a_bad_config_names_the_key() {
    let s = TestApp::binary().build().await;
    std::fs::write(s.config_path(), "[llm]\nprovider = \"gemini\"\n").unwrap();
    let (status, _, stderr) = s.run(&["check"], "").await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("llm.provider is \"gemini\""), "{stderr}");
    assert!(stderr.contains("llm.model is missing"), "{stderr}");
}

#[tokio::test]
async fn check_tries_github_when_configured() {
    let s = TestApp::binary().with_github().build().await;
    s.llm.push(Reply::Text("ok".to_string()));
    let output = s.command(&["check"]).output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.contains(" github "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with("ok") && line.contains("acme/shop"),
        "{line}"
    );

    // A wrong token fails the line with what to do, and never shows the token.
    let mut cmd = s.command(&["check"]);
    cmd.env("GITHUB_TOKEN", "ghp_wrongwrongwrongwrongwrong1234");
    s.llm.push(Reply::Text("ok".to_string()));
    let output = cmd.output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" github ")).unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("GITHUB_TOKEN"),
        "{line}"
    );
    assert!(!stdout.contains("ghp_wrong"));
}

#[tokio::test]
async fn check_looks_for_the_workflow_when_runs_go_to_github_actions() {
    let s = TestApp::binary().with_github().build().await;
    // No install source yet: the line says what to set.
    s.llm.push(Reply::Text("ok".to_string()));
    let output = s
        .command(&["check"])
        .env("FEATUREBOT__REPO__PUSH_PLANS", "true")
        .env("FEATUREBOT__AGENT__EXECUTOR", "github-actions")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" actions ")).unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("has no install source"),
        "{line}"
    );
    let pinned = |cmd: &mut tokio::process::Command| {
        cmd.env("FEATUREBOT__REPO__PUSH_PLANS", "true")
            .env("FEATUREBOT__AGENT__EXECUTOR", "github-actions")
            .env(
                "FEATUREBOT__AGENT__GITHUB_ACTIONS__INSTALL_GIT",
                "https://github.com/acme/featurebot",
            )
            .env(
                "FEATUREBOT__AGENT__GITHUB_ACTIONS__INSTALL_REV",
                "0123456789abcdef0123456789abcdef01234567",
            );
    };
    let check = || {
        s.llm.push(Reply::Text("ok".to_string()));
        let mut cmd = s.command(&["check"]);
        pinned(&mut cmd);
        cmd
    };
    let output = check().output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.contains(" actions "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(
        line.contains(".github/workflows/featurebot.yml is not on main")
            && line.contains("featurebot install-workflow --write"),
        "{line}"
    );
    // The fake LLM listens on 127.0.0.1, which no GitHub runner reaches.
    assert!(line.contains("a GitHub runner cannot reach"), "{line}");

    // An older featurebot's workflow, which lacks inputs this one sends.
    s.github().put_file(
        "main",
        ".github/workflows/featurebot.yml",
        "name: featurebot\n",
    );
    let output = check().output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" actions ")).unwrap();
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(
        line.contains("is not the workflow this featurebot writes")
            && line.contains("install-workflow --write --force"),
        "{line}"
    );

    // The one `install-workflow` prints, with the same settings.
    let mut print = s.command(&["install-workflow"]);
    pinned(&mut print);
    let printed = print.output().await.unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let yaml = String::from_utf8(printed.stdout).unwrap();
    s.github()
        .put_file("main", ".github/workflows/featurebot.yml", &yaml);
    let output = check().output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" actions ")).unwrap();
    assert!(
        line.contains(".github/workflows/featurebot.yml is on main"),
        "{line}"
    );
}

const ONE_STEP_PLAN: &str = "---\nfeature_id: 9\ntitle: \"Add a changelog\"\nrequester: \"ci\"\nversion: 1\ncreated: 2026-11-26T00:00:00Z\nstatus: planned\n---\n\n# Add a changelog\n\n## Summary & goal\nA changelog.\n\n## User stories / acceptance criteria\n- [ ] it exists\n\n## Implementation steps\n### Docs\n1. Write CHANGELOG.md\n\n## Test plan\n- look at it\n";

#[tokio::test]
async fn featurebot_agent_runs_a_plan_file_to_a_pushed_branch() {
    let s = TestApp::binary().build().await;
    let plan = s.repo.path.join("tasks/20261126-000000-add-a-changelog.md");
    std::fs::create_dir_all(plan.parent().unwrap()).unwrap();
    std::fs::write(&plan, ONE_STEP_PLAN).unwrap();
    s.llm.push(call(
        "write_file",
        json!({"path": "CHANGELOG.md", "content": "# Changelog\n"}),
    ));
    finish_steps(&s.llm, &["wrote it"]);
    let (status, stdout, stderr) = s.run(&["agent", plan.to_str().unwrap()], "").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("branch: featurebot/9-add-a-changelog"),
        "{stdout}"
    );
    assert!(stdout.contains("state: Finished"), "{stdout}");
    assert!(stderr.contains("step 1/1 committed"), "{stderr}");
    let remote = s.repo.remote.clone().unwrap();
    let file = git(
        &remote,
        &["show", "featurebot/9-add-a-changelog:CHANGELOG.md"],
    );
    assert_eq!(file, "# Changelog\n");
    // The agent's request carried the plan and the step.
    let first = s.llm.requests()[0].body.to_string();
    assert!(
        first.contains("Do step 1 of 1: Write CHANGELOG.md"),
        "{first}"
    );
}

/// A run without GitHub to propose to ends the feature `closed`, whether the bot ran it or
/// `featurebot agent` did (they used to disagree: `closed` against `failed`).
#[tokio::test]
async fn a_run_without_github_closes_the_feature_from_the_console_and_from_featurebot_agent() {
    let s = TestApp::binary().build().await;
    script_to_plan(&s.llm);
    let (_, stdout, stderr) = s
        .run(&["console", "--title", "Export CSV"], "CSV\n/plan\n")
        .await;
    assert!(stdout.contains("tasks/"), "{stdout}\n{stderr}");
    let plan = std::fs::read_dir(s.repo.path.join("tasks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    finish_steps(&s.llm, &["done"; 2]);
    let (status, stdout, stderr) = s.run(&["agent", plan.to_str().unwrap()], "").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("state: Finished"), "{stdout}");
    let store = crate::support::reopen_store(&s.store_path());
    assert_eq!(store.feature(FeatureId(1)).unwrap().status, Status::Closed);
}

#[tokio::test]
async fn approve_in_the_console_runs_the_agent() {
    let s = TestApp::binary().build().await;
    script_to_plan(&s.llm);
    finish_steps(&s.llm, &["done"; 2]);
    let (status, stdout, stderr) = s
        .run(
            &["console", "--title", "Export CSV"],
            "CSV\n/plan\n/approve\n",
        )
        .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("agent run starting"), "{stderr}");
    assert!(
        stdout.contains("run Finished; branch: featurebot/1-export-csv"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_reports_every_target_repository() {
    let missing = tempfile::tempdir().unwrap();
    let s = TestApp::binary()
        .with_config(|c| {
            let repo = RepoConfig {
                path: missing.path().to_path_buf(),
                ..c.repo.clone()
            };
            c.targets.push(Target {
                name: "shop".to_string(),
                repo,
                github: None,
                channels: Vec::new(),
            });
        })
        .build()
        .await;
    s.llm.push(Reply::Text("ok".to_string()));
    let (status, stdout, _) = s.run(&["check"], "").await;
    assert_eq!(status.code(), Some(1), "{stdout}");
    let repo_lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" repo ")).collect();
    assert_eq!(repo_lines.len(), 2, "{stdout}");
    assert!(repo_lines[0].starts_with("ok"), "{stdout}");
    assert!(
        repo_lines[1].starts_with("FAIL")
            && repo_lines[1].contains("shop: ")
            && repo_lines[1].contains("set repo.path"),
        "{stdout}"
    );
}

/// The console shows what Discord shows: a secret in a reply is masked, even streamed in pieces
/// that split it.
#[tokio::test]
async fn the_console_masks_a_secret_the_llm_streams_in_pieces() {
    let s = TestApp::binary().build().await;
    s.llm.push(Reply::paced(
        "Is sk-test-secret the key you mean, or ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8?",
        40,
        Duration::from_millis(1),
    ));
    let (_, stdout, stderr) = s
        .run(&["console", "--title", "Export CSV"], "which key?\n")
        .await;
    assert!(
        stdout.contains("featurebot: Is *** the key you mean, or ***?"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("sk-test-secret") && !stdout.contains("ghp_"),
        "{stdout}"
    );
}

/// A host where no sandbox can start (here: no `bwrap` on PATH): `check` fails its line with
/// the fix, and a run is refused before anything is prepared; nothing runs unconfined.
#[tokio::test]
async fn without_a_sandbox_a_run_is_refused_before_it_starts() {
    let s = TestApp::binary().build().await;
    let empty = tempfile::tempdir().unwrap();
    let without_bwrap = |args: &[&str]| {
        let mut cmd = s.command(args);
        cmd.env("PATH", empty.path());
        cmd
    };
    s.llm.push(Reply::Text("ok".to_string()));
    let output = without_bwrap(&["check"]).output().await.unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.contains(" sandbox ")).unwrap();
    assert!(
        line.starts_with("FAIL")
            && line.contains(
                "needs bubblewrap (bwrap), which is not installed (not on featurebot's PATH)"
            )
            && line.contains("apt-get install bubblewrap")
            && line.contains("agent.sandbox = \"off\""),
        "{line}"
    );
    assert_eq!(output.status.code(), Some(1));

    let plan = s.repo.path.join("tasks/20261126-000000-add-a-changelog.md");
    std::fs::create_dir_all(plan.parent().unwrap()).unwrap();
    std::fs::write(&plan, ONE_STEP_PLAN).unwrap();
    let output = without_bwrap(&["agent", plan.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(
            "needs bubblewrap (bwrap), which is not installed (not on featurebot's PATH)"
        ),
        "{stdout}\n{stderr}"
    );
    assert!(
        s.llm.requests().len() <= 1,
        "only check's ping reached the LLM"
    );
    assert!(
        git(&s.repo.path, &["branch", "--list", "featurebot/*"])
            .trim()
            .is_empty(),
        "no branch was made"
    );
    assert!(
        !s.store_path().join("worktrees/9-add-a-changelog").exists(),
        "no work tree was made"
    );
}
