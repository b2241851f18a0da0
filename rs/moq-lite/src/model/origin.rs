//! The origin: a node's routing table of announced broadcasts, keyed by path.
//!
//! Publishing a path that is already announced replaces the older publisher. Watchers learn the
//! current set under a prefix and then every change; their pending changes are a set of dirty
//! paths, so a slow watcher costs at most one entry per path, never an unbounded queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use super::broadcast::BroadcastConsumer;
use super::watch::Watch;
use crate::path;

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    broadcast: BroadcastConsumer,
    hops: Vec<u64>,
}

#[derive(Debug, Default)]
struct State {
    broadcasts: HashMap<String, Entry>,
    watchers: Vec<Weak<Watcher>>,
    next_id: u64,
}

/// The shared routing table. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    state: Arc<Watch<State>>,
}

/// An announced broadcast as seen by a lookup.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: u64,
    pub broadcast: BroadcastConsumer,
    /// The relay hops the announcement travelled through (loop avoidance).
    pub hops: Vec<u64>,
}

impl Origin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Announces `broadcast` at `path` until the returned guard is dropped. A newer publication
    /// of the same path takes over; the older guard then no longer removes anything.
    pub fn publish(&self, path: &str, broadcast: BroadcastConsumer, hops: Vec<u64>) -> Publication {
        let id = self.state.modify(|s| {
            let id = s.next_id;
            s.next_id += 1;
            if s.broadcasts.insert(path.to_string(), Entry { id, broadcast, hops }).is_some() {
                tracing::info!(moq.broadcast = path, reason = "replaced", "broadcast ended");
            }
            mark_dirty(s, path);
            id
        });
        Publication { origin: self.clone(), path: path.to_string(), id }
    }

    pub fn route(&self, path: &str) -> Option<Route> {
        let s = self.state.lock();
        s.broadcasts.get(path).map(|e| Route { id: e.id, broadcast: e.broadcast.clone(), hops: e.hops.clone() })
    }

    /// Waits until the route at `path` is no longer publication `id` (replaced or ended).
    pub async fn route_changed(&self, path: &str, id: u64) {
        self.state.wait(|s| (s.broadcasts.get(path).map(|e| e.id) != Some(id)).then_some(())).await
    }

    /// Waits until something is announced at `path`.
    pub async fn wait_route(&self, path: &str) -> Route {
        self.state
            .wait(|s| {
                s.broadcasts.get(path).map(|e| Route { id: e.id, broadcast: e.broadcast.clone(), hops: e.hops.clone() })
            })
            .await
    }

    /// Paths currently announced under `prefix`, relative to it, sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let s = self.state.lock();
        let mut paths: Vec<String> = s
            .broadcasts
            .keys()
            .filter_map(|p| path::strip_prefix(p, prefix))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        paths.sort();
        paths
    }

    pub fn len(&self) -> usize {
        self.state.lock().broadcasts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Watches announcements under `prefix`: the current set first, then every change.
    pub fn announced(&self, prefix: &str) -> Announced {
        let watcher = Arc::new(Watcher { prefix: prefix.to_string(), state: Watch::new(WatcherState::default()) });
        self.state.modify(|s| {
            s.watchers.retain(|w| w.strong_count() > 0);
            s.watchers.push(Arc::downgrade(&watcher));
            let initial: HashSet<String> =
                s.broadcasts.keys().filter(|p| path::has_prefix(p, prefix)).cloned().collect();
            watcher.state.lock().dirty = initial;
        });
        Announced { origin: self.clone(), watcher, known: HashMap::new() }
    }

    fn unpublish(&self, path: &str, id: u64) {
        self.state.modify(|s| {
            if s.broadcasts.get(path).is_some_and(|e| e.id == id) {
                s.broadcasts.remove(path);
                mark_dirty(s, path);
            }
        });
    }
}

fn mark_dirty(s: &mut State, path: &str) {
    s.watchers.retain(|w| {
        let Some(w) = w.upgrade() else { return false };
        if path::has_prefix(path, &w.prefix) {
            w.state.modify(|ws| ws.dirty.insert(path.to_string()));
        }
        true
    });
}

/// Keeps a broadcast announced; dropping it withdraws the announcement (unless replaced).
#[derive(Debug)]
pub struct Publication {
    origin: Origin,
    path: String,
    id: u64,
}

impl Publication {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        self.origin.unpublish(&self.path, self.id);
    }
}

#[derive(Debug, Default)]
struct WatcherState {
    dirty: HashSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    state: Watch<WatcherState>,
}

/// One change seen by a watcher. `path` is relative to the watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Active { path: String, hops: Vec<u64> },
    Ended { path: String },
}

/// A stream of [`Announcement`]s under a prefix.
#[derive(Debug)]
pub struct Announced {
    origin: Origin,
    watcher: Arc<Watcher>,
    /// Paths this watcher reported active, with the publication id it saw.
    known: HashMap<String, u64>,
}

impl Announced {
    pub async fn next(&mut self) -> Announcement {
        loop {
            let full = self
                .watcher
                .state
                .wait(|ws| {
                    let path = ws.dirty.iter().next()?.clone();
                    ws.dirty.remove(&path);
                    Some(path)
                })
                .await;
            let current = self.origin.route(&full);
            let relative = path::strip_prefix(&full, &self.watcher.prefix).unwrap_or(&full);
            let relative = relative.to_string();
            match (current, self.known.get(&full).copied()) {
                (Some(route), None) => {
                    self.known.insert(full, route.id);
                    return Announcement::Active { path: relative, hops: route.hops };
                }
                (Some(route), Some(id)) if route.id != id => {
                    // Replaced: the path stays announced and subscriptions follow the new
                    // publisher, so watchers see no change.
                    self.known.insert(full, route.id);
                    continue;
                }
                (None, Some(_)) => {
                    self.known.remove(&full);
                    return Announcement::Ended { path: relative };
                }
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BroadcastProducer;

    #[tokio::test]
    async fn watchers_see_current_set_then_changes_and_replacement() {
        let origin = Origin::new();
        let a = BroadcastProducer::new();
        let pub_a = origin.publish("demo/a", a.consume(), vec![]);
        let _other = origin.publish("other/x", a.consume(), vec![]);

        let mut watch = origin.announced("demo");
        assert_eq!(watch.next().await, Announcement::Active { path: "a".into(), hops: vec![] });

        // A replacement is invisible to watchers; the route now leads to the new publisher.
        let b = BroadcastProducer::new();
        let pub_b = origin.publish("demo/a", b.consume(), vec![7]);
        let c = BroadcastProducer::new();
        let pub_c = origin.publish("demo/c", c.consume(), vec![]);
        let active_c = Announcement::Active { path: "c".into(), hops: vec![] };
        assert_eq!(watch.next().await, active_c);
        drop(pub_c);
        assert_eq!(watch.next().await, Announcement::Ended { path: "c".into() });

        // The replaced publisher leaving does not withdraw the newer one.
        drop(pub_a);
        assert!(origin.route("demo/a").unwrap().broadcast.same(&b.consume()));
        drop(pub_b);
        assert_eq!(watch.next().await, Announcement::Ended { path: "a".into() });
        assert_eq!(origin.list(""), vec!["other/x".to_string()]);
    }
}
