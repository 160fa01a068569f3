//! The core as `featurebot run` wires it (agent and GitHub included), minus a front end, with
//! a fake LLM, a fake GitHub and a repository whose remote is a local bare repository.

use std::sync::Arc;
use std::time::Duration;

use featurebot::config::{AgentConfig, Config, PromptsConfig, StoreConfig};
use featurebot::core::protocol::{Input, Output, OutputKind};
use featurebot::core::App;
use featurebot::github::GitHub;
use featurebot::model::{FeatureId, Place, Run, Status};
use featurebot::startup::{self, Services};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::app::alice;
use super::fake_github::FakeGithub;
use super::fake_llm::{Api, FakeLlm, Reply};
use super::git::{repo_config, repo_with_remote, TestRepo};
use super::outputs::reply;
use super::scripts::GOOD_PLAN;

/// A tool call the fake LLM answers with.
pub fn call(name: &str, args: Value) -> Reply {
    Reply::ToolCalls(vec![(name.to_string(), args)])
}

/// A core like `featurebot run` builds it, with the agent, minus a front end.
pub struct Core {
    pub app: Arc<App>,
    pub outputs: mpsc::UnboundedReceiver<Output>,
}

impl Core {
    pub fn with_config(config: Arc<Config>, github: Option<GitHub>) -> Core {
        let store = crate::support::reopen_store(&config.store.path);
        let mut services = Services::with_store(&config, store).unwrap();
        services.github = featurebot::github::Clients::with_default(github);
        let (app, outputs) = startup::app(config.clone(), services);
        Core {
            app: Arc::new(app),
            outputs,
        }
    }

    /// Handles `input` to the end and returns what it emitted so far.
    pub async fn send(&mut self, input: Input) -> Vec<Output> {
        self.app.handle(input).await;
        let mut got = Vec::new();
        while let Ok(output) = self.outputs.try_recv() {
            got.push(output);
        }
        got
    }

    /// Waits for the run to end and returns its final record.
    pub async fn run_ended(&mut self) -> Run {
        self.until_run_ended().await.0
    }

    /// Waits for the run to end; returns its final record and what was emitted until then.
    pub async fn until_run_ended(&mut self) -> (Run, Vec<Output>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.outputs.recv()).await {
                Ok(Some(Output {
                    kind: OutputKind::RunEnded { run },
                    ..
                })) => return (run, seen),
                Ok(Some(other)) => seen.push(other),
                Ok(None) => panic!("the core stopped: {seen:?}"),
                Err(_) => panic!("the run did not end: {seen:?}"),
            }
        }
    }
}

/// A core with the agent, a fake GitHub and a repository with a bare remote.
pub struct Pipeline {
    pub core: Core,
    pub config: Arc<Config>,
    pub llm: FakeLlm,
    pub github: FakeGithub,
    pub repo: TestRepo,
    /// Holds the store.
    pub _dir: tempfile::TempDir,
}

pub const BRANCH: &str = "featurebot/1-export-csv";

impl Pipeline {
    pub async fn start() -> Pipeline {
        Pipeline::start_with(|_| {}).await
    }

    /// Like [`Pipeline::start`], with a changed config.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Pipeline {
        let llm = FakeLlm::start(Api::OpenAi).await;
        let github = FakeGithub::start("acme", "shop").await;
        let repo = repo_with_remote("main");
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut config = Config {
            llm: llm.llm_config(),
            repo: repo_config(&repo),
            store: StoreConfig {
                path: store.clone(),
            },
            prompts: PromptsConfig { dir: None },
            discord: None,
            github: Some(github.config()),
            targets: Vec::new(),
            agent: AgentConfig::with_defaults(&store),
        };
        change(&mut config);
        let config = Arc::new(config);
        let core = Core::with_config(config.clone(), Some(GitHub::new(&github.config()).unwrap()));
        Pipeline {
            core,
            config,
            llm,
            github,
            repo,
            _dir: dir,
        }
    }

    /// Takes feature #1 to a committed plan.
    pub async fn planned(&mut self) -> FeatureId {
        self.llm.push(Reply::Text("Which format?".to_string()));
        self.llm
            .push(Reply::Text("CONFIRMED\n- CSV export".to_string()));
        self.llm.push(Reply::Text(GOOD_PLAN.to_string()));
        self.core
            .send(Input::Start {
                title: "Export CSV".to_string(),
                requester: alice(),
                place: Place::Console,
                repo: None,
            })
            .await;
        let id = FeatureId(1);
        self.core
            .send(Input::Message {
                feature: id,
                author: alice(),
                text: "CSV".to_string(),
                source_id: None,
            })
            .await;
        let outputs = self
            .core
            .send(Input::GeneratePlan {
                feature: id,
                force: false,
            })
            .await;
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o.kind, OutputKind::PlanCommitted { .. })),
            "{outputs:?}"
        );
        id
    }

    /// Approves the plan with a run that writes a file in step 1, and waits for its end.
    pub async fn approve_and_run(&mut self, id: FeatureId) -> Run {
        self.llm.push(call(
            "write_file",
            json!({"path": "export.txt", "content": "GET /export.csv\n"}),
        ));
        self.llm
            .push(call("finish_step", json!({"summary": "endpoint added"})));
        self.llm
            .push(call("finish_step", json!({"summary": "button added"})));
        self.core
            .send(Input::Approve {
                feature: id,
                version: 1,
            })
            .await;
        self.core.run_ended().await
    }

    /// A second feature gets its first answer.
    pub async fn second_feature_is_served(&mut self) {
        self.llm
            .push(Reply::Text("Which theme, dark or light?".to_string()));
        let outputs = self
            .core
            .send(Input::Start {
                title: "Dark mode".to_string(),
                requester: alice(),
                place: Place::Console,
                repo: None,
            })
            .await;
        assert_eq!(
            reply(&outputs),
            Some("Which theme, dark or light?"),
            "{outputs:?}"
        );
    }

    /// Drops the core and builds a new one on the same store, as a restart would.
    pub fn restart(self) -> Pipeline {
        let Pipeline {
            core,
            config,
            llm,
            github,
            repo,
            _dir,
        } = self;
        drop(core);
        let core = Core::with_config(config.clone(), Some(GitHub::new(&github.config()).unwrap()));
        Pipeline {
            core,
            config,
            llm,
            github,
            repo,
            _dir,
        }
    }

    pub fn status(&self, id: FeatureId) -> Status {
        self.core.app.store().feature(id).unwrap().status
    }
}
