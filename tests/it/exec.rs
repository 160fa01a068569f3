//! Running the agent's shell commands for real: the cleared environment, exit codes, timeouts and
//! cancellation that kill the whole process tree, the bounded output tail with the full log, and
//! redaction of what the command prints.

use std::path::Path;
use std::time::{Duration, Instant};

use featurebot::agent::exec::{self, clean_env_from, CommandResult, CommandSpec};
use featurebot::redact::Redactor;
use tokio_util::sync::CancellationToken;

use crate::support::wait::eventually;

const GHP: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";

fn spec(dir: &Path, line: &str) -> CommandSpec {
    CommandSpec {
        line: line.to_string(),
        dir: dir.to_path_buf(),
        timeout: Duration::from_secs(20),
        env: Vec::new(),
        max_output_bytes: 64 * 1024,
        sandbox: None,
    }
}

async fn run(spec: &CommandSpec) -> CommandResult {
    exec::run(spec, &CancellationToken::new(), &Redactor::default(), None)
        .await
        .unwrap()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// How long a process may take to start or to die.
const WAIT: Duration = Duration::from_secs(5);

/// True when the process is gone or a zombie (nobody may reap orphans in a container).
fn is_gone(pid: &str) -> bool {
    let alive = std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    });
    !alive || zombie
}

fn read_pid(dir: &Path) -> String {
    let pid = std::fs::read_to_string(dir.join("grandchild.pid")).unwrap();
    let pid = pid.trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "{pid:?}");
    pid
}

#[test]
fn clean_env_keeps_only_harmless_parent_variables() {
    let parent = pairs(&[
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/home/bot"),
        ("LC_CTYPE", "C.UTF-8"),
        ("CARGO_HOME", "/cargo"),
        ("npm_config_cache", "/npm"),
        ("GITHUB_TOKEN", "ghp_parent"),
        ("DISCORD_TOKEN", "discord"),
        ("OPENAI_API_KEY", "sk-parent"),
        ("ANTHROPIC_API_KEY", "sk-ant-parent"),
        ("FEATUREBOT__LLM__MODEL", "m"),
        ("SSH_AUTH_SOCK", "/tmp/agent"),
        ("AWS_SECRET_ACCESS_KEY", "aws"),
        ("RANDOM_THING", "x"),
        ("CI", "false"),
    ]);
    let extra = pairs(&[
        ("RUST_LOG", "info"),
        ("PATH", "/opt/tools:/usr/bin"),
        ("GITHUB_TOKEN", "ghp_from_config"),
        ("github_token", "lowercase"),
        ("GH_TOKEN", "gh"),
        ("ANTHROPIC_API_KEY", "sk-ant"),
        ("featurebot__discord__guild_id", "1"),
        ("GIT_TERMINAL_PROMPT", "1"),
        ("BAD=NAME", "x"),
        ("", "empty"),
    ]);
    assert_eq!(
        clean_env_from(parent, &extra),
        pairs(&[
            ("CARGO_HOME", "/cargo"),
            ("CI", "true"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("HOME", "/home/bot"),
            ("LC_CTYPE", "C.UTF-8"),
            ("PATH", "/opt/tools:/usr/bin"),
            ("RUST_LOG", "info"),
            ("npm_config_cache", "/npm"),
        ])
    );
    // The config may turn CI off; it cannot turn git's password prompt on.
    let env = clean_env_from(Vec::new(), &pairs(&[("CI", "")]));
    assert_eq!(env, pairs(&[("CI", ""), ("GIT_TERMINAL_PROMPT", "0")]));
}

#[tokio::test]
async fn commands_see_only_the_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "env");
    spec.env = pairs(&[
        ("FEATUREBOT_TEST_EXTRA", "yes"),
        ("GITHUB_TOKEN", "ghp_from_config"),
        ("FEATUREBOT__LLM__API_KEY", "nope"),
    ]);
    let result = run(&spec).await;
    assert!(result.success, "{result:?}");

    let allowed = [
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "LC_ALL",
        "TZ",
        "TERM",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "GOPATH",
        "GOROOT",
        "GOCACHE",
        "JAVA_HOME",
        "NVM_DIR",
        "PYENV_ROOT",
        "VIRTUAL_ENV",
        "npm_config_cache",
        "CI",
        "GIT_TERMINAL_PROMPT",
        "FEATUREBOT_TEST_EXTRA",
        // Set by the shell itself.
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    let names: Vec<&str> = result
        .output
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    for name in &names {
        assert!(
            allowed.contains(name) || name.starts_with("LC_"),
            "{name} leaked into the command's environment:\n{}",
            result.output
        );
    }
    assert!(
        names.contains(&"FEATUREBOT_TEST_EXTRA"),
        "{}",
        result.output
    );
    assert!(result.output.contains("GIT_TERMINAL_PROMPT=0\n"));
    assert!(result.output.contains("CI=true\n"));
    assert!(!result.output.contains("from_config"));
}

