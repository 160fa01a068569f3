//! Runs one shell command for the coding agent: a formatter, a test suite, an external coding
//! agent.
//!
//! The command is `sh -c LINE` in the work tree, with a cleared environment (see [`clean_env`]:
//! the bot's tokens cannot reach it), no standard input, and a process group of its own; with a
//! [`Sandbox`], inside it (bubblewrap, which dies with the group). When it
//! times out, is cancelled, or simply ends, what is left of the group gets SIGTERM and, if still
//! there two seconds later, SIGKILL, so nothing it started in the background lives on.
//!
//! Standard output and error share one pipe, as with `2>&1`, so their lines keep the order in
//! which the command wrote them. Output is read as it arrives, decoded as lossy UTF-8 and
//! redacted a line at a time, then appended whole to an optional log file and kept in memory only
//! as a tail of `max_output_bytes`, so a command that prints gigabytes costs the bot time but not
//! memory.
//!
//! Invariant: when [`run`] returns, every process of the command's group has been sent SIGKILL or
//! has exited; only a process that left the group on purpose (`setsid`) can survive.
//!
//! Unix only, like the `sh -c` it runs.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::sandbox::Sandbox;
use crate::redact::{Redactor, StreamRedactor};

/// One command to run.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Run as `sh -c line`.
    pub line: String,
    /// The working directory, usually the work tree.
    pub dir: PathBuf,
    pub timeout: Duration,
    /// Extra variables from the config, added to the clean environment (secrets are dropped).
    pub env: Vec<(String, String)>,
    /// When the output is bigger, only its last bytes are kept, after a `[... N bytes cut ...]`
    /// line.
    pub max_output_bytes: usize,
    /// Where it is confined; `None` runs it as featurebot's own user with only the cleared
    /// environment (`agent.sandbox = "off"`).
    pub sandbox: Option<Sandbox>,
}

/// How a command ended.
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// `None` when the shell was killed by a signal (as on timeout and cancellation).
    pub exit_code: Option<i32>,
    /// Exited with 0, neither timed out nor cancelled.
    pub success: bool,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Standard output and error, interleaved in the order written, lossy UTF-8, redacted, cut
    /// to the tail.
    pub output: String,
    pub duration: Duration,
}

/// How long the command's processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long the pipes are read after SIGKILL: a process that escaped the group may hold them.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;

/// Variables passed on from the bot's own environment when set, besides `LC_*`.
const PASSED_VARS: &[&str] = &[
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
];

/// Variables that hold the bot's secrets: never passed, even when the config asks for them.
const SECRET_VARS: &[&str] = &[
    "DISCORD_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
];

/// The prefix of the bot's own settings, which may carry secrets too.
const SETTINGS_PREFIX: &str = "FEATUREBOT__";

