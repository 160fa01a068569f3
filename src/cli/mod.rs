//! The command-line commands that are not front ends: `featurebot agent` (a run for scripts and
//! GitHub Actions) and `featurebot check` (one line per configured service). `main.rs` parses
//! the arguments and prints; these modules do the work.

pub mod agent;
pub mod check;
