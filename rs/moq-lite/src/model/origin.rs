//! The origin: a node's routing table of announced broadcasts, keyed by path.
//!
//! A path may be reachable several ways at once (a publisher here, and copies announced by peer
//! relays through different hop chains). The origin keeps every route and serves the best one:
//! cheapest cost, then fewest hops, then the newest (so a publisher reconnecting to the same node
//! takes over from its older session). When the best route goes, the next takes over and
//! subscriptions follow it. Watchers learn the current set under a prefix and then every change;
//! their pending changes are a set of dirty paths, so a slow watcher costs at most one entry per
//! path, never an unbounded queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use super::broadcast::BroadcastConsumer;
use super::watch::Watch;
use crate::path;

/// What a route costs (lite-06 semantics, used for every version): `warm` if the track already
/// flows along it, `cold` if it must be pulled. Lower is better; sums saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct RouteCost {
    pub warm: u64,
    pub cold: u64,
}

impl RouteCost {
    /// The largest cost (the wire's varint limit); sums saturate here.
    pub const MAX: u64 = (1 << 62) - 1;

    /// This cost plus a link's price, on both halves.
    pub fn plus(self, link: u64) -> Self {
        let add = |a: u64| a.saturating_add(link).min(Self::MAX);
        Self { warm: add(self.warm), cold: add(self.cold) }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    broadcast: BroadcastConsumer,
    hops: Vec<u64>,
    cost: RouteCost,
}

impl Entry {
    /// Ranks routes: lower is better. The newest wins a tie.
    fn rank(&self) -> (RouteCost, usize, std::cmp::Reverse<u64>) {
        (self.cost, self.hops.len(), std::cmp::Reverse(self.id))
    }

    fn route(&self) -> Route {
        Route { id: self.id, broadcast: self.broadcast.clone(), hops: self.hops.clone(), cost: self.cost }
    }
}

/// Every route to one path; `best` indexes the one served.
#[derive(Debug, Default)]
struct Routes {
    all: Vec<Entry>,
}

impl Routes {
    fn best(&self) -> Option<&Entry> {
        self.all.iter().min_by_key(|e| e.rank())
    }
}

#[derive(Debug, Default)]
struct State {
    broadcasts: HashMap<String, Routes>,
    watchers: Vec<Weak<Watcher>>,
    next_id: u64,
}

impl State {
    fn best(&self, path: &str) -> Option<&Entry> {
        self.broadcasts.get(path).and_then(Routes::best)
    }
}

/// The shared routing table. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    state: Arc<Watch<State>>,
}

/// How the routes to a path changed for a subscription ([`Origin::route_change`]).
#[derive(Debug, Clone)]
pub enum RouteChange {
    /// The route served is gone; the best remaining one, if any.
    Lost(Option<Route>),
    /// The route served is still there but another is now the best.
    Better(Route),
}

/// The route a lookup chose for a path.
#[derive(Debug, Clone)]
pub struct Route {
    /// Names this route (one announcement) for as long as it lives; never reused.
    pub id: u64,
    pub broadcast: BroadcastConsumer,
    /// The relay hops the announcement travelled through (loop avoidance); empty when the
    /// broadcast is published on this node.
    pub hops: Vec<u64>,
    pub cost: RouteCost,
}

