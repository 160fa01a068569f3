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
        warning.starts_with("the change is saved, but pushing the plan file failed"),
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
    commit_as(&other, "Pat", "a teammate's change");
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
    commit_as(&reviewer, "Rae", "Apply suggestion from review");
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
    let (run, outputs) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        theirs,
        "the follow-up is on top of the reviewer's commit"
    );
    // The thread hears of it.
    assert!(
        outputs.iter().any(|o| matches!(
            &o.kind,
            OutputKind::RunEvent {
                event: featurebot::agent::Event::BranchCaughtUp { theirs: t, merged: false }
            } if *t == theirs
        )),
        "{outputs:?}"
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

/// A teammate rewrites a line of feature #1's plan on `origin/main`; returns their commit.
fn teammate_edits_the_plan(h: &TestApp, id: FeatureId) -> String {
    let bare = h.repo.remote.clone().unwrap();
    let path = h.store().plans(id).unwrap()[0].path.clone();
    let other = h.repo.dir.path().join("editor");
    git(
        h.repo.dir.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "editor"],
    );
    let file = other.join(&path);
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        "1. Add GET /export.csv",
        "1. Add GET /export.csv, paginated",
    );
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
    commit_as(&other, "Pat", "plan: paginate the export");
    git(&other, &["push", "--quiet", "origin", "main"]);
    git(&bare, &["rev-parse", "main"]).trim().to_string()
}

/// Plan version 2 of feature #1, after a request for changes.
async fn second_plan(h: &mut TestApp, id: FeatureId) -> Vec<featurebot::core::protocol::Output> {
    h.send(Input::RequestChanges {
        feature: id,
        version: 1,
    })
    .await;
    confirm(&h.llm, &["export as CSV", "with a header row"]);
    h.say(id, "add a header row").await;
    h.llm.push(crate::support::fake_llm::Reply::Text(
        crate::support::scripts::GOOD_PLAN.replace(
            "2. Add an Export button",
            "2. Add an Export button with a header row",
        ),
    ));
    h.send(Input::GeneratePlan {
        feature: id,
        force: false,
    })
    .await
}

/// What a conflict leaves: their text on `main`, the bot's on its side branch on top of it.
async fn conflicted() -> (TestApp, FeatureId, String) {
    let (mut h, id) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    let theirs = teammate_edits_the_plan(&h, id);
    let outputs = second_plan(&mut h, id).await;
    let plans = h.store().plans(id).unwrap();
    let mine = plans[1].commit.clone();
    let conflict = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::PlanConflict {
                version,
                theirs,
                mine,
                branch,
                ..
            } => Some((*version, theirs.clone(), mine.clone(), branch.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no conflict shown: {outputs:?}"));
    assert_eq!(
        conflict,
        (
            2,
            theirs.clone(),
            mine.clone(),
            "featurebot/plans/1".to_string()
        )
    );
    // Their text is still on main; version 2 is on the side branch, on top of their commit.
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), theirs);
    assert_eq!(
        git(&bare, &["rev-parse", "featurebot/plans/1"]).trim(),
        mine
    );
    assert_eq!(
        git(&bare, &["rev-parse", "featurebot/plans/1^"]).trim(),
        theirs
    );
    (h, id, theirs)
}

