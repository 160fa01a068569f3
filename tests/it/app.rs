//! The core end to end: a fake LLM at the wire, a real store, a real git repository.

use featurebot::core::protocol::{Input, Output, OutputKind};
use featurebot::model::{FeatureId, Place, Speaker, Status};

use crate::support::app::{alice, TestApp};
use crate::support::fake_llm::{Api, Reply};
use crate::support::git::git;
use crate::support::outputs::{failure, reply, streamed};
use crate::support::scripts::{ask, confirm, plan_reply, GOOD_PLAN};

/// Runs a feature to CONFIRMED: one question, one answer, a confirmation.
async fn confirmed(h: &mut TestApp, title: &str) -> FeatureId {
    ask(&h.llm, "Which format should the export use?");
    confirm(&h.llm, &["export the table as CSV", "from the dashboard"]);
    let (id, _) = h.start_feature(title).await;
    let outputs = h.say(id, "CSV, from the dashboard").await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::Confirmed { .. })),
        "{outputs:?}"
    );
    id
}

#[tokio::test]
async fn a_scripted_conversation_reaches_confirmed() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Which format should the export use?");
    let (id, outputs) = h.start_feature("  Export  CSV ").await;
    assert_eq!(reply(&outputs), Some("Which format should the export use?"));
    assert_eq!(streamed(&outputs), "Which format should the export use?");
    assert!(outputs.iter().any(|o| matches!(o.kind, OutputKind::Typing)));

    h.llm.push(Reply::Text(
        "Thanks.\nCONFIRMED\n- export the table as CSV".to_string(),
    ));
    let outputs = h.say(id, "CSV please").await;
    assert_eq!(reply(&outputs), Some("Thanks.\n- export the table as CSV"));
    assert!(!streamed(&outputs).contains("CONFIRMED"));
    assert!(outputs.contains(&Output {
        feature: Some(id),
        place: Place::Console,
        kind: OutputKind::Confirmed {
            summary: "- export the table as CSV".to_string(),
            version: 0,
        },
    }));

    let feature = h.store().feature(id).unwrap();
    assert_eq!(feature.title, "Export CSV");
    assert_eq!(feature.status, Status::Confirmed);
    assert!(feature.usage.output_tokens > 0, "{:?}", feature.usage);
    let speakers: Vec<Speaker> = h
        .store()
        .transcript(id)
        .unwrap()
        .iter()
        .map(|t| t.speaker)
        .collect();
    assert_eq!(
        speakers,
        [
            Speaker::User,
            Speaker::Assistant,
            Speaker::User,
            Speaker::Assistant
        ]
    );

    // The second request carried the system prompt and the whole conversation.
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let messages = requests[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .contains("Export CSV"));
    assert!(messages[1]["content"]
        .as_str()
        .unwrap()
        .contains("Export CSV"));
    assert_eq!(
        messages[2]["content"],
        "Which format should the export use?"
    );
    assert_eq!(messages[3]["content"], "CSV please");
    assert_eq!(requests[1].body["stream"], true);
}

#[tokio::test]
async fn a_restart_in_the_middle_continues_the_conversation() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Question one?");
    let (id, _) = h.start_feature("Dark mode").await;
    let mut h = h.restart().await;
    ask(&h.llm, "Question two?");
    let outputs = h.say(id, "answer one").await;
    assert_eq!(reply(&outputs), Some("Question two?"));
    let last = h.llm.requests().pop().unwrap();
    let contents: Vec<String> = last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contents[2..], ["Question one?", "answer one"]);
}

#[tokio::test]
async fn an_unanswered_message_is_answered_on_resume() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Question?");
    let (id, _) = h.start_feature("Dark mode").await;
    // As if the process died after storing the message and before the answer.
    h.store()
        .append_turn(id, Speaker::User, "alice", "my answer", None)
        .await
        .unwrap();
    let mut h = h.restart().await;
    ask(&h.llm, "Next question?");
    let outputs = h.send(Input::Resume { feature: id }).await;
    assert_eq!(reply(&outputs), Some("Next question?"));
    // Resuming an answered conversation does nothing.
    let outputs = h.send(Input::Resume { feature: id }).await;
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(h.llm.requests().len(), 2);
}

