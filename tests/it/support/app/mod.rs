//! The one test builder: `TestApp::builder()` starts the fakes a test asks for, builds the one
//! [`Config`] the tests use (each `.with_config` mutator applied in order), and starts featurebot
//! on it through `startup`, the way `main` does.
//!
//! What runs depends on the builder:
//! - by default the core alone, driven with [`TestApp::send`] and the helpers in `core.rs`;
//! - `.with_discord()`: the real Discord front end (`featurebot::discord::run`) against the fake
//!   Discord, driven as people do, with the helpers in `discord.rs`;
//! - `.config_file()`: nothing in this process; the config is written as TOML for tests that run
//!   the `featurebot` binary (`binary.rs`, `toml.rs`), and the core can still be started here
//!   later on the same store ([`TestApp::start`]).
//!
//! A test reads what featurebot stored through [`TestApp::store`], the store of the `Services`
//! the app was built from, and restarts it as a new process would ([`TestApp::restart`],
//! [`TestApp::reconfigure`]).

mod binary;
mod core;
mod discord;
mod toml;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use featurebot::config::{AgentConfig, Config, DiscordConfig, PromptsConfig, Secret, StoreConfig};
use featurebot::core::protocol::Output;
use featurebot::core::App;
use featurebot::model::Author;
use featurebot::startup::{self, Services};
use featurebot::store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fake_discord::{FakeDiscord, ADMIN_ROLE, CHANNEL_ID, GUILD_ID};
use super::fake_github::FakeGithub;
use super::fake_llm::{Api, FakeLlm};
use super::git::{repo_config, repo_with_commit, repo_with_remote, TestRepo};
use super::wait::eventually;

/// A member of the fake Discord with the admin role.
pub const ADMIN: u64 = 5001;
/// A member of the fake Discord without any role.
pub const STRANGER: u64 = 5002;

/// The requester of the features the tests start in the core.
pub fn alice() -> Author {
    Author {
        id: "u-alice".to_string(),
        name: "alice".to_string(),
    }
}

/// featurebot wired to the fakes, with a temporary store and git repository.
pub struct TestApp {
    pub llm: FakeLlm,
    /// The target repository: `main` with one commit, and a bare `origin` with `.with_remote()`.
    pub repo: TestRepo,
    /// The config featurebot runs with (and, with `.config_file()`, the one the file holds).
    pub config: Arc<Config>,
    github: Option<FakeGithub>,
    discord: Option<FakeDiscord>,
    /// The services the running app was built from; `None` while nothing runs here.
    services: Option<Services>,
    running: Running,
    config_file: Option<PathBuf>,
    /// Holds the store and the config file.
    dir: tempfile::TempDir,
}

