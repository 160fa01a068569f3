//! The repository moves while the bot works (issue 12): what featurebot commits is pushed when
//! `repo.push_plans` says so, on top of whatever others pushed, never forced; a push that still
//! fails is said in the thread and nothing committed is lost. Checked with the git command on
//! the bare remote.

use featurebot::core::protocol::{Input, OutputKind};
use featurebot::model::{FeatureId, Priority};

use crate::support::app::TestApp;
use crate::support::git::git;
use crate::support::scripts::{ask, confirm, plan_reply};

/// The core on a repository with a bare remote and `push_plans = true`, with feature #1's
/// plan committed and pushed.
async fn pushed_plan() -> (TestApp, FeatureId) {
    let mut h = TestApp::builder()
        .with_remote()
        .with_config(|c| c.repo.push_plans = true)
        .build()
        .await;
    ask(&h.llm, "Which format?");
    confirm(&h.llm, &["export as CSV"]);
    let (id, _) = h.start_feature("Export CSV").await;
    h.say(id, "CSV").await;
    plan_reply(&h.llm);
    h.send(Input::GeneratePlan {
        feature: id,
        force: false,
    })
    .await;
    let bare = h.repo.remote.clone().unwrap();
    let commit = h.store().plans(id).unwrap()[0].commit.clone();
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
    (h, id)
}

#[tokio::test]
async fn front_matter_updates_are_pushed_like_the_plan() {
    let (mut h, id) = pushed_plan().await;
    let path = h.store().plans(id).unwrap()[0].path.clone();
    let outputs = h
        .send(Input::SetPriority {
            feature: id,
            priority: Priority::P1,
        })
        .await;
    assert_no_warning(&outputs);
    let bare = h.repo.remote.clone().unwrap();
    assert_eq!(
        git(&bare, &["rev-parse", "main"]).trim(),
        git(&h.repo.path, &["rev-parse", "main"]).trim(),
        "the front-matter commit is on the remote"
    );
    let subject = git(&bare, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains("priority p1"), "{subject}");
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(file.contains("\npriority: p1\n"), "{file}");
}

/// A teammate pushes to `origin/main` (a merged pull request): the bot's next commits, a
/// front-matter update and another feature's plan, are built on the remote's tip and pushed
/// without force, the teammate's commit stays, and the clone's checkout is left as it was.
#[tokio::test]
async fn commits_after_a_teammates_push_go_on_top_of_it() {
    let (mut h, id) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    let theirs = teammate_pushes(&h);

    let outputs = h
        .send(Input::SetPriority {
            feature: id,
            priority: Priority::P0,
        })
        .await;
    assert_no_warning(&outputs);
    let tip = git(&bare, &["rev-parse", "main"]).trim().to_string();
    assert_eq!(
        git(&bare, &["rev-parse", "main^"]).trim(),
        theirs,
        "built on the teammate's commit"
    );
    let subject = git(&bare, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains("priority p0"), "{subject}");
    assert_eq!(
        git(&bare, &["show", "main:NOTES.md"]),
        "merged by a person\n",
        "nobody's commit is lost"
    );
    assert_eq!(
        git(&h.repo.path, &["status", "--porcelain"]),
        "",
        "the checkout is untouched"
    );

    // Another feature's plan goes on top as well.
    ask(&h.llm, "Which roles?");
    confirm(&h.llm, &["admins only"]);
    let (second, _) = h.start_feature("Audit log").await;
    h.say(second, "admins").await;
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: second,
            force: false,
        })
        .await;
    assert_no_warning(&outputs);
    let plan = h.store().plans(second).unwrap()[0].clone();
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), plan.commit);
    assert_eq!(git(&bare, &["rev-parse", "main^"]).trim(), tip);
    let file = git(&bare, &["show", &format!("main:{}", plan.path)]);
    assert!(file.contains("Audit log"), "{file}");
}

/// A remote that refuses the push for another reason than having moved (here: it is gone) keeps
/// the commit in the clone and says so.
#[tokio::test]
async fn a_refused_push_is_reported_and_the_commit_kept() {
    let (mut h, id) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    std::fs::remove_dir_all(&bare).unwrap();
    let outputs = h
        .send(Input::SetPriority {
            feature: id,
            priority: Priority::P0,
        })
        .await;
    let warning = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no warning: {outputs:?}"));
    assert!(
        warning.starts_with("the change is saved and committed, but pushing the plan file failed"),
        "{warning}"
    );
    let subject = git(&h.repo.path, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains("priority p0"), "{subject}");
    assert_eq!(h.store().feature(id).unwrap().priority, Priority::P0);
}

/// A teammate's clone commits `NOTES.md` and pushes it to the bare remote; returns the commit.
fn teammate_pushes(h: &TestApp) -> String {
    let bare = h.repo.remote.clone().unwrap();
    let other = h.repo.dir.path().join("teammate");
    git(
        h.repo.dir.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "teammate"],
    );
    std::fs::write(other.join("NOTES.md"), "merged by a person\n").unwrap();
    git(&other, &["add", "NOTES.md"]);
    git(
        &other,
        &[
            "-c",
            "user.name=Pat",
            "-c",
            "user.email=pat@test.invalid",
            "commit",
            "--quiet",
            "-m",
            "a teammate's change",
        ],
    );
    git(&other, &["push", "--quiet", "origin", "main"]);
    git(&bare, &["rev-parse", "main"]).trim().to_string()
}

