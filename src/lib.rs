//! featurebot turns a conversation into a reviewed plan and then into a pull request.
//!
//! Modules in reading order: the leaves first (settings, storage, the LLM, git), then the
//! pure logic of the conversation and the plan, then the core that ties them together, then
//! the front ends that translate between people and the core.

pub mod config;
pub mod redact;
pub mod store;
pub mod llm;
pub mod repo;
pub mod github;
pub mod prompts;
pub mod conversation;
pub mod plan;
pub mod plan_file;
pub mod agent;
pub mod tasks;
pub mod runs;
pub mod app;
pub mod console;
pub mod batch;
pub mod workflow;
pub mod discord;
pub mod check;
