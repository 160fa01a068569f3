//! The integration tests: one binary, with fake servers in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod llm;
mod repo;