/// Runs `spec`, returning when the command and everything it started are gone, the time is up,
/// or `cancel` fires (within about three seconds). The error is for a command that could not be
/// started (no `sh`, no such directory) or a log file that could not be opened; a command that
/// does not exist is an ordinary failure with exit code 127.
pub async fn run(
    spec: &CommandSpec,
    cancel: &CancellationToken,
    redactor: &Redactor,
    log: Option<&Path>,
) -> std::io::Result<CommandResult> {
    let started = Instant::now();
    let log = match log {
        Some(path) => Some(BufWriter::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?,
        )),
        None => None,
    };
    if cancel.is_cancelled() {
        return Ok(CommandResult {
            exit_code: None,
            success: false,
            timed_out: false,
            cancelled: true,
            output: String::new(),
            duration: started.elapsed(),
        });
    }
    tracing::debug!(
        command = %redactor.redact(&spec.line),
        dir = %spec.dir.display(),
        "running a command"
    );

    // One pipe for both streams. Its ends are close-on-exec, so no other child inherits them.
    let (reader, writer) = std::io::pipe()?;
    let mut pipe = Pipe {
        receiver: Some(pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?),
        buf: vec![0; READ_CHUNK],
    };
    let env = clean_env(&spec.env);
    let mut command = match &spec.sandbox {
        Some(sandbox) => {
            let (program, args) = sandbox.command(&spec.line, &spec.dir, &env);
            let mut command = Command::new(program);
            command.args(args).env_clear().envs(sandbox.env(&env));
            command
        }
        None => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(&spec.line).env_clear().envs(env);
            command
        }
    };
    command
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds our copies of the write end: drop it, or the pipe never reaches its end.
    drop(command);
    let mut child = spawned?;
    // The shell leads its own group, so the group id is its pid.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut guard = KillGroupOnDrop(group);
    let mut sink = Sink::new(redactor, spec.max_output_bytes, log);
    let mut status = None;

    let timeout = tokio::time::sleep(spec.timeout);
    tokio::pin!(timeout);
    let stop = loop {
        tokio::select! {
            () = cancel.cancelled() => break Stop::Cancelled,
            () = &mut timeout => break Stop::TimedOut,
            exit = child.wait() => {
                status = Some(exit.map_err(|err| kill_after_error(group, err))?);
                break Stop::Exited;
            }
            bytes = pipe.read(), if pipe.is_open() => sink.take(&bytes).await,
        }
    };

    // Whatever the reason, the group goes: first politely, while the pipe is drained, then not.
    let group_was_alive = signal_group(group, Signal::SIGTERM);
    drain(
        &mut child,
        group,
        &mut status,
        &mut pipe,
        &mut sink,
        TERM_GRACE,
    )
    .await?;
    if group_was_alive || status.is_none() || pipe.is_open() {
        signal_group(group, Signal::SIGKILL);
        drain(
            &mut child,
            group,
            &mut status,
            &mut pipe,
            &mut sink,
            KILL_GRACE,
        )
        .await?;
    }
    guard.0 = None;

    let output = sink.finish().await;
    let result = CommandResult {
        exit_code: status.and_then(|s| s.code()),
        success: stop == Stop::Exited && status.is_some_and(|s| s.success()),
        timed_out: stop == Stop::TimedOut,
        cancelled: stop == Stop::Cancelled,
        output,
        duration: started.elapsed(),
    };
    tracing::info!(
        exit_code = ?result.exit_code,
        timed_out = result.timed_out,
        cancelled = result.cancelled,
        duration_ms = u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        "command finished"
    );
    Ok(result)
}

/// Makes this process's `/proc/<pid>/environ` (and memory) unreadable to other processes of
/// the same user, the agent's commands included: they never get the secrets in their own
/// environment, and this keeps them from reading the bot's. Commands are unaffected: `exec`
/// makes a program dumpable again. Linux only; elsewhere it does nothing.
pub fn hide_own_environment() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)?;
    Ok(())
}

/// The environment of a command: the harmless variables of the bot's own environment (see
/// [`clean_env_from`]) plus `extra`.
pub fn clean_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    // A variable that is not valid Unicode is not one of the few that are passed anyway.
    let parent = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    clean_env_from(parent, extra)
}

/// [`clean_env`] with the parent environment passed in, so tests need not touch the process's.
///
/// From `parent` only `PATH`, `HOME`, `USER`, locale (`LANG`, `LC_*`), `TZ`, `TERM`, `TMPDIR` and
/// toolchain homes are kept. `extra` is added, except secrets (`DISCORD_TOKEN`, `GITHUB_TOKEN`,
/// `GH_TOKEN`, `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, any `FEATUREBOT__*`), which are dropped
/// with a warning. `CI=true` (unless `extra` says otherwise) makes tools non-interactive and plain;
/// `GIT_TERMINAL_PROMPT=0` always, so git fails instead of waiting for a password. Sorted by name.
pub fn clean_env_from(
    parent: impl IntoIterator<Item = (String, String)>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = parent
        .into_iter()
        .filter(|(name, _)| {
            (PASSED_VARS.contains(&name.as_str()) || name.starts_with("LC_")) && !is_secret(name)
        })
        .collect();
    env.insert("CI".to_string(), "true".to_string());
    for (name, value) in extra {
        if is_secret(name) {
            tracing::warn!(
                name = %name,
                "agent.env names a secret variable; it is not passed to commands"
            );
        } else if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            tracing::warn!(
                name = %name,
                "agent.env has an invalid variable; it is not passed to commands"
            );
        } else {
            env.insert(name.clone(), value.clone());
        }
    }
    env.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
    env.into_iter().collect()
}

fn is_secret(name: &str) -> bool {
    SECRET_VARS.iter().any(|s| s.eq_ignore_ascii_case(name))
        || name
            .get(..SETTINGS_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(SETTINGS_PREFIX))
}

/// Why the main wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Exited,
    TimedOut,
    Cancelled,
}

/// Sends `signal` to every process of the group; false when none is left.
fn signal_group(group: Option<Pid>, signal: Signal) -> bool {
    let Some(group) = group else {
        return false;
    };
    match killpg(group, signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(err) => {
            tracing::warn!(error = %err, ?signal, "could not signal a command's process group");
            false
        }
    }
}

