//! Named LLM scripts: what the fake LLM answers in the scenarios many tests share, so a test
//! says "the conversation" or "a run of two finished steps" instead of repeating the replies.

use serde_json::{json, Value};

use super::fake_llm::{FakeLlm, Reply};

/// A plan with every required section; its two steps are "Add GET /export.csv" and "Add an
/// Export button".
pub const GOOD_PLAN: &str = "## Summary & goal\nLet users export their data as CSV.\n\n## User stories / acceptance criteria\nAs a user I want a CSV export.\n- [ ] the file downloads\n\n## Implementation steps\n### Backend\n1. Add GET /export.csv\n### Frontend\n2. Add an Export button\n\n## Test plan\n- an integration test downloads the file\n";

/// The branch of a run of feature #1, "Export CSV".
pub const BRANCH: &str = "featurebot/1-export-csv";

/// A tool call the fake LLM answers with.
pub fn call(name: &str, args: Value) -> Reply {
    Reply::ToolCalls(vec![(name.to_string(), args)])
}

/// The LLM's next answer is `text`: a question in the conversation, or any plain reply.
pub fn ask(llm: &FakeLlm, text: &str) {
    llm.push(Reply::Text(text.to_string()));
}

/// The LLM confirms the requirements with these points.
pub fn confirm(llm: &FakeLlm, points: &[&str]) {
    let list: String = points.iter().map(|p| format!("\n- {p}")).collect();
    llm.push(Reply::Text(format!("CONFIRMED{list}")));
}

/// The LLM writes [`GOOD_PLAN`].
pub fn plan_reply(llm: &FakeLlm) {
    llm.push(Reply::Text(GOOD_PLAN.to_string()));
}

/// The requirements conversation the Discord tests hold: one question, then the confirmation.
pub fn script_conversation(llm: &FakeLlm) {
    ask(llm, "Which format should the export use?");
    confirm(llm, &["export the orders table as CSV"]);
}

/// A feature taken to its plan: one question ("Which format?"), the confirmation, [`GOOD_PLAN`].
pub fn script_to_plan(llm: &FakeLlm) {
    ask(llm, "Which format?");
    confirm(llm, &["CSV export"]);
    plan_reply(llm);
}

/// The agent finishes one step per summary, without changing a file.
pub fn finish_steps(llm: &FakeLlm, summaries: &[&str]) {
    for summary in summaries {
        llm.push(call("finish_step", json!({ "summary": summary })));
    }
}

/// The agent writes `export.txt` in the first step, for a run of [`GOOD_PLAN`].
pub fn write_export(llm: &FakeLlm) {
    llm.push(call(
        "write_file",
        json!({"path": "export.txt", "content": "GET /export.csv\n"}),
    ));
}

/// A run of [`GOOD_PLAN`]: step 1 writes `export.txt`, both steps finish.
pub fn export_run(llm: &FakeLlm) {
    write_export(llm);
    finish_steps(llm, &["endpoint added", "button added"]);
}
