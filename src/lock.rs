//! The one way this crate takes a `std::sync::Mutex`: a lock poisoned by a panic while it was
//! held is taken anyway. Every mutex here guards a small table (queues, inboxes, run handles,
//! per-feature locks) whose entries stay consistent between statements, so a panic elsewhere
//! must not turn every later access into another panic. Never held across an `.await`.

use std::sync::{Mutex, MutexGuard};

pub trait LockExt<T> {
    /// The guard, whether or not an earlier holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