/// Sends SIGKILL to the group when [`run`] is left early: its future dropped by the caller, or an
/// error. `kill_on_drop` alone would reach only the shell.
struct KillGroupOnDrop(Option<Pid>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

/// Kills the group when waiting for the shell failed, so an error leaves no process behind.
fn kill_after_error(group: Option<Pid>, err: std::io::Error) -> std::io::Error {
    signal_group(group, Signal::SIGKILL);
    err
}

/// Reads the pipe and waits for the shell until both are done or `grace` has passed.
async fn drain(
    child: &mut Child,
    group: Option<Pid>,
    status: &mut Option<ExitStatus>,
    pipe: &mut Pipe,
    sink: &mut Sink<'_>,
    grace: Duration,
) -> std::io::Result<()> {
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    while status.is_none() || pipe.is_open() {
        tokio::select! {
            () = &mut deadline => break,
            exit = child.wait(), if status.is_none() => {
                *status = Some(exit.map_err(|err| kill_after_error(group, err))?);
            }
            bytes = pipe.read(), if pipe.is_open() => sink.take(&bytes).await,
        }
    }
    Ok(())
}

/// The read end of the command's output pipe; `None` once it has reached its end.
struct Pipe {
    receiver: Option<pipe::Receiver>,
    buf: Vec<u8>,
}

impl Pipe {
    fn is_open(&self) -> bool {
        self.receiver.is_some()
    }

    /// The next bytes; empty at the end of the pipe (or on an error), which closes it. Cancel
    /// safe. Only call while the pipe is open.
    async fn read(&mut self) -> Vec<u8> {
        let Some(receiver) = &mut self.receiver else {
            return Vec::new();
        };
        let bytes = match receiver.read(&mut self.buf).await {
            Ok(n) => self.buf[..n].to_vec(),
            Err(err) => {
                tracing::warn!(error = %err, "could not read a command's output");
                Vec::new()
            }
        };
        if bytes.is_empty() {
            self.receiver = None;
        }
        bytes
    }
}

/// The length of `bytes` without an unfinished UTF-8 character at its end.
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 != 0x80 {
            let needed = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if needed > back { len - back } else { len };
        }
    }
    len
}

/// Where the output goes: decoded, redacted, whole to the log, its tail to the result.
struct Sink<'a> {
    /// The bytes of a character cut in two by a read.
    carry: Vec<u8>,
    redact: StreamRedactor<'a>,
    /// The end of the output; trimmed to `max` when it grows past twice that.
    tail: String,
    max: usize,
    /// Bytes of redacted output so far.
    total: usize,
    log: Option<BufWriter<tokio::fs::File>>,
}

impl<'a> Sink<'a> {
    fn new(
        redactor: &'a Redactor,
        max: usize,
        log: Option<BufWriter<tokio::fs::File>>,
    ) -> Sink<'a> {
        Sink {
            carry: Vec::new(),
            redact: redactor.stream(),
            tail: String::new(),
            max,
            total: 0,
            log,
        }
    }

    async fn take(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let complete = complete_utf8_prefix(&self.carry);
        let text = String::from_utf8_lossy(&self.carry[..complete]).into_owned();
        self.carry.drain(..complete);
        let text = self.redact.push(&text);
        self.keep(&text).await;
    }

    async fn keep(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.total += text.len();
        self.tail.push_str(text);
        if self.tail.len() > self.max.saturating_mul(2).max(READ_CHUNK) {
            self.trim_tail();
        }
        if let Some(log) = &mut self.log {
            if let Err(err) = log.write_all(text.as_bytes()).await {
                tracing::warn!(error = %err, "could not write a command's log; it stops here");
                self.log = None;
            }
        }
    }

    fn trim_tail(&mut self) {
        let mut cut = self.tail.len().saturating_sub(self.max);
        while !self.tail.is_char_boundary(cut) {
            cut += 1;
        }
        self.tail.drain(..cut);
    }

    /// The output to return, once the pipe is done (or given up on).
    async fn finish(mut self) -> String {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned();
        let mut text = self.redact.push(&rest);
        text.push_str(&self.redact.finish());
        self.keep(&text).await;
        if let Some(log) = &mut self.log {
            if let Err(err) = log.flush().await {
                tracing::warn!(error = %err, "could not write a command's log");
            }
        }
        self.trim_tail();
        let cut = self.total - self.tail.len();
        if cut == 0 {
            self.tail
        } else {
            format!("[... {cut} bytes cut ...]\n{}", self.tail)
        }
    }
}
