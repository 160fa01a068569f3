//! The integration tests: one binary, with fake servers in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod abuse;
mod actions;
mod actions_run;
mod agent;
mod app;
mod config;
mod console;
mod conversation;
mod exec;
mod faults;
mod discord;
mod discord_text;
mod fake_discord;
mod github;
mod llm;
mod moving_world;
mod plan;
mod prompts;
mod rate_limits;
mod repo;
mod rules;
mod sandbox;
mod shutdown;
mod store;
mod workflow;