#[tokio::test]
async fn a_plan_file_someone_else_changed_is_not_overwritten_and_nothing_is_approved_until_chosen()
{
    use featurebot::core::rules::PLAN_CONFLICT;
    let (mut h, id, _) = conflicted().await;
    let outputs = h
        .send(Input::Approve {
            feature: id,
            version: 2,
        })
        .await;
    assert_eq!(rejections(&outputs), [PLAN_CONFLICT], "{outputs:?}");
    assert_eq!(h.status(id), featurebot::model::Status::Planned);

    // A front-matter update leaves their text alone too, and says so.
    let bare = h.repo.remote.clone().unwrap();
    let before = git(&bare, &["rev-parse", "main"]);
    let outputs = h
        .send(Input::SetPriority {
            feature: id,
            priority: Priority::P1,
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
        warning.contains("changed on the remote by someone else")
            && warning.contains("their text is kept"),
        "{warning}"
    );
    assert_eq!(git(&bare, &["rev-parse", "main"]), before);
}

#[tokio::test]
async fn keep_mine_commits_the_bots_version_on_top_of_theirs() {
    let (mut h, id, theirs) = conflicted().await;
    let bare = h.repo.remote.clone().unwrap();
    let path = h.store().plans(id).unwrap()[1].path.clone();
    let outputs = h
        .send(Input::SettlePlanConflict {
            feature: id,
            version: 2,
            keep_mine: true,
        })
        .await;
    assert!(
        outputs.iter().any(|o| matches!(
            o.kind,
            OutputKind::PlanConflictSettled {
                version: 2,
                kept_mine: true
            }
        )),
        "{outputs:?}"
    );
    assert_eq!(
        git(&bare, &["rev-parse", "main^"]).trim(),
        theirs,
        "their commit stays in the history"
    );
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(
        file.contains("2. Add an Export button with a header row"),
        "{file}"
    );
    assert!(!file.contains("paginated"), "{file}");
    assert_eq!(
        h.store().plans(id).unwrap()[1].commit,
        git(&bare, &["rev-parse", "main"]).trim(),
        "version 2 points at the commit on main"
    );
    assert!(
        git(&bare, &["branch", "--list", "featurebot/plans/1"])
            .trim()
            .is_empty(),
        "the side branch is gone"
    );
    // A second click changes nothing; Approve works again.
    let again = h
        .send(Input::SettlePlanConflict {
            feature: id,
            version: 2,
            keep_mine: true,
        })
        .await;
    assert!(rejections(&again).is_empty(), "{again:?}");
    assert!(h.store().feature(id).unwrap().plan_conflict.is_none());
}

#[tokio::test]
async fn take_theirs_makes_their_text_the_next_plan_version() {
    let (mut h, id, theirs) = conflicted().await;
    let bare = h.repo.remote.clone().unwrap();
    let outputs = h
        .send(Input::SettlePlanConflict {
            feature: id,
            version: 2,
            keep_mine: false,
        })
        .await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::PlanCommitted { version: 3, .. })),
        "their text is shown as plan version 3: {outputs:?}"
    );
    let plans = h.store().plans(id).unwrap();
    assert_eq!(plans.len(), 3);
    assert!(
        plans[2]
            .markdown
            .contains("1. Add GET /export.csv, paginated"),
        "{}",
        plans[2].markdown
    );
    assert!(
        !plans[2].markdown.starts_with("# "),
        "{}",
        plans[2].markdown
    );
    assert_eq!(h.store().feature(id).unwrap().plan_version, 3);
    // On main: their text, with front matter that says version 3, on top of their commit.
    assert_eq!(git(&bare, &["rev-parse", "main^"]).trim(), theirs);
    let file = git(&bare, &["show", &format!("main:{}", plans[2].path)]);
    assert!(file.contains("\nversion: 3\n"), "{file}");
    assert!(
        file.contains("paginated") && !file.contains("header row"),
        "{file}"
    );
    assert!(git(&bare, &["branch", "--list", "featurebot/plans/1"])
        .trim()
        .is_empty());
    // Version 3 can be approved.
    h.send(Input::Approve {
        feature: id,
        version: 3,
    })
    .await;
    assert_ne!(h.status(id), featurebot::model::Status::Planned);
}

