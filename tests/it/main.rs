//! The integration tests: one binary, with fake servers in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod config;
mod conversation;
mod llm;
mod plan;
mod repo;
mod store;