/// What runs in this process.
enum Running {
    Nothing,
    /// The core alone; the test reads its outputs.
    Core {
        app: Arc<App>,
        outputs: mpsc::UnboundedReceiver<Output>,
    },
    /// The core behind the Discord front end, which reads the outputs.
    Bot {
        app: Arc<App>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

/// A config mutator.
type Change<'a> = Box<dyn FnOnce(&mut Config) + 'a>;
/// A step that prepares the repository.
type Setup<'a> = Box<dyn FnOnce(&TestRepo) + 'a>;

/// Says what [`TestApp`] to build; see the module documentation.
pub struct Builder<'a> {
    api: Api,
    remote: bool,
    github: bool,
    discord: bool,
    config_file: bool,
    repo_setup: Vec<Setup<'a>>,
    changes: Vec<Change<'a>>,
}

impl TestApp {
    pub fn builder<'a>() -> Builder<'a> {
        Builder {
            api: Api::OpenAi,
            remote: false,
            github: false,
            discord: false,
            config_file: false,
            repo_setup: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// The bot as `featurebot run` serves a Discord server: a repository with a remote, GitHub
    /// and Discord.
    pub fn bot<'a>() -> Builder<'a> {
        TestApp::builder()
            .with_remote()
            .with_github()
            .with_discord()
    }

    /// The `featurebot` binary as an operator runs it: a repository with a remote, the config
    /// file, and one LLM retry (as the tests' config files have always had).
    pub fn binary<'a>() -> Builder<'a> {
        TestApp::builder()
            .with_remote()
            .config_file()
            .with_config(|c| c.llm.max_retries = 1)
    }
}

impl<'a> Builder<'a> {
    /// Changes the config before featurebot starts; mutators apply in the order given.
    pub fn with_config(mut self, change: impl FnOnce(&mut Config) + 'a) -> Builder<'a> {
        self.changes.push(Box::new(change));
        self
    }

    /// Which API the fake LLM speaks (OpenAI's by default).
    pub fn api(mut self, api: Api) -> Builder<'a> {
        self.api = api;
        self
    }

    /// The repository gets a bare `origin` holding `main`.
    pub fn with_remote(mut self) -> Builder<'a> {
        self.remote = true;
        self
    }

    /// Prepares the repository (files, commits, pushes) before the config is made from it.
    pub fn with_repo(mut self, setup: impl FnOnce(&TestRepo) + 'a) -> Builder<'a> {
        self.repo_setup.push(Box::new(setup));
        self
    }

    /// A fake GitHub (`acme/shop`) as `[github]`, its token also the repository's push token.
    pub fn with_github(mut self) -> Builder<'a> {
        self.github = true;
        self
    }

    /// The fake Discord as `[discord]`, with members [`ADMIN`] and [`STRANGER`], and the real
    /// Discord front end running against it.
    pub fn with_discord(mut self) -> Builder<'a> {
        self.discord = true;
        self
    }

    /// Writes the config as a TOML file for the `featurebot` binary and starts nothing here.
    pub fn config_file(mut self) -> Builder<'a> {
        self.config_file = true;
        self
    }

    pub async fn build(self) -> TestApp {
        let llm = FakeLlm::start(self.api).await;
        let repo = if self.remote {
            repo_with_remote("main")
        } else {
            repo_with_commit("main")
        };
        for setup in self.repo_setup {
            setup(&repo);
        }
        let github = match self.github {
            true => Some(FakeGithub::start("acme", "shop").await),
            false => None,
        };
        let discord = match self.discord {
            true => Some(FakeDiscord::start().await),
            false => None,
        };
        if let Some(discord) = &discord {
            discord.add_member(ADMIN, "ada", &[ADMIN_ROLE]);
            discord.add_member(STRANGER, "mallory", &[]);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut config = Config {
            llm: llm.llm_config(),
            repo: repo_config(&repo),
            store: StoreConfig {
                path: store.clone(),
            },
            prompts: PromptsConfig { dir: None },
            discord: discord.as_ref().map(discord_config),
            github: github.as_ref().map(FakeGithub::config),
            targets: Vec::new(),
            agent: AgentConfig::with_defaults(&store),
        };
        config.repo.github_token = config.github.as_ref().and_then(|g| g.token.clone());
        // As a user's config has it: the remote's URL is read at start-up, and the token goes
        // to the configured GitHub's host only.
        config.repo.push_url = None;
        if let Some(g) = &config.github {
            config.repo.token_host = featurebot::config::git_host(&g.api_base);
        }
        for change in self.changes {
            change(&mut config);
        }
        let mut app = TestApp {
            llm,
            repo,
            config: Arc::new(config),
            github,
            discord,
            services: None,
            running: Running::Nothing,
            config_file: None,
            dir,
        };
        if self.config_file {
            app.config_file = Some(app.dir.path().join("config.toml"));
            app.write_config_file();
        } else {
            app.start().await;
        }
        app
    }
}

/// `[discord]` pointing at the fake, with its admin role, channel and token.
fn discord_config(discord: &FakeDiscord) -> DiscordConfig {
    DiscordConfig {
        guild_id: GUILD_ID,
        feature_channels: vec![CHANNEL_ID],
        admin_roles: vec![ADMIN_ROLE],
        admin_users: vec![],
        api_base: Some(url::Url::parse(&discord.api_base()).unwrap()),
        stream_edit_interval: Duration::from_millis(200),
        token: Some(Secret::new(discord.token())),
    }
}

impl TestApp {
    /// Starts featurebot in this process on the config and the store as they are: the core, and
    /// the Discord front end when the app has the fake Discord.
    pub async fn start(&mut self) {
        assert!(
            matches!(self.running, Running::Nothing),
            "featurebot is already running"
        );
        let store = super::reopen_store(&self.config.store.path);
        let services = Services::with_store(&self.config, store).unwrap();
        self.services = Some(services.clone());
        let (app, outputs) = startup::app(self.config.clone(), services);
        let app = Arc::new(app);
        let Some(discord) = self.discord.clone() else {
            self.running = Running::Core { app, outputs };
            return;
        };
        app.recover().await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(featurebot::discord::run(
            self.config.clone(),
            app.clone(),
            outputs,
            shutdown.clone(),
        ));
        self.running = Running::Bot {
            app,
            shutdown,
            task,
        };
        discord.wait_ready().await;
        self.wait_for("the slash command", |a| !a.discord().commands().is_empty())
            .await;
    }

