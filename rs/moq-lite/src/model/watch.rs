//! A mutex-protected state with a notifier: the one synchronisation primitive of the model.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Watch<T> {
    state: Mutex<T>,
    notify: Notify,
}

impl<T> Watch<T> {
    pub fn new(state: T) -> Self {
        Self { state: Mutex::new(state), notify: Notify::new() }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while holding the lock is a bug elsewhere; keep serving the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every waiter.
    pub fn modify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.lock());
        self.notify.notify_waiters();
        r
    }

    /// Waits until `f` returns `Some`, re-checking after every [`Self::modify`].
    pub async fn wait<R>(&self, mut f: impl FnMut(&mut T) -> Option<R>) -> R {
        loop {
            // Registered before the check, so a modify between check and await is not missed.
            let notified = self.notify.notified();
            if let Some(r) = f(&mut self.lock()) {
                return r;
            }
            notified.await;
        }
    }
}
