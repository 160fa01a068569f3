//! The one way a test waits for asynchronous work: poll a condition until a deadline.
//!
//! A test never sleeps a fixed time to let something happen; it says what it waits for, and a
//! hung test fails with that sentence instead of hanging.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds; panics naming `what` once `deadline` has passed.
pub async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`eventually`], for a check that finds a value: returns the first one it finds.
pub async fn eventually_some<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let mut found = None;
    eventually(what, deadline, || {
        found = check();
        found.is_some()
    })
    .await;
    found.expect("eventually returned, so the check found a value")
}
