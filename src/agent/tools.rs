//! The built-in agent's file tools, confined to the work tree.
//!
//! Each tool takes the model's JSON arguments and returns text for the model: a result, or an
//! error it can act on (a missing file, a search text that is not unique). Every path goes
//! through `paths::resolve`, for reads as for writes, so the model cannot read or write outside
//! the work tree or inside `.git`, not even through a link the repository holds.

use std::path::Path;

use serde_json::{json, Value};

use super::paths::resolve;
use crate::llm::ToolSpec;
use crate::repo;

/// The longest file content or listing handed back to the model, in bytes.
const MAX_RESULT_BYTES: usize = 60_000;

/// What a tool call asks of the run, beyond its text result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ListFiles {
        under: Option<String>,
    },
    ReadFile {
        path: String,
        start: Option<usize>,
        end: Option<usize>,
    },
    Search {
        pattern: String,
        under: Option<String>,
    },
    WriteFile {
        path: String,
        content: String,
    },
    EditFile {
        path: String,
        search: String,
        replace: String,
    },
    RunChecks,
    AskHuman {
        question: String,
    },
    FinishStep {
        summary: String,
    },
}

impl Call {
    /// Parses a tool call; the error is a sentence for the model.
    pub fn parse(name: &str, args: &Value) -> Result<Call, String> {
        let text = |key: &str| -> Result<String, String> {
            args.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{name} needs a string argument {key:?}"))
        };
        let optional = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
        let number = |key: &str| args.get(key).and_then(Value::as_u64).map(|n| n as usize);
        Ok(match name {
            "list_files" => Call::ListFiles {
                under: optional("path"),
            },
            "read_file" => Call::ReadFile {
                path: text("path")?,
                start: number("start_line"),
                end: number("end_line"),
            },
            "search" => Call::Search {
                pattern: text("pattern")?,
                under: optional("path"),
            },
            "write_file" => Call::WriteFile {
                path: text("path")?,
                content: text("content")?,
            },
            "edit_file" => Call::EditFile {
                path: text("path")?,
                search: text("search")?,
                replace: text("replace")?,
            },
            "run_checks" => Call::RunChecks,
            "ask_human" => Call::AskHuman {
                question: text("question")?,
            },
            "finish_step" => Call::FinishStep {
                summary: text("summary")?,
            },
            other => return Err(format!("there is no tool named {other:?}")),
        })
    }
}

/// The tools offered to the model.
pub fn specs() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, parameters: Value| ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    };
    let path = json!({"type": "string", "description": "a path relative to the repository root"});
    vec![
        spec(
            "list_files",
            "List the repository's files (tracked and new, not ignored), optionally under a folder.",
            json!({"type": "object", "properties": {"path": path}}),
        ),
        spec(
            "read_file",
            "Read a file, or a range of its lines (1-based, inclusive). Lines are numbered in the result.",
            json!({"type": "object", "properties": {"path": path, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}}, "required": ["path"]}),
        ),
        spec(
            "search",
            "Find lines containing a text (case-sensitive, not a regex) in the repository's files, optionally under a folder.",
            json!({"type": "object", "properties": {"pattern": {"type": "string"}, "path": path}, "required": ["pattern"]}),
        ),
        spec(
            "write_file",
            "Create or replace a whole file.",
            json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}}, "required": ["path", "content"]}),
        ),
        spec(
            "edit_file",
            "Replace one exact occurrence of `search` in a file by `replace`. Fails if `search` occurs zero or several times: include more context to make it unique.",
            json!({"type": "object", "properties": {"path": path, "search": {"type": "string"}, "replace": {"type": "string"}}, "required": ["path", "search", "replace"]}),
        ),
        spec(
            "run_checks",
            "Run the repository's formatters, then its tests; returns whether they passed and the end of their output.",
            json!({"type": "object", "properties": {}}),
        ),
        spec(
            "ask_human",
            "Ask the people who approved the plan a question and wait for the answer. Only for ambiguities that change the result.",
            json!({"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]}),
        ),
        spec(
            "finish_step",
            "End the current step with a short summary of what changed and any assumptions.",
            json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}),
        ),
    ]
}

