//! The plan: the title and slug types, the section check, the file name and the Markdown
//! written to the repository.
//!
//! Everything here is pure. Invariant: a plan path is `<tasks_dir>/<UTC YYYYMMDD-HHMMSS>-<slug>.md`
//! where the slug is ASCII `[a-z0-9-]`, so it can never leave the tasks folder.

pub mod file;
pub mod pr;

use std::fmt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::model::{Feature, FeatureId, Status};

/// The longest title we accept. Details belong in the conversation.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest slug in a file name.
pub const MAX_SLUG_CHARS: usize = 60;

/// A feature title: one line, no control characters, 1 to [`MAX_TITLE_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Cleans up whitespace and control characters, then refuses what is left if it is empty or
    /// too long. The error is a sentence for the user.
    pub fn parse(raw: &str) -> Result<Title, String> {
        let cleaned: String = raw
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .filter(|c| !is_invisible(*c))
            .collect();
        let title = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
        let count = title.chars().count();
        if count == 0 {
            return Err(
                "the feature needs a title: say in a few words what you want built".to_string(),
            );
        }
        if count > MAX_TITLE_CHARS {
            return Err(format!(
                "the title is {count} characters long; keep it to {MAX_TITLE_CHARS} and put the details in the conversation"
            ));
        }
        Ok(Title(title))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Title {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Zero-width, bidirectional-control and other invisible format characters that would hide
/// text in a title (the soft hyphen, the Arabic letter mark, word joiners, tag characters).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// The file-name part derived from a title: ASCII letters, digits and single hyphens, 1 to
/// [`MAX_SLUG_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// The slug of `title`, or `feature-<id>` when the title has no letters or digits to keep.
    pub fn new(title: &str, id: FeatureId) -> Slug {
        let full = slug::slugify(title);
        let mut cut = String::new();
        for word in full.split('-').filter(|w| !w.is_empty()) {
            let extra = if cut.is_empty() { 0 } else { 1 };
            if cut.len() + extra + word.len() > MAX_SLUG_CHARS {
                if cut.is_empty() {
                    cut.push_str(&word[..MAX_SLUG_CHARS]);
                }
                break;
            }
            if extra == 1 {
                cut.push('-');
            }
            cut.push_str(word);
        }
        let safe = !cut.is_empty()
            && cut
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if safe {
            Slug(cut)
        } else {
            Slug(format!("feature-{id}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path of a new plan, relative to the repository root. `n` > 1 adds a suffix, for the
/// rare case of two plans with the same slug in the same second.
pub fn plan_path(tasks_dir: &Path, at: OffsetDateTime, slug: &Slug, n: u32) -> PathBuf {
    let at = at.to_offset(time::UtcOffset::UTC);
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let name = if n > 1 {
        format!("{stamp}-{slug}-{n}.md")
    } else {
        format!("{stamp}-{slug}.md")
    };
    tasks_dir.join(name)
}

/// The sections every plan must have, as shown to people and the LLM.
pub const SECTIONS: [&str; 4] = [
    "Summary & goal",
    "User stories / acceptance criteria",
    "Implementation steps",
    "Test plan",
];

/// The required sections `markdown` lacks, in order. A section counts when a heading names it
/// (any level, any case); the implementation steps also need at least one numbered step.
pub fn missing_sections(markdown: &str) -> Vec<&'static str> {
    let headings: Vec<String> = markdown
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .map(|l| normalize(l.trim_start().trim_start_matches('#')))
        .collect();
    let has = |keys: &[&str]| headings.iter().any(|h| keys.iter().any(|k| h.contains(k)));
    let mut missing = Vec::new();
    if !has(&["summary", "goal"]) {
        missing.push(SECTIONS[0]);
    }
    if !has(&["user stor", "acceptance criteria"]) {
        missing.push(SECTIONS[1]);
    }
    if !has(&["implementation steps", "implementation plan"]) || steps(markdown).is_empty() {
        missing.push(SECTIONS[2]);
    }
    if !has(&["test plan", "testing plan", "tests"]) {
        missing.push(SECTIONS[3]);
    }
    missing
}

/// The numbered steps of the *Implementation steps* section, in order, as their first lines
/// (without a `[x]` tick the agent may have added).
pub fn steps(markdown: &str) -> Vec<String> {
    let lines: Vec<&str> = markdown.lines().collect();
    step_lines(markdown)
        .into_iter()
        .map(|(line, title_at)| {
            let title = &lines[line][title_at..];
            title
                .strip_prefix("[x] ")
                .or_else(|| title.strip_prefix("[ ] "))
                .unwrap_or(title)
                .trim()
                .to_string()
        })
        .collect()
}

/// The acceptance criteria of the *User stories / acceptance criteria* section: its checklist
/// items (`- [ ] ...`), or its bullets when it has no checklist.
pub fn acceptance_criteria(markdown: &str) -> Vec<String> {
    let mut in_section = false;
    let mut level = 0;
    let mut checks = Vec::new();
    let mut bullets = Vec::new();
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            let this_level = trimmed.chars().take_while(|c| *c == '#').count();
            let name = normalize(trimmed.trim_start_matches('#'));
            if name.contains("acceptance criteria") || name.contains("user stor") {
                in_section = true;
                level = this_level;
            } else if in_section && this_level <= level {
                in_section = false;
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        else {
            continue;
        };
        match item
            .strip_prefix("[ ] ")
            .or_else(|| item.strip_prefix("[x] "))
            .or_else(|| item.strip_prefix("[X] "))
        {
            Some(check) => checks.push(check.trim().to_string()),
            None => bullets.push(item.trim().to_string()),
        }
    }
    if checks.is_empty() {
        bullets
    } else {
        checks
    }
}

/// `text` (a plan file) with step `index` (0-based) ticked off as `N. [x] title`; unchanged
/// when there is no such step or it is ticked already.
pub fn tick_step(text: &str, index: usize) -> String {
    let Some((line, title_at)) = step_lines(text).get(index).copied() else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len() + 4);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i == line {
            let title = &l[title_at..];
            if let Some(rest) = title.strip_prefix("[ ] ") {
                out.push_str(&l[..title_at]);
                out.push_str("[x] ");
                out.push_str(rest);
            } else if title.starts_with("[x] ") {
                out.push_str(l);
            } else {
                out.push_str(&l[..title_at]);
                out.push_str("[x] ");
                out.push_str(title);
            }
        } else {
            out.push_str(l);
        }
    }
    out
}

/// For each numbered step of the *Implementation steps* section, whether it is ticked off
/// (`N. [x] title`, as [`tick_step`] writes it).
pub fn ticked_steps(text: &str) -> Vec<bool> {
    let lines: Vec<&str> = text.lines().collect();
    step_lines(text)
        .into_iter()
        .map(|(line, title_at)| lines[line][title_at..].starts_with("[x] "))
        .collect()
}

/// For each numbered step of the *Implementation steps* section: its line number and the byte
/// offset in that line where the title starts.
fn step_lines(markdown: &str) -> Vec<(usize, usize)> {
    let mut in_section = false;
    let mut level = 0;
    let mut out = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            let this_level = trimmed.chars().take_while(|c| *c == '#').count();
            let name = normalize(trimmed.trim_start_matches('#'));
            if name.contains("implementation steps") || name.contains("implementation plan") {
                in_section = true;
                level = this_level;
            } else if in_section && this_level <= level {
                in_section = false;
            }
            continue;
        }
        if !in_section || line.starts_with("    ") || line.starts_with('\t') {
            continue;
        }
        let digits = trimmed.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            if let Some(rest) = trimmed[digits..].strip_prefix(['.', ')']) {
                if let Some(title) = rest.strip_prefix(' ') {
                    let title_at = line.len() - title.len();
                    out.push((i, title_at));
                }
            }
        }
    }
    out
}

