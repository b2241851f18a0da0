//! Bounded label values. Per-broadcast series are what operators want and what melts Prometheus,
//! so every broadcast or namespace label value is handed out here, and only here, under a cap:
//! past the cap, new broadcasts share the [`OVERFLOW`] value and the overflow is counted. A value
//! stays reserved while in use and for a linger window after (so its series can age out in the
//! exporter, which is configured with the same window), then its slot is free again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::linger::Lingering;

/// The label value shared by everything beyond the cap.
pub const OVERFLOW: &str = "_other";

/// Caps and linger of the per-broadcast labels, set by the process that exports metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    pub broadcasts: usize,
    pub namespaces: usize,
    pub linger: Duration,
}

impl Default for LabelLimits {
    fn default() -> Self {
        Self { broadcasts: 200, namespaces: 50, linger: Duration::from_secs(300) }
    }
}

/// One capped pool of label values.
#[derive(Debug)]
pub(super) struct Pool {
    cap: usize,
    slots: Lingering<Arc<str>>,
}

/// What acquiring a value gave.
pub(super) enum Acquired {
    Value(Arc<str>),
    /// The cap was reached: the caller got [`OVERFLOW`] and counts it.
    Overflow,
}

impl Pool {
    pub fn new(cap: usize, linger: Duration) -> Self {
        Self { cap, slots: Lingering::new(linger) }
    }

    pub fn acquire(&mut self, value: &str, now: Instant) -> Acquired {
        if value == OVERFLOW {
            return Acquired::Value(Arc::from(OVERFLOW));
        }
        if let Some(key) = self.slots.get_key(value).cloned() {
            self.slots.acquire(key.clone(), || ());
            return Acquired::Value(key);
        }
        self.slots.expire(now);
        if self.slots.len() >= self.cap {
            return Acquired::Overflow;
        }
        let key: Arc<str> = Arc::from(value);
        self.slots.acquire(key.clone(), || ());
        Acquired::Value(key)
    }

    pub fn release(&mut self, value: &str, now: Instant) {
        self.slots.release(value, now);
    }

    /// Frees slots unused for the linger window; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.slots.expire(now)
    }
}

/// The namespace of a broadcast path: its first segment.
pub fn namespace_of(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(a: Acquired) -> String {
        match a {
            Acquired::Value(v) => v.to_string(),
            Acquired::Overflow => OVERFLOW.to_string(),
        }
    }

    #[test]
    fn pool_caps_and_frees_after_linger() {
        let linger = Duration::from_millis(30);
        let now = Instant::now();
        let mut pool = Pool::new(2, linger);
        assert_eq!(value(pool.acquire("a", now)), "a");
        assert_eq!(value(pool.acquire("b", now)), "b");
        assert_eq!(value(pool.acquire("c", now)), OVERFLOW);
        assert_eq!(value(pool.acquire("a", now)), "a", "a value in use is shared");
        pool.release("a", now);
        pool.release("a", now);
        assert_eq!(value(pool.acquire("c", now)), OVERFLOW, "still lingering");
        assert_eq!(value(pool.acquire("c", now + linger * 2)), "c");
    }
}