#[tokio::test]
async fn exit_codes_and_both_streams_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (line, code, output) in [
        ("true", 0, ""),
        ("echo out; echo err >&2; exit 3", 3, "out\nerr\n"),
        ("false", 1, ""),
        // Standard input is empty, not the bot's terminal.
        ("cat; echo after", 0, "after\n"),
        ("printf 'no newline'", 0, "no newline"),
        ("printf '\\377ok\\n'", 0, "\u{FFFD}ok\n"),
    ] {
        let result = run(&spec(dir.path(), line)).await;
        assert_eq!(result.exit_code, Some(code), "{line}: {result:?}");
        // The output ends with the command: no grace period is spent waiting for it.
        assert!(
            result.duration < Duration::from_secs(10),
            "{line}: {result:?}"
        );
        assert_eq!(result.success, code == 0, "{line}");
        assert!(!result.timed_out && !result.cancelled, "{line}");
        assert_eq!(result.output, output, "{line}");
    }
}

#[tokio::test]
async fn output_keeps_the_order_written_and_characters_split_between_reads() {
    let dir = tempfile::tempdir().unwrap();
    // The pause makes the euro sign arrive in two reads.
    let line = "echo one; echo two >&2; printf 'thr'; printf 'ee\\n' >&2; \
                printf '\\342\\202'; sleep 0.2; printf '\\254\\n'";
    let result = run(&spec(dir.path(), line)).await;
    assert_eq!(result.output, "one\ntwo\nthree\n€\n");
}

#[tokio::test]
async fn a_missing_command_exits_127_with_the_shells_message() {
    let dir = tempfile::tempdir().unwrap();
    let result = run(&spec(dir.path(), "no-such-command-featurebot --version")).await;
    assert_eq!(result.exit_code, Some(127));
    assert!(!result.success);
    assert!(
        result.output.contains("no-such-command-featurebot") && result.output.contains("not found"),
        "{:?}",
        result.output
    );
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&dir.path().join("absent"), "true");
    let result = exec::run(&spec, &CancellationToken::new(), &Redactor::default(), None).await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "echo before; sleep 30 & echo $! > grandchild.pid; wait",
    );
    spec.timeout = Duration::from_millis(300);
    let result = run(&spec).await;
    assert!(result.timed_out, "{result:?}");
    assert!(!result.success && !result.cancelled);
    assert!(result.duration < Duration::from_secs(15), "{result:?}");
    assert_eq!(result.output, "before\n");
    let pid = read_pid(dir.path());
    eventually("the grandchild to die", WAIT, || is_gone(&pid)).await;
}

#[tokio::test]
async fn background_processes_do_not_outlive_their_command() {
    let dir = tempfile::tempdir().unwrap();
    let line = "sleep 30 & echo $! > grandchild.pid; echo done";
    let result = run(&spec(dir.path(), line)).await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.output, "done\n");
    assert!(result.duration < Duration::from_secs(15), "{result:?}");
    let pid = read_pid(dir.path());
    eventually("the background process to die", WAIT, || is_gone(&pid)).await;
}

#[tokio::test]
async fn cancel_kills_even_processes_that_ignore_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "trap '' TERM; sleep 30 & echo $! > grandchild.pid; touch started; wait",
    );
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            exec::run(&spec, &cancel, &Redactor::default(), None)
                .await
                .unwrap()
        })
    };
    let started = dir.path().join("started");
    eventually("the command to start", WAIT, || started.exists()).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    // The group gets SIGTERM, then SIGKILL 2 s later: well inside this bound even on a busy
    // machine.
    let result = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns soon after cancellation")
        .unwrap();
    assert!(cancelled_at.elapsed() < Duration::from_secs(15));
    assert!(
        result.cancelled && !result.timed_out && !result.success,
        "{result:?}"
    );
    assert_eq!(result.exit_code, None, "killed by a signal");
    let pid = read_pid(dir.path());
    eventually("the grandchild to die", WAIT, || is_gone(&pid)).await;
}

#[tokio::test]
async fn dropping_the_run_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        "sleep 30 & echo $! > grandchild.pid; touch started; wait",
    );
    let cancel = CancellationToken::new();
    let redactor = Redactor::default();
    let started = dir.path().join("started");
    tokio::select! {
        result = exec::run(&spec, &cancel, &redactor, None) => panic!("finished: {result:?}"),
        () = eventually("the command to start", WAIT, || started.exists()) => {}
    }
    let pid = read_pid(dir.path());
    eventually("the grandchild to die", WAIT, || is_gone(&pid)).await;
}

