//! Snapshots of every prompt in `prompts/` as the LLM receives it for one fixed feature, so a
//! change to what the LLM is sent shows up in review (STYLE rule 15).
//!
//! The prompts are captured at the fake LLM while the core and the agent take "Export CSV" from
//! its first turn to a finished run, so they are rendered exactly the way the code renders them.
//! Each is compared with `tests/it/snapshots/<prompt>.txt`; `UPDATE_SNAPSHOTS=1` rewrites the
//! files instead.

use std::collections::BTreeMap;
use std::path::Path;

use featurebot::core::protocol::Input;
use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::fake_llm::Reply;
use crate::support::git::commit_and_push;
use crate::support::scripts::{ask, confirm, finish_steps, plan_reply};

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/snapshots");
const PROMPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");

/// The repository's instructions for agents, which the agent's prompt takes in.
const AGENTS_MD: &str = "Run `sh test.sh` before you finish a step.\n";

#[tokio::test]
async fn every_prompt_as_the_llm_receives_it_matches_its_snapshot() {
    let prompts = rendered_prompts().await;
    let files: Vec<String> = std::fs::read_dir(PROMPTS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    let mut missing: Vec<&String> = files.iter().filter(|f| !prompts.contains_key(*f)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "prompts/ has {missing:?}, which this test does not capture; extend rendered_prompts"
    );
    let failures: Vec<String> = prompts
        .iter()
        .filter_map(|(name, text)| check(name, text).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Each prompt by its file's name, as sent: the conversation's system prompt, the plan
/// instruction, the repair request for a plan that lacks sections, the agent's system prompt.
async fn rendered_prompts() -> BTreeMap<String, String> {
    let mut app = TestApp::builder()
        .with_remote()
        .with_repo(|repo| commit_and_push(repo, &[("AGENTS.md", AGENTS_MD)], "agent notes"))
        .build()
        .await;
    ask(&app.llm, "Which format?");
    confirm(&app.llm, &["CSV export"]);
    let (id, _) = app.start_feature("Export CSV").await;
    app.say(id, "CSV").await;
    // A first plan with only its summary, so that the repair is asked for.
    app.llm.push(Reply::Text(
        "## Summary & goal\nLet users export their data as CSV.\n".to_string(),
    ));
    plan_reply(&app.llm);
    app.send(Input::GeneratePlan {
        feature: id,
        force: false,
    })
    .await;
    finish_steps(&app.llm, &["endpoint added", "button added"]);
    app.send(Input::Approve {
        feature: id,
        version: 1,
    })
    .await;
    app.run_ended().await;

    let bodies: Vec<Value> = app.llm.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 6, "two turns, two plan requests, two steps");
    [
        ("requirements", message(&bodies[0], "system", 0)),
        ("plan", message(&bodies[2], "user", usize::MAX)),
        ("plan-repair", message(&bodies[3], "user", usize::MAX)),
        ("agent", message(&bodies[4], "system", 0)),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), text))
    .collect()
}

/// The content of the `index`th message with `role` in a chat-completions request body
/// (`usize::MAX`: the last one).
fn message(body: &Value, role: &str, index: usize) -> String {
    let of_role: Vec<&Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .collect();
    let at = index.min(of_role.len() - 1);
    of_role[at]["content"].as_str().unwrap().to_string()
}

/// Compares `text` with the snapshot of `name`, or rewrites the snapshot with UPDATE_SNAPSHOTS=1.
fn check(name: &str, text: &str) -> Result<(), String> {
    let path = Path::new(SNAPSHOTS).join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(SNAPSHOTS).unwrap();
        std::fs::write(&path, text).unwrap();
        return Ok(());
    }
    let update = format!(
        "    UPDATE_SNAPSHOTS=1 cargo test --test it prompts::\nwrites {}; commit it with the change",
        path.display()
    );
    match std::fs::read_to_string(&path) {
        Err(_) => Err(format!("prompt {name:?} has no snapshot yet:\n{update}")),
        Ok(expected) if expected == text => Ok(()),
        Ok(expected) => Err(format!(
            "prompt {name:?} differs from its snapshot (- snapshot, + sent):\n{}\nif the change is meant,\n{update}",
            diff(&expected, text)
        )),
    }
}

/// A line diff of `old` to `new`: unchanged lines indented, removed ones after `-`, added ones
/// after `+` (from the longest common subsequence of lines).
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || common[i][j + 1] >= common[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push("(the two differ in the newline at the end)".to_string());
    }
    out.join("\n")
}

#[test]
fn the_snapshot_diff_marks_removed_and_added_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nc\nd\n"), "  a\n- b\n  c\n+ d");
    assert_eq!(
        diff("a", "a\n"),
        "  a\n(the two differ in the newline at the end)"
    );
}
