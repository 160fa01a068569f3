//! The `github-actions` executor: agent runs carried out by the target repository's GitHub
//! Actions instead of on the bot's host. `executor.rs` is the bot's side (dispatch, follow,
//! cancel, report as the same [`crate::agent::Event`]s as a local run); `workflow.rs` is the
//! runner's side (the workflow file, the runner's config, the dispatch inputs). The raw
//! Actions routes themselves are in `crate::github::actions`.

pub mod executor;
pub mod workflow;