fn assert_no_warning(outputs: &[featurebot::core::protocol::Output]) {
    let warnings: Vec<_> = outputs
        .iter()
        .filter(|o| matches!(o.kind, OutputKind::Warning { .. }))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A reviewer commits on the pull request's branch (GitHub's "Commit suggestion"); the follow-up
/// run fetches the branch, continues on top of the reviewer's commit and pushes without force.
#[tokio::test]
async fn a_follow_up_builds_on_a_reviewers_commit() {
    use crate::support::app::alice;
    use crate::support::scripts::{call, finish_steps, BRANCH};
    use featurebot::model::RunState;
    use serde_json::json;

    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let bare = p.repo.remote.clone().unwrap();
    let bots = git(&bare, &["rev-parse", BRANCH]).trim().to_string();

    // The reviewer's commit, pushed to the pull request's branch from their own clone.
    let reviewer = p.repo.dir.path().join("reviewer");
    git(
        p.repo.dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            BRANCH,
            bare.to_str().unwrap(),
            "reviewer",
        ],
    );
    std::fs::write(reviewer.join("export.txt"), "GET /export.csv?all=1\n").unwrap();
    git(
        &reviewer,
        &[
            "-c",
            "user.name=Rae",
            "-c",
            "user.email=rae@test.invalid",
            "commit",
            "--quiet",
            "-am",
            "Apply suggestion from review",
        ],
    );
    git(&reviewer, &["push", "--quiet", "origin", BRANCH]);
    let theirs = git(&bare, &["rev-parse", BRANCH]).trim().to_string();
    assert_ne!(theirs, bots);

    p.send(Input::FollowUp { feature: id }).await;
    p.llm.push(call(
        "write_file",
        json!({"path": "button.txt", "content": "Download\n"}),
    ));
    finish_steps(&p.llm, &["renamed"]);
    p.send(Input::Message {
        feature: id,
        author: alice(),
        text: "Rename the button to Download".to_string(),
        source_id: None,
    })
    .await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        theirs,
        "the follow-up is on top of the reviewer's commit"
    );
    assert_eq!(
        git(&bare, &["show", &format!("{BRANCH}:export.txt")]),
        "GET /export.csv?all=1\n",
        "the reviewer's change is kept"
    );
    assert_eq!(
        git(&bare, &["show", &format!("{BRANCH}:button.txt")]),
        "Download\n"
    );
}

/// A pipeline with GitHub whose feature #1 ran to an open pull request; returns its number.
async fn with_open_pull_request() -> (TestApp, FeatureId, u64) {
    use featurebot::model::RunState;
    let mut p = TestApp::builder().with_remote().with_github().build().await;
    let id = p.planned().await;
    let run = p.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let url = run.pr_url.expect("a pull request");
    let number = featurebot::github::pr_number_from_url(&url).unwrap();
    (p, id, number)
}

fn rejections(outputs: &[featurebot::core::protocol::Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match &o.kind {
            OutputKind::Rejected { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_follow_up_on_a_pull_request_merged_meanwhile_says_so_and_tracks_the_merge() {
    use featurebot::model::Status;
    let (mut p, id, number) = with_open_pull_request().await;
    // Merged on GitHub; the bot's polling has not seen it yet.
    p.github().set_pull_state(number, "closed", true);
    assert_eq!(p.status(id), Status::PrOpen);

    let outputs = p.send(Input::FollowUp { feature: id }).await;
    let refused = rejections(&outputs);
    assert_eq!(refused.len(), 1, "{outputs:?}");
    assert!(
        refused[0].contains(&format!("pull request #{number} is merged"))
            && refused[0].contains("/feature"),
        "{refused:?}"
    );
    assert!(!outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::FollowUpReady)));
    assert!(outputs.iter().any(|o| matches!(
        o.kind,
        OutputKind::PullRequestChanged {
            status: Status::Merged
        }
    )));
    assert_eq!(p.status(id), Status::Merged, "the merge is tracked");
}

#[tokio::test]
async fn a_follow_up_on_a_closed_pull_request_says_to_reopen_it() {
    use featurebot::model::Status;
    let (mut p, id, number) = with_open_pull_request().await;
    p.github().set_pull_state(number, "closed", false);
    let outputs = p.send(Input::FollowUp { feature: id }).await;
    let refused = rejections(&outputs);
    assert!(
        refused.len() == 1 && refused[0].contains("closed without merging"),
        "{outputs:?}"
    );
    assert_eq!(p.status(id), Status::Closed);
}

#[tokio::test]
async fn a_failed_follow_up_leaves_the_pull_request_open_and_tracked() {
    use crate::support::app::alice;
    use crate::support::fake_llm::Reply;
    use featurebot::model::{RunState, Status};
    let (mut p, id, number) = with_open_pull_request().await;
    let outputs = p.send(Input::FollowUp { feature: id }).await;
    assert!(outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::FollowUpReady)));
    // The LLM refuses the follow-up's request: the run fails.
    p.llm.push(Reply::Status {
        status: 400,
        headers: Vec::new(),
        body: r#"{"error":{"message":"Invalid request","type":"invalid_request_error","param":null,"code":null}}"#.to_string(),
    });
    p.send(Input::Message {
        feature: id,
        author: alice(),
        text: "Rename the button".to_string(),
        source_id: None,
    })
    .await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    assert_eq!(p.status(id), Status::PrOpen, "not failed: the PR is open");
    assert!(run.pr_url.unwrap().ends_with(&format!("/pull/{number}")));
    // Still tracked: the merge moves the feature.
    p.github().set_pull_state(number, "closed", true);
    p.send(Input::RefreshPullRequests).await;
    assert_eq!(p.status(id), Status::Merged);
}
