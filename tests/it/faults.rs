//! Faults: what people see, and what is kept, when a process dies, the LLM or GitHub fails, a
//! push is refused, the repository is locked or the store cannot be written.
//!
//! Every test ends in a readable message (an [`Output`], the console's output or a Discord
//! thread) and then proves that featurebot goes on: a turn in a second feature completes, and
//! where it makes sense the faulty feature's next message or button works too. FAULTS.md lists
//! the cases, one row per test.

use std::time::Duration;

use featurebot::config::{Config, Secret};
use featurebot::core::protocol::{Input, OutputKind};
use featurebot::discord::Action;
use featurebot::model::{FeatureId, RunState, Speaker, Status};
use serde_json::json;

use crate::support::app::{TestApp, ADMIN};
use crate::support::fake_github::TOKEN;
use crate::support::fake_llm::Reply;
use crate::support::git::{git, git_daemon};
use crate::support::outputs::{failure, reply};
use crate::support::scripts::{
    ask, call, confirm, export_run, finish_steps, plan_reply, script_to_plan, write_export, BRANCH,
    GOOD_PLAN,
};

// ---------------------------------------------------------------------------------------------
// kill -9 of the built binary

async fn kill_9(mut child: tokio::process::Child) {
    // tokio's kill is SIGKILL on Unix: no handler, no flush, no clean-up runs.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn kill_9_before_the_first_answer_loses_nothing_and_resume_answers_once() {
    let b = TestApp::binary().build().await;
    b.llm.push(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(Reply::Text("too late".to_string())),
    });
    let (child, _stdin) = b.spawn(&["console", "--title", "Export CSV"], "").await;
    b.wait_for("the opening request at the LLM", |b| {
        !b.llm.requests().is_empty()
    })
    .await;
    kill_9(child).await;

    // The request was stored before the LLM was asked.
    let (status, transcript) = b.read_store(|s| {
        (
            s.feature(FeatureId(1)).unwrap().status,
            s.transcript(FeatureId(1)).unwrap(),
        )
    });
    assert_eq!(status, Status::Gathering);
    assert_eq!(transcript.len(), 1, "{transcript:?}");
    assert_eq!(transcript[0].speaker, Speaker::User);
    assert!(transcript[0].text.contains("Export CSV"));

    ask(&b.llm, "Which format should it use?");
    let (status, stdout, stderr) = b.run(&["console", "--resume", "1"], "/quit\n").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("featurebot: Which format should it use?"),
        "{stdout}"
    );
    let transcript = b.read_store(|s| s.transcript(FeatureId(1)).unwrap());
    let texts: Vec<(Speaker, &str)> = transcript
        .iter()
        .map(|t| (t.speaker, t.text.as_str()))
        .collect();
    assert_eq!(texts.len(), 2, "the request once, one answer: {texts:?}");
    assert_eq!(
        texts[1],
        (Speaker::Assistant, "Which format should it use?")
    );
    assert_eq!(b.llm.requests().len(), 2);
    b.second_console_session_is_served().await;
}

#[tokio::test]
async fn kill_9_while_the_plan_is_written_commits_nothing_and_the_plan_is_written_once_after() {
    let b = TestApp::binary().build().await;
    ask(&b.llm, "Which format?");
    confirm(&b.llm, &["CSV export"]);
    b.llm.push(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(Reply::Text(GOOD_PLAN.to_string())),
    });
    let base = git(&b.repo.path, &["rev-parse", "main"]);
    let (child, _stdin) = b
        .spawn(&["console", "--title", "Export CSV"], "CSV\n/plan\n")
        .await;
    b.wait_for("the plan request at the LLM", |b| {
        b.llm.requests().len() >= 3
    })
    .await;
    kill_9(child).await;

    let (feature, transcript, plans) = b.read_store(|s| {
        (
            s.feature(FeatureId(1)).unwrap(),
            s.transcript(FeatureId(1)).unwrap(),
            s.plans(FeatureId(1)).unwrap(),
        )
    });
    assert_eq!(feature.status, Status::Confirmed);
    assert_eq!(feature.plan_version, 0);
    assert!(plans.is_empty());
    assert_eq!(transcript.len(), 4, "{transcript:?}");
    assert_eq!(git(&b.repo.path, &["rev-parse", "main"]), base, "no commit");

    plan_reply(&b.llm);
    let (status, stdout, stderr) = b.run(&["console", "--resume", "1"], "/plan\n").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("plan version 1 committed"), "{stdout}");
    // Resuming asked for nothing but the plan: the conversation was already answered.
    assert_eq!(b.llm.requests().len(), 4);
    let (feature, transcript, plans) = b.read_store(|s| {
        (
            s.feature(FeatureId(1)).unwrap(),
            s.transcript(FeatureId(1)).unwrap(),
            s.plans(FeatureId(1)).unwrap(),
        )
    });
    assert_eq!(feature.status, Status::Planned);
    assert_eq!(
        transcript.len(),
        4,
        "no turn lost or doubled: {transcript:?}"
    );
    assert_eq!(plans.len(), 1);
    let log = git(&b.repo.path, &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["plan: Export CSV", "initial commit"]
    );
    b.second_console_session_is_served().await;
}

