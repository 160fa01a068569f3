//! Discord's limits: message splitting with balanced fences, thread names, button ids.

use featurebot::discord::text::{split, thread_name, MESSAGE_LIMIT, THREAD_NAME_LIMIT};
use featurebot::discord::{Action, Button};
use featurebot::model::FeatureId;

/// Splits `text` and checks that every part is within the limit, has balanced fences and is
/// not empty.
fn check_split(text: &str, limit: usize) -> Vec<String> {
    let parts = split(text, limit);
    for part in &parts {
        assert!(
            part.chars().count() <= limit,
            "{} > {limit}",
            part.chars().count()
        );
        let fences = part
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        assert_eq!(fences % 2, 0, "unbalanced fences in {part:?}");
        assert!(!part.trim().is_empty());
    }
    parts
}

#[test]
fn short_text_is_one_message() {
    assert_eq!(check_split("hello\nworld", MESSAGE_LIMIT), ["hello\nworld"]);
    assert!(split("", MESSAGE_LIMIT).is_empty());
}

#[test]
fn long_text_splits_at_line_ends() {
    let text: String = (0..400).map(|i| format!("line number {i}\n")).collect();
    let parts = check_split(&text, MESSAGE_LIMIT);
    assert!(parts.len() >= 3);
    assert_eq!(
        parts.concat(),
        text,
        "no fences involved, so nothing is added"
    );
    assert!(parts.iter().all(|p| p.ends_with('\n')));
}

#[test]
fn a_code_block_cut_by_a_split_is_closed_and_reopened() {
    let code: String = (0..300).map(|i| format!("let x{i} = {i};\n")).collect();
    let text = format!("Here is the code:\n```rust\n{code}```\nDone.");
    let parts = check_split(&text, MESSAGE_LIMIT);
    assert!(parts.len() >= 2);
    assert!(
        parts[0].ends_with("```"),
        "{:?}",
        &parts[0][parts[0].len() - 20..]
    );
    assert!(parts[1].starts_with("```rust\n"));
    // Taking out the added closing and reopening lines gives the text back.
    let mut rebuilt = parts[0].strip_suffix("```").unwrap().to_string();
    for part in &parts[1..] {
        let body = part.strip_prefix("```rust\n").unwrap_or(part);
        rebuilt.push_str(
            body.strip_suffix("```")
                .filter(|_| part != parts.last().unwrap())
                .unwrap_or(body),
        );
    }
    assert_eq!(rebuilt, text);
}

#[test]
fn a_line_longer_than_a_message_is_cut() {
    let text = "é".repeat(5_000);
    let parts = check_split(&text, MESSAGE_LIMIT);
    assert_eq!(parts.concat(), text);
    assert_eq!(parts.len(), 3);
}

#[test]
fn a_5000_character_reply_with_code_splits_cleanly() {
    let mut text = String::from("Intro paragraph.\n\n```python\n");
    while text.len() < 5_000 {
        text.push_str("print('hello world, this is a line of code')\n");
    }
    text.push_str("```\nAfter the code.\n");
    let parts = check_split(&text, MESSAGE_LIMIT);
    assert_eq!(parts.len(), 3);
    assert!(parts[2].ends_with("After the code.\n"));
}

#[test]
fn thread_names_fit_discord() {
    assert_eq!(thread_name("Dark mode"), "Dark mode");
    let long = thread_name(&"x".repeat(300));
    assert_eq!(long.chars().count(), THREAD_NAME_LIMIT);
    assert!(long.ends_with('…'));
    let emoji = thread_name(&"🚀".repeat(150));
    assert_eq!(emoji.chars().count(), THREAD_NAME_LIMIT);
}

#[test]
fn button_ids_round_trip_and_stay_short() {
    for action in [
        Action::GeneratePlan,
        Action::KeepRefining,
        Action::Approve,
        Action::RequestChanges,
        Action::Discard,
        Action::CancelRun,
        Action::ResumeRun,
        Action::AbortRun,
        Action::CreateIssue,
        Action::FollowUp,
        Action::StepContinue,
        Action::StepChange,
        Action::StepAbort,
        Action::KeepMine,
        Action::TakeTheirs,
    ] {
        let button = Button {
            action,
            feature: FeatureId(u64::MAX),
            version: u32::MAX,
        };
        let id = button.to_string();
        assert!(id.len() <= 100, "{id}");
        assert_eq!(id.parse::<Button>(), Ok(button));
        assert!(action.label().chars().count() <= 80);
    }
    for bad in [
        "",
        "fb",
        "fb:plan:1",
        "fb:nope:1:1",
        "fb:plan:0:1",
        "fb:plan:1:1:1",
        "xx:plan:1:1",
    ] {
        assert!(bad.parse::<Button>().is_err(), "{bad}");
    }
}

#[test]
fn the_invite_url_asks_for_what_the_readme_says() {
    let url = featurebot::discord::invite_url(42);
    assert_eq!(
        url,
        "https://discord.com/oauth2/authorize?client_id=42&scope=bot%20applications.commands&permissions=360777370624"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("permissions=360777370624"));
}