#[tokio::test]
async fn the_same_message_twice_is_one_turn() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Question?");
    let (id, _) = h.start_feature("Dark mode").await;
    h.llm.push(Reply::Text("Thanks.".to_string()));
    let message = Input::Message {
        feature: id,
        author: alice(),
        text: "answer".to_string(),
        source_id: Some("discord-msg-1".to_string()),
    };
    h.send(message.clone()).await;
    let again = h.send(message).await;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(h.llm.requests().len(), 2);
    assert_eq!(h.store().transcript(id).unwrap().len(), 4);
}

#[tokio::test]
async fn an_llm_failure_is_reported_and_nothing_is_lost() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Question?");
    let (id, _) = h.start_feature("Dark mode").await;
    for _ in 0..4 {
        h.llm.push(Reply::Status {
            status: 503,
            headers: vec![],
            body: "{\"error\":{\"message\":\"overloaded\"}}".to_string(),
        });
    }
    let outputs = h.say(id, "my precious answer").await;
    let message = failure(&outputs).expect("a failure message");
    assert!(message.contains("the LLM could not answer"), "{message}");
    assert!(message.contains("unavailable"), "{message}");
    let transcript = h.store().transcript(id).unwrap();
    assert_eq!(transcript.last().unwrap().text, "my precious answer");

    // The next message gets an answer that saw the saved one.
    h.llm.push(Reply::Text("Got both.".to_string()));
    let outputs = h.say(id, "and another").await;
    assert_eq!(reply(&outputs), Some("Got both."));
    let last = h.llm.requests().pop().unwrap();
    let body = last.body.to_string();
    assert!(body.contains("my precious answer") && body.contains("and another"));
}

#[tokio::test]
async fn bad_titles_are_refused_and_nothing_is_stored() {
    let mut h = TestApp::builder().build().await;
    for title in ["", "   ", &"long ".repeat(2_000)] {
        let outputs = h
            .send(Input::Start {
                title: title.to_string(),
                requester: alice(),
                place: featurebot::model::Place::Console,
                repo: None,
            })
            .await;
        assert!(
            // Refused before any feature existed: the refusal goes where it was asked for.
            matches!(
                outputs.as_slice(),
                [Output {
                    feature: None,
                    place: Place::Console,
                    kind: OutputKind::Rejected { .. },
                }]
            ),
            "{outputs:?}"
        );
    }
    assert!(h.store().features().unwrap().is_empty());
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn a_confirmed_feature_gets_a_committed_plan() {
    let mut h = TestApp::builder().build().await;
    let id = confirmed(&mut h, "Export CSV").await;
    let before = git(&h.repo.path, &["rev-parse", "main"]);
    h.llm
        .push(Reply::Text(format!("```markdown\n{GOOD_PLAN}```")));
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    let (path, commit) = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::PlanCommitted {
                path,
                commit,
                version: 1,
                again: false,
                ..
            } => Some((path.clone(), commit.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{outputs:?}"));
    assert!(outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::PlanStarted { version: 1, .. })));
    assert!(
        path.starts_with("tasks/") && path.ends_with("-export-csv.md"),
        "{path}"
    );

    // Exactly one file, on top of the previous tip, with the message and trailers.
    let repo = h.repo.path.clone();
    assert_eq!(git(&repo, &["rev-parse", "main"]).trim(), commit);
    assert_eq!(git(&repo, &["rev-parse", "main^"]), before);
    assert_eq!(
        git(
            &repo,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-status",
                "-r",
                &commit
            ]
        )
        .trim(),
        format!("A\t{path}")
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%B", &commit]).trim(),
        format!("plan: Export CSV\n\nFeature-Id: {id}\nPlan-Version: 1")
    );
    let file = git(&repo, &["show", &format!("{commit}:{path}")]);
    assert!(
        file.starts_with(&format!(
            "---\nfeature_id: {id}\ntitle: \"Export CSV\"\nrequester: \"alice\"\nversion: 1\n"
        )),
        "{file}"
    );
    assert!(file.contains("## Implementation steps\n### Backend\n1. Add GET /export.csv"));
    assert!(!file.contains("```markdown"));

    let feature = h.store().feature(id).unwrap();
    assert_eq!((feature.status, feature.plan_version), (Status::Planned, 1));
    assert_eq!(h.store().plans(id).unwrap()[0].commit, commit);

    // A second click shows the same plan without asking the LLM again.
    let calls = h.llm.requests().len();
    let again = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(again.iter().any(|o| matches!(
        o.kind,
        OutputKind::PlanCommitted {
            again: true,
            version: 1,
            ..
        }
    )));
    assert_eq!(h.llm.requests().len(), calls);
    assert_eq!(git(&repo, &["rev-parse", "main"]).trim(), commit);
}