/// A merged pull request brings the run's ticked plan file to main: that is still the bot's
/// plan, not someone else's change.
#[tokio::test]
async fn a_ticked_plan_file_from_a_merged_run_is_not_a_conflict() {
    let (mut h, id) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    let path = h.store().plans(id).unwrap()[0].path.clone();
    let other = h.repo.dir.path().join("merger");
    git(
        h.repo.dir.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "merger"],
    );
    let file = other.join(&path);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        featurebot::plan::tick_step(&featurebot::plan::tick_step(&text, 0), 1),
    )
    .unwrap();
    commit_as(&other, "Pat", "Merge pull request #1");
    git(&other, &["push", "--quiet", "origin", "main"]);
    let outputs = h
        .send(Input::SetPriority {
            feature: id,
            priority: Priority::P1,
        })
        .await;
    assert_no_warning(&outputs);
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(file.contains("\npriority: p1\n"), "{file}");
}

/// The bot's branch has a commit the remote lacks (a step whose push failed) and a reviewer
/// pushed meanwhile: the follow-up merges the two, says so, and pushes both without force.
#[tokio::test]
async fn a_diverged_branch_is_merged_and_the_thread_is_told() {
    use crate::support::app::alice;
    use crate::support::scripts::{call, finish_steps, BRANCH};
    use featurebot::agent::Event;
    use featurebot::model::RunState;
    use serde_json::json;

    let (mut p, id, _) = with_open_pull_request().await;
    let bare = p.repo.remote.clone().unwrap();
    // The reviewer's commit on the remote branch.
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
    std::fs::write(reviewer.join("review.txt"), "looks good\n").unwrap();
    git(&reviewer, &["add", "review.txt"]);
    commit_as(&reviewer, "Rae", "review note");
    git(&reviewer, &["push", "--quiet", "origin", BRANCH]);
    let theirs = git(&bare, &["rev-parse", BRANCH]).trim().to_string();
    // A local commit of the bot's that never reached the remote.
    let local = commit_never_pushed(&p.repo.path);

    p.send(Input::FollowUp { feature: id }).await;
    p.llm.push(call(
        "write_file",
        json!({"path": "more.txt", "content": "more\n"}),
    ));
    finish_steps(&p.llm, &["more"]);
    p.send(Input::Message {
        feature: id,
        author: alice(),
        text: "Add more".to_string(),
        source_id: None,
    })
    .await;
    let (run, outputs) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(
        outputs.iter().any(|o| matches!(
            &o.kind,
            OutputKind::RunEvent { event: Event::BranchCaughtUp { theirs: t, merged: true } } if *t == theirs
        )),
        "{outputs:?}"
    );
    let history = git(&bare, &["rev-list", BRANCH]);
    for commit in [&theirs, &local] {
        assert!(
            history.lines().any(|c| c == commit),
            "{commit} is kept on the remote"
        );
    }
    assert_eq!(
        git(&bare, &["show", &format!("{BRANCH}:review.txt")]),
        "looks good\n"
    );
}

/// Feature #2's plan, committed while the remote is unreachable; the remote then comes back
/// and a teammate pushes to it. Returns feature #2 and its plan file's path.
async fn plan_while_the_remote_is_away(h: &mut TestApp) -> (FeatureId, String) {
    let bare = h.repo.remote.clone().unwrap();
    let away = bare.with_extension("away");
    std::fs::rename(&bare, &away).unwrap();
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
    let warning = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no warning: {outputs:?}"));
    assert!(
        warning.starts_with("the plan is committed locally but pushing it failed")
            && warning.ends_with("It goes out with the next plan, or when featurebot starts again"),
        "{warning}"
    );
    std::fs::rename(&away, &bare).unwrap();
    teammate_pushes(h);
    let path = h.store().plans(second).unwrap()[0].path.clone();
    assert!(
        git(&bare, &["ls-tree", "--name-only", "-r", "main"])
            .lines()
            .all(|p| p != path),
        "not on the remote yet"
    );
    (second, path)
}

