//! The `featurebot` command: parses arguments, loads the config, starts logging and hands over
//! to the library. Printing to stdout is this binary's job, so `println!` is allowed here.
#![allow(clippy::print_stdout)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use featurebot::cli::{agent as batch, check, install_workflow};
use featurebot::config::Config;
use featurebot::console::{self, Outcome};
use featurebot::discord;
use featurebot::model::{BranchName, FeatureId, RunState};
use featurebot::redact::Redactor;
use featurebot::startup::{self, Services};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "featurebot",
    version,
    about = "Turns a conversation into a reviewed plan, then into a pull request"
)]
struct Cli {
    /// The config file (see config.toml.example). Every key can also be set with an
    /// environment variable FEATUREBOT__SECTION__KEY.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold a feature conversation in this terminal (lines from stdin, replies on stdout).
    Console {
        /// The feature's title; asked for when missing.
        #[arg(long, conflicts_with = "resume")]
        title: Option<String>,
        /// Continue an earlier feature, by its number.
        #[arg(long, value_name = "FEATURE")]
        resume: Option<FeatureId>,
    },
    /// Run the Discord bot (needs a [discord] section and DISCORD_TOKEN).
    Run,
    /// Print the URL that invites the bot to a server, with the scopes and permissions it needs.
    Invite,
    /// Run the coding agent on a plan file: a branch, a commit per step, a pull request.
    /// Exits with 0 when the run finished (a draft pull request when checks stayed red), 3 when a
    /// limit stopped it early (the work so far pushed and proposed), 130 when cancelled, 1 when
    /// it failed.
    Agent {
        /// A plan written by featurebot (tasks/<timestamp>-<slug>.md).
        plan: PathBuf,
        /// Work on this branch instead of featurebot/<feature>-<slug> (what the GitHub Actions
        /// workflow passes).
        #[arg(long, value_name = "NAME", value_parser = BranchName::parse)]
        branch: Option<BranchName>,
        /// Continue the branch where an earlier run left off: from the first step its plan file
        /// does not tick off. A branch that does not exist yet starts at step 1.
        #[arg(long)]
        resume: bool,
        /// Link the pull request to where the feature was discussed.
        #[arg(long, value_name = "URL")]
        discussion_url: Option<String>,
        /// The GitHub issue the pull request closes (`Closes #N` in its description).
        #[arg(long, value_name = "N")]
        closes: Option<u64>,
        /// Refuse a plan file whose text is not the approved plan's (its fingerprint, which the
        /// bot sends with every GitHub Actions dispatch).
        #[arg(long, value_name = "SHA256")]
        plan_sha256: Option<String>,
    },
    /// Print the GitHub Actions workflow that runs the agent (agent.executor = "github-actions").
    InstallWorkflow {
        /// Write it to <repo.path>/.github/workflows/<agent.github_actions.workflow> and print
        /// what to do next.
        #[arg(long)]
        write: bool,
        /// Replace a different workflow file of that name.
        #[arg(long, requires = "write")]
        force: bool,
        /// The [[repos]] entry to install it in, instead of [repo].
        #[arg(long, value_name = "NAME")]
        repo: Option<String>,
    },
    /// Validate the config and try each configured service.
    Check,
}

fn main() -> ExitCode {
    // Before anything reads a secret: the agent's commands run as this user and must not read
    // them from /proc/<pid>/environ.
    if let Err(err) = featurebot::agent::exec::hide_own_environment() {
        eprintln!("warning: could not hide featurebot's environment from its commands: {err}");
    }
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Console { .. } => "warn",
        Command::Run => "info,serenity=warn",
        Command::Agent { .. } => "warn",
        Command::Check | Command::Invite | Command::InstallWorkflow { .. } => "error",
    };
    let (path, required) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from("config.toml"), false),
    };
    let config = match Config::load(&path, required) {
        Ok(config) => Arc::new(config),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Every log line passes the redactor: no secret reaches the log, whoever logs it.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(RedactedStderr(Redactor::from_config(&config)))
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => {
            let lines = check::run(&config).await;
            let ok = lines.iter().all(|l| l.ok);
            for line in lines {
                println!("{line}");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run => {
            let (app, outputs) = startup::app(config.clone(), Services::from_config(&config)?);
            app.recover().await;
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            discord::run(config, Arc::new(app), outputs, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            plan,
            branch,
            resume,
            discussion_url,
            closes,
            plan_sha256,
        } => {
            let options = batch::Options {
                branch,
                resume,
                discussion_url,
                closes,
                plan_sha256,
            };
            let run = batch::run(config, &plan, &options).await?;
            println!("branch: {}", run.branch);
            if let Some(url) = &run.pr_url {
                println!("pull request: {url}");
            }
            println!("state: {:?}", run.state);
            if let Some(message) = &run.message {
                println!("note: {message}");
            }
            // Red checks are a result (a draft pull request says so), not a failure: a workflow
            // job fails only when the run did.
            Ok(match run.state {
                RunState::Finished => ExitCode::SUCCESS,
                RunState::Stopped => ExitCode::from(3),
                RunState::Cancelled => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            })
        }
        Command::InstallWorkflow { write, force, repo } => {
            print!(
                "{}",
                install_workflow::run(&config, write, force, repo.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Invite => {
            let id = discord::application_id(&config).await?;
            println!("{}", discord::invite_url(id));
            Ok(ExitCode::SUCCESS)
        }
        Command::Console { title, resume } => {
            let (app, outputs) = startup::app(config.clone(), Services::from_config(&config)?);
            app.recover().await;
            let session = console::run(Arc::new(app), outputs, title, resume);
            let outcome = tokio::select! {
                outcome = session => outcome.context("console session")?,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted; everything said so far is saved");
                    return Ok(ExitCode::from(130));
                }
            };
            Ok(match outcome {
                Outcome::Planned { .. } => ExitCode::SUCCESS,
                Outcome::Quit { .. } => ExitCode::SUCCESS,
                Outcome::InputEnded { .. } => ExitCode::from(2),
            })
        }
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log output to stderr, one redacted event at a time.
struct RedactedStderr(Redactor);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedEvent<'a>;

    fn make_writer(&'a self) -> RedactedEvent<'a> {
        RedactedEvent {
            redactor: &self.0,
            buffer: Vec::new(),
        }
    }
}

/// Collects one formatted event and writes it, redacted, when dropped.
struct RedactedEvent<'a> {
    redactor: &'a Redactor,
    buffer: Vec<u8>,
}

impl std::io::Write for RedactedEvent<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedEvent<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            self.redactor.redact(&text).as_bytes(),
        );
    }
}
