//! The CONFIRMED marker and fitting a transcript into the context window.

use featurebot::conversation::{estimate_tokens, fit_transcript, read_reply, MarkerFilter};
use featurebot::llm::Role;
use featurebot::model::{Speaker, Turn};
use time::OffsetDateTime;

/// Checks that `reply` reads as `visible`, with `summary` when it confirms.
fn check(reply: &str, visible: &str, summary: Option<&str>) {
    let reading = read_reply(reply);
    assert_eq!(reading.visible, visible, "visible text of {reply:?}");
    assert_eq!(
        reading.confirmed.as_deref(),
        summary,
        "summary of {reply:?}"
    );
    // Streaming the same reply in every two-way split gives the same result.
    for (i, _) in reply.char_indices() {
        let mut filter = MarkerFilter::default();
        let mut shown = filter.push(&reply[..i]);
        shown.push_str(&filter.push(&reply[i..]));
        shown.push_str(&filter.finish());
        let streamed = filter.reading(shown.clone());
        assert_eq!(streamed, reading, "split at {i} of {reply:?}");
        assert!(
            !shown.contains("CONFIRMED\n"),
            "marker shown for split {i}: {shown:?}"
        );
    }
}

#[test]
fn the_marker_on_its_own_line_confirms_and_disappears() {
    check(
        "Great, that covers it.\nCONFIRMED\n- users can export\n- as CSV",
        "Great, that covers it.\n- users can export\n- as CSV",
        Some("- users can export\n- as CSV"),
    );
    check(
        "CONFIRMED: export as CSV",
        "export as CSV",
        Some("export as CSV"),
    );
    check(
        "**CONFIRMED**\nSummary here",
        "Summary here",
        Some("Summary here"),
    );
    check("## CONFIRMED\n\nAll set.", "All set.", Some("All set."));
    check(
        "Summary first.\n\nCONFIRMED",
        "Summary first.",
        Some("Summary first."),
    );
    check("CONFIRMED - done", "done", Some("done"));
    check("  CONFIRMED  \r\nok", "ok", Some("ok"));
}

#[test]
fn the_word_inside_a_sentence_is_not_the_marker() {
    check(
        "This is not CONFIRMED yet: what about errors?",
        "This is not CONFIRMED yet: what about errors?",
        None,
    );
    check(
        "CONFIRMED yet? Not quite.",
        "CONFIRMED yet? Not quite.",
        None,
    );
    check("UNCONFIRMED items:\n- a", "UNCONFIRMED items:\n- a", None);
    check("Confirmed by the team?", "Confirmed by the team?", None);
    check("CONFIRMEDLY odd", "CONFIRMEDLY odd", None);
    check(
        "I'll say CONFIRMED when done.",
        "I'll say CONFIRMED when done.",
        None,
    );
    check("`CONFIRMED` is our word", "`CONFIRMED` is our word", None);
    check("", "", None);
}

#[test]
fn ordinary_text_streams_without_delay() {
    let mut filter = MarkerFilter::default();
    assert_eq!(filter.push("What should"), "What should");
    assert_eq!(filter.push(" happen?\nC"), " happen?\n");
    // "C" could start the marker: held until the line shows otherwise.
    assert_eq!(filter.push("an it"), "Can it");
    assert_eq!(filter.finish(), "");
    assert!(!filter.confirmed());
}

fn turn(seq: u64, speaker: Speaker, text: &str) -> Turn {
    Turn {
        seq,
        speaker,
        author: "x".to_string(),
        text: text.to_string(),
        source_id: None,
        at: OffsetDateTime::now_utc(),
    }
}

#[test]
fn a_short_transcript_is_sent_whole() {
    let turns = vec![
        turn(0, Speaker::User, "Feature request: export"),
        turn(1, Speaker::Assistant, "Which format?"),
        turn(2, Speaker::User, "CSV"),
    ];
    let messages = fit_transcript("system prompt", &turns, 10_000);
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::User]
    );
    assert_eq!(messages[3].content, "CSV");
}

#[test]
fn a_long_transcript_keeps_the_request_and_the_latest_turns() {
    let mut turns = vec![turn(0, Speaker::User, "Feature request: the original ask")];
    for i in 1..200 {
        let speaker = if i % 2 == 1 {
            Speaker::Assistant
        } else {
            Speaker::User
        };
        turns.push(turn(
            i,
            speaker,
            &format!("turn {i} {}", "words ".repeat(50)),
        ));
    }
    let budget = 2_000;
    let messages = fit_transcript("system", &turns, budget);
    let total: usize = messages.iter().map(|m| estimate_tokens(&m.content)).sum();
    assert!(
        total <= budget + 64,
        "{total} tokens sent for a budget of {budget}"
    );
    assert_eq!(messages[1].content, "Feature request: the original ask");
    assert!(
        messages[2].content.contains("earlier messages"),
        "{}",
        messages[2].content
    );
    assert!(messages.last().unwrap().content.starts_with("turn 199 "));
    assert!(messages[messages.len() - 2]
        .content
        .starts_with("turn 198 "));
}

#[test]
fn a_single_huge_turn_is_cut_in_the_middle() {
    let huge = format!("START {} END", "é".repeat(100_000));
    let turns = vec![
        turn(0, Speaker::User, "request"),
        turn(1, Speaker::User, &huge),
    ];
    let messages = fit_transcript("system", &turns, 1_000);
    let last = &messages.last().unwrap().content;
    assert!(last.starts_with("START") && last.ends_with("END"));
    assert!(last.contains("characters left out"));
    assert!(estimate_tokens(last) < 1_000);
}
