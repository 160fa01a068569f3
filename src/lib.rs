//! featurebot turns a conversation into a reviewed plan and then into a pull request.
//!
//! Modules in reading order: the leaves first (settings, the domain model, storage, the LLM,
//! git, GitHub), then the pure logic of the conversation and the plan, then the agent and the
//! core that ties them together, then the front ends that translate between people and the
//! core, and the command-line commands. `ARCHITECTURE.md` has the map and the rules of which
//! module may use which (a test holds them).

pub mod config;
pub mod lock;
pub mod model;
pub mod redact;
pub mod store;
pub mod llm;
pub mod repo;
pub mod github;
pub mod prompts;
pub mod conversation;
pub mod plan;
pub mod agent;
pub mod core;
pub mod console;
pub mod discord;
pub mod cli;
pub mod startup;