#[tokio::test]
async fn a_plan_committed_while_the_remote_was_away_goes_out_with_the_next_plan() {
    let (mut h, _) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    let (_, path) = plan_while_the_remote_is_away(&mut h).await;

    ask(&h.llm, "Which columns?");
    confirm(&h.llm, &["all"]);
    let (third, _) = h.start_feature("Report").await;
    h.say(third, "all").await;
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: third,
            force: false,
        })
        .await;
    assert_no_warning(&outputs);
    let third_path = h.store().plans(third).unwrap()[0].path.clone();
    let files = git(&bare, &["ls-tree", "--name-only", "-r", "main"]);
    for expected in [path.as_str(), third_path.as_str(), "NOTES.md"] {
        assert!(
            files.lines().any(|p| p == expected),
            "{expected} not in {files}"
        );
    }
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(file.contains("Audit log"), "{file}");
}

#[tokio::test]
async fn at_the_next_start_plans_committed_while_the_remote_was_away_are_pushed() {
    let (mut h, _) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    let (_, path) = plan_while_the_remote_is_away(&mut h).await;
    let theirs = git(&bare, &["rev-parse", "main"]).trim().to_string();

    h.app().recover().await;
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(file.contains("Audit log"), "{file}");
    assert_eq!(
        git(&bare, &["rev-parse", "main^"]).trim(),
        theirs,
        "on top of the teammate's commit, not forced"
    );
    // Once is enough: a second start pushes nothing more.
    let tip = git(&bare, &["rev-parse", "main"]);
    h.app().recover().await;
    assert_eq!(git(&bare, &["rev-parse", "main"]), tip);
}

/// Feature #1's pull request is merged on the remote (a person clicks Merge); feature #2's run
/// then starts from the merged base, with its plan, although the clone's own `main` holds
/// only the plan commit and not the merge.
#[tokio::test]
async fn after_a_merge_the_next_run_starts_from_the_merged_base() {
    use crate::support::scripts::{call, finish_steps, BRANCH};
    use featurebot::model::RunState;
    use serde_json::json;

    let (mut p, _, _) = with_open_pull_request().await;
    let bare = p.repo.remote.clone().unwrap();
    let clone_main = git(&p.repo.path, &["rev-parse", "main"]);
    // The merge, done by a person in their own clone.
    let merger = p.repo.dir.path().join("merger");
    git(
        p.repo.dir.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "merger"],
    );
    git(
        &merger,
        &[
            "-c",
            "user.name=Pat",
            "-c",
            "user.email=pat@test.invalid",
            "merge",
            "--quiet",
            "--no-ff",
            "-m",
            "Merge pull request #1",
            &format!("origin/{BRANCH}"),
        ],
    );
    git(&merger, &["push", "--quiet", "origin", "main"]);
    let merged = git(&bare, &["rev-parse", "main"]).trim().to_string();

    let second = p.planned().await;
    p.llm.push(call(
        "write_file",
        json!({"path": "import.txt", "content": "POST /import.csv\n"}),
    ));
    finish_steps(&p.llm, &["import added", "nothing more"]);
    p.send(Input::Approve {
        feature: second,
        version: 1,
    })
    .await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    let branch = run.branch.to_string();
    assert_ne!(branch, BRANCH);
    assert_eq!(
        git(&bare, &["merge-base", &branch, "main"]).trim(),
        merged,
        "the branch starts from the merged base"
    );
    assert_eq!(
        git(&bare, &["show", &format!("{branch}:export.txt")]),
        "GET /export.csv\n",
        "feature #1's merged work is there"
    );
    // The plan, committed only in the clone (no push_plans), goes with the branch.
    let plan = p.store().plans(second).unwrap()[0].path.clone();
    let file = git(&bare, &["show", &format!("{branch}:{plan}")]);
    assert!(file.contains("feature_id: 2"), "{file}");
    let main = git(&p.repo.path, &["rev-parse", "main"]);
    assert_ne!(main.trim(), merged, "the clone's main is left as it is");
    assert_eq!(
        git(&p.repo.path, &["merge-base", "main", clone_main.trim()]),
        clone_main,
        "the clone's main only moved on with the bot's own commits"
    );
}