/// Runs a file tool; `RunChecks`, `AskHuman` and `FinishStep` are the run's to handle.
pub fn run_file_tool(root: &Path, call: &Call) -> Result<String, String> {
    match call {
        Call::ListFiles { under } => {
            let files = repo::worktree::list_files(root).map_err(|e| e.to_string())?;
            let prefix = under
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string());
            let listed: Vec<String> = files
                .into_iter()
                .filter(|f| match &prefix {
                    Some(p) if !p.is_empty() && p != "." => f.starts_with(&format!("{p}/")),
                    _ => true,
                })
                .collect();
            Ok(cap(listed.join("\n")))
        }
        Call::ReadFile { path, start, end } => {
            let full = resolve(root, path)?;
            let text =
                std::fs::read_to_string(&full).map_err(|e| format!("cannot read {path}: {e}"))?;
            let lines: Vec<&str> = text.lines().collect();
            let first = start.unwrap_or(1).max(1);
            let last = end.unwrap_or(lines.len()).min(lines.len());
            if first > last && !lines.is_empty() {
                return Err(format!(
                    "{path} has {} lines; ask for a range inside it",
                    lines.len()
                ));
            }
            let numbered: Vec<String> = lines
                .iter()
                .enumerate()
                .skip(first - 1)
                .take(last.saturating_sub(first - 1))
                .map(|(i, l)| format!("{:>5} {l}", i + 1))
                .collect();
            Ok(cap(numbered.join("\n")))
        }
        Call::Search { pattern, under } => {
            if pattern.is_empty() {
                return Err("the search pattern is empty".to_string());
            }
            let files = repo::worktree::list_files(root).map_err(|e| e.to_string())?;
            let mut hits = Vec::new();
            for file in files {
                if let Some(u) = under.as_deref().filter(|u| !u.is_empty() && *u != ".") {
                    if !file.starts_with(&format!("{}/", u.trim_end_matches('/'))) {
                        continue;
                    }
                }
                // A link in the tree may lead out of it: search only what `resolve` allows.
                let Ok(text) = resolve(root, &file)
                    .and_then(|full| std::fs::read_to_string(full).map_err(|e| e.to_string()))
                else {
                    continue;
                };
                for (i, line) in text.lines().enumerate() {
                    if line.contains(pattern.as_str()) {
                        hits.push(format!("{file}:{}: {}", i + 1, line.trim()));
                    }
                }
                if hits.len() > 500 {
                    break;
                }
            }
            if hits.is_empty() {
                Ok(format!("no line contains {pattern:?}"))
            } else {
                Ok(cap(hits.join("\n")))
            }
        }
        Call::WriteFile { path, content } => {
            let full = resolve(root, path)?;
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {path}: {e}"))?;
            }
            std::fs::write(&full, content).map_err(|e| format!("cannot write {path}: {e}"))?;
            Ok(format!("wrote {path} ({} bytes)", content.len()))
        }
        Call::EditFile {
            path,
            search,
            replace,
        } => {
            let full = resolve(root, path)?;
            let text =
                std::fs::read_to_string(&full).map_err(|e| format!("cannot read {path}: {e}"))?;
            if search.is_empty() {
                return Err("the search text is empty".to_string());
            }
            match text.matches(search.as_str()).count() {
                0 => Err(format!("the search text does not occur in {path}; read the file and copy the text exactly")),
                1 => {
                    let edited = text.replacen(search.as_str(), replace, 1);
                    std::fs::write(&full, edited).map_err(|e| format!("cannot write {path}: {e}"))?;
                    Ok(format!("edited {path}"))
                }
                n => Err(format!("the search text occurs {n} times in {path}; include more surrounding lines so it occurs once")),
            }
        }
        Call::RunChecks | Call::AskHuman { .. } | Call::FinishStep { .. } => {
            Err("this tool is handled by the run".to_string())
        }
    }
}

fn cap(mut text: String) -> String {
    if text.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[... cut: ask for a narrower range ...]");
    }
    text
}
