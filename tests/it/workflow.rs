//! The GitHub Actions runner side: the workflow `featurebot install-workflow` writes, the
//! runner's config, and the workflow's "Run the plan" step executed here with `sh`, the way the
//! runner would, against a clone of a bare remote, the fake LLM and the fake GitHub.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use featurebot::agent::actions::workflow::{self, DispatchInputs, INPUTS, STEP_RUN};
use featurebot::agent::progress::CHECKS_FAILED;
use featurebot::config::Install;
use featurebot::config::{ActionsConfig, AgentConfig, Config, Executor, RepoConfig, Target};
use featurebot::plan::{self, file::parse_plan_file};
use serde_json::{json, Value};

use crate::support::app::{Builder, TestApp};
use crate::support::fake_github::TOKEN;
use crate::support::fake_llm::Reply;
use crate::support::git::{commit_and_push, git, BROKEN_ADD};
use crate::support::scripts::{call, finish_steps};
use crate::support::wait::eventually;

const PLAN_PATH: &str = "tasks/20261126-000000-fix-adding.md";
const PLAN_FILE: &str = "---\nfeature_id: 7\ntitle: \"Fix adding\"\nversion: 1\nstatus: approved\n---\n\n# Fix adding\n\n## Summary & goal\nAdd numbers right.\n\n## User stories / acceptance criteria\n- [ ] add 2 3 gives 5\n\n## Implementation steps\n1. Fix the add function\n2. Document add\n\n## Test plan\n- sh test.sh\n";
const BRANCH: &str = "featurebot/7-fix-adding";
const LLM_KEY: &str = "sk-test-secret";
const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn actions(install: &str, secret: &str) -> ActionsConfig {
    let mut actions = AgentConfig::with_defaults(Path::new("store")).github_actions;
    actions.install = Install::Command(install.to_string());
    actions.llm_key_secret = secret.to_string();
    actions
}

/// The numbers of the lines of `yaml` that are shell script: `run: |` blocks and one-line
/// `run:` values.
fn script_lines(yaml: &str) -> Vec<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    for (n, line) in yaml.lines().enumerate() {
        if let Some(at) = block {
            if line.trim().is_empty() || indent(line) > at {
                out.push(n);
                continue;
            }
            block = None;
        }
        let key = line.trim_start().trim_start_matches("- ");
        if let Some(value) = key.strip_prefix("run:") {
            if value.trim() == "|" {
                block = Some(indent(line));
            } else {
                out.push(n);
            }
        }
    }
    out
}

/// The `env:` entries and the `run:` script of the step called `name`, read from the layout
/// `workflow_yaml` writes.
fn step(yaml: &str, name: &str) -> (Vec<(String, String)>, String) {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("no step {name:?} in\n{yaml}"));
    let mut env = Vec::new();
    let mut script = String::new();
    let mut section = "";
    for line in &lines[start + 1..] {
        if line.trim_start().starts_with("- ")
            || (!line.is_empty() && !line.starts_with("        "))
        {
            break;
        }
        match line.trim() {
            "env:" => section = "env",
            "run: |" => section = "run",
            _ if section == "env" && line.starts_with("          ") => {
                let (key, value) = line.trim().split_once(": ").unwrap();
                env.push((key.to_string(), value.to_string()));
            }
            _ if section == "run" => {
                script.push_str(line.strip_prefix("          ").unwrap_or(line));
                script.push('\n');
            }
            _ => section = "",
        }
    }
    (env, script)
}

