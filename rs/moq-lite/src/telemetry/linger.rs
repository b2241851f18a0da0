//! "In use, or released less than a window ago": the one type behind every piece of telemetry
//! state that must outlive its last user for a while (label slots, so an ended broadcast's series
//! can age out in the exporter before the value is handed to another broadcast; a broadcast's
//! viewer entry and a namespace's stream count, which read 0 for that window before they go).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys held by reference count, each with a value; a key whose count drops to 0 stays for the
/// window, then [`Lingering::expire`] removes it.
#[derive(Debug)]
pub struct Lingering<K, V = ()> {
    window: Duration,
    entries: HashMap<K, Held<V>>,
}

#[derive(Debug)]
pub struct Held<V> {
    pub value: V,
    refs: usize,
    released: Option<Instant>,
}

impl<V> Held<V> {
    /// How many holders the key has now (0 while it lingers).
    pub fn refs(&self) -> usize {
        self.refs
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.refs == 0 && self.released.is_some_and(|r| now.saturating_duration_since(r) >= window)
    }
}

impl<K: Hash + Eq, V> Lingering<K, V> {
    pub fn new(window: Duration) -> Self {
        Self { window, entries: HashMap::new() }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Holds `key` once more (creating its value with `init` if it is new, reviving it if it
    /// lingers) and returns its value.
    pub fn acquire(&mut self, key: K, init: impl FnOnce() -> V) -> &mut V {
        let held = self.entries.entry(key).or_insert_with(|| Held { value: init(), refs: 0, released: None });
        held.refs += 1;
        held.released = None;
        &mut held.value
    }

    /// Lets go of one hold on `key`; the last one starts its window.
    pub fn release<Q>(&mut self, key: &Q, now: Instant) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let held = self.entries.get_mut(key)?;
        held.refs = held.refs.saturating_sub(1);
        if held.refs == 0 {
            held.released = Some(now);
        }
        Some(&mut held.value)
    }

    /// Removes keys whose window has passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let window = self.window;
        self.entries.retain(|_, held| !held.expired(now, window));
        before - self.entries.len()
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&Held<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key)
    }

    pub fn get_key<Q>(&self, key: &Q) -> Option<&K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get_key_value(key).map(|(k, _)| k)
    }

    /// Keys held or lingering.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Held<V>)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lingers_for_its_window_after_its_last_release_and_revives_if_held_again() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let mut l: Lingering<&str, u32> = Lingering::new(window);
        *l.acquire("a", || 0) += 1;
        *l.acquire("a", || 100) += 1;
        assert_eq!(l.get("a").map(|h| (h.refs(), h.value)), Some((2, 2)), "init runs once");
        l.release("a", start);
        assert_eq!(l.expire(start + window * 2), 0, "still held once");
        l.release("a", start);
        assert_eq!(l.get("a").unwrap().refs(), 0);
        assert_eq!(l.expire(start + window / 2), 0, "lingering");
        l.acquire("a", || 0);
        l.release("a", start + window);
        assert_eq!(l.expire(start + window + window / 2), 0, "the window restarted at the last release");
        assert_eq!(l.expire(start + window * 2), 1);
        assert!(l.is_empty());
        assert!(l.release("gone", start).is_none());
    }
}
