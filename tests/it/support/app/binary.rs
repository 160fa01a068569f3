//! Running the built `featurebot` binary on the app's config file (built `.config_file()`),
//! with the config's secrets in its environment as a deployment would have them.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use featurebot::store::Store;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

use super::TestApp;
use crate::support::scripts::ask;

impl TestApp {
    /// The config file the binary reads.
    pub fn config_path(&self) -> &Path {
        self.config_file
            .as_deref()
            .expect("the app was built without .config_file()")
    }

    pub fn store_path(&self) -> PathBuf {
        self.config.store.path.clone()
    }

    /// (Re)writes the config file from [`TestApp::config`].
    pub(super) fn write_config_file(&self) {
        let text = super::toml::render(&self.config);
        std::fs::write(self.config_path(), &text).unwrap();
        super::toml::check_round_trip(self.config_path(), &self.config, &self.secrets());
    }

    /// The environment variables the config's secrets are read from.
    fn secrets(&self) -> Vec<(String, String)> {
        let config = &self.config;
        let mut env = Vec::new();
        if let Some(key) = &config.llm.api_key {
            env.push((config.llm.api_key_env.clone(), key.expose().to_string()));
        }
        let github = config.github.as_ref().and_then(|g| g.token.as_ref());
        if let Some(token) = github.or(config.repo.github_token.as_ref()) {
            env.push(("GITHUB_TOKEN".to_string(), token.expose().to_string()));
        }
        if let Some(token) = config.discord.as_ref().and_then(|d| d.token.as_ref()) {
            env.push(("DISCORD_TOKEN".to_string(), token.expose().to_string()));
        }
        env
    }

    /// `featurebot --config <file> args…`, with piped stdio, killed when dropped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_featurebot"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("USER", "tester")
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_TOKEN")
            .env_remove("DISCORD_TOKEN")
            .envs(self.secrets())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the binary with `stdin` written and left open, so it waits for more.
    pub async fn spawn(&self, args: &[&str], stdin: &str) -> (Child, ChildStdin) {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        (child, input)
    }

    /// Runs the binary with `stdin` piped in, to the end: status, stdout and stderr.
    pub async fn run_once(&self, args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
        let (child, input) = self.spawn(args, stdin).await;
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("featurebot did not finish")
            .unwrap();
        (
            output.status,
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    /// Like [`TestApp::run_once`]. The store may still be locked for a moment by this test's own
    /// in-process handle (sled's threads let go of it a little after the last handle is
    /// dropped), so a start refused for that reason alone is tried again.
    pub async fn run(&self, args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, stdout, stderr) = self.run_once(args, stdin).await;
            let busy = stderr.contains("in use by another featurebot process");
            if !busy || Instant::now() > deadline {
                return (status, stdout, stderr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What is on disk, read in this process and closed again.
    pub fn read_store<T>(&self, read: impl FnOnce(&Store) -> T) -> T {
        let store = crate::support::reopen_store(&self.config.store.path);
        read(&store)
    }

    /// A second feature, in a new console session, gets its first answer.
    pub async fn second_console_session_is_served(&self) {
        ask(&self.llm, "Which theme, dark or light?");
        let (status, stdout, stderr) = self
            .run(&["console", "--title", "Dark mode"], "/quit\n")
            .await;
        assert!(status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("featurebot: Which theme, dark or light?"),
            "{stdout}\n{stderr}"
        );
    }
}