#[test]
fn the_workflow_declares_the_dispatch_inputs_and_keeps_them_out_of_scripts() {
    let actions = actions(
        "curl -fsSL https://example.com/featurebot.tar.gz | tar xz\nsudo mv featurebot /usr/local/bin/",
        "SHOP_LLM_KEY",
    );
    let yaml = workflow::workflow_yaml(&actions);

    // Exactly the inputs the bot sends, all strings.
    let at = yaml.find("    inputs:\n").unwrap() + "    inputs:\n".len();
    let declared: Vec<&str> = yaml[at..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.len() - l.trim_start().len() == 6)
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    assert_eq!(declared, INPUTS);
    assert!(declared.len() <= 10, "GitHub allows ten inputs");
    let inputs = DispatchInputs {
        correlation_id: "c-1".to_string(),
        feature_id: 7,
        plan_file: PLAN_PATH.to_string(),
        plan_version: 2,
        plan_sha256: "ab12".to_string(),
        branch: BRANCH.to_string(),
        resume: true,
        config: "[llm]\n".to_string(),
        discussion_url: None,
        closes: Some(12),
    };
    let sent = inputs.to_json();
    assert_eq!(sent.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = INPUTS.to_vec();
        sorted.sort();
        sorted
    });
    assert!(sent.values().all(Value::is_string), "{sent:?}");
    assert_eq!(sent["feature_id"], "7");
    assert_eq!(sent["plan_version"], "2");
    assert_eq!(sent["plan_sha256"], "ab12");
    assert_eq!(sent["resume"], "true");
    assert_eq!(
        sent["discussion_url"], "",
        "an optional input left out is empty"
    );
    assert_eq!(sent["closes"], "12");
    assert_eq!(yaml.matches("        type: string\n").count(), INPUTS.len());

    for expected in [
        "name: featurebot\n",
        "run-name: featurebot ${{ inputs.correlation_id }}\n",
        "on:\n  workflow_dispatch:\n    inputs:\n",
        "permissions:\n  contents: write\n  pull-requests: write\n  issues: write\n",
        "concurrency:\n  group: featurebot-${{ inputs.branch }}\n",
        "    runs-on: ubuntu-latest\n",
        "        uses: actions/checkout@v4\n",
        "          fetch-depth: 0\n",
        "          persist-credentials: false\n",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing in\n{yaml}");
    }
    let names: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .collect();
    assert_eq!(
        names,
        [
            "Check out",
            "Install featurebot",
            "Prepare the sandbox",
            "Set the commit identity",
            "Run the plan"
        ]
    );
    let (_, install) = step(&yaml, "Install featurebot");
    assert_eq!(
        install,
        "curl -fsSL https://example.com/featurebot.tar.gz | tar xz\nsudo mv featurebot /usr/local/bin/\n"
    );

    // No expression at all inside a script: inputs arrive through env.
    let lines: Vec<&str> = yaml.lines().collect();
    let scripts = script_lines(&yaml);
    assert!(scripts.len() > 8, "{scripts:?}");
    for n in &scripts {
        assert!(
            !lines[*n].contains("${{"),
            "an expression in a script: {}",
            lines[*n]
        );
    }
    let (env, script) = step(&yaml, STEP_RUN);
    assert_eq!(
        env,
        [
            ("GITHUB_TOKEN", "${{ secrets.GITHUB_TOKEN }}"),
            ("SHOP_LLM_KEY", "${{ secrets.SHOP_LLM_KEY }}"),
            ("FEATUREBOT_RUNNER_CONFIG", "${{ inputs.config }}"),
            ("PLAN_FILE", "${{ inputs.plan_file }}"),
            ("PLAN_SHA256", "${{ inputs.plan_sha256 }}"),
            ("BRANCH", "${{ inputs.branch }}"),
            ("RESUME", "${{ inputs.resume }}"),
            ("DISCUSSION_URL", "${{ inputs.discussion_url }}"),
            ("CLOSES", "${{ inputs.closes }}"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert!(script.contains(
        "exec featurebot --config \"$RUNNER_TEMP/featurebot.toml\" agent \"$@\" -- \"$PLAN_FILE\""
    ));
    // Every expression names a declared input or a secret.
    for expression in yaml.split("${{ ").skip(1) {
        let expression = expression.split(" }}").next().unwrap();
        let ok = expression
            .strip_prefix("inputs.")
            .is_some_and(|name| INPUTS.contains(&name))
            || matches!(expression, "secrets.GITHUB_TOKEN" | "secrets.SHOP_LLM_KEY");
        assert!(ok, "unexpected expression {expression:?}");
    }
    // Crude YAML hygiene: spaces only, even indentation, every line a key, a list item, a
    // comment or part of a block scalar.
    assert!(!yaml.contains('\t'));
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() || scripts.contains(&n) {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        assert!(indent % 2 == 0, "odd indentation: {line:?}");
        assert!(
            body.starts_with('#') || body.starts_with("- ") || body.contains(':'),
            "not YAML: {line:?}"
        );
    }
}

/// A bot's config file with two target repositories, as a person would write it.
const BOT_CONFIG: &str = r#"
[llm]
provider = "anthropic"
base_url = "https://llm.example.com"
model = "claude-test"
max_context_tokens = 100000
max_output_tokens = 8000
request_timeout_secs = 90
max_retries = 2

[repo]
path = "/srv/featurebot/main-clone"
base_branch = "main"
remote = "upstream"
push_plans = true
author_name = "Shop Bot"
author_email = "bot@shop.example"

[github]
api_base = "https://github.example.com/api/v3"
owner = "acme"
repo = "main"

[[repos]]
name = "shop"
path = "/srv/featurebot/shop-clone"
base_branch = "develop"
tasks_dir = "docs/tasks"
push_plans = true
github_owner = "acme"
github_repo = "shop"

[agent]
network = "on"
setup = ["cargo fetch --locked"]
format = ["cargo fmt"]
test = ["cargo test --quiet", "sh -c 'echo \"quoted\"'"]
max_repair_attempts = 2
max_run_minutes = 45
max_tokens = 500000
env = { RUST_BACKTRACE = "1" }
executor = "github-actions"

[agent.github_actions]
llm_key_secret = "SHOP_LLM_KEY"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(&path, true, &env).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_runner_config_is_the_bots_settings_for_one_repository_without_secrets() {
    let bot = load(
        BOT_CONFIG,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-bot-secret"),
            ("GITHUB_TOKEN", "ghp_botsecret"),
        ],
    );
    let text = workflow::runner_config(&bot, Some("shop"));
    assert!(
        !text.contains("bot-secret") && !text.contains("botsecret"),
        "{text}"
    );
    let runner = load(
        &text,
        &[
            ("SHOP_LLM_KEY", "sk-runner"),
            ("GITHUB_TOKEN", "ghs_runner"),
        ],
    );
    // The LLM as the bot has it, the key from the Actions secret.
    assert_eq!(runner.llm.provider, bot.llm.provider);
    assert_eq!(runner.llm.base_url, bot.llm.base_url);
    assert_eq!(runner.llm.model, "claude-test");
    assert_eq!(runner.llm.max_context_tokens, 100_000);
    assert_eq!(runner.llm.max_output_tokens, 8_000);
    assert_eq!(runner.llm.request_timeout, Duration::from_secs(90));
    assert_eq!(runner.llm.max_retries, 2);
    assert_eq!(runner.llm.api_key_env, "SHOP_LLM_KEY");
    assert_eq!(runner.llm.api_key.unwrap().expose(), "sk-runner");
    // The target's repository, as the checkout the runner stands in.
    assert_eq!(runner.repo.path, PathBuf::from("."));
    assert_eq!(runner.repo.base_branch, "develop");
    assert_eq!(runner.repo.remote, "origin");
    assert_eq!(runner.repo.tasks_dir, PathBuf::from("docs/tasks"));
    assert!(!runner.repo.push_plans);
    assert_eq!(runner.repo.author_name, "Shop Bot");
    assert_eq!(runner.repo.author_email, "bot@shop.example");
    assert_eq!(runner.repo.github_token.unwrap().expose(), "ghs_runner");
    assert!(runner.targets.is_empty());
    let github = runner.github.unwrap();
    assert_eq!(
        github.api_base.as_str(),
        "https://github.example.com/api/v3/"
    );
    assert_eq!(
        (github.owner.as_str(), github.repo.as_str()),
        ("acme", "shop")
    );
    assert_eq!(github.token.unwrap().expose(), "ghs_runner");
    // The agent's checks and limits; every step pushed, nobody to approve, run right there.
    assert_eq!(runner.agent.format, ["cargo fmt"]);
    assert_eq!(
        runner.agent.test,
        ["cargo test --quiet", "sh -c 'echo \"quoted\"'"]
    );
    assert_eq!(runner.agent.max_repair_attempts, 2);
    assert_eq!(runner.agent.max_run, Duration::from_secs(45 * 60));
    assert_eq!(runner.agent.max_tokens, 500_000);
    assert_eq!(
        runner.agent.env,
        [("RUST_BACKTRACE".to_string(), "1".to_string())]
    );
    assert!(!runner.agent.approve_each_step);
    assert!(runner.agent.push_each_step);
    assert_eq!(runner.agent.executor, Executor::Local);
    // The runner's commands are sandboxed as the bot's host's would be.
    assert_eq!(runner.agent.sandbox, bot.agent.sandbox);
    assert_eq!(runner.agent.network, bot.agent.network);
    assert_eq!(runner.agent.setup, bot.agent.setup);
    assert_eq!(runner.store.path, PathBuf::from(workflow::RUNNER_STORE));
    assert!(runner.discord.is_none());

    // The default target.
    let runner = load(&workflow::runner_config(&bot, None), &[]);
    assert_eq!(runner.repo.base_branch, "main");
    assert_eq!(runner.repo.tasks_dir, PathBuf::from("tasks"));
    assert_eq!(runner.github.unwrap().repo, "main");
}

/// A target repository with [`BROKEN_ADD`] and a plan on its base branch, its bare remote, and
/// the bot's config pointing at the fake LLM and GitHub. The runner works in a fresh clone under
/// the app's folder.
fn runner<'a>() -> Builder<'a> {
    TestApp::builder()
        .with_remote()
        .with_github()
        .with_repo(|repo| {
            let mut files = BROKEN_ADD.to_vec();
            files.push((PLAN_PATH, PLAN_FILE));
            commit_and_push(repo, &files, "fixture and plan");
        })
        .with_config(|c| {
            c.agent.test = vec!["sh test.sh".to_string()];
            c.agent.command_timeout = Duration::from_secs(20);
        })
}

fn remote(r: &TestApp) -> PathBuf {
    r.repo.remote.clone().unwrap()
}

fn inputs(r: &TestApp, resume: bool) -> DispatchInputs {
    DispatchInputs {
        correlation_id: "c-42".to_string(),
        feature_id: 7,
        plan_file: PLAN_PATH.to_string(),
        plan_version: 1,
        plan_sha256: approved_fingerprint(),
        branch: BRANCH.to_string(),
        resume,
        config: workflow::runner_config(&r.config, None),
        discussion_url: Some("https://discord.com/channels/1/2".to_string()),
        closes: Some(3),
    }
}

/// The fingerprint the bot sends for [`PLAN_FILE`].
fn approved_fingerprint() -> String {
    plan::fingerprint(&parse_plan_file(PLAN_FILE).unwrap().markdown)
}

/// Clones the remote as actions/checkout does (every branch, `origin`), then runs the
/// workflow's "Run the plan" script there with `sh`, with the environment the step's `env:`
/// gives it from `inputs` and the secrets, and `featurebot` on the PATH.
async fn run_workflow(r: &TestApp, inputs: &DispatchInputs) -> (ExitStatus, String, String) {
    let mut command = workflow_command(r, inputs);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the workflow step finished")
        .unwrap();
    let written = std::fs::read_to_string(r.dir().join("runner-temp/featurebot.toml")).unwrap();
    assert_eq!(written, format!("{}\n", inputs.config));
    (
        output.status,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The command [`run_workflow`] runs.
fn workflow_command(r: &TestApp, inputs: &DispatchInputs) -> tokio::process::Command {
    let checkout = r.dir().join("checkout");
    git(
        r.dir(),
        &["clone", "--quiet", remote(r).to_str().unwrap(), "checkout"],
    );
    let runner_temp = r.dir().join("runner-temp");
    let home = r.dir().join("home");
    std::fs::create_dir_all(&runner_temp).unwrap();
    std::fs::create_dir_all(&home).unwrap();

    let yaml = workflow::workflow_yaml(&r.config.agent.github_actions);
    let (env, script) = step(&yaml, STEP_RUN);
    let values = inputs.to_json();
    let secret = &r.config.agent.github_actions.llm_key_secret;
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_featurebot"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(&checkout)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("RUNNER_TEMP", &runner_temp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        let value = match value.as_str() {
            "${{ secrets.GITHUB_TOKEN }}" => TOKEN.to_string(),
            v if v == format!("${{{{ secrets.{secret} }}}}") => LLM_KEY.to_string(),
            v => {
                let name = v
                    .strip_prefix("${{ inputs.")
                    .and_then(|v| v.strip_suffix(" }}"))
                    .unwrap_or_else(|| panic!("unexpected env value {v}"));
                values[name].as_str().unwrap().to_string()
            }
        };
        command.env(key, value);
    }
    command
}

fn branch_log(r: &TestApp) -> Vec<String> {
    git(&remote(r), &["log", "--format=%s", BRANCH])
        .lines()
        .map(str::to_string)
        .collect()
}

fn branch_plan(r: &TestApp) -> String {
    git(&remote(r), &["show", &format!("{BRANCH}:{PLAN_PATH}")])
}

#[tokio::test]
async fn the_workflows_run_step_takes_a_plan_to_a_pushed_branch_and_a_pull_request() {
    let r = runner().build().await;
    // Step 1: a wrong fix, red, then the repair. Step 2: a new file.
    r.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 * $2"}),
    ));
    finish_steps(&r.llm, &["changed the operator"]);
    r.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 * $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&r.llm, &["add adds"]);
    r.llm.push(call(
        "write_file",
        json!({"path": "docs/add.md", "content": "# add\nAdds two numbers.\n"}),
    ));
    finish_steps(&r.llm, &["documented"]);

    let (status, stdout, stderr) = run_workflow(&r, &inputs(&r, false)).await;
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("branch: {BRANCH}")), "{stdout}");
    assert!(stdout.contains("state: Finished"), "{stdout}");
    // The red check, as the bot finds it in the job's log.
    let lines: Vec<&str> = stderr.lines().collect();
    let marker = lines
        .iter()
        .position(|l| l.starts_with(CHECKS_FAILED))
        .unwrap_or_else(|| panic!("no {CHECKS_FAILED:?} line in\n{stderr}"));
    assert_eq!(
        lines[marker],
        "featurebot: checks failed: step 1, attempt 1: `sh test.sh` failed:"
    );
    assert_eq!(lines[marker + 1], "    FAIL: add 2 3 gave 6");
    assert!(stderr.contains("step 2/2 committed"), "{stderr}");

    // A commit per step on the pushed branch, each step ticked off in its plan file.
    assert_eq!(
        branch_log(&r)[..3],
        [
            "step 2/2: Document add",
            "step 1/2: Fix the add function",
            "fixture and plan"
        ]
    );
    let plan = branch_plan(&r);
    assert!(
        plan.contains("1. [x] Fix the add function\n2. [x] Document add\n"),
        "{plan}"
    );
    // The pull request, with the bot's feature number.
    let pulls = r.github().pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["draft"], false);
    assert_eq!(pulls[0]["head"]["ref"], BRANCH);
    assert_eq!(pulls[0]["base"]["ref"], "main");
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(body.contains("Feature-Id: 7"), "{body}");
    // The same description as a local run: the discussion and the issue it closes.
    assert!(
        body.contains("Discussion: https://discord.com/channels/1/2"),
        "{body}"
    );
    assert!(body.contains("Closes #3"), "{body}");
    assert!(stdout.contains(&format!(
        "pull request: {}",
        pulls[0]["html_url"].as_str().unwrap()
    )));
    // The LLM key came from the secret, and no secret reached the log.
    let request = &r.llm.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {LLM_KEY}").as_str())
    );
    for secret in [LLM_KEY, TOKEN] {
        assert!(!stderr.contains(secret) && !stdout.contains(secret));
    }
}

