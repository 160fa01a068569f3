//! Agent runs on GitHub Actions, end to end through the core: Approve dispatches the
//! workflow at the fake GitHub, the run is found by its correlation id and followed, and the
//! thread gets the same run events as a local run.

use std::time::Duration;

use featurebot::agent::Event;
use featurebot::config::{ActionsConfig, Config, Executor, Install};
use featurebot::core::protocol::{Input, Output, OutputKind};
use featurebot::core::rules::FOLLOW_UPS_ON_HOST;
use featurebot::discord::Action;
use featurebot::model::{FeatureId, Run, RunState, Status};
use featurebot::plan::file::parse_plan_file;
use featurebot::plan::fingerprint;

use crate::support::app::TestApp;
use crate::support::fake_github::actions::{FakeJob, FakeWorkflow, RateLimit};
use crate::support::fake_github::TOKEN;
use crate::support::git::{git, plan_path_on_main};
use crate::support::ids;
use crate::support::scripts::BRANCH;
use crate::support::scripts::GOOD_PLAN;
use crate::support::wait::eventually_some;

const WORKFLOW: &str = "featurebot.yml";

fn on_actions(config: &mut Config) {
    config.repo.push_plans = true;
    config.agent.executor = Executor::GithubActions;
    config.agent.github_actions = ActionsConfig {
        workflow: WORKFLOW.to_string(),
        install: Install::Git {
            url: "https://github.com/acme/featurebot".to_string(),
            rev: "0123456789abcdef0123456789abcdef01234567".to_string(),
        },
        llm_key_secret: "FEATUREBOT_LLM_API_KEY".to_string(),
        poll_interval: Duration::from_millis(20),
        start_timeout: Duration::from_secs(20),
    };
}

/// A pipeline on Actions with feature #1 planned; returns the plan file's path.
async fn planned() -> (TestApp, FeatureId, String) {
    let mut p = TestApp::builder()
        .with_remote()
        .with_github()
        .with_config(on_actions)
        .build()
        .await;
    let id = p.planned().await;
    let path = p.store().plans(id).unwrap().pop().unwrap().path;
    (p, id, path)
}

fn running_job(log: &str) -> FakeJob {
    FakeJob::new("agent", "in_progress", None)
        .step("Check out", "completed", Some("success"))
        .step("Install featurebot", "completed", Some("success"))
        .step("Run the plan", "in_progress", None)
        .log(log)
}

/// The plan as the runner pushes it after its first `done` steps.
fn ticked(done: usize) -> String {
    (0..done).fold(GOOD_PLAN.to_string(), |plan, i| {
        featurebot::plan::tick_step(&plan, i)
    })
}

