//! `core::rules::may`, as data: for a feature in a given state (its status, plan version, last
//! run, issue), whether each intent may act, and the words of the refusal. The Discord click
//! path and the core both ask this function, so these are the words people see in both.

use featurebot::core::rules::{may, Intent, Refusal, FOLLOW_UPS_ON_HOST};
use featurebot::model::{Author, Feature, FeatureId, Place, Priority, Run, RunState, Status};
use time::macros::datetime;

/// The state a check starts from: feature #3, planned at version 2, no run yet.
#[derive(Clone)]
struct State {
    status: Status,
    plan_version: u32,
    issue: Option<u64>,
    /// The latest run: its number, state, next step and number of steps.
    run: Option<(u32, RunState, usize, usize)>,
}

const PLANNED: State = State {
    status: Status::Planned,
    plan_version: 2,
    issue: None,
    run: None,
};

impl State {
    fn status(self, status: Status) -> State {
        State { status, ..self }
    }
    fn run(self, number: u32, state: RunState, next_step: usize, steps: usize) -> State {
        State {
            run: Some((number, state, next_step, steps)),
            ..self
        }
    }
}

enum Expected {
    Allowed,
    Refused(&'static str),
    AlreadyDone(&'static str),
}

fn check(state: State, intent: Intent, expected: Expected) {
    let at = datetime!(2026-12-03 10:00:00 UTC);
    let feature = Feature {
        id: FeatureId(3),
        title: "Export CSV".to_string(),
        requester: Author {
            id: "u1".to_string(),
            name: "ann".to_string(),
        },
        place: Place::Console,
        status: state.status,
        priority: Priority::P2,
        created_at: at,
        updated_at: at,
        summary: None,
        plan_version: state.plan_version,
        plan_path: None,
        usage: Default::default(),
        labels: Vec::new(),
        issue: state
            .issue
            .map(|n| (n, format!("https://github.com/acme/shop/issues/{n}"))),
        repo: None,
        plan_conflict: None,
    };
    let run = state.run.map(|(number, run_state, next_step, steps)| Run {
        feature: FeatureId(3),
        number,
        plan_version: 2,
        branch: featurebot::model::BranchName::parse("featurebot/3-export-csv").unwrap(),
        worktree: String::new(),
        steps: (0..steps)
            .map(|i| featurebot::model::StepRecord {
                title: format!("step {i}"),
                green: None,
                commit: None,
                summary: None,
            })
            .collect(),
        next_step,
        state: run_state,
        pr_url: None,
        message: None,
        usage: Default::default(),
        follow_up: None,
        remote: None,
        started_at: at,
        updated_at: at,
    });
    let got = may(&feature, run.as_ref(), intent);
    let want = match expected {
        Expected::Allowed => Ok(()),
        Expected::Refused(message) => Err(Refusal {
            message: message.to_string(),
            already_done: false,
        }),
        Expected::AlreadyDone(message) => Err(Refusal {
            message: message.to_string(),
            already_done: true,
        }),
    };
    assert_eq!(got, want, "{intent:?} on a {} feature", state.status);
}

#[test]
fn plan_buttons() {
    use Expected::*;
    check(PLANNED, Intent::Approve { version: 2 }, Allowed);
    check(
        PLANNED,
        Intent::Approve { version: 1 },
        Refused("this is plan version 1; version 2 is current, use the buttons under it"),
    );
    check(
        PLANNED.status(Status::Approved),
        Intent::Approve { version: 2 },
        AlreadyDone("plan version 2 is already approved"),
    );
    check(
        PLANNED.status(Status::Running),
        Intent::Approve { version: 2 },
        Refused("feature #3 is running; this no longer applies"),
    );
    check(
        State {
            plan_version: 0,
            ..PLANNED.status(Status::Gathering)
        },
        Intent::Approve { version: 0 },
        Refused("feature #3 has no plan yet"),
    );
    check(PLANNED, Intent::RequestChanges { version: 2 }, Allowed);
    check(
        PLANNED.status(Status::Gathering),
        Intent::RequestChanges { version: 2 },
        AlreadyDone("changes were already requested: just write what to change"),
    );
    check(PLANNED, Intent::Discard { version: 2 }, Allowed);
    check(
        PLANNED.status(Status::Discarded),
        Intent::Discard { version: 2 },
        AlreadyDone("feature #3 was discarded"),
    );
    check(
        PLANNED.status(Status::Running),
        Intent::Discard { version: 2 },
        Refused("feature #3 is running; it cannot be discarded now"),
    );
    check(
        PLANNED.status(Status::Discarded),
        Intent::Approve { version: 2 },
        Refused("feature #3 was discarded"),
    );
}

#[test]
fn confirmation_buttons() {
    use Expected::*;
    let confirmed = PLANNED.status(Status::Confirmed);
    check(
        confirmed.clone(),
        Intent::GeneratePlan { version: 2 },
        Allowed,
    );
    check(confirmed, Intent::KeepRefining { version: 2 }, Allowed);
    check(
        PLANNED,
        Intent::GeneratePlan { version: 1 },
        Refused("plan version 2 is already written; use the buttons under it"),
    );
    check(
        PLANNED.status(Status::Gathering),
        Intent::GeneratePlan { version: 2 },
        Refused("the conversation was reopened; wait for the requirements to be confirmed again"),
    );
    check(
        PLANNED.status(Status::Gathering),
        Intent::KeepRefining { version: 2 },
        AlreadyDone("the conversation is already open: just write your message"),
    );
    check(
        PLANNED,
        Intent::KeepRefining { version: 2 },
        Refused("feature #3 is planned; this no longer applies"),
    );
}

#[test]
fn run_buttons() {
    use Expected::*;
    let running = PLANNED
        .status(Status::Running)
        .run(1, RunState::Running, 1, 3);
    check(running.clone(), Intent::CancelRun, Allowed);
    check(
        PLANNED,
        Intent::CancelRun,
        Refused("no agent run is going for this feature"),
    );
    check(running.clone(), Intent::DecideStep { step: 2 }, Allowed);
    check(
        running.clone(),
        Intent::DecideStep { step: 1 },
        Refused("that step is no longer waiting for approval"),
    );
    check(
        PLANNED
            .status(Status::Failed)
            .run(1, RunState::Failed, 1, 3),
        Intent::DecideStep { step: 2 },
        Refused("no run of this feature is waiting for approval"),
    );
    check(
        running,
        Intent::ResumeRun { run: 1 },
        Refused("a run is already going for this feature"),
    );
    // After a stop the feature is `failed` and its run `interrupted`.
    let interrupted = PLANNED
        .status(Status::Failed)
        .run(2, RunState::Interrupted, 1, 3);
    check(interrupted.clone(), Intent::ResumeRun { run: 2 }, Allowed);
    check(interrupted.clone(), Intent::AbortRun { run: 2 }, Allowed);
    check(
        interrupted,
        Intent::ResumeRun { run: 1 },
        Refused("that run is not the feature's latest"),
    );
    let failed_at_the_push = PLANNED
        .status(Status::Failed)
        .run(1, RunState::Failed, 3, 3);
    check(
        failed_at_the_push.clone(),
        Intent::ResumeRun { run: 1 },
        Allowed,
    );
    check(
        failed_at_the_push,
        Intent::AbortRun { run: 1 },
        AlreadyDone("that run is already over"),
    );
    check(
        PLANNED
            .status(Status::Closed)
            .run(1, RunState::Finished, 3, 3),
        Intent::ResumeRun { run: 1 },
        Refused("feature #3 has no run to resume"),
    );
    check(
        PLANNED,
        Intent::AbortRun { run: 0 },
        Refused("feature #3 has no run to abort"),
    );
}

#[test]
fn pull_request_and_issue_buttons() {
    use Expected::*;
    let on_host = Intent::FollowUp { on_host: true };
    check(PLANNED.status(Status::PrOpen), on_host, Allowed);
    check(
        PLANNED.status(Status::Merged),
        on_host,
        Refused("feature #3 is merged; a follow-up needs an open pull request"),
    );
    // Runs go to GitHub Actions: no follow-up, and nothing changes.
    check(
        PLANNED.status(Status::PrOpen),
        Intent::FollowUp { on_host: false },
        Refused(FOLLOW_UPS_ON_HOST),
    );
    check(PLANNED, Intent::CreateIssue, Allowed);
    check(
        State {
            issue: Some(12),
            ..PLANNED
        },
        Intent::CreateIssue,
        AlreadyDone("GitHub issue #12 already mirrors this feature"),
    );
}
