//! The one wiring point: builds the services and the core from a [`Config`].
//!
//! `main` (for `run`, `console` and `agent`), every test harness and the benchmarks build the
//! process here, so a new dependency of the core is added in one place. Nothing else constructs
//! an [`App`] or a [`Runner`].

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::agent::run::Runner;
use crate::config::Config;
use crate::core::protocol::Output;
use crate::core::App;
use crate::github::Clients;
use crate::llm;
use crate::prompts::Prompts;
use crate::redact::Redactor;
use crate::repo::Repos;
use crate::store::Store;

/// Everything the core and the agent talk to, built once per process.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub llm: llm::Client,
    pub prompts: Prompts,
    pub redactor: Redactor,
    /// One GitHub client per configured target repository.
    pub github: Clients,
    /// One repository (and commit lock) per configured target.
    pub repos: Repos,
}

impl Services {
    /// Opens the store at `store.path` and builds the rest from `config`.
    pub fn from_config(config: &Config) -> anyhow::Result<Services> {
        Services::with_store(config, Store::open(&config.store.path)?)
    }

    /// Builds the services around an already open `store`.
    pub fn with_store(config: &Config, store: Store) -> anyhow::Result<Services> {
        Ok(Services {
            store,
            llm: llm::Client::new(config.llm.clone())?,
            prompts: Prompts::load(config.prompts.dir.as_deref())?,
            redactor: Redactor::from_config(config),
            github: Clients::from_config(config)?,
            repos: Repos::from_config(config),
        })
    }

    /// The coding agent over these services.
    pub fn runner(&self, config: Arc<Config>) -> Runner {
        Runner {
            config,
            llm: self.llm.clone(),
            prompts: self.prompts.clone(),
            redactor: self.redactor.clone(),
            github: self.github.clone(),
            repos: self.repos.clone(),
        }
    }
}

/// The core, with its agent, and the channel of everything it has to show people.
pub fn app(config: Arc<Config>, services: Services) -> (App, mpsc::UnboundedReceiver<Output>) {
    let runner = services.runner(config);
    App::new(runner, services.store)
}