#[tokio::test]
async fn kill_9_during_an_agent_run_leaves_it_running_and_the_next_start_reports_it_interrupted() {
    let mut b = TestApp::binary().build().await;
    script_to_plan(&b.llm);
    let (status, stdout, stderr) = b
        .run(&["console", "--title", "Export CSV"], "CSV\n/plan\n")
        .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let plan = stdout
        .lines()
        .find_map(|l| l.strip_prefix("path: "))
        .unwrap()
        .to_string();

    // Step 1 is done and committed; step 2 waits on the LLM when the process dies.
    write_export(&b.llm);
    finish_steps(&b.llm, &["endpoint added"]);
    b.llm.push(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(call("finish_step", json!({"summary": "late"}))),
    });
    let plan_file = b.repo.path.join(&plan);
    let (child, _stdin) = b.spawn(&["agent", plan_file.to_str().unwrap()], "").await;
    b.wait_for("step 2 at the LLM", |b| b.llm.requests().len() >= 6)
        .await;
    kill_9(child).await;

    let (status, runs) = b.read_store(|s| {
        (
            s.feature(FeatureId(1)).unwrap().status,
            s.runs(FeatureId(1)).unwrap(),
        )
    });
    assert_eq!(status, Status::Running);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Running);
    assert_eq!(runs[0].next_step, 1);
    let step_1 = runs[0].steps[0].commit.clone().expect("step 1 committed");
    let branch = "featurebot/1-export-csv";
    let subject = git(&b.repo.path, &["log", "-1", "--format=%s", &step_1]);
    assert_eq!(subject.trim(), "step 1/2: Add GET /export.csv");

    // The next start says so.
    let (status, _, stderr) = b.run(&["console", "--resume", "1"], "/quit\n").await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("run 1 was interrupted: featurebot stopped during step 2 of 2"),
        "{stderr}"
    );
    let (status, run) = b.read_store(|s| {
        (
            s.feature(FeatureId(1)).unwrap().status,
            s.runs(FeatureId(1)).unwrap().pop().unwrap(),
        )
    });
    assert_eq!(status, Status::Failed);
    assert_eq!(run.state, RunState::Interrupted);

    // Resume (what the Discord button sends) finishes it from step 2, without redoing step 1.
    b.start().await;
    finish_steps(&b.llm, &["button"]);
    b.send(Input::ResumeRun {
        feature: FeatureId(1),
    })
    .await;
    let run = b.run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let remote = b.repo.remote.clone().unwrap();
    let log = git(&remote, &["log", "--format=%s", branch]);
    assert_eq!(log.matches("step 1/2").count(), 1, "{log}");
    assert_eq!(
        git(&remote, &["show", &format!("{branch}:export.txt")]),
        "GET /export.csv\n"
    );
    b.stop().await;
    b.second_console_session_is_served().await;
}

// ---------------------------------------------------------------------------------------------
// The core with an agent and GitHub

/// A scripted GitHub answer: status, body and headers.
type GithubAnswer<'a> = (u16, &'a str, &'a [(&'a str, &'a str)]);