fn events(outputs: &[Output]) -> Vec<&Event> {
    outputs
        .iter()
        .filter_map(|o| match &o.kind {
            OutputKind::RunEvent { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

fn remote_states(outputs: &[Output]) -> Vec<String> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            Event::Remote { state, .. } => Some(state.clone()),
            _ => None,
        })
        .collect()
}

async fn approve(p: &mut TestApp, id: FeatureId) -> (Run, Vec<Output>) {
    p.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    p.until_run_ended().await
}

/// Polls the store until the feature's last run satisfies `condition`.
async fn wait_for_run(p: &TestApp, id: FeatureId, condition: impl Fn(&Run) -> bool) -> Run {
    eventually_some("the run", Duration::from_secs(20), || {
        let run = p.store().runs(id).unwrap().pop()?;
        condition(&run).then_some(run)
    })
    .await
}

#[tokio::test]
async fn a_dispatched_run_goes_queued_then_running_then_relays_the_pull_request() {
    let (mut p, id, plan_path) = planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[
                ("queued", None),
                ("in_progress", None),
                ("in_progress", None),
                ("completed", Some("success")),
            ])
            .with_jobs(vec![running_job(
                "step 1/2 committed abc (checks passed)\n",
            )]),
    );
    // What the runner pushes: both steps ticked in the branch's plan file, and the PR.
    p.github().put_file(BRANCH, &plan_path, &ticked(2));
    let number = p.github().open_pull(BRANCH, "main", "Export CSV");

    let (run, outputs) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let pr_url = run.pr_url.clone().expect("the pull request is relayed");
    assert!(pr_url.ends_with(&format!("/pull/{number}")), "{pr_url}");
    assert_eq!(run.next_step, 2);
    assert!(run.steps.iter().all(|s| s.green == Some(true)));
    assert_eq!(p.status(id), Status::PrOpen);

    // One dispatch, on the base branch, with the run's inputs and no secret in them.
    let dispatches = p.github().dispatches();
    assert_eq!(dispatches.len(), 1);
    let inputs = &dispatches[0].inputs;
    assert_eq!(dispatches[0].git_ref, "main");
    assert_eq!(inputs["branch"], BRANCH);
    assert_eq!(inputs["plan_file"], plan_path.as_str());
    assert_eq!(inputs["feature_id"], "1");
    let correlation = inputs["correlation_id"].as_str().unwrap();
    assert_eq!(
        run.remote.as_ref().unwrap().correlation_id,
        correlation,
        "the record keeps the correlation id"
    );
    // The approved plan's fingerprint: the one the runner finds in the pushed plan file.
    let pushed = git(
        p.repo.remote.as_ref().unwrap(),
        &["show", &format!("main:{plan_path}")],
    );
    let pushed = parse_plan_file(&pushed).unwrap();
    assert_eq!(
        inputs["plan_sha256"],
        fingerprint(&pushed.markdown).as_str()
    );
    let all = serde_json::to_string(inputs).unwrap();
    assert!(!all.contains(TOKEN), "the token is not an input: {all}");
    assert!(!all.contains("test-key"), "the LLM key is not an input");

    // The thread sees the run on GitHub: queued, running with the job's step, then the steps.
    let states = remote_states(&outputs);
    assert!(states.iter().any(|s| s == "queued"), "{states:?}");
    assert!(
        states.iter().any(|s| s == "running: Run the plan"),
        "{states:?}"
    );
    let committed = events(&outputs)
        .iter()
        .filter(|e| matches!(e, Event::StepCommitted { .. }))
        .count();
    assert_eq!(committed, 2, "{outputs:?}");
    assert!(
        events(&outputs).iter().any(|e| matches!(
            e,
            Event::Finished { pull_request: Some(pr), .. } if pr.number == number
        )),
        "{outputs:?}"
    );
    // A follow-up asked for anyway is refused, and the open pull request stays tracked.
    let outputs = p.send(Input::FollowUp { feature: id }).await;
    assert!(
        outputs.iter().any(|o| matches!(
            &o.kind,
            OutputKind::Rejected { message } if message == FOLLOW_UPS_ON_HOST
        )),
        "{outputs:?}"
    );
    assert_eq!(p.status(id), Status::PrOpen);
    assert_eq!(p.github().dispatches().len(), 1, "nothing was dispatched");
}

