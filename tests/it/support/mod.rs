//! Fake servers, temporary repositories, the one test builder (`app`), named LLM scripts,
//! button ids and the one wait helper for the integration tests.

pub mod app;
pub mod fake_discord;
pub mod fake_github;
pub mod fake_llm;
pub mod git;
pub mod http;
pub mod ids;
pub mod nobody;
pub mod outputs;
pub mod scripts;
pub mod wait;

use std::path::Path;
use std::time::{Duration, Instant};

use featurebot::store::{Store, StoreError};

/// Opens a store that this process closed a moment ago. sled's background threads may hold
/// the file lock for a few milliseconds after the last handle is dropped, so an in-process
/// "restart" retries for a while; a real restart is a new process and needs no such thing.
pub fn reopen_store(path: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("cannot reopen the store: {err}"),
        }
    }
}