/// GitHub answers the requests of opening the pull request with `answers`: the run fails with
/// a message holding `expected`, never the token, and the branch is pushed all the same.
async fn github_fault(answers: &[GithubAnswer<'_>], expected: &[&str]) {
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    for (status, body, headers) in answers {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        p.github().fail_next(*status, body, headers);
    }
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    let message = run.message.clone().unwrap();
    assert!(
        message.starts_with("opening the pull request: "),
        "{message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(!message.contains(TOKEN), "{message}");
    assert_eq!(p.status(id), Status::Failed);
    assert!(p.github().pulls().is_empty());
    let remote = p.repo.remote.clone().unwrap();
    assert_eq!(
        git(&remote, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv\n",
        "the branch is pushed"
    );
    // Once GitHub is fixed, Resume opens the pull request without redoing any step.
    let calls = p.llm.requests().len();
    p.send(Input::ResumeRun { feature: id }).await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(p.github().pulls().len(), 1);
    assert_eq!(p.llm.requests().len(), calls, "no step was redone");
    p.second_feature_is_served().await;
}

#[tokio::test]
async fn github_401_ends_the_run_naming_github_token() {
    github_fault(
        &[(401, r#"{"message":"Bad credentials"}"#, &[])],
        &["GitHub refused the token (401); check GITHUB_TOKEN"],
    )
    .await;
}

#[tokio::test]
async fn github_403_ends_the_run_naming_the_access_the_token_lacks_without_echoing_it() {
    let body =
        format!(r#"{{"message":"Resource not accessible by personal access token {TOKEN}"}}"#);
    github_fault(
        &[(403, &body, &[])],
        &[
            "GitHub refused the request (403): Resource not accessible by personal access token ***",
            "give the token read and write access to contents and pull requests",
        ],
    )
    .await;
}

#[tokio::test]
async fn github_404_ends_the_run_naming_owner_and_repo() {
    github_fault(
        &[(404, r#"{"message":"Not Found"}"#, &[])],
        &[
            "repository acme/shop not found on GitHub",
            "check github.owner and github.repo",
        ],
    )
    .await;
}

#[tokio::test]
async fn github_422_on_create_ends_the_run_with_githubs_reason() {
    github_fault(
        &[
            (200, "[]", &[]),
            (
                422,
                r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","field":"base","code":"invalid"}]}"#,
                &[],
            ),
        ],
        &["GitHub rejected the request (422): Validation Failed: base is invalid (is that branch on GitHub?)"],
    )
    .await;
}

#[tokio::test]
async fn github_500_on_every_attempt_ends_the_run_saying_try_again_later() {
    let error = r#"{"message":"Server Error"}"#;
    github_fault(
        &[(500, error, &[]), (502, error, &[]), (500, error, &[])],
        &["GitHub had a server error (500) on each of 3 attempts; try again later"],
    )
    .await;
}

#[tokio::test]
async fn github_secondary_rate_limit_with_a_long_retry_after_ends_the_run_saying_how_long() {
    github_fault(
        &[(
            403,
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#,
            &[("retry-after", "120")],
        )],
        &["GitHub is rate limiting us (it asked us to wait 120s); wait and try again"],
    )
    .await;
}

#[tokio::test]
async fn github_secondary_rate_limit_with_a_short_retry_after_is_sat_out() {
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    p.github().fail_next(
        403,
        r#"{"message":"You have exceeded a secondary rate limit."}"#,
        vec![("retry-after".to_string(), "1".to_string())],
    );
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(run.pr_url.is_some());
    assert_eq!(p.github().pulls().len(), 1);
    assert_eq!(p.status(id), Status::PrOpen);
    p.second_feature_is_served().await;
}

#[tokio::test]
async fn github_401_on_create_issue_names_github_token_and_the_button_works_after() {
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    p.github()
        .fail_next(401, r#"{"message":"Bad credentials"}"#, Vec::new());
    let outputs = p.send(Input::CreateIssue { feature: id }).await;
    let message = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::Failed { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failure: {outputs:?}"));
    assert_eq!(
        message,
        "opening the GitHub issue: GitHub refused the token (401); check GITHUB_TOKEN: it may be mistyped, expired or revoked"
    );
    assert!(p.github().issues().is_empty());
    assert_eq!(p.store().feature(id).unwrap().issue, None);

    let outputs = p.send(Input::CreateIssue { feature: id }).await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::IssueCreated { number: 1, .. })),
        "{outputs:?}"
    );
    p.second_feature_is_served().await;
}

#[tokio::test]
async fn an_llm_outage_during_a_run_fails_it_clearly_and_resume_finishes_it() {
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    write_export(&p.llm);
    finish_steps(&p.llm, &["endpoint added"]);
    // Step 2: the first attempt and max_retries = 3 retries all meet an outage.
    for _ in 0..4 {
        p.llm.push(Reply::Status {
            status: 503,
            headers: vec![("retry-after".to_string(), "0".to_string())],
            body: r#"{"error":{"message":"the model is overloaded"}}"#.to_string(),
        });
    }
    p.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    let message = run.message.clone().unwrap();
    assert!(
        message.starts_with("the agent's LLM request failed: the LLM server is unavailable (HTTP 503: the model is overloaded)"),
        "{message}"
    );
    assert_eq!(run.next_step, 1, "step 1 is done");
    assert_eq!(p.status(id), Status::Failed);
    assert_eq!(
        git(&p.repo.path, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv\n",
        "step 1 is committed"
    );

    finish_steps(&p.llm, &["button"]);
    p.send(Input::ResumeRun { feature: id }).await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(run.pr_url.is_some());
    let remote = p.repo.remote.clone().unwrap();
    let log = git(&remote, &["log", "--format=%s", BRANCH]);
    assert_eq!(log.matches("step 1/2").count(), 1, "{log}");
    p.second_feature_is_served().await;
}

// ---------------------------------------------------------------------------------------------
// Pushes refused by the remote

/// The run ends failed with `expected` in its message; the step's work is committed locally.
async fn push_refused(p: &mut TestApp, expected: &[&str]) {
    let id = p.planned().await;
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    let message = run.message.clone().unwrap();
    assert!(
        message.starts_with("pushing the run's branch: remote origin rejected the push to refs/heads/featurebot/1-export-csv: "),
        "{message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(p.status(id), Status::Failed);
    assert!(p.github().pulls().is_empty(), "no pull request");
    assert_eq!(
        git(&p.repo.path, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv\n",
        "the work is committed on the local branch"
    );
    p.second_feature_is_served().await;
}

/// Someone else pushed to the branch the run will use: the run fetches it and goes on on top of
/// their commit instead of being refused (it used to fail with "pull or rebase"); nothing is
/// forced and their commit is kept.
#[tokio::test]
async fn a_run_on_a_branch_someone_else_pushed_to_goes_on_on_top_of_it() {
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let remote = p.repo.remote.clone().unwrap();
    let other = p.repo.dir.path().join("other");
    git(
        p.repo.dir.path(),
        &["clone", "--quiet", remote.to_str().unwrap(), "other"],
    );
    git(&other, &["checkout", "--quiet", "-b", BRANCH]);
    std::fs::write(other.join("theirs.txt"), "someone else\n").unwrap();
    git(&other, &["add", "theirs.txt"]);
    git(&other, &["commit", "--quiet", "-m", "theirs"]);
    git(&other, &["push", "--quiet", "origin", BRANCH]);
    let theirs = git(&remote, &["rev-parse", BRANCH]).trim().to_string();

    let id = p.planned().await;
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let ancestry = git(&remote, &["rev-list", BRANCH]);
    assert!(
        ancestry.lines().any(|c| c == theirs),
        "their commit is kept"
    );
    assert_eq!(
        git(&remote, &["show", &format!("{BRANCH}:theirs.txt")]),
        "someone else\n"
    );
    assert_eq!(
        git(&remote, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv\n"
    );
}

#[tokio::test]
async fn a_push_refused_by_a_pre_receive_hook_says_the_hook_declined() {
    let p = TestApp::builder().with_remote().with_github().build().await;
    let remote = p.repo.remote.clone().unwrap();
    let hook = remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'protected branch: pushes need a review' >&2\nexit 1\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
    let (url, _daemon) = git_daemon(p.repo.dir.path()).await;
    git(
        &p.repo.path,
        &["remote", "set-url", "origin", &format!("{url}/remote.git")],
    );
    // featurebot reads the remote's URL when it starts.
    let mut p = p.restart().await;

    push_refused(&mut p, &["pre-receive hook declined"]).await;
    let refs = git(&remote, &["for-each-ref", "--format=%(refname)"]);
    assert!(!refs.contains(BRANCH), "nothing reached the remote: {refs}");
}

// ---------------------------------------------------------------------------------------------
// LLM faults in the requirements conversation and the plan

/// Starts a feature, lets `fault` answer the next message, and checks what people see and what
/// is kept; then the feature's next message and a second feature work. Returns how many
/// requests the fault took.
async fn conversation_fault(
    fault: Vec<Reply>,
    change: impl FnOnce(&mut Config),
    expected: &[&str],
) -> usize {
    let mut h = TestApp::builder().with_config(change).build().await;
    ask(&h.llm, "Which format?");
    let (id, _) = h.start_feature("Export CSV").await;
    let before = h.llm.requests().len();
    for reply in fault {
        h.llm.push(reply);
    }
    let outputs = h.say(id, "CSV, from the dashboard").await;
    let requests = h.llm.requests().len() - before;
    let message = failure(&outputs).unwrap_or_else(|| panic!("no failure: {outputs:?}"));
    assert!(
        message.starts_with(
            "the LLM could not answer; your messages are saved, send another message to try again: "
        ),
        "{message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(!message.contains("sk-test-secret"), "{message}");
    assert!(reply(&outputs).is_none(), "{outputs:?}");
    let transcript = h.store().transcript(id).unwrap();
    assert_eq!(transcript.len(), 3, "no half answer stored: {transcript:?}");
    assert_eq!(transcript[2].text, "CSV, from the dashboard");
    assert_eq!(h.store().feature(id).unwrap().status, Status::Gathering);

    ask(&h.llm, "Which theme, dark or light?");
    let (_, outputs) = h.start_feature("Dark mode").await;
    assert_eq!(reply(&outputs), Some("Which theme, dark or light?"));

    h.llm
        .push(Reply::Text("Got it: CSV from the dashboard.".to_string()));
    let outputs = h.say(id, "yes, CSV").await;
    assert_eq!(reply(&outputs), Some("Got it: CSV from the dashboard."));
    let last = h.llm.requests().pop().unwrap().body.to_string();
    assert!(
        last.contains("CSV, from the dashboard") && last.contains("yes, CSV"),
        "the kept message went to the LLM: {last}"
    );
    requests
}

/// A short timeout, so that a slow server is given up on quickly.
fn impatient(config: &mut Config) {
    config.llm.request_timeout = Duration::from_secs(1);
    config.llm.max_retries = 1;
}

fn slow() -> Reply {
    Reply::Slow {
        delay: Duration::from_secs(3),
        then: Box::new(Reply::Text("too late".to_string())),
    }
}

#[tokio::test]
async fn an_llm_slower_than_request_timeout_is_reported_and_the_message_kept() {
    let requests = conversation_fault(
        vec![slow(), slow()],
        impatient,
        &["the LLM server did not answer within 1s; raise llm.request_timeout_secs"],
    )
    .await;
    assert_eq!(requests, 2, "one retry");
}

#[tokio::test]
async fn an_llm_stream_that_stalls_mid_reply_is_reported_and_not_retried() {
    let first = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "Thanks, and "}}]})
    );
    let requests = conversation_fault(
        vec![Reply::Stalled {
            chunks: vec![first.into_bytes()],
            hold: Duration::from_secs(3),
        }],
        impatient,
        &["did not answer within 1s"],
    )
    .await;
    assert_eq!(requests, 1, "text was shown, so no retry");
}

#[tokio::test]
async fn a_429_storm_beyond_max_retries_is_reported_as_rate_limiting() {
    let too_many = || Reply::Status {
        status: 429,
        headers: vec![("retry-after".to_string(), "0".to_string())],
        body: r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#.to_string(),
    };
    let requests = conversation_fault(
        (0..4).map(|_| too_many()).collect(),
        |c| c.llm.max_retries = 3,
        &[
            "the LLM server is rate limiting us and retries ran out",
            "raise your quota",
        ],
    )
    .await;
    assert_eq!(requests, 4, "the first attempt and max_retries = 3 retries");
}

#[tokio::test]
async fn llm_5xx_on_every_attempt_is_reported_as_unavailable() {
    let overloaded = || Reply::Status {
        status: 503,
        headers: vec![("retry-after".to_string(), "0".to_string())],
        body: r#"{"error":{"message":"the model is overloaded"}}"#.to_string(),
    };
    let requests = conversation_fault(
        vec![overloaded(), overloaded()],
        |c| c.llm.max_retries = 1,
        &["the LLM server is unavailable (HTTP 503: the model is overloaded); check llm.base_url"],
    )
    .await;
    assert_eq!(requests, 2);
}

#[tokio::test]
async fn an_llm_refusing_the_key_is_reported_naming_the_variable_and_not_retried() {
    let requests = conversation_fault(
        vec![Reply::Status {
            status: 401,
            headers: vec![],
            body: r#"{"error":{"message":"Incorrect API key provided: sk-test-secret"}}"#
                .to_string(),
        }],
        |_| {},
        &["the LLM server refused the API key (401); check the FAKE_LLM_API_KEY environment variable"],
    )
    .await;
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn an_llm_stream_cut_mid_reply_is_reported_and_the_half_answer_not_stored() {
    conversation_fault(
        vec![Reply::Truncated(
            "Thanks, and one more thing about".to_string(),
        )],
        |_| {},
        &["the stream ended before the answer was complete"],
    )
    .await;
}

#[tokio::test]
async fn an_empty_llm_answer_is_reported() {
    conversation_fault(
        vec![Reply::Text(String::new())],
        |_| {},
        &["the answer has neither text nor tool calls"],
    )
    .await;
}

#[tokio::test]
async fn malformed_json_from_the_llm_is_reported() {
    conversation_fault(
        vec![Reply::Raw(vec![b"data: {\"choices\": [oops\n\n".to_vec()])],
        |_| {},
        &["a stream event is not valid JSON"],
    )
    .await;
}

/// Confirms a feature, lets `fault` answer the plan request, and checks the message, that
/// nothing was committed, and that Generate plan and a second feature then work.
async fn plan_fault(fault: Vec<Reply>, change: impl FnOnce(&mut Config), expected: &[&str]) {
    let mut h = TestApp::builder().with_config(change).build().await;
    ask(&h.llm, "Which format?");
    confirm(&h.llm, &["CSV export"]);
    let (id, _) = h.start_feature("Export CSV").await;
    h.say(id, "CSV").await;
    let base = git(&h.repo.path, &["rev-parse", "HEAD"]);
    for reply in fault {
        h.llm.push(reply);
    }
    let generate = Input::GeneratePlan {
        feature: id,
        force: false,
    };
    let outputs = h.send(generate.clone()).await;
    let message = failure(&outputs).unwrap_or_else(|| panic!("no failure: {outputs:?}"));
    assert!(
        message.starts_with("the LLM could not write the plan: "),
        "{message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let feature = h.store().feature(id).unwrap();
    assert_eq!(feature.status, Status::Confirmed);
    assert_eq!(feature.plan_version, 0);
    assert_eq!(git(&h.repo.path, &["rev-parse", "HEAD"]), base);
    assert_eq!(h.store().transcript(id).unwrap().len(), 4);

    plan_reply(&h.llm);
    let outputs = h.send(generate).await;
    assert!(
        outputs.iter().any(|o| matches!(
            o.kind,
            OutputKind::PlanCommitted {
                version: 1,
                again: false,
                ..
            }
        )),
        "{outputs:?}"
    );
    ask(&h.llm, "Which theme, dark or light?");
    let (_, outputs) = h.start_feature("Dark mode").await;
    assert_eq!(reply(&outputs), Some("Which theme, dark or light?"));
}

#[tokio::test]
async fn an_llm_timeout_while_writing_the_plan_commits_nothing_and_generate_plan_works_after() {
    plan_fault(
        vec![slow(), slow()],
        impatient,
        &["did not answer within 1s; raise llm.request_timeout_secs"],
    )
    .await;
}

#[tokio::test]
async fn malformed_json_for_the_plan_commits_nothing_and_generate_plan_works_after() {
    plan_fault(
        vec![Reply::Status {
            status: 200,
            headers: vec![],
            body: "{\"choices\": [{\"message\": ".to_string(),
        }],
        |_| {},
        &["the answer is not valid JSON"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The target repository locked

#[tokio::test]
async fn a_locked_repository_fails_the_plan_clearly_and_generate_plan_works_once_unlocked() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Which format?");
    confirm(&h.llm, &["CSV export"]);
    let (id, _) = h.start_feature("Export CSV").await;
    h.say(id, "CSV").await;
    let lock = h.repo.path.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    let base = git(&h.repo.path, &["rev-parse", "HEAD"]);

    plan_reply(&h.llm);
    let generate = Input::GeneratePlan {
        feature: id,
        force: false,
    };
    let outputs = h.send(generate.clone()).await;
    let message = failure(&outputs).unwrap_or_else(|| panic!("no failure: {outputs:?}"));
    assert!(
        message.starts_with("committing the plan: another git process is using the repository"),
        "{message}"
    );
    assert!(message.contains("index.lock exists"), "{message}");
    assert!(
        message.contains("remove the lock if it is stale"),
        "{message}"
    );
    let feature = h.store().feature(id).unwrap();
    assert_eq!(feature.status, Status::Confirmed);
    assert!(h.store().plans(id).unwrap().is_empty());
    assert_eq!(git(&h.repo.path, &["rev-parse", "HEAD"]), base);

    std::fs::remove_file(&lock).unwrap();
    plan_reply(&h.llm);
    let outputs = h.send(generate).await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::PlanCommitted { version: 1, .. })),
        "{outputs:?}"
    );
    let log = git(&h.repo.path, &["log", "--format=%s", "HEAD"]);
    assert_eq!(log.matches("plan: Export CSV").count(), 1, "{log}");

    ask(&h.llm, "Which theme, dark or light?");
    let (_, outputs) = h.start_feature("Dark mode").await;
    assert_eq!(reply(&outputs), Some("Which theme, dark or light?"));
}

// ---------------------------------------------------------------------------------------------
// The store cannot be written

/// A store folder featurebot may not write to: `featurebot check`, run unprivileged (as
/// `nobody` when the tests run as root, who writes whatever the mode says), refuses it with the
/// fix.
#[tokio::test]
async fn a_store_folder_without_write_permission_is_refused_with_the_fix() {
    use crate::support::nobody::NobodyBot;
    use std::os::unix::fs::PermissionsExt;
    let bot = NobodyBot::new();
    std::fs::set_permissions(&bot.store, std::fs::Permissions::from_mode(0o555)).unwrap();
    let output = bot
        .command(&bot.binary)
        .args(["check", "--config"])
        .arg(&bot.config)
        .output()
        .expect("featurebot check runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let message = stdout
        .lines()
        .find(|l| l.contains(" store "))
        .unwrap_or_else(|| {
            panic!(
                "no store line: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(
        message.starts_with("FAIL")
            && message.contains("could not be opened")
            && message.contains("check that the folder is writable"),
        "{message}"
    );
    std::fs::set_permissions(&bot.store, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_store_path_that_is_a_file_is_refused_with_the_fix() {
    let b = TestApp::binary().build().await;
    // Something else sits where the store folder should be; root cannot write through this.
    std::fs::write(b.store_path(), "not a folder\n").unwrap();
    let (status, stdout, stderr) = b.run(&["console", "--title", "Export CSV"], "").await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the store at {} could not be opened",
            b.store_path().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("check that the folder is writable"),
        "{stderr}"
    );
    assert!(b.llm.requests().is_empty(), "nothing was asked");

    // With the folder back, featurebot serves again.
    std::fs::remove_file(b.store_path()).unwrap();
    b.second_console_session_is_served().await;
}

// ---------------------------------------------------------------------------------------------
// In a Discord thread

#[tokio::test]
async fn a_429_storm_in_a_thread_is_reported_there_and_other_threads_go_on() {
    let bot = TestApp::bot()
        .with_config(|c| c.llm.max_retries = 2)
        .build()
        .await;
    ask(&bot.llm, "Which format?");
    let export = bot.started_thread("Export CSV", "Which format?").await;
    for _ in 0..3 {
        bot.llm.push(Reply::Status {
            status: 429,
            headers: vec![("retry-after".to_string(), "0".to_string())],
            body: r#"{"error":{"message":"Rate limit reached"}}"#.to_string(),
        });
    }
    bot.discord()
        .user_message(ADMIN, export, "CSV, from the dashboard")
        .await;
    bot.wait_for_text(export, "❌").await;
    let error = bot
        .texts_in(export)
        .into_iter()
        .find(|t| t.starts_with("❌"))
        .unwrap();
    assert!(
        error.contains("your messages are saved, send another message to try again")
            && error.contains("rate limiting us and retries ran out"),
        "{error}"
    );
    assert!(!error.contains("sk-test-secret"));

    ask(&bot.llm, "Which theme, dark or light?");
    bot.started_thread("Dark mode", "Which theme, dark or light?")
        .await;

    bot.llm
        .push(Reply::Text("Got it: CSV from the dashboard.".to_string()));
    bot.discord().user_message(ADMIN, export, "yes, CSV").await;
    bot.wait_for_text(export, "Got it: CSV from the dashboard.")
        .await;
    let transcript = bot.store().transcript(FeatureId(1)).unwrap();
    let kept = transcript
        .iter()
        .filter(|t| t.text == "CSV, from the dashboard")
        .count();
    assert_eq!(kept, 1, "{transcript:?}");
    assert_eq!(bot.llm.requests().len(), 1 + 3 + 1 + 1);
}

#[tokio::test]
async fn a_wrong_github_token_ends_the_run_in_the_thread_naming_github_token() {
    let wrong = "ghp_wrongwrongwrongwrongwrong1234";
    let bot = TestApp::bot()
        .with_config(|c| {
            if let Some(g) = c.github.as_mut() {
                g.token = Some(Secret::new(wrong));
            }
        })
        .build()
        .await;
    ask(&bot.llm, "Which format?");
    let thread = bot.started_thread("Export CSV", "Which format?").await;
    confirm(&bot.llm, &["CSV export"]);
    bot.discord().user_message(ADMIN, thread, "CSV").await;
    bot.wait_for("Generate plan", |bot| {
        bot.button_in(thread, Action::GeneratePlan).is_some()
    })
    .await;
    plan_reply(&bot.llm);
    let (message, id) = bot.button_in(thread, Action::GeneratePlan).unwrap();
    bot.discord().click(ADMIN, message, &id).await;
    bot.wait_for("the plan", |bot| {
        bot.button_in(thread, Action::Approve).is_some()
    })
    .await;
    export_run(&bot.llm);
    let (plan, approve) = bot.button_in(thread, Action::Approve).unwrap();
    bot.discord().click(ADMIN, plan, &approve).await;
    bot.wait_for_text(thread, "❌ The agent run failed").await;

    let message = bot
        .bot_messages_in(thread)
        .into_iter()
        .find(|m| {
            m["content"]
                .as_str()
                .unwrap_or("")
                .starts_with("❌ The agent run failed")
        })
        .unwrap();
    let text = message["content"].as_str().unwrap();
    assert!(
        text.contains(
            "opening the pull request: GitHub refused the token (401); check GITHUB_TOKEN"
        ),
        "{text}"
    );
    let everything = serde_json::to_string(&bot.discord().messages(thread)).unwrap();
    assert!(!everything.contains(wrong), "the token reached Discord");
    assert!(bot.github().pulls().is_empty());
    let remote = bot.repo.remote.clone().unwrap();
    assert_eq!(
        git(&remote, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv\n",
        "the branch is pushed"
    );
    assert_eq!(
        bot.store().feature(FeatureId(1)).unwrap().status,
        Status::Failed
    );

    ask(&bot.llm, "Which theme, dark or light?");
    bot.started_thread("Dark mode", "Which theme, dark or light?")
        .await;
}
