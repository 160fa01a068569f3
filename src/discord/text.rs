//! Fitting text into Discord's limits: messages of at most 2,000 characters with code fences
//! balanced across the split, thread names of at most 100.

/// Discord's limit on a message's content, in characters.
pub const MESSAGE_LIMIT: usize = 2_000;
/// Discord's limit on a channel or thread name, in characters.
pub const THREAD_NAME_LIMIT: usize = 100;

/// A thread name for a feature: its title, cut to Discord's limit with an ellipsis.
pub fn thread_name(title: &str) -> String {
    let full = title.to_string();
    if full.chars().count() <= THREAD_NAME_LIMIT {
        return full;
    }
    let mut cut: String = full.chars().take(THREAD_NAME_LIMIT - 1).collect();
    cut.push('…');
    cut
}

/// Splits `text` into messages of at most `limit` characters, at line ends where it can. A
/// code block cut by a split is closed at the end of one message and reopened (with its
/// language) at the start of the next, so every message renders on its own.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    // Room kept in every message for a closing fence and a newline.
    let reserve = 4;
    let budget = limit.saturating_sub(reserve).max(16);
    let mut messages = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    // The opening line of the code block we are in, if any.
    let mut fence: Option<String> = None;

    for line in lines_with_ends(text) {
        for piece in hard_wrap(line, budget.saturating_sub(fence_len(&fence))) {
            let piece_len = piece.chars().count();
            if current_len + piece_len > budget && current_len > 0 {
                if fence.is_some() {
                    if !current.ends_with('\n') {
                        current.push('\n');
                    }
                    current.push_str("```");
                }
                messages.push(std::mem::take(&mut current));
                current_len = 0;
                if let Some(open) = &fence {
                    current.push_str(open);
                    current.push('\n');
                    current_len = open.chars().count() + 1;
                }
            }
            current.push_str(piece);
            current_len += piece_len;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(trimmed.trim_end().to_string()),
            };
        }
    }
    if !current.trim().is_empty() {
        messages.push(current);
    }
    messages
}

fn fence_len(fence: &Option<String>) -> usize {
    fence.as_ref().map_or(0, |f| f.chars().count() + 1)
}

/// The lines of `text`, each with its `\n` if it had one.
fn lines_with_ends(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// Cuts a line longer than `max` characters into pieces of at most `max`.
fn hard_wrap(line: &str, max: usize) -> Vec<&str> {
    let max = max.max(1);
    if line.chars().count() <= max {
        return vec![line];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in line.char_indices() {
        if count == max {
            pieces.push(&line[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    pieces.push(&line[start..]);
    pieces
}