/// Someone force-pushes the pull request's branch (squashed the bot's commits): with nothing
/// of the bot's unpushed, the follow-up goes on on top of their rewrite, says so, and the
/// push is not forced; the removed history does not come back.
#[tokio::test]
async fn a_force_pushed_branch_is_followed_not_merged_back() {
    use crate::support::app::alice;
    use crate::support::scripts::{call, finish_steps, BRANCH};
    use featurebot::agent::Event;
    use featurebot::model::RunState;
    use serde_json::json;

    let (mut p, id, _) = with_open_pull_request().await;
    let bare = p.repo.remote.clone().unwrap();
    let old_tip = git(&bare, &["rev-parse", BRANCH]).trim().to_string();
    // Squash the branch into one commit on main and force-push it.
    let squashed = squash_and_force_push(&p);

    p.send(Input::FollowUp { feature: id }).await;
    p.llm.push(call(
        "write_file",
        json!({"path": "more.txt", "content": "more\n"}),
    ));
    finish_steps(&p.llm, &["more"]);
    p.send(Input::Message {
        feature: id,
        author: alice(),
        text: "Add more".to_string(),
        source_id: None,
    })
    .await;
    let (run, outputs) = p.until_run_ended().await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert!(
        outputs.iter().any(|o| matches!(
            &o.kind,
            OutputKind::RunEvent { event: Event::BranchRewritten { theirs } } if *theirs == squashed
        )),
        "{outputs:?}"
    );
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{BRANCH}^")]).trim(),
        squashed
    );
    let history = git(&bare, &["rev-list", BRANCH]);
    assert!(
        !history.lines().any(|c| c == old_tip),
        "the rewritten history stays gone"
    );
}

/// A force-push while the bot's branch holds a commit that was never pushed: the run stops and
/// says what to do, instead of merging the rewritten-away history back; nothing is pushed.
#[tokio::test]
async fn a_force_push_over_unpushed_work_stops_the_run_with_what_to_do() {
    use crate::support::app::alice;
    use crate::support::scripts::BRANCH;
    use featurebot::model::{RunState, Status};

    let (mut p, id, _) = with_open_pull_request().await;
    let bare = p.repo.remote.clone().unwrap();
    let squashed = squash_and_force_push(&p);
    // The bot's commit that never reached the remote.
    let clone = &p.repo.path.clone();
    let local = commit_never_pushed(clone);

    p.send(Input::FollowUp { feature: id }).await;
    p.send(Input::Message {
        feature: id,
        author: alice(),
        text: "Add more".to_string(),
        source_id: None,
    })
    .await;
    let run = p.run_ended().await;
    assert_eq!(run.state, RunState::Failed, "{run:?}");
    let message = run.message.unwrap_or_default();
    assert!(
        message.contains("was force-pushed on origin") && message.contains("git branch -D"),
        "{message}"
    );
    assert_eq!(
        git(&bare, &["rev-parse", BRANCH]).trim(),
        squashed,
        "nothing was pushed"
    );
    assert_eq!(
        git(clone, &["rev-parse", BRANCH]).trim(),
        local,
        "the bot's commit is kept"
    );
    assert_eq!(
        p.status(id),
        Status::PrOpen,
        "the pull request is still open and tracked"
    );
}

/// Someone renames the base branch on the remote (`main` to `trunk`): the next front-matter
/// update is committed here only and says so; `main` is not pushed back into existence.
#[tokio::test]
async fn a_base_branch_deleted_on_the_remote_is_not_pushed_back() {
    let (mut h, id) = pushed_plan().await;
    let bare = h.repo.remote.clone().unwrap();
    git(&bare, &["branch", "--quiet", "-m", "main", "trunk"]);
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
        warning.contains("no longer has the branch main") && warning.contains("repo.base_branch"),
        "{warning}"
    );
    assert!(
        git(&bare, &["branch", "--list", "main"]).trim().is_empty(),
        "main was not recreated"
    );
    let subject = git(&h.repo.path, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.contains("priority p0"), "committed here: {subject}");
    // At the next start, nothing is pushed either.
    h.app().recover().await;
    assert!(git(&bare, &["branch", "--list", "main"]).trim().is_empty());
}

