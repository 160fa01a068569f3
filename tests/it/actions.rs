//! The GitHub Actions layer against the fake GitHub's Actions routes: dispatching, finding
//! and following a run, its jobs and log, cancelling, the contents API, the pull request of
//! a branch, and the errors that tell a person what to fix.

use std::time::Duration;

use featurebot::github::actions::{JobStep, WorkflowJob, WorkflowRun};
use featurebot::github::{GitHub, GithubError, PullRequest, MAX_WAIT};
use serde_json::{json, Map, Value};

use crate::support::fake_github::actions::{FakeJob, FakeWorkflow, RateLimit};
use crate::support::fake_github::FakeGithub;

const WORKFLOW: &str = "featurebot.yml";
const BRANCH: &str = "feature/dark-mode";

async fn fake(workflow: FakeWorkflow) -> (FakeGithub, GitHub) {
    let fake = FakeGithub::start("acme", "shop").await;
    fake.add_workflow(WORKFLOW, workflow);
    let github = GitHub::new(&fake.config()).unwrap();
    (fake, github)
}

fn workflow() -> FakeWorkflow {
    FakeWorkflow::new("featurebot {correlation_id}")
}

fn inputs(correlation: &str) -> Map<String, Value> {
    let Value::Object(inputs) = json!({
        "correlation_id": correlation,
        "plan_path": "tasks/dark-mode.md",
    }) else {
        unreachable!()
    };
    inputs
}

async fn dispatch(github: &GitHub, correlation: &str) {
    github
        .dispatch_workflow(WORKFLOW, BRANCH, &inputs(correlation))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dispatch_sends_the_ref_and_inputs_and_starts_a_queued_run() {
    let (fake, github) = fake(workflow()).await;

    dispatch(&github, "run-7").await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].path,
        "/repos/acme/shop/actions/workflows/featurebot.yml/dispatches"
    );
    assert_eq!(
        requests[0].body,
        json!({
            "ref": BRANCH,
            "inputs": {"correlation_id": "run-7", "plan_path": "tasks/dark-mode.md"},
        })
    );
    let dispatches = fake.dispatches();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(dispatches[0].git_ref, BRANCH);
    assert_eq!(dispatches[0].inputs, inputs("run-7"));
    let runs = fake.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], dispatches[0].run_id);
    assert_eq!(runs[0]["display_title"], "featurebot run-7");
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(runs[0]["head_branch"], BRANCH);
}

#[tokio::test]
async fn the_dispatched_run_is_found_by_its_correlation_id() {
    let (fake, github) = fake(workflow()).await;
    dispatch(&github, "run-7").await;
    dispatch(&github, "run-71").await;
    fake.add_run(WORKFLOW, "feature/other", "featurebot run-7");
    let wanted = fake.dispatches()[0].run_id;

    let run = github
        .find_workflow_run(WORKFLOW, BRANCH, "run-7")
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        run,
        WorkflowRun {
            id: wanted,
            status: "queued".to_string(),
            conclusion: None,
            html_url: format!("{}acme/shop/actions/runs/{wanted}", fake.api_base()),
            display_title: "featurebot run-7".to_string(),
            run_attempt: 1,
            created_at: run.created_at.clone(),
            updated_at: run.created_at.clone(),
            name: "featurebot".to_string(),
            event: "workflow_dispatch".to_string(),
            head_branch: Some(BRANCH.to_string()),
            head_sha: "6dcb09b5b57875f334f61aebed695e2e4193db5e".to_string(),
            run_number: 1,
        }
    );
    assert!(run.id > u64::from(u32::MAX), "GitHub's ids outgrew 32 bits");
    assert_eq!(
        fake.requests().last().unwrap().path,
        "/repos/acme/shop/actions/workflows/featurebot.yml/runs?event=workflow_dispatch&branch=feature%2Fdark-mode&per_page=50"
    );
    assert_eq!(
        github
            .find_workflow_run(WORKFLOW, BRANCH, "run-8")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_run_that_appears_late_is_not_found_until_it_shows() {
    let (_fake, github) = fake(workflow().appearing_after(2)).await;
    dispatch(&github, "run-7").await;

    let mut found = Vec::new();
    for _ in 0..3 {
        let run = github
            .find_workflow_run(WORKFLOW, BRANCH, "run-7")
            .await
            .unwrap();
        found.push(run.is_some());
    }

    assert_eq!(found, [false, false, true]);
}

#[tokio::test]
async fn a_run_that_never_appears_is_never_found() {
    let (fake, github) = fake(workflow().never_appearing()).await;
    dispatch(&github, "run-7").await;

    for _ in 0..3 {
        let run = github
            .find_workflow_run(WORKFLOW, BRANCH, "run-7")
            .await
            .unwrap();
        assert_eq!(run, None);
    }
    assert_eq!(fake.dispatches().len(), 1);
}

#[tokio::test]
async fn the_autopilot_moves_a_run_one_state_per_poll() {
    let (fake, github) = fake(workflow().autopilot(&[
        ("queued", None),
        ("in_progress", None),
        ("completed", Some("success")),
    ]))
    .await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let run = github.workflow_run(run_id).await.unwrap();
        seen.push((
            run.status.clone(),
            run.conclusion.clone(),
            run.is_completed(),
        ));
    }

    let state = |status: &str, conclusion: Option<&str>, done: bool| {
        (status.to_string(), conclusion.map(str::to_string), done)
    };
    assert_eq!(
        seen,
        [
            state("queued", None, false),
            state("in_progress", None, false),
            state("completed", Some("success"), true),
            state("completed", Some("success"), true),
        ]
    );
    assert_eq!(
        fake.requests().last().unwrap().path,
        format!("/repos/acme/shop/actions/runs/{run_id}")
    );
}