#[tokio::test]
async fn a_resumed_workflow_run_continues_after_the_ticked_steps() {
    let r = runner().build().await;
    // An earlier run pushed step 1, ticked off, before it stopped.
    let earlier = r.repo.dir.path().join("earlier");
    git(
        r.repo.dir.path(),
        &["clone", "--quiet", remote(&r).to_str().unwrap(), "earlier"],
    );
    git(&earlier, &["checkout", "--quiet", "-b", BRANCH]);
    std::fs::write(earlier.join("app.sh"), "add() { echo $(( $1 + $2 )); }\n").unwrap();
    std::fs::write(
        earlier.join(PLAN_PATH),
        PLAN_FILE.replace("1. Fix the add", "1. [x] Fix the add"),
    )
    .unwrap();
    git(
        &earlier,
        &["commit", "--quiet", "-am", "step 1/2: Fix the add function"],
    );
    git(&earlier, &["push", "--quiet", "origin", BRANCH]);

    r.llm.push(call(
        "write_file",
        json!({"path": "docs/add.md", "content": "# add\n"}),
    ));
    finish_steps(&r.llm, &["documented"]);
    let (status, stdout, stderr) = run_workflow(&r, &inputs(&r, true)).await;
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    assert!(stderr.contains("resuming at step 2"), "{stderr}");

    let first = r.llm.requests()[0].body.to_string();
    assert!(first.contains("Do step 2 of 2: Document add"), "{first}");
    assert_eq!(
        branch_log(&r)[..3],
        [
            "step 2/2: Document add",
            "step 1/2: Fix the add function",
            "fixture and plan"
        ]
    );
    assert!(branch_plan(&r).contains("1. [x] Fix the add function\n2. [x] Document add\n"));
    let pulls = r.github().pulls();
    assert_eq!(pulls[0]["draft"], false, "step 1 counts as done");
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(
        body.contains("- [x] 1. Fix the add function — checks passed"),
        "{body}"
    );
}

