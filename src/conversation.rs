//! The requirements dialogue, as pure functions of the transcript: what to send the LLM, and
//! how to read its answer.
//!
//! The LLM signals that the requirements are actionable by writing `CONFIRMED` on a line of its
//! own. [`MarkerFilter`] removes that marker from the text people see, while the text streams,
//! and reports the summary that follows it. [`fit_transcript`] keeps a long conversation inside
//! the model's context window without losing the original request or the latest turns.

use crate::llm::Message;
use crate::model::{Speaker, Turn};

/// The word the requirements prompt tells the LLM to write when it is satisfied.
pub const MARKER: &str = "CONFIRMED";

/// The first user turn of every feature: the request itself.
pub fn opening_request(title: &str, requester: &str) -> String {
    format!("Feature request from {requester}: {title}")
}

/// An LLM answer, split into what people see and whether it confirmed the requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The answer without the marker.
    pub visible: String,
    /// The summary of the agreed requirements when the answer confirmed them.
    pub confirmed: Option<String>,
}

/// Reads a complete answer. Same result as streaming it through a [`MarkerFilter`].
pub fn read_reply(text: &str) -> Reading {
    let mut filter = MarkerFilter::default();
    let mut visible = filter.push(text);
    visible.push_str(&filter.finish());
    filter.reading(visible)
}

/// Strips the marker from streamed text as it arrives.
///
/// Text passes through at once, except a line that could still turn out to be the marker: that
/// line is held back until its end shows what it is. A marker line is one whose only content,
/// ignoring Markdown emphasis and heading signs, is `CONFIRMED`, optionally followed by `:` or
/// `-` and the summary. "not CONFIRMED yet" or "UNCONFIRMED" are ordinary text.
#[derive(Debug, Default)]
pub struct MarkerFilter {
    /// The current line, not yet emitted.
    held: String,
    /// Whether the current line's start was already emitted (it cannot be a marker).
    line_emitted: bool,
    found: bool,
    /// Visible text from the marker on: the summary.
    after_marker: String,
    /// Visible text before the marker.
    before_marker: String,
}

impl MarkerFilter {
    /// Feeds a chunk of the answer; returns the text that can be shown now.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        for ch in chunk.chars() {
            if self.line_emitted {
                self.emit(&mut out, ch.encode_utf8(&mut [0; 4]));
                if ch == '\n' {
                    self.line_emitted = false;
                }
                continue;
            }
            self.held.push(ch);
            if ch == '\n' {
                let line = self.settle_line();
                self.emit(&mut out, &line);
            } else if !could_be_marker(&self.held) {
                let held = std::mem::take(&mut self.held);
                self.emit(&mut out, &held);
                self.line_emitted = true;
            }
        }
        out
    }

    /// Ends the stream; returns any text still held back.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        let line = self.settle_line();
        self.emit(&mut out, &line);
        out
    }

    /// Whether the marker has been seen so far.
    pub fn confirmed(&self) -> bool {
        self.found
    }

    /// The final reading, given all the visible text emitted.
    pub fn reading(&self, visible: String) -> Reading {
        let confirmed = self.found.then(|| {
            let after = self.after_marker.trim();
            if after.is_empty() {
                self.before_marker.trim().to_string()
            } else {
                after.to_string()
            }
        });
        Reading {
            visible: tidy(&visible),
            confirmed,
        }
    }

    /// Decides what the held (complete or final) line shows.
    fn settle_line(&mut self) -> String {
        let line = std::mem::take(&mut self.held);
        match marker_rest(&line) {
            Some(rest) => {
                self.found = true;
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                let rest = rest.trim();
                if rest.is_empty() {
                    String::new()
                } else {
                    format!("{rest}{newline}")
                }
            }
            None => line,
        }
    }

    /// Shows `text`, remembering whether it came before or after the marker.
    fn emit(&mut self, out: &mut String, text: &str) {
        out.push_str(text);
        if self.found {
            self.after_marker.push_str(text);
        } else {
            self.before_marker.push_str(text);
        }
    }
}

