//! The integration tests: one binary, with fake servers in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod app;
mod config;
mod console;
mod conversation;
mod discord;
mod discord_text;
mod fake_discord;
mod llm;
mod plan;
mod repo;
mod store;
