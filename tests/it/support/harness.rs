//! A core wired to a fake LLM, a temporary store and a temporary git repository.

use std::path::PathBuf;
use std::sync::Arc;

use featurebot::config::{Config, PromptsConfig, StoreConfig};
use featurebot::core::protocol::{Input, Output, OutputKind};
use featurebot::core::App;
use featurebot::model::{Author, FeatureId, Place};
use featurebot::startup::{self, Services};
use featurebot::store::Store;
use tokio::sync::mpsc;

use super::fake_llm::{Api, FakeLlm};
use super::git::{repo_config, repo_with_commit, TestRepo};

pub struct Harness {
    pub app: Arc<App>,
    pub outputs: mpsc::UnboundedReceiver<Output>,
    pub llm: FakeLlm,
    pub repo: TestRepo,
    pub config: Arc<Config>,
    pub store_dir: tempfile::TempDir,
}

pub fn alice() -> Author {
    Author {
        id: "u-alice".to_string(),
        name: "alice".to_string(),
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_api(Api::OpenAi).await
    }

    pub async fn with_api(api: Api) -> Harness {
        let llm = FakeLlm::start(api).await;
        let repo = repo_with_commit("main");
        let store_dir = tempfile::tempdir().unwrap();
        let config = Config {
            llm: llm.llm_config(),
            repo: repo_config(&repo),
            store: StoreConfig {
                path: store_dir.path().join("store"),
            },
            prompts: PromptsConfig { dir: None },
            discord: None,
            github: None,
            targets: Vec::new(),
            agent: featurebot::config::AgentConfig::with_defaults(store_dir.path()),
        };
        Harness::with_config(llm, repo, store_dir, config)
    }

    pub fn with_config(
        llm: FakeLlm,
        repo: TestRepo,
        store_dir: tempfile::TempDir,
        config: Config,
    ) -> Harness {
        let config = Arc::new(config);
        let store = super::reopen_store(&config.store.path);
        let services = Services::with_store(&config, store).unwrap();
        let (app, outputs) = startup::app(config.clone(), services);
        Harness {
            app: Arc::new(app),
            outputs,
            llm,
            repo,
            config,
            store_dir,
        }
    }

    /// Closes the store and opens it again in a new core, as a restart would.
    pub fn restart(self) -> Harness {
        self.reconfigure(|_| {})
    }

    /// Restarts with a changed config.
    pub fn reconfigure(self, change: impl FnOnce(&mut Config)) -> Harness {
        let Harness {
            app,
            outputs,
            llm,
            repo,
            config,
            store_dir,
        } = self;
        drop(outputs);
        drop(app);
        let mut config = Arc::try_unwrap(config).unwrap_or_else(|c| (*c).clone());
        change(&mut config);
        Harness::with_config(llm, repo, store_dir, config)
    }

    pub fn store(&self) -> &Store {
        self.app.store()
    }

    pub fn repo_path(&self) -> PathBuf {
        self.repo.path.clone()
    }

    /// Handles `input` to the end and returns what it emitted.
    pub async fn send(&mut self, input: Input) -> Vec<Output> {
        self.app.handle(input).await;
        let mut got = Vec::new();
        while let Ok(output) = self.outputs.try_recv() {
            got.push(output);
        }
        got
    }

    pub async fn start_feature(&mut self, title: &str) -> (FeatureId, Vec<Output>) {
        let outputs = self
            .send(Input::Start {
                title: title.to_string(),
                requester: alice(),
                place: Place::Console,
                repo: None,
            })
            .await;
        let id = outputs
            .iter()
            .find_map(|o| match &o.kind {
                OutputKind::Started { feature } => Some(feature.id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no feature started: {outputs:?}"));
        (id, outputs)
    }

    pub async fn say(&mut self, feature: FeatureId, text: &str) -> Vec<Output> {
        self.send(Input::Message {
            feature,
            author: alice(),
            text: text.to_string(),
            source_id: None,
        })
        .await
    }
}

/// The final visible reply among `outputs`.
pub fn reply(outputs: &[Output]) -> Option<&str> {
    outputs.iter().find_map(|o| match &o.kind {
        OutputKind::Reply { text, .. } => Some(text.as_str()),
        _ => None,
    })
}

/// The concatenated streamed deltas among `outputs`.
pub fn streamed(outputs: &[Output]) -> String {
    outputs
        .iter()
        .filter_map(|o| match &o.kind {
            OutputKind::ReplyDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The failure message among `outputs`.
pub fn failure(outputs: &[Output]) -> Option<&str> {
    outputs.iter().find_map(|o| match &o.kind {
        OutputKind::Failed { message, .. } | OutputKind::Rejected { message, .. } => {
            Some(message.as_str())
        }
        _ => None,
    })
}

/// A plan with every required section.
pub const GOOD_PLAN: &str = "## Summary & goal\nLet users export their data as CSV.\n\n## User stories / acceptance criteria\nAs a user I want a CSV export.\n- [ ] the file downloads\n\n## Implementation steps\n### Backend\n1. Add GET /export.csv\n### Frontend\n2. Add an Export button\n\n## Test plan\n- an integration test downloads the file\n";