#[tokio::test]
async fn a_failed_run_attaches_the_log_excerpt_and_retry_dispatches_a_resume() {
    let (mut p, id, plan_path) = planned().await;
    let log = format!(
        "2026-11-26T10:00:00.0000000Z run started on {BRANCH}: 2 steps\n\
         2026-11-26T10:00:05.0000000Z step 1/2 committed abc123 (checks passed)\n\
         2026-11-26T10:00:09.0000000Z featurebot: checks failed: step 2, attempt 1: `cargo test` failed:\n\
         2026-11-26T10:00:09.0000000Z     thread 'export' panicked: assertion failed (token {TOKEN})\n\
         2026-11-26T10:00:10.0000000Z ##[error]Process completed with exit code 1.\n"
    );
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None), ("completed", Some("failure"))])
            .with_jobs(vec![FakeJob::new("agent", "completed", Some("failure"))
                .step("Run the plan", "completed", Some("failure"))
                .log(&log)]),
    );
    p.github().put_file(BRANCH, &plan_path, &ticked(1));

    let (run, outputs) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.clone().unwrap();
    assert!(
        message.contains("ended `failure` during step 2 of 2"),
        "{message}"
    );
    assert!(message.contains("Retry"), "{message}");
    assert_eq!(p.status(id), Status::Failed);
    let (tail, log_path) = events(&outputs)
        .into_iter()
        .find_map(|e| match e {
            Event::ChecksFailed { tail, log, .. } => Some((tail.clone(), log.clone())),
            _ => None,
        })
        .expect("the failure is shown with the log");
    assert!(
        tail.starts_with("featurebot: checks failed: step 2") && tail.contains("assertion failed"),
        "{tail}"
    );
    assert!(!tail.contains(TOKEN), "{tail}");
    assert!(
        !tail.contains("2026-11-26T"),
        "timestamps are removed: {tail}"
    );
    let saved = std::fs::read_to_string(&log_path).unwrap();
    assert!(saved.contains("assertion failed"), "{saved}");
    assert!(!saved.contains(TOKEN), "the saved log is redacted");

    // Retry: a new dispatch that resumes the branch, with a new correlation id.
    let first = p.github().dispatches()[0].inputs["correlation_id"].clone();
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("completed", Some("success"))])
            .with_jobs(vec![running_job("")]),
    );
    p.github().put_file(BRANCH, &plan_path, &ticked(2));
    p.github().open_pull(BRANCH, "main", "Export CSV");
    p.send(Input::ResumeRun { feature: id }).await;
    let (run, _) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let dispatches = p.github().dispatches();
    assert_eq!(dispatches.len(), 2);
    assert_eq!(dispatches[1].inputs["resume"], "true");
    assert_ne!(dispatches[1].inputs["correlation_id"], first);
}

#[tokio::test]
async fn cancel_cancels_the_actions_run_and_waits_for_github_to_confirm() {
    let (mut p, id, _) = planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None)])
            .with_jobs(vec![running_job("")]),
    );
    p.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    let found = wait_for_run(&p, id, |r| {
        r.remote.as_ref().is_some_and(|r| r.run_id.is_some())
    })
    .await;
    p.send(Input::CancelRun { feature: id }).await;
    let (run, outputs) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Cancelled, "{:?}", run.message);
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .contains("cancelled on GitHub Actions"),
        "{:?}",
        run.message
    );
    assert_eq!(
        p.github().cancels(),
        vec![found.remote.unwrap().run_id.unwrap()]
    );
    assert!(remote_states(&outputs).iter().any(|s| s == "cancelling"));
    assert_eq!(p.status(id), Status::Cancelled);
}

#[tokio::test]
async fn a_restart_follows_the_same_run_again_without_a_second_dispatch() {
    let (mut p, id, plan_path) = planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None)])
            .with_jobs(vec![running_job("")]),
    );
    p.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    let found = wait_for_run(&p, id, |r| {
        r.remote.as_ref().is_some_and(|r| r.run_id.is_some())
    })
    .await;
    let run_id = found.remote.unwrap().run_id.unwrap();

    // featurebot stops: the run goes on on GitHub, nothing is cancelled there.
    p.app().shutdown().await;
    assert!(p.github().cancels().is_empty());
    let mut p = p.restart().await;
    p.app().recover().await;
    p.github().put_file(BRANCH, &plan_path, &ticked(2));
    p.github().open_pull(BRANCH, "main", "Export CSV");
    p.github()
        .set_run_status(run_id, "completed", Some("success"));
    let (run, outputs) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(run.pr_url.is_some());
    assert_eq!(p.github().dispatches().len(), 1, "no second dispatch");
    assert!(
        remote_states(&outputs)
            .iter()
            .any(|s| s.contains("again after a restart")),
        "{outputs:?}"
    );
    assert_eq!(p.status(id), Status::PrOpen);
}

