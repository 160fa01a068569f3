//! The repository moves while the bot works (issue 12): what featurebot commits is pushed when
//! `repo.push_plans` says so, and when someone else's commit makes a push fail, people are told
//! and nothing committed is lost. Checked with the git command on the bare remote.

use featurebot::core::protocol::{Input, OutputKind};
use featurebot::model::{FeatureId, Priority};

use crate::support::app::TestApp;
use crate::support::fake_llm::Reply;
use crate::support::git::git;
use crate::support::scripts::GOOD_PLAN;

/// The core on a repository with a bare remote and `push_plans = true`, with feature #1's
/// plan committed and pushed.
async fn pushed_plan() -> (TestApp, FeatureId) {
    let mut h = TestApp::builder()
        .with_remote()
        .with_config(|c| c.repo.push_plans = true)
        .build()
        .await;
    h.llm.push(Reply::Text("Which format?".to_string()));
    h.llm
        .push(Reply::Text("CONFIRMED\n- export as CSV".to_string()));
    let (id, _) = h.start_feature("Export CSV").await;
    h.say(id, "CSV").await;
    h.llm.push(Reply::Text(GOOD_PLAN.to_string()));
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
    let warnings: Vec<_> = outputs
        .iter()
        .filter(|o| matches!(o.kind, OutputKind::Warning { .. }))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
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

#[tokio::test]
async fn a_push_refused_after_someone_elses_commit_is_reported_and_the_commit_kept() {
    let (mut h, id) = pushed_plan().await;
    // A teammate merges something: origin/main moves on without the bot.
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
    let theirs = git(&bare, &["rev-parse", "main"]).trim().to_string();

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
    // Nobody's commit is lost: the teammate's stays on the remote, the bot's in the clone.
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), theirs);
    let subject = git(&h.repo.path, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains("priority p0"), "{subject}");
    assert_eq!(h.store().feature(id).unwrap().priority, Priority::P0);
}
