//! The built binary: `featurebot console` with piped stdin, `kill -9` and resume, `check`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use featurebot::store::{FeatureId, Store};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::fake_llm::{Api, FakeLlm, Reply};
use crate::support::git::{git, repo_with_commit, TestRepo};
use crate::support::harness::GOOD_PLAN;

struct Setup {
    llm: FakeLlm,
    repo: TestRepo,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let llm = FakeLlm::start(Api::OpenAi).await;
        let repo = repo_with_commit("main");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"FAKE_LLM_KEY\"\nrequest_timeout_secs = 5\nmax_retries = 1\n\n[repo]\npath = {:?}\nbase_branch = \"main\"\n\n[store]\npath = {:?}\n",
                llm.base_url(),
                repo.path,
                dir.path().join("store"),
            ),
        )
        .unwrap();
        Setup {
            llm,
            repo,
            dir,
            config,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_featurebot"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("FAKE_LLM_KEY", "sk-test-secret")
            .env("USER", "tester")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary with `stdin` piped in, to the end.
    async fn run(&self, args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the console did not finish")
            .unwrap();
        (
            output.status,
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

fn line_value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} line in {stdout}"))
}

#[tokio::test]
async fn a_piped_console_session_ends_in_a_committed_plan() {
    let s = Setup::new().await;
    s.llm.push(Reply::Text("Which format?".to_string()));
    s.llm
        .push(Reply::Text("CONFIRMED\n- CSV export".to_string()));
    s.llm.push(Reply::Text(GOOD_PLAN.to_string()));
    let (status, stdout, stderr) = s
        .run(
            &["console", "--title", "Export CSV"],
            "CSV please\n\n/plan\n",
        )
        .await;
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("featurebot: Which format?"), "{stdout}");
    assert!(!stdout.contains("CONFIRMED"), "{stdout}");
    assert!(stderr.contains("requirements confirmed"), "{stderr}");
    let path = line_value(&stdout, "path: ");
    let commit = line_value(&stdout, "commit: ");
    assert_eq!(commit.len(), 40);
    assert_eq!(git(&s.repo.path, &["rev-parse", "main"]).trim(), commit);
    let file = git(&s.repo.path, &["show", &format!("main:{path}")]);
    assert!(file.contains("## Test plan"));
    // The key went to the server, and nowhere else.
    let auth = s.llm.requests()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret"));
    assert!(!stdout.contains("sk-test-secret") && !stderr.contains("sk-test-secret"));
}

#[tokio::test]
async fn input_that_ends_before_a_plan_exits_2_and_says_how_to_resume() {
    let s = Setup::new().await;
    s.llm.push(Reply::Text("Which format?".to_string()));
    let (status, _, stderr) = s.run(&["console", "--title", "Export CSV"], "").await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("featurebot console --resume 1"), "{stderr}");
}

#[tokio::test]
async fn the_title_can_come_from_stdin_and_bad_ones_are_refused() {
    let s = Setup::new().await;
    let (status, _, stderr) = s.run(&["console"], "   \n").await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused: the feature needs a title"),
        "{stderr}"
    );

    s.llm.push(Reply::Text("Which format?".to_string()));
    let (_, stdout, _) = s.run(&["console"], "Export CSV\n/quit\n").await;
    assert!(stdout.contains("Which format?"), "{stdout}");
}

#[tokio::test]
async fn a_kill_9_loses_nothing_and_resume_continues() {
    let s = Setup::new().await;
    s.llm.push(Reply::Text("Which format?".to_string()));
    // The answer to the next message never comes before the kill.
    s.llm.push(Reply::Slow {
        delay: Duration::from_secs(30),
        then: Box::new(Reply::Text("too late".to_string())),
    });
    let mut child = s
        .command(&["console", "--title", "Export CSV"])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"CSV, from the dashboard\n").await.unwrap();
    wait_for(|| s.llm.requests().len() >= 2).await;

    // While it runs, a second process cannot open the same store.
    let (status, _, stderr) = s.run(&["console", "--title", "Other"], "").await;
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another featurebot process"),
        "{stderr}"
    );

    child.start_kill().unwrap();
    child.wait().await.unwrap();

    s.llm
        .push(Reply::Text("CONFIRMED\n- CSV export".to_string()));
    s.llm.push(Reply::Text(GOOD_PLAN.to_string()));
    let (status, stdout, stderr) = s.run(&["console", "--resume", "1"], "/plan\n").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("requirements confirmed"), "{stderr}");
    assert!(stdout.contains("commit: "), "{stdout}");
    // The message sent just before the kill was on disk: the resumed session shows it and
    // the LLM's next answer saw it.
    assert!(stdout.contains("[featurebot] Which format?"), "{stdout}");
    assert!(
        stdout.contains("[tester] CSV, from the dashboard"),
        "{stdout}"
    );
    let last = s.llm.requests()[3].body.to_string();
    assert!(
        last.contains("CSV, from the dashboard"),
        "the resumed answer saw the message"
    );

    let store = Store::open(&s.store_path()).unwrap();
    let transcript = store.transcript(FeatureId(1)).unwrap();
    let answers = transcript
        .iter()
        .filter(|t| t.text == "CSV, from the dashboard")
        .count();
    assert_eq!(answers, 1, "{transcript:?}");
    assert_eq!(
        transcript.len(),
        4,
        "request, question, answer, confirmation"
    );
}

#[tokio::test]
async fn check_reports_one_line_per_service() {
    let s = Setup::new().await;
    s.llm.push(Reply::Text("ok".to_string()));
    let (status, stdout, stderr) = s.run(&["check"], "").await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let services: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(services, ["config", "store", "llm", "repo"], "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("ok")), "{stdout}");

    // A repository that is not one fails its line with the fix.
    let elsewhere = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("path = {:?}", s.repo.path),
        &format!("path = {:?}", elsewhere.path()),
    );
    std::fs::write(&s.config, config).unwrap();
    s.llm.push(Reply::Text("ok".to_string()));
    let (status, stdout, _) = s.run(&["check"], "").await;
    assert_eq!(status.code(), Some(1));
    let repo_line = stdout.lines().find(|l| l.contains(" repo ")).unwrap();
    assert!(
        repo_line.starts_with("FAIL") && repo_line.contains("set repo.path"),
        "{repo_line}"
    );
}

#[tokio::test]
async fn a_bad_config_names_the_key() {
    let s = Setup::new().await;
    std::fs::write(&s.config, "[llm]\nprovider = \"gemini\"\n").unwrap();
    let (status, _, stderr) = s.run(&["check"], "").await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("llm.provider is \"gemini\""), "{stderr}");
    assert!(stderr.contains("llm.model is missing"), "{stderr}");
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