#[tokio::test]
async fn a_missing_workflow_fails_the_run_saying_to_install_it() {
    let (mut p, id, _) = planned().await;
    let (run, _) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.unwrap();
    assert!(message.contains("featurebot install-workflow"), "{message}");
    assert!(message.contains(WORKFLOW), "{message}");
    p.second_feature_is_served().await;
}

#[tokio::test]
async fn a_run_that_never_appears_is_reported_after_the_start_timeout() {
    let mut p = TestApp::builder()
        .with_remote()
        .with_github()
        .with_config(on_actions)
        .with_config(|c| c.agent.github_actions.start_timeout = Duration::from_millis(300))
        .build()
        .await;
    let id = p.planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}").never_appearing(),
    );
    let (run, _) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.unwrap();
    assert!(message.contains("did not appear"), "{message}");
    assert!(message.contains("Actions tab"), "{message}");
}

#[tokio::test]
async fn rate_limits_while_polling_are_waited_out() {
    let (mut p, id, plan_path) = planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None), ("completed", Some("success"))])
            .with_jobs(vec![running_job("")]),
    );
    p.github().put_file(BRANCH, &plan_path, &ticked(2));
    p.github().open_pull(BRANCH, "main", "Export CSV");
    p.github().rate_limit(
        "GET",
        "/actions/runs/",
        2,
        RateLimit::Secondary {
            retry_after_secs: 1,
        },
    );
    let (run, _) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(p.github().dispatches().len(), 1);
}

#[tokio::test]
async fn a_run_no_runner_picks_up_is_cancelled_and_reported_after_the_start_timeout() {
    let mut p = TestApp::builder()
        .with_remote()
        .with_github()
        .with_config(on_actions)
        .with_config(|c| c.agent.github_actions.start_timeout = Duration::from_millis(300))
        .build()
        .await;
    let id = p.planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}").autopilot(&[("queued", None)]),
    );
    let (run, _) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.unwrap();
    assert!(message.contains("still queued"), "{message}");
    assert!(message.contains("runs-on"), "{message}");
    let run_id = run.remote.unwrap().run_id.unwrap();
    assert_eq!(
        p.github().cancels(),
        vec![run_id],
        "the stuck run is cancelled"
    );
}

#[tokio::test]
async fn the_thread_shows_the_run_on_github_and_its_pull_request() {
    use crate::support::app::ADMIN;
    use crate::support::fake_discord::contents;
    let bot = TestApp::bot().with_config(on_actions).build().await;
    bot.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("queued", None), ("in_progress", None)])
            .with_jobs(vec![running_job("")]),
    );
    let plan = bot.planned_in_discord().await;
    // A double click.
    bot.discord().click(ADMIN, plan, &ids::approve(1, 1)).await;
    bot.discord().click(ADMIN, plan, &ids::approve(1, 1)).await;
    let card_says = |text: &'static str| {
        move |b: &TestApp| {
            contents(&b.bot_messages())
                .iter()
                .any(|c| c.starts_with("**Agent run**") && c.contains(text))
        }
    };
    bot.wait_for(
        "the card showing the run",
        card_says("GitHub Actions: running: Run the plan · [the run](http"),
    )
    .await;

    // The runner pushes step 1, then finishes with the pull request.
    let path = plan_path_on_main(&bot.repo.path);
    bot.github().put_file(BRANCH, &path, &ticked(1));
    bot.wait_for(
        "step 1 ticked on the card",
        card_says("✅ 1. Add GET /export.csv"),
    )
    .await;
    bot.github().put_file(BRANCH, &path, &ticked(2));
    let number = bot.github().open_pull(BRANCH, "main", "Export CSV");
    let run_id = bot.github().dispatches()[0].run_id;
    bot.github()
        .set_run_status(run_id, "completed", Some("success"));
    let pull = format!("/pull/{number}\n");
    bot.wait_for("the pull request", |b| {
        contents(&b.bot_messages())
            .iter()
            .any(|c| c.starts_with("✅ Pull request: ") && c.contains(&pull))
    })
    .await;
    // No Follow up: it cannot run on Actions, and the message says what to do instead.
    let messages = contents(&bot.bot_messages());
    let message = messages.iter().find(|c| c.contains(&pull)).unwrap();
    assert!(message.ends_with(FOLLOW_UPS_ON_HOST), "{message}");
    assert!(bot.message_with_button(Action::FollowUp).is_none());
    bot.wait_for(
        "the card keeping the run's link",
        card_says("finished · [the Actions run](http"),
    )
    .await;
    assert_eq!(
        bot.github().dispatches().len(),
        1,
        "one click, one dispatch"
    );
}

