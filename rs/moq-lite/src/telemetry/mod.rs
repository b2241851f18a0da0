//! Everything the transport makes observable. Business code reports *what happened* with the
//! typed events in [`events`]; this module decides how each is counted, labelled and logged,
//! through the `metrics` facade (the library never depends on an exporter).
//!
//! All state lives in one [`Telemetry`] handle that the embedder creates and passes in with
//! [`crate::session::SessionConfig`]: the metric prefix (the relay's `moq_relay`), the capped label
//! pools, the viewer registry and the live counts behind the gauges. A session given
//! [`Telemetry::disabled`] (the default: a client) records nothing at all.
//!
//! Hot-path rule: handles carrying broadcast labels are resolved once per (broadcast, track,
//! direction) in [`TrackCounters`] and [`Egress`]; per frame there is no label lookup, only
//! atomic adds. Gauges are live state: [`Telemetry::refresh_gauges`] sets them from atomics and
//! registries right before each scrape.

pub mod catalog;
mod events;
mod labels;
mod linger;
mod reason;
mod viewers;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use metrics::{Counter, Histogram};
use moq_metrics::{Catalog, Metric};

pub use catalog::CATALOG;
pub use events::*;
pub use labels::{namespace_of, LabelLimits, OVERFLOW};
pub use linger::{Held, Lingering};
pub use reason::{Reason, CODE_NAMES, DROP_REASONS, ERROR_TYPES};

use crate::model::ByteMeter;
use labels::{Acquired, Pool};
use viewers::Viewers;

/// The documented rule mapping track names to the `track_type` label: a name starting with
/// `video` or `audio` (any case) is that type, one starting with `catalog` is `catalog`, the rest
/// is `data`.
pub fn track_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("video") {
        "video"
    } else if lower.starts_with("audio") {
        "audio"
    } else if lower.starts_with("catalog") {
        "catalog"
    } else {
        "data"
    }
}

/// Traffic with subscribing peers (`subscribe`) or with publishing peers (`publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Publish,
    Subscribe,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Publish => "publish",
            Direction::Subscribe => "subscribe",
        }
    }
}

/// The transport's telemetry state, shared by every session of a process that exports it.
/// Cheap to clone; the default records nothing.
#[derive(Clone, Default)]
pub struct Telemetry {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            Some(s) => write!(f, "Telemetry({})", s.prefix),
            None => f.write_str("Telemetry(disabled)"),
        }
    }
}

struct Shared {
    prefix: String,
    limits: LabelLimits,
    broadcasts: Mutex<Pool>,
    namespaces: Mutex<Pool>,
    viewers: Mutex<Viewers>,
    live: Live,
}