#[tokio::test]
async fn a_run_the_test_adds_and_scripts_is_read_as_scripted() {
    let (fake, github) = fake(workflow()).await;
    let run_id = fake.add_run(WORKFLOW, BRANCH, "featurebot run-7");
    fake.script_run(
        run_id,
        &[("in_progress", None), ("completed", Some("failure"))],
    );

    let mut seen = Vec::new();
    for _ in 0..2 {
        let run = github.workflow_run(run_id).await.unwrap();
        seen.push((run.status, run.conclusion));
    }
    fake.set_run_status(run_id, "completed", Some("timed_out"));
    let run = github.workflow_run(run_id).await.unwrap();
    seen.push((run.status, run.conclusion));

    let state = |status: &str, conclusion: Option<&str>| {
        (status.to_string(), conclusion.map(str::to_string))
    };
    assert_eq!(
        seen,
        [
            state("in_progress", None),
            state("completed", Some("failure")),
            state("completed", Some("timed_out")),
        ]
    );
    assert!(fake.dispatches().is_empty());
}

#[tokio::test]
async fn jobs_are_read_with_their_steps() {
    let job = FakeJob::new("agent", "in_progress", None)
        .step("Set up job", "completed", Some("success"))
        .step("Run featurebot agent", "in_progress", None)
        .step("Push", "queued", None);
    let (fake, github) = fake(workflow().with_jobs(vec![job])).await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;
    let job_id = fake.jobs(run_id)[0]["id"].as_u64().unwrap();

    let jobs = github.workflow_jobs(run_id).await.unwrap();

    let step = |number: u32, name: &str, status: &str, conclusion: Option<&str>| JobStep {
        number,
        name: name.to_string(),
        status: status.to_string(),
        conclusion: conclusion.map(str::to_string),
    };
    assert_eq!(
        jobs,
        [WorkflowJob {
            id: job_id,
            run_id,
            name: "agent".to_string(),
            status: "in_progress".to_string(),
            conclusion: None,
            html_url: format!(
                "{}acme/shop/actions/runs/{run_id}/job/{job_id}",
                fake.api_base()
            ),
            started_at: jobs[0].started_at.clone(),
            completed_at: None,
            steps: vec![
                step(1, "Set up job", "completed", Some("success")),
                step(2, "Run featurebot agent", "in_progress", None),
                step(3, "Push", "queued", None),
            ],
        }]
    );
    assert!(jobs[0].started_at.is_some());
    assert_eq!(
        fake.requests().last().unwrap().path,
        format!("/repos/acme/shop/actions/runs/{run_id}/jobs?filter=latest&per_page=100")
    );
}

#[tokio::test]
async fn a_job_log_is_fetched_through_the_redirect_without_the_token() {
    let log = "2024-05-01T13:00:01.0000000Z ##[group]Run featurebot agent\nstep 1 of 3: done ✓\n";
    let (fake, github) = fake(workflow()).await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;
    let ids = fake.set_jobs(
        run_id,
        vec![FakeJob::new("agent", "completed", Some("success")).log("old")],
    );
    fake.set_job_log(ids[0], log);

    let text = github.job_log(ids[0]).await.unwrap();

    assert_eq!(text, log);
    let requests = fake.requests();
    let [.., api, storage] = requests.as_slice() else {
        panic!("{requests:?}");
    };
    assert_eq!(
        api.path,
        format!("/repos/acme/shop/actions/jobs/{}/logs", ids[0])
    );
    assert!(api.header("authorization").is_some());
    assert!(
        storage
            .path
            .contains(&format!("/signedlogcontent/{}?", ids[0])),
        "{}",
        storage.path
    );
    assert_eq!(storage.header("authorization"), None);
}

