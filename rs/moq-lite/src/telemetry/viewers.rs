//! Distinct viewer sessions per broadcast label value: one session watching video and audio is
//! one viewer. An entry lingers for the window after its last subscription ends, so its gauge
//! reads 0 for a while before the series ages out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::linger::Lingering;
use super::BroadcastLabels;

pub(super) struct Viewers {
    /// Held once per subscription; the value counts subscriptions per session.
    by_broadcast: Lingering<Arc<str>, Entry>,
}

pub(super) struct Entry {
    namespace: Arc<str>,
    sessions: HashMap<u64, usize>,
}

impl Viewers {
    pub fn new(linger: Duration) -> Self {
        Self { by_broadcast: Lingering::new(linger) }
    }

    pub fn join(&mut self, labels: &BroadcastLabels, session: u64) {
        let entry = self.by_broadcast.acquire(labels.broadcast.clone(), || Entry {
            namespace: labels.namespace.clone(),
            sessions: HashMap::new(),
        });
        *entry.sessions.entry(session).or_default() += 1;
    }

    pub fn leave(&mut self, broadcast: &str, session: u64, now: Instant) {
        if let Some(entry) = self.by_broadcast.release(broadcast, now) {
            if let Some(n) = entry.sessions.get_mut(&session) {
                *n -= 1;
                if *n == 0 {
                    entry.sessions.remove(&session);
                }
            }
        }
    }

    pub fn expire(&mut self, now: Instant) -> usize {
        self.by_broadcast.expire(now)
    }

    pub fn count(&self, broadcast: &str) -> usize {
        self.by_broadcast.get(broadcast).map_or(0, |h| h.value.sessions.len())
    }

    /// (broadcast, namespace, distinct sessions) of every entry held or lingering.
    pub fn counts(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>, usize)> {
        self.by_broadcast.iter().map(|(b, h)| (b, &h.value.namespace, h.value.sessions.len()))
    }
}