#[tokio::test]
async fn a_refused_dispatch_fails_the_run_naming_the_permission() {
    let (mut p, id, _) = planned().await;
    p.github()
        .add_workflow(WORKFLOW, FakeWorkflow::new("featurebot {correlation_id}"));
    p.github().deny_actions();
    let (run, _) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.unwrap();
    assert!(
        message.starts_with("GitHub did not start the run"),
        "{message}"
    );
    assert!(message.contains("`actions: write`"), "{message}");
    assert!(!message.contains(TOKEN), "{message}");
    assert!(p.github().dispatches().is_empty());
}

#[tokio::test]
async fn a_run_github_stops_answering_about_fails_after_a_few_polls() {
    let (mut p, id, _) = planned().await;
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None)])
            .with_jobs(vec![running_job("")]),
    );
    p.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    wait_for_run(&p, id, |r| {
        r.remote.as_ref().is_some_and(|r| r.run_id.is_some())
    })
    .await;
    // The token loses its access to Actions while the run goes on.
    p.github().deny_actions();
    let (run, _) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Failed);
    let message = run.message.unwrap();
    assert!(
        message.contains("lost track of the GitHub Actions run"),
        "{message}"
    );
    assert!(message.contains("`actions: read`"), "{message}");
    assert_eq!(p.status(id), Status::Failed);
}

/// A job that fails before featurebot runs (its install step): the thread names the step and
/// shows the cause printed above the runner's closing line.
#[tokio::test]
async fn a_failed_install_step_shows_its_cause_and_name() {
    let (mut p, id, _) = planned().await;
    let log = "2026-12-04T10:00:00.0000000Z ##[group]Run cargo install --locked --git https://github.com/x/y featurebot\n\
               2026-12-04T10:00:00.0000000Z shell: /usr/bin/bash -e {0}\n\
               2026-12-04T10:00:00.0000000Z ##[endgroup]\n\
               2026-12-04T10:00:01.0000000Z error: failed to clone into: /home/runner/.cargo/git/db/y\n\
               2026-12-04T10:00:01.0000000Z Caused by: remote: Repository not found.\n\
               2026-12-04T10:00:01.0000000Z ##[error]Process completed with exit code 101.\n";
    p.github().add_workflow(
        WORKFLOW,
        FakeWorkflow::new("featurebot {correlation_id}")
            .autopilot(&[("in_progress", None), ("completed", Some("failure"))])
            .with_jobs(vec![FakeJob::new("agent", "completed", Some("failure"))
                .step("Check out", "completed", Some("success"))
                .step("Install featurebot", "completed", Some("failure"))
                .step("Run the plan", "completed", Some("skipped"))
                .log(log)]),
    );
    let (run, outputs) = approve(&mut p, id).await;
    assert_eq!(run.state, RunState::Failed);
    let (command, tail) = events(&outputs)
        .into_iter()
        .find_map(|e| match e {
            Event::ChecksFailed { command, tail, .. } => Some((command.clone(), tail.clone())),
            _ => None,
        })
        .expect("the failure is shown");
    assert_eq!(
        command,
        "GitHub Actions job `agent`, step `Install featurebot` (failure)"
    );
    assert!(tail.contains("Repository not found"), "{tail}");
    assert!(tail.starts_with("error: failed to clone"), "{tail}");
    assert!(!tail.contains("shell: /usr/bin/bash"), "{tail}");
}