/// Counts behind the live gauges.
#[derive(Default)]
struct Live {
    downstream: AtomicI64,
    upstream: AtomicI64,
    queued_groups: AtomicI64,
    queued_bytes: AtomicI64,
    cached: ByteMeter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telemetry {
    /// Records nothing (what a session gets by default).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Records the transport's metrics named `{prefix}_{stem}` (see [`CATALOG`]), with the
    /// per-broadcast labels capped by `limits`.
    pub fn new(prefix: impl Into<String>, limits: LabelLimits) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                prefix: prefix.into(),
                limits,
                broadcasts: Mutex::new(Pool::new(limits.broadcasts, limits.linger)),
                namespaces: Mutex::new(Pool::new(limits.namespaces, limits.linger)),
                viewers: Mutex::new(Viewers::new(limits.linger)),
                live: Live::default(),
            })),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// The exported metrics (for HELP text, buckets, zeroed counters and listings).
    pub fn catalog(&self) -> Option<Catalog<'_>> {
        self.shared.as_ref().map(|s| Catalog::new(&s.prefix, CATALOG))
    }

    pub fn limits(&self) -> LabelLimits {
        self.shared.as_ref().map_or_else(LabelLimits::default, |s| s.limits)
    }

    fn name(&self, metric: &Metric) -> Option<String> {
        self.shared.as_ref().map(|s| moq_metrics::full_name(&s.prefix, metric))
    }

    /// A counter of `metric` with these label values, or a no-op when disabled.
    fn counter(&self, metric: &Metric, labels: &[(&'static str, &'static str)]) -> Counter {
        match self.name(metric) {
            Some(name) => {
                let labels: Vec<metrics::Label> =
                    labels.iter().map(|(k, v)| metrics::Label::from_static_parts(k, v)).collect();
                metrics::counter!(name, labels)
            }
            None => Counter::noop(),
        }
    }

    fn histogram(&self, metric: &Metric) -> Histogram {
        self.name(metric).map_or_else(Histogram::noop, |name| metrics::histogram!(name))
    }

    /// Reserves the label values of the broadcast at `path` (its own, or [`OVERFLOW`] past a cap)
    /// while the returned handle lives.
    pub fn broadcast_labels(&self, path: &str) -> BroadcastLabels {
        let Some(shared) = &self.shared else {
            return BroadcastLabels {
                broadcast: Arc::from(path),
                namespace: Arc::from(namespace_of(path)),
                owner: None,
            };
        };
        let now = Instant::now();
        let namespace = self.acquire(&shared.namespaces, "namespace", namespace_of(path), now);
        let broadcast = self.acquire(&shared.broadcasts, "broadcast", path, now);
        BroadcastLabels { broadcast, namespace, owner: Some(shared.clone()) }
    }

    fn acquire(&self, pool: &Mutex<Pool>, label: &'static str, value: &str, now: Instant) -> Arc<str> {
        match lock(pool).acquire(value, now) {
            Acquired::Value(v) => v,
            Acquired::Overflow => {
                self.counter(&catalog::CARDINALITY_OVERFLOW, &[("label", label)]).increment(1);
                Arc::from(OVERFLOW)
            }
        }
    }

    /// Expires lingering label slots and viewer entries; returns how many items were removed.
    pub fn sweep(&self) -> usize {
        let Some(shared) = &self.shared else { return 0 };
        let now = Instant::now();
        lock(&shared.broadcasts).expire(now) + lock(&shared.namespaces).expire(now) + lock(&shared.viewers).expire(now)
    }

    /// Sets every transport gauge from live state; call right before rendering a scrape. A
    /// broadcast without viewers reports 0 for the linger window, then its series is no longer
    /// refreshed and ages out of the exporter.
    pub fn refresh_gauges(&self) {
        let Some(shared) = &self.shared else { return };
        let gauge = |metric: &Metric, labels: Vec<metrics::Label>, value: i64| {
            metrics::gauge!(moq_metrics::full_name(&shared.prefix, metric), labels).set(value.max(0) as f64);
        };
        let live = &shared.live;
        let side = |s: &'static str| vec![metrics::Label::from_static_parts("side", s)];
        gauge(&catalog::ACTIVE_SUBSCRIPTIONS, side("downstream"), live.downstream.load(Ordering::Relaxed));
        gauge(&catalog::ACTIVE_SUBSCRIPTIONS, side("upstream"), live.upstream.load(Ordering::Relaxed));
        gauge(&catalog::QUEUED_GROUP_STREAMS, vec![], live.queued_groups.load(Ordering::Relaxed));
        gauge(&catalog::QUEUED_BYTES, vec![], live.queued_bytes.load(Ordering::Relaxed));
        gauge(&catalog::CACHED_BYTES, vec![], live.cached.get());
        let mut viewers = lock(&shared.viewers);
        viewers.expire(Instant::now());
        for (broadcast, namespace, sessions) in viewers.counts() {
            let labels = vec![
                metrics::Label::new("namespace", namespace.to_string()),
                metrics::Label::new("broadcast", broadcast.to_string()),
            ];
            gauge(&catalog::ACTIVE_SUBSCRIBERS, labels, sessions as i64);
        }
    }

    /// Distinct viewer sessions of a broadcast label value right now (for tests and status pages).
    pub fn viewer_count(&self, broadcast: &str) -> usize {
        self.shared.as_ref().map_or(0, |s| lock(&s.viewers).count(broadcast))
    }

    /// What groups received by a session should count their held bytes into (the cache gauge).
    pub fn cache_meter(&self) -> Option<&ByteMeter> {
        self.shared.as_ref().map(|s| &s.live.cached)
    }
}