#[tokio::test]
async fn a_cancelled_token_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let spec = spec(dir.path(), "touch ran");
    let result = exec::run(&spec, &cancel, &Redactor::default(), None)
        .await
        .unwrap();
    assert!(result.cancelled && !result.success);
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test]
async fn big_output_keeps_the_tail_and_the_log_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("command.log");
    std::fs::write(&log, "earlier command\n").unwrap();
    let mut spec = spec(dir.path(), "seq 1 200000");
    spec.max_output_bytes = 1000;
    let result = exec::run(
        &spec,
        &CancellationToken::new(),
        &Redactor::default(),
        Some(&log),
    )
    .await
    .unwrap();
    assert!(result.success);

    let full: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
    let cut = full.len() - 1000;
    assert_eq!(
        result.output,
        format!("[... {cut} bytes cut ...]\n{}", &full[cut..])
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("earlier command\n{full}")
    );
}

#[tokio::test]
async fn a_flood_without_newlines_is_cut_to_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "head -c 20000000 /dev/zero | tr '\\0' y; echo end",
    );
    spec.max_output_bytes = 100;
    let result = run(&spec).await;
    assert!(result.success);
    let cut = 20_000_004 - 100;
    assert_eq!(
        result.output,
        format!("[... {cut} bytes cut ...]\n{}end\n", "y".repeat(96))
    );
}

#[tokio::test]
async fn secrets_in_output_are_redacted_in_the_result_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("command.log");
    // The configured secret arrives in two writes, so two reads.
    let line = format!(
        "printf 'value: planted-sec'; sleep 0.2; printf 'ret-42\\n'; \
         echo \"remote https://x-access-token:{GHP}@github.com/o/r.git\" >&2"
    );
    let redactor = Redactor::new(["planted-secret-42".to_string()]);
    let result = exec::run(
        &spec(dir.path(), &line),
        &CancellationToken::new(),
        &redactor,
        Some(&log),
    )
    .await
    .unwrap();
    let expected = "value: ***\nremote https://x-access-token:***@github.com/o/r.git\n";
    assert_eq!(result.output, expected);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), expected);
}

/// The bot's own environment is hidden from the commands it runs (they run as the same user):
/// the `featurebot` binary, running unprivileged (as `nobody` when the tests run as root, which
/// reads any environ) and waiting in the console; another process of the same user cannot read
/// its environment, while it can read that of a plain process started the same way, so the
/// check can fail. The commands themselves are unaffected, since `exec` makes a program dumpable
/// again.
#[cfg(target_os = "linux")]
#[test]
fn the_bots_environment_is_hidden_from_its_commands() {
    use crate::support::nobody::NobodyBot;
    // A command of a hidden process still reads its own environment.
    featurebot::agent::exec::hide_own_environment().unwrap();
    let own = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat /proc/self/environ >/dev/null && echo own")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(own.stdout).unwrap(), "own\n");

    use std::process::Stdio;
    const SECRET: &str = "hunter2-in-the-bots-environment";
    let setup = NobodyBot::new();
    let (store, binary, config) = (&setup.store, &setup.binary, &setup.config);
    let nobody = |program: &Path| {
        let mut command = setup.command(program);
        command.env("FEATUREBOT_TEST_SECRET", SECRET);
        command
    };
    // The bot, past start-up and waiting for a feature title on stdin.
    let mut bot = nobody(binary)
        .args(["console", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut plain = nobody(Path::new("sleep")).arg("60").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(store).unwrap().next().is_none() {
        if let Some(status) = bot.try_wait().unwrap() {
            let output = bot.wait_with_output().unwrap();
            panic!(
                "the bot ended ({status}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the bot never opened its store");
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |pid: u32| {
        nobody(Path::new("cat"))
            .arg(format!("/proc/{pid}/environ"))
            .output()
            .unwrap()
    };
    let of_plain = read(plain.id());
    assert!(
        of_plain.status.success() && String::from_utf8_lossy(&of_plain.stdout).contains(SECRET),
        "a plain process's environment is readable by its user: {of_plain:?}"
    );
    let of_bot = read(bot.id());
    assert!(
        !of_bot.status.success() && !String::from_utf8_lossy(&of_bot.stdout).contains(SECRET),
        "the bot's environment was readable: {of_bot:?}"
    );
    let _ = bot.kill();
    let _ = plain.kill();
    let _ = bot.wait();
    let _ = plain.wait();
}