/// Characters that decorate a marker line without being part of it.
fn is_decoration(c: char) -> bool {
    matches!(c, '*' | '_' | '#' | '`' | '>' | '~') || c.is_whitespace()
}

/// Whether `partial` (a line without its end) can still become a marker line.
fn could_be_marker(partial: &str) -> bool {
    let core = partial.trim_start_matches(is_decoration);
    if core.len() <= MARKER.len() {
        return MARKER.starts_with(core);
    }
    // Past the word itself, only decoration and a separator may follow before we know.
    core.starts_with(MARKER) && marker_rest(partial).is_some()
}

/// If `line` is a marker line, the text that follows the marker on it.
fn marker_rest(line: &str) -> Option<&str> {
    let core = line.trim_start_matches(is_decoration);
    let after = core.strip_prefix(MARKER)?;
    let after = after.trim_start_matches(['*', '_', '`', '~']);
    let after = after.trim_start_matches(|c: char| c.is_whitespace() && c != '\n');
    if after.is_empty() || after == "\n" {
        return Some("");
    }
    for sep in [':', '-', '.', '!', '\u{2013}', '\u{2014}'] {
        if let Some(rest) = after.strip_prefix(sep) {
            return Some(rest.trim_start_matches(['*', '_', '`', '~']));
        }
    }
    None
}

/// Drops blank lines left at the start and end where a marker was removed.
fn tidy(text: &str) -> String {
    text.trim_matches('\n').to_string()
}

/// An estimate of the tokens of `text`: about four bytes a token for English and code, which
/// errs on the safe side for most tokenizers.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4) + 4
}

/// Builds the messages for the next answer: the system prompt, then as much of the transcript
/// as fits in `budget` tokens. The first turn (the original request) and the latest turns are
/// always kept; turns in between are dropped oldest first and replaced by a note. A single turn
/// too long for the budget is cut in its middle.
pub fn fit_transcript(system: &str, turns: &[Turn], budget: usize) -> Vec<Message> {
    let mut messages = vec![Message::system(system)];
    let Some((first, rest)) = turns.split_first() else {
        return messages;
    };
    let to_message = |turn: &Turn, limit: usize| {
        let text = cut_middle(&turn.text, limit.saturating_mul(4));
        match turn.speaker {
            Speaker::User => Message::user(text),
            Speaker::Assistant => Message::assistant(text),
        }
    };
    let available = budget.saturating_sub(estimate_tokens(system));
    // The request may take up to a third of the room; the rest goes to the latest turns.
    let first_limit = estimate_tokens(&first.text).min(available / 3).max(64);
    messages.push(to_message(first, first_limit));
    let mut left = available.saturating_sub(first_limit);

    let mut kept = Vec::new();
    for turn in rest.iter().rev() {
        let cost = estimate_tokens(&turn.text);
        if cost <= left {
            kept.push(to_message(turn, cost));
            left -= cost;
        } else if kept.is_empty() {
            // The latest turn alone is too long: keep its start and end.
            kept.push(to_message(turn, left.max(64)));
            left = 0;
        } else {
            break;
        }
    }
    let dropped = rest.len() - kept.len();
    if dropped > 0 {
        messages.push(Message::user(format!(
            "[{dropped} earlier messages of this conversation were left out to fit the context window]"
        )));
    }
    messages.extend(kept.into_iter().rev());
    messages
}

/// Keeps the start and end of `text` within about `max_bytes`, marking the cut.
fn cut_middle(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let half = max_bytes.saturating_sub(40) / 2;
    let mut head_end = half;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - half;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}\n[... {} characters left out ...]\n{}",
        &text[..head_end],
        text[head_end..tail_start].chars().count(),
        &text[tail_start..]
    )
}