/// A broadcast's label values, reserved while this handle lives.
pub struct BroadcastLabels {
    pub broadcast: Arc<str>,
    pub namespace: Arc<str>,
    owner: Option<Arc<Shared>>,
}

impl std::fmt::Debug for BroadcastLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastLabels")
            .field("broadcast", &self.broadcast)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Clone for BroadcastLabels {
    fn clone(&self) -> Self {
        if let Some(shared) = &self.owner {
            let now = Instant::now();
            // Values in use are always in their pools, so these never overflow.
            let _ = lock(&shared.broadcasts).acquire(&self.broadcast, now);
            let _ = lock(&shared.namespaces).acquire(&self.namespace, now);
        }
        Self { broadcast: self.broadcast.clone(), namespace: self.namespace.clone(), owner: self.owner.clone() }
    }
}

impl Drop for BroadcastLabels {
    fn drop(&mut self) {
        if let Some(shared) = &self.owner {
            let now = Instant::now();
            lock(&shared.broadcasts).release(&self.broadcast, now);
            lock(&shared.namespaces).release(&self.namespace, now);
        }
    }
}

/// Byte, frame and group counters of one (broadcast, track, direction), resolved once.
#[derive(Debug)]
pub struct TrackCounters {
    bytes: Counter,
    frames: Counter,
    groups: Counter,
    _labels: BroadcastLabels,
}

impl TrackCounters {
    /// Counters for frames *sent* (`sent = true`) or *received*, toward `direction` peers.
    pub fn new(telemetry: &Telemetry, labels: &BroadcastLabels, track: &str, direction: Direction, sent: bool) -> Self {
        let labels = labels.clone();
        let (bytes, frames, groups) = if sent {
            (&catalog::BYTES_SENT, &catalog::FRAMES_SENT, &catalog::GROUPS_SENT)
        } else {
            (&catalog::BYTES_RECEIVED, &catalog::FRAMES_RECEIVED, &catalog::GROUPS_RECEIVED)
        };
        let resolve = |metric: &Metric| match telemetry.name(metric) {
            Some(name) => metrics::counter!(
                name,
                "broadcast" => labels.broadcast.to_string(),
                "track_type" => track_type(track),
                "direction" => direction.as_str()
            ),
            None => Counter::noop(),
        };
        Self { bytes: resolve(bytes), frames: resolve(frames), groups: resolve(groups), _labels: labels }
    }

    /// One frame's payload crossed the stream.
    #[inline]
    pub fn frame(&self, payload_len: usize) {
        self.bytes.increment(payload_len as u64);
        self.frames.increment(1);
    }

    /// One group stream completed.
    #[inline]
    pub fn group(&self) {
        self.groups.increment(1);
    }
}

/// Metrics of one downstream subscription (relay → subscriber), resolved at SUBSCRIBE.
pub struct Egress {
    pub counters: TrackCounters,
    forwarding_delay: Histogram,
    group_age: Histogram,
    first_group: Histogram,
    started: Instant,
    first_group_seen: AtomicBool,
    live: Option<Arc<Shared>>,
    /// The session's own totals, when its embedder watches it ([`crate::session::Traffic`]).
    pub traffic: Option<Arc<crate::session::Traffic>>,
    _viewer: Viewer,
    _active: LiveCount,
}

impl Egress {
    pub fn new(telemetry: &Telemetry, labels: &BroadcastLabels, track: &str, session: u64) -> Self {
        Self {
            counters: TrackCounters::new(telemetry, labels, track, Direction::Subscribe, true),
            forwarding_delay: telemetry.histogram(&catalog::FORWARDING_DELAY),
            group_age: telemetry.histogram(&catalog::GROUP_AGE),
            first_group: telemetry.histogram(&catalog::FIRST_GROUP),
            started: Instant::now(),
            first_group_seen: false.into(),
            live: telemetry.shared.clone(),
            traffic: None,
            _viewer: Viewer::new(telemetry, labels, session),
            _active: LiveCount::new(telemetry.shared.clone(), Count::Downstream),
        }
    }