#[tokio::test]
async fn a_plan_file_changed_after_the_approval_is_refused_before_anything_runs() {
    let r = runner().build().await;
    // A teammate edits the plan on main after it was approved: one more step.
    let other = r.repo.dir.path().join("teammate");
    git(
        r.repo.dir.path(),
        &["clone", "--quiet", remote(&r).to_str().unwrap(), "teammate"],
    );
    std::fs::write(
        other.join(PLAN_PATH),
        PLAN_FILE.replace(
            "2. Document add\n",
            "2. Document add\n3. Delete the tests\n",
        ),
    )
    .unwrap();
    git(&other, &["commit", "--quiet", "-am", "plan: one more step"]);
    git(&other, &["push", "--quiet", "origin", "main"]);

    let (status, stdout, stderr) = run_workflow(&r, &inputs(&r, false)).await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in\n{stderr}"));
    assert!(error.contains("is not the approved plan"), "{error}");
    assert!(error.contains(&approved_fingerprint()), "{error}");
    assert!(r.llm.requests().is_empty(), "nothing ran");
    assert!(
        git(&remote(&r), &["branch", "--list", BRANCH])
            .trim()
            .is_empty(),
        "no branch was pushed"
    );
    assert!(r.github().pulls().is_empty());
}

#[tokio::test]
async fn red_checks_end_in_a_draft_and_the_job_still_succeeds() {
    let r = runner()
        .with_config(|c| c.agent.max_repair_attempts = 0)
        .build()
        .await;
    r.llm.push(call(
        "write_file",
        json!({"path": "notes.txt", "content": "looked at it\n"}),
    ));
    finish_steps(&r.llm, &["nothing", "nothing"]);
    // A branch that was never pushed starts at step 1, even when asked to resume.
    let (status, stdout, stderr) = run_workflow(&r, &inputs(&r, true)).await;
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("resuming"), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with(CHECKS_FAILED))
            .count(),
        2,
        "{stderr}"
    );
    assert_eq!(r.github().pulls()[0]["draft"], true);
}

