//! The command-line commands that are not front ends: `featurebot agent` (a run for scripts and
//! GitHub Actions), `featurebot check` (one line per configured service) and `featurebot
//! install-workflow`. `main.rs` parses the arguments and prints; these modules do the work.

pub mod agent;
pub mod check;
pub mod install_workflow;