#[tokio::test]
async fn a_plan_missing_sections_is_repaired_once() {
    let mut h = TestApp::builder().build().await;
    let id = confirmed(&mut h, "Export CSV").await;
    h.llm.push(Reply::Text(
        "## Summary & goal\nJust a summary.".to_string(),
    ));
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::PlanCommitted { .. })),
        "{outputs:?}"
    );
    let repair = h.llm.requests().pop().unwrap().body.to_string();
    assert!(
        repair.contains("missing these required sections"),
        "{repair}"
    );
    assert!(repair.contains("User stories / acceptance criteria, Implementation steps, Test plan"));
}

#[tokio::test]
async fn a_plan_that_stays_broken_fails_clearly_and_commits_nothing() {
    let mut h = TestApp::builder().build().await;
    let id = confirmed(&mut h, "Export CSV").await;
    let before = git(&h.repo.path, &["rev-parse", "main"]);
    h.llm.push(Reply::Text("no plan here".to_string()));
    h.llm.push(Reply::Text("still no plan".to_string()));
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    let message = failure(&outputs).unwrap();
    assert!(
        message.contains("still lacks these sections after one repair"),
        "{message}"
    );
    assert!(message.contains("Summary & goal"), "{message}");
    assert_eq!(git(&h.repo.path, &["rev-parse", "main"]), before);
    assert_eq!(h.store().feature(id).unwrap().status, Status::Confirmed);
}

#[tokio::test]
async fn more_talk_after_a_plan_makes_version_two_of_the_same_file() {
    let mut h = TestApp::builder().build().await;
    let id = confirmed(&mut h, "Export CSV").await;
    plan_reply(&h.llm);
    h.send(Input::GeneratePlan {
        feature: id,
        force: false,
    })
    .await;
    let first = h.store().plans(id).unwrap().remove(0);

    confirm(&h.llm, &["CSV and JSON"]);
    h.say(id, "also JSON please").await;
    assert_eq!(h.store().feature(id).unwrap().status, Status::Confirmed);
    h.llm
        .push(Reply::Text(GOOD_PLAN.replace("CSV", "CSV and JSON")));
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(
        outputs.iter().any(|o| matches!(
            o.kind,
            OutputKind::PlanCommitted {
                version: 2,
                again: false,
                ..
            }
        )),
        "{outputs:?}"
    );
    let plans = h.store().plans(id).unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].path, first.path);
    let repo = h.repo.path.clone();
    assert_eq!(
        git(&repo, &["rev-parse", &format!("{}^", plans[1].commit)]).trim(),
        first.commit
    );
    let file = git(&repo, &["show", &format!("main:{}", first.path)]);
    assert!(file.contains("version: 2") && file.contains("CSV and JSON"));
    let diff = outputs
        .iter()
        .find_map(|o| match &o.kind {
            OutputKind::PlanDiff {
                from: 1,
                to: 2,
                diff,
                ..
            } => Some(diff.clone()),
            _ => None,
        })
        .expect("a diff against version 1");
    assert!(diff.starts_with(&format!("--- a/{}", first.path)), "{diff}");
    assert!(
        diff.contains("-Let users export their data as CSV."),
        "{diff}"
    );
    assert!(
        diff.contains("+Let users export their data as CSV and JSON."),
        "{diff}"
    );
    assert!(
        !diff.contains("+## Test plan"),
        "unchanged lines are context: {diff}"
    );
}

#[tokio::test]
async fn a_plan_before_confirmation_needs_force_and_warns() {
    let mut h = TestApp::builder().build().await;
    ask(&h.llm, "Question?");
    let (id, _) = h.start_feature("Dark mode").await;
    let refused = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(failure(&refused).unwrap().contains("not confirmed yet"));
    plan_reply(&h.llm);
    let forced = h
        .send(Input::GeneratePlan {
            feature: id,
            force: true,
        })
        .await;
    assert!(forced
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Warning { .. })));
    assert!(forced
        .iter()
        .any(|o| matches!(o.kind, OutputKind::PlanCommitted { .. })));
}