fn normalize(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes what LLMs put around a plan despite being asked not to: a fence around the whole
/// answer, and leading or trailing blank lines.
pub fn clean_markdown(answer: &str) -> String {
    let trimmed = answer.trim();
    if let Some(inner) = trimmed.strip_prefix("```") {
        if let Some(body_start) = inner.find('\n') {
            let body = &inner[body_start + 1..];
            if let Some(body) = body.trim_end().strip_suffix("```") {
                return body.trim().to_string();
            }
        }
    }
    trimmed.to_string()
}

/// What the plan file's front matter says besides the feature's own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub version: u32,
    pub created: OffsetDateTime,
    pub status: Status,
    pub pr: Option<String>,
}

/// The plan file: a small front matter (kept up to date with the feature's status, priority,
/// labels and pull request), then the plan.
pub fn render_file(feature: &Feature, meta: &Meta, markdown: &str) -> String {
    let created = meta
        .created
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // JSON strings and arrays are valid YAML, and escape anything odd in a title or a name.
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut front = format!(
        "---\nfeature_id: {}\ntitle: {}\nrequester: {}\nversion: {}\ncreated: {}\nstatus: {}\npriority: {}\n",
        feature.id,
        quote(&feature.title),
        quote(&feature.requester.name),
        meta.version,
        created,
        meta.status.as_str().replace(' ', "_"),
        feature.priority.as_str(),
    );
    if !feature.labels.is_empty() {
        let labels = serde_json::Value::from(feature.labels.clone()).to_string();
        front.push_str(&format!("labels: {labels}\n"));
    }
    if let Some(pr) = &meta.pr {
        front.push_str(&format!("pr: {}\n", quote(pr)));
    }
    format!("{front}---\n\n{}\n", file_body(&feature.title, markdown))
}

/// The plan file's text below its front matter: the title as a heading, then the plan.
pub fn file_body(title: &str, markdown: &str) -> String {
    format!("# {title}\n\n{}", markdown.trim())
}

/// The fingerprint of a plan file's body ([`file_body`], or what
/// [`file::parse_plan_file`] reads back), for checking that the plan a runner finds is the one
/// that was approved: the SHA-256, in hex, of the text with its steps' `[x]` ticks taken off
/// (a run adds them; `[ ]` boxes are taken off too) and without surrounding blank lines. The front matter is not part of it:
/// featurebot rewrites that as the feature moves.
pub fn fingerprint(body: &str) -> String {
    use sha2::{Digest, Sha256};
    let body = body.trim();
    let mut unticked = String::with_capacity(body.len());
    let steps = step_lines(body);
    for (i, line) in body.lines().enumerate() {
        match steps.iter().find(|(l, _)| *l == i) {
            Some((_, at)) if line[*at..].starts_with("[x] ") || line[*at..].starts_with("[ ] ") => {
                unticked.push_str(&line[..*at]);
                unticked.push_str(&line[at + 4..]);
            }
            _ => unticked.push_str(line),
        }
        unticked.push('\n');
    }
    Sha256::digest(unticked.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The commit message of a plan version: `plan: <title>` and the `Feature-Id` and
/// `Plan-Version` trailers.
pub fn commit_message(feature: &Feature, version: u32) -> String {
    format!(
        "plan: {}\n\nFeature-Id: {}\nPlan-Version: {}\n",
        feature.title, feature.id, version
    )
}