/// The bot's branch in the clone gets a commit that never reaches the remote (a step whose
/// push failed); returns it.
fn commit_never_pushed(clone: &std::path::Path) -> String {
    use crate::support::scripts::BRANCH;
    let tree = git(clone, &["rev-parse", &format!("{BRANCH}^{{tree}}")]);
    let parent = git(clone, &["rev-parse", BRANCH]);
    let local = git(
        clone,
        &[
            "-c",
            "user.name=featurebot",
            "-c",
            "user.email=bot@test.invalid",
            "commit-tree",
            tree.trim(),
            "-p",
            parent.trim(),
            "-m",
            "step: not pushed",
        ],
    );
    let local = local.trim().to_string();
    git(
        clone,
        &["update-ref", &format!("refs/heads/{BRANCH}"), &local],
    );
    local
}

/// A person squashes the pull request's branch into one commit on main in their own clone and
/// force-pushes it; returns the new tip.
fn squash_and_force_push(p: &TestApp) -> String {
    use crate::support::scripts::BRANCH;
    let bare = p.repo.remote.clone().unwrap();
    let squasher = p.repo.dir.path().join("squasher");
    git(
        p.repo.dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            BRANCH,
            bare.to_str().unwrap(),
            "squasher",
        ],
    );
    git(&squasher, &["reset", "--quiet", "--soft", "origin/main"]);
    commit_as(&squasher, "Pat", "squashed");
    git(&squasher, &["push", "--quiet", "--force", "origin", BRANCH]);
    git(&bare, &["rev-parse", BRANCH]).trim().to_string()
}

/// After the conflict, someone deletes the plan file on main: Take theirs has nothing to take,
/// says so, and the conflict stays for Keep mine.
#[tokio::test]
async fn take_theirs_when_their_file_is_gone_says_so_and_keeps_the_choice() {
    let (mut h, id, _) = conflicted().await;
    let bare = h.repo.remote.clone().unwrap();
    let path = h.store().plans(id).unwrap()[1].path.clone();
    let other = h.repo.dir.path().join("deleter");
    git(
        h.repo.dir.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "deleter"],
    );
    git(&other, &["rm", "--quiet", &path]);
    commit_as(&other, "Pat", "drop the plan");
    git(&other, &["push", "--quiet", "origin", "main"]);

    let outputs = h
        .send(Input::SettlePlanConflict {
            feature: id,
            version: 2,
            keep_mine: false,
        })
        .await;
    let refused = rejections(&outputs);
    assert!(
        refused.len() == 1 && refused[0].contains("is no longer on the remote's base branch"),
        "{outputs:?}"
    );
    assert_eq!(h.store().plans(id).unwrap().len(), 2, "no version was made");
    assert!(h.store().feature(id).unwrap().plan_conflict.is_some());
    // Keep mine still works: version 2 goes back onto main.
    h.send(Input::SettlePlanConflict {
        feature: id,
        version: 2,
        keep_mine: true,
    })
    .await;
    let file = git(&bare, &["show", &format!("main:{path}")]);
    assert!(file.contains("with a header row"), "{file}");
    assert!(h.store().feature(id).unwrap().plan_conflict.is_none());
}

/// Commits everything changed in a person's clone, as `who`.
fn commit_as(clone: &std::path::Path, who: &str, message: &str) {
    git(clone, &["add", "--all"]);
    let name = format!("user.name={who}");
    let email = format!("user.email={}@test.invalid", who.to_lowercase());
    git(
        clone,
        &[
            "-c", &name, "-c", &email, "commit", "--quiet", "-m", message,
        ],
    );
}