    /// Stops what runs in this process and lets go of the store, as a stopped process would.
    pub async fn stop(&mut self) {
        self.services = None;
        if let Running::Bot {
            shutdown, mut task, ..
        } = std::mem::replace(&mut self.running, Running::Nothing)
        {
            shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), &mut task).await;
        }
    }

    /// Stops featurebot and starts it again on the same store, as a restart would.
    pub async fn restart(self) -> TestApp {
        self.reconfigure(|_| {}).await
    }

    /// Like [`TestApp::restart`], letting `while_down` happen on the fake Discord in between.
    pub async fn restart_while_down(mut self, while_down: impl FnOnce(&FakeDiscord)) -> TestApp {
        self.stop().await;
        while_down(self.discord());
        self.start().await;
        self
    }

    /// Stops featurebot, changes the config (and its file), and starts it again if it ran.
    pub async fn reconfigure(mut self, change: impl FnOnce(&mut Config)) -> TestApp {
        let was_running = !matches!(self.running, Running::Nothing);
        self.stop().await;
        change(Arc::make_mut(&mut self.config));
        if self.config_file.is_some() {
            self.write_config_file();
        }
        if was_running {
            self.start().await;
        }
        self
    }

    /// The store featurebot runs on.
    pub fn store(&self) -> &Store {
        &self.services().store
    }

    /// The services featurebot runs on, for tests that drive a part of it (the agent) directly.
    pub fn services(&self) -> &Services {
        self.services
            .as_ref()
            .expect("featurebot is not running in this process")
    }

    /// The running core.
    pub fn app(&self) -> &Arc<App> {
        match &self.running {
            Running::Core { app, .. } | Running::Bot { app, .. } => app,
            Running::Nothing => panic!("featurebot is not running in this process"),
        }
    }

    /// The fake GitHub (built `.with_github()`).
    pub fn github(&self) -> &FakeGithub {
        self.github
            .as_ref()
            .expect("the app was built without .with_github()")
    }

    /// The fake Discord (built `.with_discord()`).
    pub fn discord(&self) -> &FakeDiscord {
        self.discord
            .as_ref()
            .expect("the app was built without .with_discord()")
    }

    /// The temporary folder holding the store (and the config file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Polls `condition` until it holds, for at most 20 seconds.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&TestApp) -> bool) {
        eventually(what, Duration::from_secs(20), || condition(self)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Running::Bot { shutdown, .. } = &self.running {
            shutdown.cancel();
        }
    }
}