/// `featurebot args…` on the app's config file, to the end: did it succeed, stdout, stderr.
async fn featurebot(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let (status, stdout, stderr) = app.run_once(args, "").await;
    (status.success(), stdout, stderr)
}

#[tokio::test]
async fn install_workflow_prints_writes_and_refuses_to_overwrite() {
    let elsewhere = tempfile::tempdir().unwrap();
    let shop = elsewhere.path().join("shop");
    let app = TestApp::binary()
        .with_config(|c| {
            let repo = RepoConfig {
                path: shop.clone(),
                base_branch: "develop".to_string(),
                ..c.repo.clone()
            };
            c.targets.push(Target {
                name: "shop".to_string(),
                repo,
                github: None,
                channels: Vec::new(),
            });
            c.agent.github_actions.workflow = "agent.yml".to_string();
            c.agent.github_actions.llm_key_secret = "MY_LLM_KEY".to_string();
            c.agent.github_actions.install = Install::Git {
                url: "https://github.com/acme/featurebot".to_string(),
                rev: REV.to_string(),
            };
        })
        .build()
        .await;
    let main = app.repo.path.clone();
    let yaml = workflow::workflow_yaml(&app.config.agent.github_actions);

    // Printed, nothing written.
    let (ok, stdout, stderr) = featurebot(&app, &["install-workflow"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, yaml);
    assert!(stdout.contains("MY_LLM_KEY: ${{ secrets.MY_LLM_KEY }}"));
    // Exactly the pinned version, built once and then taken from the cache under its commit.
    assert!(
        stdout.contains(&format!("cargo install --locked --git 'https://github.com/acme/featurebot' --rev {REV} --root \"$HOME/.featurebot\" featurebot")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("      - name: Cache featurebot\n        uses: actions/cache@v4\n        with:\n          path: ~/.featurebot\n          key: featurebot-${{{{ runner.os }}}}-{REV}\n")),
        "{stdout}"
    );
    assert!(!main.join(".github").exists());

    // Written, with what to do next.
    let file = main.join(".github/workflows/agent.yml");
    let (ok, stdout, stderr) = featurebot(&app, &["install-workflow", "--write"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), yaml);
    for expected in [
        &format!("wrote {}", file.display()),
        "git add .github/workflows/agent.yml",
        "git push origin main",
        "gh secret set MY_LLM_KEY",
        "Allow GitHub Actions to create and approve pull requests",
        "agent.executor = \"github-actions\"",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing in\n{stdout}"
        );
    }
    let (ok, stdout, _) = featurebot(&app, &["install-workflow", "--write"]).await;
    assert!(ok);
    assert!(stdout.starts_with("already up to date:"), "{stdout}");

    // Someone's own workflow of that name is kept unless --force.
    std::fs::write(&file, "name: mine\n").unwrap();
    let (ok, _, stderr) = featurebot(&app, &["install-workflow", "--write"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("is not the workflow featurebot writes; pass --force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "name: mine\n");
    let (ok, stdout, stderr) = featurebot(&app, &["install-workflow", "--write", "--force"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("replaced "), "{stdout}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), yaml);

    // Another target repository, by its [[repos]] name.
    let (ok, stdout, stderr) =
        featurebot(&app, &["install-workflow", "--write", "--repo", "shop"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(shop.join(".github/workflows/agent.yml")).unwrap(),
        yaml
    );
    assert!(stdout.contains("git push origin develop"), "{stdout}");
    let (ok, _, stderr) = featurebot(&app, &["install-workflow", "--repo", "nope"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("there is no [[repos]] entry named \"nope\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_cancelled_job_stops_the_run_and_keeps_the_pushed_steps() {
    let r = runner().build().await;
    r.llm.push(call(
        "edit_file",
        json!({"path": "app.sh", "search": "$1 - $2", "replace": "$1 + $2"}),
    ));
    finish_steps(&r.llm, &["add adds"]);
    // Step 2 waits on the LLM when the job is cancelled.
    r.llm.push(Reply::Slow {
        delay: Duration::from_secs(60),
        then: Box::new(call("finish_step", json!({"summary": "late"}))),
    });
    let child = workflow_command(&r, &inputs(&r, false)).spawn().unwrap();
    eventually("step 2 at the LLM", Duration::from_secs(60), || {
        r.llm.requests().len() >= 3
    })
    .await;
    // What GitHub sends the step's process when the run is cancelled; the script exec'd into
    // featurebot, so it gets it.
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("featurebot stopped")
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("state: Cancelled"), "{stdout}");
    // Step 1 was pushed as it was committed.
    assert_eq!(branch_log(&r)[0], "step 1/2: Fix the add function");
    assert!(r.github().pulls().is_empty());
}

#[tokio::test]
async fn install_workflow_and_config_refuse_an_unpinned_install_source() {
    let app = TestApp::binary().build().await;
    let (ok, _, stderr) = featurebot(&app, &["install-workflow"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("has no install source")
            && stderr.contains("install_git and install_rev")
            && stderr.contains("install_url and install_sha256"),
        "{stderr}"
    );
    // A branch instead of a commit, a release without its checksum: refused when loaded.
    let load = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!("[llm]\nmodel = \"m\"\n\n[agent.github_actions]\n{extra}\n"),
        )
        .unwrap();
        Config::load_with_env(&path, true, &HashMap::new()).map(|c| c.agent.github_actions.install)
    };
    let err = load("install_git = \"https://github.com/acme/featurebot\"\ninstall_rev = \"main\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("full commit id (40 hex characters)"), "{err}");
    let err = load("install_url = \"https://example.com/featurebot.tar.gz\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("install_sha256"), "{err}");
    let err = load("install_url = \"http://example.com/f.tar.gz\"\ninstall_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"").unwrap_err().to_string();
    assert!(err.contains("must be an https:// address"), "{err}");
    let sha = "ab".repeat(32);
    let release = load(&format!(
        "install_url = \"https://example.com/f.tar.gz\"\ninstall_sha256 = \"{sha}\""
    ))
    .unwrap();
    assert_eq!(
        release,
        Install::Release {
            url: "https://example.com/f.tar.gz".to_string(),
            sha256: sha.clone()
        }
    );
    // The release's install checks the archive before using it.
    let script = workflow::install_script(&release);
    let check = script.find("sha256sum -c -").unwrap();
    assert!(check < script.find("tar -xzf").unwrap(), "{script}");
    assert!(script.contains(&sha), "{script}");
}
