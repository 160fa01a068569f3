//! The LLM prompts: compiled in from `prompts/` as defaults, so the binary works from any
//! directory, and replaceable file by file from the folder named by `prompts.dir`.
//!
//! Templates use `{{name}}` placeholders, filled by [`render`]. The Markdown files are the
//! single source of truth for wording; code only fills in values.

use std::path::Path;

use anyhow::Context;

/// The prompts one featurebot process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// The system prompt of the requirements conversation (`requirements.md`).
    pub requirements: String,
    /// The instruction that asks for the plan (`plan.md`).
    pub plan: String,
    /// The follow-up sent when a plan lacks sections (`plan-repair.md`).
    pub plan_repair: String,
    /// The coding agent's system prompt (`agent.md`).
    pub agent: String,
}

/// Each prompt's file name and built-in text.
const BUILTIN: [(&str, &str); 4] = [
    (
        "requirements.md",
        include_str!("../prompts/requirements.md"),
    ),
    ("plan.md", include_str!("../prompts/plan.md")),
    ("plan-repair.md", include_str!("../prompts/plan-repair.md")),
    ("agent.md", include_str!("../prompts/agent.md")),
];

impl Prompts {
    /// The prompts compiled into the binary.
    pub fn builtin() -> Prompts {
        Prompts {
            requirements: BUILTIN[0].1.to_string(),
            plan: BUILTIN[1].1.to_string(),
            plan_repair: BUILTIN[2].1.to_string(),
            agent: BUILTIN[3].1.to_string(),
        }
    }

    /// The built-in prompts, with any file of the same name in `dir` taking precedence.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Prompts> {
        let mut texts = BUILTIN.map(|(name, text)| (name, text.to_string()));
        if let Some(dir) = dir {
            for (name, text) in texts.iter_mut() {
                let path = dir.join(*name);
                if path.is_file() {
                    let custom = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading prompt override {}", path.display()))?;
                    if custom.trim().is_empty() {
                        anyhow::bail!(
                            "prompt override {} is empty; delete it to use the built-in prompt",
                            path.display()
                        );
                    }
                    *text = custom;
                }
            }
        }
        let [requirements, plan, plan_repair, agent] = texts.map(|(_, text)| text);
        Ok(Prompts {
            requirements,
            plan,
            plan_repair,
            agent,
        })
    }
}

/// Replaces each `{{key}}` in `template` by its value. Unknown placeholders stay as they are,
/// so a typo in an override shows up in the text the LLM receives rather than vanishing.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}