#[tokio::test]
async fn the_same_title_twice_gives_two_files() {
    let mut h = TestApp::builder().build().await;
    let mut paths = Vec::new();
    for _ in 0..2 {
        let id = confirmed(&mut h, "Dark mode").await;
        plan_reply(&h.llm);
        h.send(Input::GeneratePlan {
            feature: id,
            force: true,
        })
        .await;
        paths.push(h.store().feature(id).unwrap().plan_path.unwrap());
    }
    assert_ne!(paths[0], paths[1]);
}

#[tokio::test]
async fn a_broken_repository_fails_the_plan_with_a_clear_message() {
    let not_a_repo = tempfile::tempdir().unwrap();
    let mut h = TestApp::builder()
        .with_config(|c| c.repo.path = not_a_repo.path().to_path_buf())
        .build()
        .await;
    let id = confirmed(&mut h, "Export CSV").await;
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    let message = failure(&outputs).unwrap();
    assert!(message.contains("is not a git repository"), "{message}");
    assert!(message.contains("set repo.path"), "{message}");
    assert_eq!(h.store().feature(id).unwrap().status, Status::Confirmed);
}

#[tokio::test]
async fn plans_are_pushed_when_configured() {
    let mut h = TestApp::builder()
        .with_remote()
        .with_config(|c| c.repo.push_plans = true)
        .build()
        .await;
    let id = confirmed(&mut h, "Export CSV").await;
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::Warning { .. })),
        "{outputs:?}"
    );
    let commit = h.store().plans(id).unwrap()[0].commit.clone();
    let bare = h.repo.remote.clone().unwrap();
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
}

#[tokio::test]
async fn the_anthropic_api_works_end_to_end() {
    let mut h = TestApp::builder().api(Api::Anthropic).build().await;
    let id = confirmed(&mut h, "Export CSV").await;
    plan_reply(&h.llm);
    let outputs = h
        .send(Input::GeneratePlan {
            feature: id,
            force: false,
        })
        .await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::PlanCommitted { .. })),
        "{outputs:?}"
    );
    let first = &h.llm.requests()[0];
    assert_eq!(first.path, "/v1/messages");
    assert!(first.body["system"]
        .as_str()
        .unwrap()
        .contains("Export CSV"));
}

#[test]
fn only_the_edge_modules_touch_their_crates() {
    let mut offenders = Vec::new();
    let rules: [(&str, &[&str]); 4] = [
        ("git2::", &["repo/"]),
        ("reqwest::", &["llm/"]),
        ("serenity::", &["discord/"]),
        ("octocrab::", &["github/"]),
    ];
    for (rel, text) in sources() {
        for (needle, allowed) in rules {
            if text.contains(needle) && !allowed.iter().any(|a| rel.starts_with(a)) {
                offenders.push(format!("{rel} uses {needle}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

/// The module edges of ARCHITECTURE.md: dependencies point one way, from the front ends and the
/// CLI through the core and the agent to the leaves, never back.
#[test]
fn modules_depend_only_one_way() {
    let leaves = [
        "model",
        "lock",
        "config",
        "store",
        "llm",
        "repo",
        "github",
        "redact",
        "prompts",
        "conversation",
        "plan",
    ];
    let mut rules: Vec<(&str, &[&str])> = leaves
        .iter()
        .map(|leaf| {
            (
                *leaf,
                &["core", "agent", "discord", "console", "cli", "startup"][..],
            )
        })
        .collect();
    rules.push(("core", &["discord", "console", "cli", "startup"]));
    rules.push(("agent", &["core", "discord", "console", "cli", "startup"]));
    rules.push(("discord", &["store", "cli"]));
    rules.push(("console", &["store", "cli", "discord"]));
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        let module = rel.split(['/', '.']).next().unwrap();
        let used = modules_used(&text);
        // Front ends read through the core's queries, never the store behind it.
        if (module == "discord" || module == "console") && text.contains(".store()") {
            offenders.push(format!("{rel} reads the store"));
        }
        for (from, forbidden) in &rules {
            if module != *from {
                continue;
            }
            for to in forbidden.iter().filter(|to| used.contains(**to)) {
                offenders.push(format!("{rel} uses crate::{to}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// The top-level modules a source file names: `crate::x::…`, `crate::x;` and each first segment of
/// `crate::{x, y::z}`.
fn modules_used(text: &str) -> std::collections::HashSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = std::collections::HashSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                used.insert(ident(item.trim()));
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used
}

/// Every source file under `src/`: its path relative to `src/` (with `/`) and its text.
fn sources() -> Vec<(String, String)> {
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    walk(src)
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap();
            (rel, text)
        })
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