impl Origin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Announces `broadcast` at `path`, published on this node (no hops, no cost), until the
    /// returned guard is dropped. A newer publication of the same path takes over while it lives.
    pub fn publish(&self, path: &str, broadcast: BroadcastConsumer, hops: Vec<u64>) -> Publication {
        self.publish_route(path, broadcast, hops, RouteCost::default())
    }

    /// Adds a route to `path` until the returned guard is dropped; the best route is served.
    pub fn publish_route(
        &self,
        path: &str,
        broadcast: BroadcastConsumer,
        hops: Vec<u64>,
        cost: RouteCost,
    ) -> Publication {
        let id = self.state.modify(|s| {
            let id = s.next_id;
            s.next_id += 1;
            let routes = s.broadcasts.entry(path.to_string()).or_default();
            let before = routes.best().map(|e| e.id);
            routes.all.push(Entry { id, broadcast, hops, cost });
            if before.is_some() && routes.best().map(|e| e.id) == Some(id) {
                tracing::info!(moq.broadcast = path, reason = "replaced", "broadcast ended");
            }
            mark_dirty(s, path);
            id
        });
        Publication { origin: self.clone(), path: path.to_string(), id }
    }

    /// The route served for `path`: the best of those announced.
    pub fn route(&self, path: &str) -> Option<Route> {
        self.state.lock().best(path).map(Entry::route)
    }

    /// How many routes lead to `path` (the served one and its alternatives).
    pub fn route_count(&self, path: &str) -> usize {
        self.state.lock().broadcasts.get(path).map_or(0, |r| r.all.len())
    }

    /// Waits until the route served at `path` is no longer route `id` (replaced, ended, or a
    /// better one appeared).
    pub async fn route_changed(&self, path: &str, id: u64) {
        self.state.wait(|s| (s.best(path).map(|e| e.id) != Some(id)).then_some(())).await
    }

    /// Waits until the routes to `path` change in a way that matters to a subscription served
    /// from route `serving` that last saw route `seen` as the best: `serving` withdrawn
    /// ([`RouteChange::Lost`], with the best route left if any), or a best route other than
    /// `seen` ([`RouteChange::Better`]).
    pub async fn route_change(&self, path: &str, serving: u64, seen: u64) -> RouteChange {
        self.state
            .wait(|s| {
                let routes = s.broadcasts.get(path);
                let best = routes.and_then(Routes::best);
                if !routes.is_some_and(|r| r.all.iter().any(|e| e.id == serving)) {
                    return Some(RouteChange::Lost(best.map(Entry::route)));
                }
                let best = best?;
                (best.id != seen).then(|| RouteChange::Better(best.route()))
            })
            .await
    }

    /// Waits until route `id` to `path` is withdrawn (whatever else leads there).
    pub async fn route_withdrawn(&self, path: &str, id: u64) {
        self.state
            .wait(|s| (!s.broadcasts.get(path).is_some_and(|r| r.all.iter().any(|e| e.id == id))).then_some(()))
            .await
    }

    /// Waits until something is announced at `path`.
    pub async fn wait_route(&self, path: &str) -> Route {
        self.state.wait(|s| s.best(path).map(Entry::route)).await
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
            let Some(routes) = s.broadcasts.get_mut(path) else { return };
            routes.all.retain(|e| e.id != id);
            if routes.all.is_empty() {
                s.broadcasts.remove(path);
            }
            mark_dirty(s, path);
        });
    }

    fn update(&self, path: &str, id: u64, hops: Vec<u64>, cost: RouteCost) {
        self.state.modify(|s| {
            let Some(entry) = s.broadcasts.get_mut(path).and_then(|r| r.all.iter_mut().find(|e| e.id == id)) else {
                return;
            };
            if entry.hops == hops && entry.cost == cost {
                return;
            }
            entry.hops = hops;
            entry.cost = cost;
            mark_dirty(s, path);
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

/// Keeps a route announced; dropping it withdraws the route (the path stays announced while
/// another route leads there).
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

    /// Changes this route's hop chain and cost in place (a peer re-announced it): the broadcast
    /// and its subscriptions stay; watchers see an [`Announcement::Updated`] if it is served.
    pub fn update(&self, hops: Vec<u64>, cost: RouteCost) {
        self.origin.update(&self.path, self.id, hops, cost);
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
    /// A path became reachable, through `hops` at `cost`.
    Active {
        path: String,
        hops: Vec<u64>,
        cost: RouteCost,
    },
    /// A path still reachable is now served through another chain or at another cost (its best
    /// route changed, or that route was re-announced). A change of publisher alone, with the
    /// same chain and cost, is invisible: subscriptions follow it.
    Updated {
        path: String,
        hops: Vec<u64>,
        cost: RouteCost,
    },
    Ended {
        path: String,
    },
}

impl Announcement {
    pub fn path(&self) -> &str {
        match self {
            Self::Active { path, .. } | Self::Updated { path, .. } | Self::Ended { path } => path,
        }
    }
}

/// A stream of [`Announcement`]s under a prefix.
#[derive(Debug)]
pub struct Announced {
    origin: Origin,
    watcher: Arc<Watcher>,
    /// Paths this watcher reported active, with the chain and cost it last reported.
    known: HashMap<String, (Vec<u64>, RouteCost)>,
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
            let relative = path::strip_prefix(&full, &self.watcher.prefix).unwrap_or(&full).to_string();
            match (current, self.known.get(&full)) {
                (Some(route), None) => {
                    self.known.insert(full, (route.hops.clone(), route.cost));
                    return Announcement::Active { path: relative, hops: route.hops, cost: route.cost };
                }
                (Some(route), Some((hops, cost))) if *hops != route.hops || *cost != route.cost => {
                    self.known.insert(full, (route.hops.clone(), route.cost));
                    return Announcement::Updated { path: relative, hops: route.hops, cost: route.cost };
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

    fn active(path: &str, hops: Vec<u64>) -> Announcement {
        Announcement::Active { path: path.into(), hops, cost: RouteCost::default() }
    }

    #[tokio::test]
    async fn watchers_see_current_set_then_changes_and_replacement() {
        let origin = Origin::new();
        let a = BroadcastProducer::new();
        let pub_a = origin.publish("demo/a", a.consume(), vec![]);
        let _other = origin.publish("other/x", a.consume(), vec![]);

        let mut watch = origin.announced("demo");
        assert_eq!(watch.next().await, active("a", vec![]));

        // A replacement with the same chain is invisible to watchers; the route now leads to the
        // new publisher.
        let b = BroadcastProducer::new();
        let pub_b = origin.publish("demo/a", b.consume(), vec![]);
        let c = BroadcastProducer::new();
        let pub_c = origin.publish("demo/c", c.consume(), vec![]);
        assert_eq!(watch.next().await, active("c", vec![]));
        drop(pub_c);
        assert_eq!(watch.next().await, Announcement::Ended { path: "c".into() });

        // The replaced publisher leaving does not withdraw the newer one.
        drop(pub_a);
        assert!(origin.route("demo/a").unwrap().broadcast.same(&b.consume()));
        drop(pub_b);
        assert_eq!(watch.next().await, Announcement::Ended { path: "a".into() });
        assert_eq!(origin.list(""), vec!["other/x".to_string()]);
    }

    #[tokio::test]
    async fn the_best_route_is_served_and_the_next_takes_over() {
        let origin = Origin::new();
        let far = BroadcastProducer::new();
        let near = BroadcastProducer::new();
        let cost = |n| RouteCost { warm: n, cold: n };
        let via_two = origin.publish_route("live", far.consume(), vec![7, 8], cost(2));
        let mut watch = origin.announced("");
        assert_eq!(watch.next().await, Announcement::Active { path: "live".into(), hops: vec![7, 8], cost: cost(2) });

        // A shorter, cheaper route wins and watchers see the new chain.
        let via_one = origin.publish_route("live", near.consume(), vec![7], cost(1));
        assert!(origin.route("live").unwrap().broadcast.same(&near.consume()));
        assert_eq!(watch.next().await, Announcement::Updated { path: "live".into(), hops: vec![7], cost: cost(1) });
        assert_eq!(origin.route_count("live"), 2);

        // Cost beats hop count; hop count breaks a cost tie.
        let cheap_but_long = BroadcastProducer::new();
        let long = origin.publish_route("live", cheap_but_long.consume(), vec![1, 2, 3], cost(0));
        assert!(origin.route("live").unwrap().broadcast.same(&cheap_but_long.consume()));
        drop(long);
        assert!(origin.route("live").unwrap().broadcast.same(&near.consume()));

        // The served route going away fails over to the alternative, visibly.
        let id = origin.route("live").unwrap().id;
        let changed = origin.route_changed("live", id);
        drop(via_one);
        changed.await;
        assert!(origin.route("live").unwrap().broadcast.same(&far.consume()));
        let mut seen = watch.next().await;
        // The cheap route came and went in between; the watcher ends on the far chain.
        while seen != (Announcement::Updated { path: "live".into(), hops: vec![7, 8], cost: cost(2) }) {
            seen = watch.next().await;
        }

        // A route re-announced in place updates watchers without a new broadcast.
        via_two.update(vec![9], cost(1));
        assert_eq!(watch.next().await, Announcement::Updated { path: "live".into(), hops: vec![9], cost: cost(1) });
        assert!(origin.route("live").unwrap().broadcast.same(&far.consume()));
        drop(via_two);
        assert_eq!(watch.next().await, Announcement::Ended { path: "live".into() });
        assert!(origin.is_empty());
    }

    #[test]
    fn costs_saturate() {
        let max = RouteCost { warm: RouteCost::MAX, cold: 5 };
        assert_eq!(max.plus(u64::MAX), RouteCost { warm: RouteCost::MAX, cold: RouteCost::MAX });
        assert_eq!(RouteCost::default().plus(3), RouteCost { warm: 3, cold: 3 });
    }
}