#[tokio::test]
async fn a_job_without_a_log_is_not_found() {
    let (fake, github) = fake(workflow()).await;
    dispatch(&github, "run-7").await;
    let ids = fake.set_jobs(
        fake.dispatches()[0].run_id,
        vec![FakeJob::new("agent", "queued", None)],
    );

    let err = github.job_log(ids[0]).await.unwrap_err();

    assert!(
        matches!(&err, GithubError::NotFound { what } if what.contains(&format!("job {}", ids[0]))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_cancel_completes_the_run_and_a_second_one_is_fine() {
    let (fake, github) = fake(
        workflow()
            .autopilot(&[("in_progress", None)])
            .with_jobs(vec![FakeJob::new("agent", "in_progress", None)]),
    )
    .await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;
    github.workflow_run(run_id).await.unwrap();

    github.cancel_workflow_run(run_id).await.unwrap();
    // Now completed, GitHub answers 409, which is what the caller wanted anyway.
    github.cancel_workflow_run(run_id).await.unwrap();

    assert_eq!(fake.cancels(), [run_id, run_id]);
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        (
            "POST",
            format!("/repos/acme/shop/actions/runs/{run_id}/cancel").as_str()
        )
    );
    let run = github.workflow_run(run_id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.conclusion.as_deref()),
        ("completed", Some("cancelled"))
    );
    let jobs = github.workflow_jobs(run_id).await.unwrap();
    assert_eq!(jobs[0].conclusion.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn a_file_on_a_branch_is_decoded_and_a_missing_one_is_none() {
    let (fake, github) = fake(workflow()).await;
    let progress = format!(
        "# Progress\n\n{}\n- [x] step 1 ✓\n",
        "long line ".repeat(20)
    );
    fake.put_file(BRANCH, ".featurebot/progress.md", &progress);
    fake.put_file(BRANCH, "tasks/dark mode #2.md", "plan");

    assert_eq!(
        github
            .file_on_branch(".featurebot/progress.md", BRANCH)
            .await
            .unwrap(),
        Some(progress)
    );
    assert_eq!(
        github
            .file_on_branch("tasks/dark mode #2.md", BRANCH)
            .await
            .unwrap(),
        Some("plan".to_string())
    );
    assert_eq!(
        fake.requests().last().unwrap().path,
        "/repos/acme/shop/contents/tasks/dark%20mode%20%232.md?ref=feature%2Fdark-mode"
    );
    assert_eq!(
        github.file_on_branch("missing.md", BRANCH).await.unwrap(),
        None
    );
    assert_eq!(
        github
            .file_on_branch(".featurebot/progress.md", "feature/gone")
            .await
            .unwrap(),
        None
    );
    let err = github.file_on_branch("tasks", BRANCH).await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[tokio::test]
async fn the_pull_request_of_a_branch_is_its_newest_in_any_state() {
    let (fake, github) = fake(workflow()).await;
    let old = fake.open_pull(BRANCH, "main", "Dark mode");
    fake.set_pull_state(old, "closed", false);
    let new = fake.open_pull(BRANCH, "main", "Dark mode, again");
    fake.set_pull_state(new, "closed", true);
    fake.open_pull("feature/other", "main", "Other");

    let pr = github.pull_request_for_branch(BRANCH).await.unwrap();

    assert_eq!(
        pr,
        Some(PullRequest {
            number: new,
            url: format!("{}acme/shop/pull/{new}", fake.api_base()),
            created: false,
        })
    );
    assert_eq!(
        fake.requests().last().unwrap().path,
        "/repos/acme/shop/pulls?state=all&head=acme%3Afeature%2Fdark-mode&per_page=10"
    );
    assert_eq!(
        github
            .pull_request_for_branch("feature/none")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_refused_dispatch_says_what_to_fix() {
    let check = |workflow: Option<FakeWorkflow>, git_ref: &'static str, expected: &'static str| async move {
        let fake = FakeGithub::start("acme", "shop").await;
        if let Some(workflow) = workflow {
            fake.add_workflow(WORKFLOW, workflow);
        }
        let github = GitHub::new(&fake.config()).unwrap();
        let err = github
            .dispatch_workflow(WORKFLOW, git_ref, &inputs("run-7"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), expected, "{err:?}");
        assert!(fake.dispatches().is_empty());
        assert_eq!(fake.requests().len(), 1, "not sent again");
    };
    check(
        None,
        BRANCH,
        "the workflow .github/workflows/featurebot.yml is not in acme/shop on feature/dark-mode; run `featurebot install-workflow` and push it",
    )
    .await;
    check(
        Some(workflow().without_dispatch_trigger()),
        BRANCH,
        "the workflow .github/workflows/featurebot.yml in acme/shop does not have a `workflow_dispatch` trigger (GitHub reads the triggers from the default branch's copy); run `featurebot install-workflow` and push it to the default branch",
    )
    .await;
    check(
        Some(workflow().disabled()),
        BRANCH,
        "the workflow .github/workflows/featurebot.yml is disabled in acme/shop; enable it on the repository's Actions tab",
    )
    .await;
    check(
        Some(workflow().with_inputs(&["correlation_id"])),
        BRANCH,
        "the workflow .github/workflows/featurebot.yml in acme/shop does not take the inputs featurebot sends (Unexpected inputs provided: [\"plan_path\"]); run `featurebot install-workflow` to update it and push it",
    )
    .await;
    check(
        Some(workflow()),
        "missing-branch",
        "GitHub rejected the request (422): No ref found for: missing-branch",
    )
    .await;
}

#[tokio::test]
async fn a_token_without_the_actions_permission_is_told_which_it_needs() {
    let (fake, github) = fake(workflow()).await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;
    fake.deny_actions();

    let write = github
        .dispatch_workflow(WORKFLOW, BRANCH, &inputs("run-8"))
        .await
        .unwrap_err();
    let read = github.workflow_run(run_id).await.unwrap_err();

    for (err, access) in [(write, "write"), (read, "read")] {
        assert!(
            matches!(&err, GithubError::ActionsForbidden { access: a, message, .. }
                if *a == access && message == "Resource not accessible by personal access token"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("`actions: {access}`")), "{text}");
        assert!(text.contains("acme/shop"), "{text}");
    }
}

#[tokio::test]
async fn long_rate_limits_come_back_with_the_wait() {
    let (fake, github) = fake(workflow()).await;
    fake.rate_limit(
        "GET",
        "/actions/workflows/",
        1,
        RateLimit::Primary {
            reset_in_secs: 3600,
        },
    );
    fake.rate_limit(
        "POST",
        "/dispatches",
        1,
        RateLimit::Secondary {
            retry_after_secs: 600,
        },
    );

    let primary = github
        .find_workflow_run(WORKFLOW, BRANCH, "run-7")
        .await
        .unwrap_err();
    let secondary = github
        .dispatch_workflow(WORKFLOW, BRANCH, &inputs("run-7"))
        .await
        .unwrap_err();

    match primary {
        GithubError::RateLimited {
            retry_after: Some(wait),
        } => assert!(
            wait > MAX_WAIT && wait <= Duration::from_secs(3600),
            "{wait:?}"
        ),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(
        matches!(secondary, GithubError::RateLimited { retry_after: Some(wait) } if wait == Duration::from_secs(600)),
        "{secondary:?}"
    );
    assert!(secondary.to_string().contains("600s"), "{secondary}");
    assert_eq!(fake.requests().len(), 2, "neither was sent again");
    assert!(fake.dispatches().is_empty());
}

#[tokio::test]
async fn a_short_rate_limit_on_a_dispatch_is_waited_out_and_sent_again() {
    let (fake, github) = fake(workflow()).await;
    fake.rate_limit(
        "POST",
        "/dispatches",
        1,
        RateLimit::Secondary {
            retry_after_secs: 1,
        },
    );

    dispatch(&github, "run-7").await;

    assert_eq!(fake.requests().len(), 2);
    assert_eq!(fake.dispatches().len(), 1);
}

#[tokio::test]
async fn a_dispatch_without_an_answer_is_not_sent_again() {
    let (fake, github) = fake(workflow()).await;
    fake.fail_route(
        "POST",
        "/dispatches",
        1,
        502,
        r#"{"message":"Server Error"}"#,
        Vec::new(),
    );

    let err = github
        .dispatch_workflow(WORKFLOW, BRANCH, &inputs("run-7"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, GithubError::DispatchUnconfirmed { cause, .. } if cause == "server error 502"),
        "{err:?}"
    );
    assert!(err.to_string().contains("look for it"), "{err}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn reads_are_sent_again_after_a_server_error() {
    let (fake, github) = fake(workflow()).await;
    dispatch(&github, "run-7").await;
    let run_id = fake.dispatches()[0].run_id;
    fake.fail_route(
        "GET",
        &format!("/actions/runs/{run_id}"),
        1,
        500,
        r#"{"message":"Server Error"}"#,
        Vec::new(),
    );

    let run = github.workflow_run(run_id).await.unwrap();

    assert_eq!(run.id, run_id);
    assert_eq!(fake.requests().len(), 3);
}
