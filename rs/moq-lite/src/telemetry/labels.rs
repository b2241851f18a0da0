//! Bounded label values. Per-broadcast series are what operators want and what melts Prometheus,
//! so every broadcast or namespace label value is handed out here, and only here, under a cap:
//! past the cap, new broadcasts share the [`OVERFLOW`] value and the overflow is counted. A value
//! stays reserved while in use and for a linger window after (so its series can age out in the
//! exporter, which is configured with the same window), then its slot is free again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::names;

/// The label value shared by everything beyond the cap.
pub const OVERFLOW: &str = "_other";

/// Caps and linger; set once at start-up by the process that exports metrics.
#[derive(Debug, Clone, Copy)]
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

#[derive(Debug, Default)]
struct Slot {
    refs: usize,
    released: Option<Instant>,
}

#[derive(Debug)]
struct Pool {
    kind: &'static str,
    cap: usize,
    slots: HashMap<Arc<str>, Slot>,
}

impl Pool {
    fn new(kind: &'static str, cap: usize) -> Self {
        Self { kind, cap, slots: HashMap::new() }
    }

    fn acquire(&mut self, value: &str, linger: Duration) -> Arc<str> {
        if value == OVERFLOW {
            return Arc::from(OVERFLOW);
        }
        if let Some(key) = self.slots.get_key_value(value).map(|(k, _)| k.clone()) {
            let slot = self.slots.get_mut(value).expect("present");
            slot.refs += 1;
            slot.released = None;
            return key;
        }
        let now = Instant::now();
        self.slots.retain(|_, s| s.refs > 0 || s.released.is_none_or(|r| now.duration_since(r) < linger));
        if self.slots.len() >= self.cap {
            metrics::counter!(names::CARDINALITY_OVERFLOW, "label" => self.kind).increment(1);
            return Arc::from(OVERFLOW);
        }
        let key: Arc<str> = Arc::from(value);
        self.slots.insert(key.clone(), Slot { refs: 1, released: None });
        key
    }

    /// Frees slots unused for the linger window; returns how many.
    fn sweep(&mut self, linger: Duration) -> usize {
        let before = self.slots.len();
        let now = Instant::now();
        self.slots.retain(|_, s| s.refs > 0 || s.released.is_none_or(|r| now.duration_since(r) < linger));
        before - self.slots.len()
    }

    fn release(&mut self, value: &str) {
        if let Some(slot) = self.slots.get_mut(value) {
            slot.refs = slot.refs.saturating_sub(1);
            if slot.refs == 0 {
                slot.released = Some(Instant::now());
            }
        }
    }
}

struct Registry {
    limits: LabelLimits,
    broadcasts: Pool,
    namespaces: Pool,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let limits = LabelLimits::default();
        Mutex::new(Registry {
            broadcasts: Pool::new("broadcast", limits.broadcasts),
            namespaces: Pool::new("namespace", limits.namespaces),
            limits,
        })
    })
}

fn lock() -> std::sync::MutexGuard<'static, Registry> {
    registry().lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the caps and linger window.
pub fn configure(limits: LabelLimits) {
    let mut r = lock();
    r.limits = limits;
    r.broadcasts.cap = limits.broadcasts;
    r.namespaces.cap = limits.namespaces;
}

/// Frees label slots whose linger window has passed; returns how many.
pub fn sweep() -> usize {
    let mut r = lock();
    let linger = r.limits.linger;
    r.broadcasts.sweep(linger) + r.namespaces.sweep(linger)
}

pub fn limits() -> LabelLimits {
    lock().limits
}

/// The namespace of a broadcast path: its first segment.
pub fn namespace_of(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

/// A broadcast's label values, reserved while this handle lives.
#[derive(Debug)]
pub struct BroadcastLabels {
    pub broadcast: Arc<str>,
    pub namespace: Arc<str>,
}

impl BroadcastLabels {
    pub fn acquire(path: &str) -> Self {
        let mut r = lock();
        let linger = r.limits.linger;
        let namespace = r.namespaces.acquire(namespace_of(path), linger);
        let broadcast = r.broadcasts.acquire(path, linger);
        Self { broadcast, namespace }
    }
}

impl Clone for BroadcastLabels {
    fn clone(&self) -> Self {
        let mut r = lock();
        let linger = r.limits.linger;
        Self {
            broadcast: r.broadcasts.acquire(&self.broadcast, linger),
            namespace: r.namespaces.acquire(&self.namespace, linger),
        }
    }
}

impl Drop for BroadcastLabels {
    fn drop(&mut self) {
        let mut r = lock();
        r.broadcasts.release(&self.broadcast);
        r.namespaces.release(&self.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_caps_and_frees_after_linger() {
        let linger = Duration::from_millis(30);
        let mut pool = Pool::new("broadcast", 2);
        let a = pool.acquire("a", linger);
        let _b = pool.acquire("b", linger);
        assert_eq!(&*pool.acquire("c", linger), OVERFLOW);
        assert_eq!(&*pool.acquire("a", linger), "a", "a value in use is shared");
        pool.release(&a);
        pool.release(&a);
        assert_eq!(&*pool.acquire("c", linger), OVERFLOW, "still lingering");
        std::thread::sleep(linger * 2);
        assert_eq!(&*pool.acquire("c", linger), "c");
    }
}