    /// A frame that became complete at `received` was written now.
    #[inline]
    pub fn frame_written(&self, payload_len: usize, received: Instant) {
        self.counters.frame(payload_len);
        if let Some(traffic) = &self.traffic {
            traffic.sent(payload_len);
        }
        self.forwarding_delay.record(received.elapsed().as_secs_f64());
    }

    /// A group stream opened for this subscription; `created` is when the group began here.
    pub fn group_opened(&self, created: Instant) {
        self.group_age.record(created.elapsed().as_secs_f64());
        if !self.first_group_seen.swap(true, Ordering::Relaxed) {
            self.first_group.record(self.started.elapsed().as_secs_f64());
        }
    }

    /// A group stream toward this subscriber is open while the returned guard lives.
    pub fn group_queued(&self) -> LiveCount {
        LiveCount::new(self.live.clone(), Count::QueuedGroups)
    }

    /// `len` payload bytes wait to be handed to QUIC while the returned guard lives.
    #[inline]
    pub fn bytes_queued(&self, len: usize) -> QueuedBytes<'_> {
        let counter = self.live.as_deref().map(|s| &s.live.queued_bytes);
        if let Some(c) = counter {
            c.fetch_add(len as i64, Ordering::Relaxed);
        }
        QueuedBytes { counter, len: len as i64 }
    }
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("counters", &self.counters).finish()
    }
}

/// An upstream subscription (relay → publisher) is live while this lives.
#[derive(Debug)]
pub struct Ingress {
    pub counters: TrackCounters,
    _active: LiveCount,
}

impl Ingress {
    pub fn new(telemetry: &Telemetry, labels: &BroadcastLabels, track: &str) -> Self {
        Self {
            counters: TrackCounters::new(telemetry, labels, track, Direction::Publish, false),
            _active: LiveCount::new(telemetry.shared.clone(), Count::Upstream),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Count {
    Downstream,
    Upstream,
    QueuedGroups,
}

/// Counts itself in a live gauge while it exists.
pub struct LiveCount {
    shared: Option<Arc<Shared>>,
    count: Count,
}

impl LiveCount {
    fn new(shared: Option<Arc<Shared>>, count: Count) -> Self {
        let this = Self { shared, count };
        if let Some(c) = this.counter() {
            c.fetch_add(1, Ordering::Relaxed);
        }
        this
    }

    fn counter(&self) -> Option<&AtomicI64> {
        let live = &self.shared.as_ref()?.live;
        Some(match self.count {
            Count::Downstream => &live.downstream,
            Count::Upstream => &live.upstream,
            Count::QueuedGroups => &live.queued_groups,
        })
    }
}

impl std::fmt::Debug for LiveCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveCount({:?})", self.count)
    }
}

impl Drop for LiveCount {
    fn drop(&mut self) {
        if let Some(c) = self.counter() {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Payload bytes a group writer is waiting to hand to QUIC, counted while this lives.
pub struct QueuedBytes<'a> {
    counter: Option<&'a AtomicI64>,
    len: i64,
}

impl Drop for QueuedBytes<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.counter {
            c.fetch_sub(self.len, Ordering::Relaxed);
        }
    }
}

/// One session's subscription to a broadcast, for the distinct-viewer gauge.
struct Viewer {
    shared: Option<Arc<Shared>>,
    broadcast: Arc<str>,
    session: u64,
}

impl Viewer {
    fn new(telemetry: &Telemetry, labels: &BroadcastLabels, session: u64) -> Self {
        if let Some(shared) = &telemetry.shared {
            lock(&shared.viewers).join(labels, session);
        }
        Self { shared: telemetry.shared.clone(), broadcast: labels.broadcast.clone(), session }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            lock(&shared.viewers).leave(&self.broadcast, self.session, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
