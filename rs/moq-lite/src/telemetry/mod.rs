//! Everything the transport makes observable. Business code reports *what happened* with the
//! typed events below; this module decides how each is counted, labelled and logged, through the
//! `metrics` facade (the library never depends on an exporter; without a recorder installed every
//! call is a no-op).
//!
//! Hot-path rule: handles carrying broadcast labels are resolved once per (broadcast, track,
//! direction) in [`TrackCounters`] and [`Egress`]; per frame there is no label lookup, only
//! atomic adds. Gauges are live state: [`refresh_gauges`] sets them from atomics and registries
//! right before each scrape.

mod labels;
pub mod names;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use metrics::{counter, histogram, Counter, Histogram};

pub use labels::{configure, limits, namespace_of, BroadcastLabels, LabelLimits, OVERFLOW};

/// Expires lingering label slots and viewer entries; returns how many items were removed.
pub fn sweep() -> usize {
    let linger = limits().linger;
    let mut v = viewers().lock().unwrap_or_else(|e| e.into_inner());
    let before = v.by_broadcast.len();
    v.by_broadcast.retain(|_, e| e.empty_since.is_none_or(|t| t.elapsed() < linger));
    let viewers_expired = before - v.by_broadcast.len();
    drop(v);
    labels::sweep() + viewers_expired
}

use crate::Error;

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
    pub fn new(labels: &BroadcastLabels, track: &str, direction: Direction, sent: bool) -> Self {
        let labels = labels.clone();
        let l = [
            ("broadcast", labels.broadcast.to_string()),
            ("track_type", track_type(track).to_string()),
            ("direction", direction.as_str().to_string()),
        ];
        let (bytes, frames, groups) = if sent {
            (names::BYTES_SENT, names::FRAMES_SENT, names::GROUPS_SENT)
        } else {
            (names::BYTES_RECEIVED, names::FRAMES_RECEIVED, names::GROUPS_RECEIVED)
        };
        Self { bytes: counter!(bytes, &l), frames: counter!(frames, &l), groups: counter!(groups, &l), _labels: labels }
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
#[derive(Debug)]
pub struct Egress {
    pub counters: TrackCounters,
    forwarding_delay: Histogram,
    group_age: Histogram,
    started: Instant,
    first_group: std::sync::atomic::AtomicBool,
    _viewer: Viewer,
    _active: Active,
}

impl Egress {
    pub fn new(labels: &BroadcastLabels, track: &str, session: u64) -> Self {
        Self {
            counters: TrackCounters::new(labels, track, Direction::Subscribe, true),
            forwarding_delay: histogram!(names::FORWARDING_DELAY),
            group_age: histogram!(names::GROUP_AGE),
            started: Instant::now(),
            first_group: false.into(),
            _viewer: Viewer::new(labels, session),
            _active: Active::new(&ACTIVE_DOWNSTREAM),
        }
    }

    /// A frame that became complete at `received` was written now.
    #[inline]
    pub fn frame_written(&self, payload_len: usize, received: Instant) {
        self.counters.frame(payload_len);
        self.forwarding_delay.record(received.elapsed().as_secs_f64());
    }

    /// A group stream opened for this subscription; `created` is when the group began here.
    pub fn group_opened(&self, created: Instant) {
        self.group_age.record(created.elapsed().as_secs_f64());
        if !self.first_group.swap(true, Ordering::Relaxed) {
            histogram!(names::FIRST_GROUP).record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// An upstream subscription (relay → publisher) is live while this lives.
#[derive(Debug)]
pub struct Ingress {
    pub counters: TrackCounters,
    _active: Active,
}

impl Ingress {
    pub fn new(labels: &BroadcastLabels, track: &str) -> Self {
        Self {
            counters: TrackCounters::new(labels, track, Direction::Publish, false),
            _active: Active::new(&ACTIVE_UPSTREAM),
        }
    }
}

static ACTIVE_DOWNSTREAM: AtomicI64 = AtomicI64::new(0);
static ACTIVE_UPSTREAM: AtomicI64 = AtomicI64::new(0);
static QUEUED_GROUPS: AtomicI64 = AtomicI64::new(0);
static QUEUED_BYTES: AtomicI64 = AtomicI64::new(0);
static CACHED_BYTES: AtomicI64 = AtomicI64::new(0);

/// Counts itself in a live gauge while it exists.
#[derive(Debug)]
pub struct Active(&'static AtomicI64);

impl Active {
    fn new(gauge: &'static AtomicI64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }

    /// A group stream toward a subscriber is open.
    pub fn queued_group() -> Self {
        Self::new(&QUEUED_GROUPS)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Payload bytes a group writer is waiting to hand to QUIC, counted while this lives.
#[derive(Debug)]
pub struct QueuedBytes(i64);

impl QueuedBytes {
    pub fn new(len: usize) -> Self {
        QUEUED_BYTES.fetch_add(len as i64, Ordering::Relaxed);
        Self(len as i64)
    }
}

impl Drop for QueuedBytes {
    fn drop(&mut self) {
        QUEUED_BYTES.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Payload bytes held by live groups; the model reports growth and release.
pub(crate) fn cached_bytes(delta: i64) {
    CACHED_BYTES.fetch_add(delta, Ordering::Relaxed);
}

/// Distinct viewer sessions per broadcast label value.
#[derive(Default)]
struct Viewers {
    by_broadcast: HashMap<Arc<str>, ViewerEntry>,
}

struct ViewerEntry {
    namespace: Arc<str>,
    sessions: HashMap<u64, usize>,
    empty_since: Option<Instant>,
}

fn viewers() -> &'static Mutex<Viewers> {
    static VIEWERS: OnceLock<Mutex<Viewers>> = OnceLock::new();
    VIEWERS.get_or_init(Default::default)
}

/// One session's subscription to a broadcast, for the distinct-viewer gauge.
#[derive(Debug)]
struct Viewer {
    labels: BroadcastLabels,
    session: u64,
}

impl Viewer {
    fn new(labels: &BroadcastLabels, session: u64) -> Self {
        let labels = labels.clone();
        let mut v = viewers().lock().unwrap_or_else(|e| e.into_inner());
        let entry = v.by_broadcast.entry(labels.broadcast.clone()).or_insert_with(|| ViewerEntry {
            namespace: labels.namespace.clone(),
            sessions: HashMap::new(),
            empty_since: None,
        });
        *entry.sessions.entry(session).or_default() += 1;
        entry.empty_since = None;
        drop(v);
        Self { labels, session }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut v = viewers().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = v.by_broadcast.get_mut(&self.labels.broadcast) {
            if let Some(n) = entry.sessions.get_mut(&self.session) {
                *n -= 1;
                if *n == 0 {
                    entry.sessions.remove(&self.session);
                }
            }
            if entry.sessions.is_empty() {
                entry.empty_since = Some(Instant::now());
            }
        }
    }
}

/// Sets every transport gauge from live state; call right before rendering a scrape. A
/// broadcast without viewers reports 0 for the linger window, then its series is no longer
/// refreshed and ages out of the exporter.
pub fn refresh_gauges() {
    let linger = limits().linger;
    metrics::gauge!(names::ACTIVE_SUBSCRIPTIONS, "side" => "downstream")
        .set(ACTIVE_DOWNSTREAM.load(Ordering::Relaxed) as f64);
    metrics::gauge!(names::ACTIVE_SUBSCRIPTIONS, "side" => "upstream")
        .set(ACTIVE_UPSTREAM.load(Ordering::Relaxed) as f64);
    metrics::gauge!(names::QUEUED_GROUP_STREAMS).set(QUEUED_GROUPS.load(Ordering::Relaxed) as f64);
    metrics::gauge!(names::QUEUED_BYTES).set(QUEUED_BYTES.load(Ordering::Relaxed).max(0) as f64);
    metrics::gauge!(names::CACHED_BYTES).set(CACHED_BYTES.load(Ordering::Relaxed).max(0) as f64);
    let mut v = viewers().lock().unwrap_or_else(|e| e.into_inner());
    v.by_broadcast.retain(|_, e| e.empty_since.is_none_or(|t| t.elapsed() < linger));
    for (broadcast, entry) in &v.by_broadcast {
        metrics::gauge!(
            names::ACTIVE_SUBSCRIBERS,
            "namespace" => entry.namespace.to_string(),
            "broadcast" => broadcast.to_string()
        )
        .set(entry.sessions.len() as f64);
    }
}

/// Distinct viewer sessions of a broadcast label value right now (for tests and status pages).
pub fn viewer_count(broadcast: &str) -> usize {
    let v = viewers().lock().unwrap_or_else(|e| e.into_inner());
    v.by_broadcast.get(broadcast).map_or(0, |e| e.sessions.len())
}

/// A bounded name for a stream/session code received from a peer.
pub fn code_name(code: u32) -> &'static str {
    use crate::code::*;
    match code {
        CANCEL => "cancel",
        OLD => "old",
        TIMEOUT => "timeout",
        UNAUTHORIZED => "unauthorized",
        VERSION => "version",
        UNEXPECTED_STREAM => "unexpected_stream",
        NOT_FOUND => "not_found",
        PROTOCOL_VIOLATION => "protocol_violation",
        GOAWAY_TIMEOUT => "goaway_timeout",
        TOO_SLOW => "slow_subscriber",
        INTERNAL => "internal",
        _ => "other",
    }
}

// ---- Events ----

/// A SUBSCRIBE was accepted and is being served.
pub struct SubscribeAccepted<'a> {
    pub broadcast: &'a str,
    pub track: &'a str,
    pub session: u64,
}

impl SubscribeAccepted<'_> {
    pub fn emit(self) {
        counter!(names::SUBSCRIBE_REQUESTS, "result" => "accepted", "reason" => "ok").increment(1);
        tracing::info!(session = self.session, broadcast = self.broadcast, track = self.track, "subscribe accepted");
    }
}

/// A SUBSCRIBE was refused (the stream is reset).
pub struct SubscribeRejected<'a> {
    pub broadcast: &'a str,
    pub track: &'a str,
    pub session: u64,
    pub error: &'a Error,
}

impl SubscribeRejected<'_> {
    pub fn emit(self) {
        let reason = self.error.kind();
        counter!(names::SUBSCRIBE_REQUESTS, "result" => "rejected", "reason" => reason).increment(1);
        tracing::info!(
            session = self.session,
            broadcast = self.broadcast,
            track = self.track,
            reason,
            "subscribe rejected"
        );
    }
}

/// An ANNOUNCE_REQUEST was answered (`error` = None) or refused.
pub struct AnnounceServed<'a> {
    pub prefix: &'a str,
    pub session: u64,
    pub error: Option<&'a Error>,
}

impl AnnounceServed<'_> {
    pub fn emit(self) {
        match self.error {
            None => {
                counter!(names::ANNOUNCE_REQUESTS, "result" => "accepted", "reason" => "ok").increment(1);
                tracing::debug!(session = self.session, prefix = self.prefix, "announce request served");
            }
            Some(e) => {
                counter!(names::ANNOUNCE_REQUESTS, "result" => "rejected", "reason" => e.kind()).increment(1);
                tracing::info!(
                    session = self.session,
                    prefix = self.prefix,
                    reason = e.kind(),
                    "announce request rejected"
                );
            }
        }
    }
}

/// A group was not delivered in full to a subscriber.
pub struct GroupDropped<'a> {
    pub error: &'a Error,
    /// Frames of the group never written.
    pub frames_left: u64,
}

impl GroupDropped<'_> {
    pub fn emit(self) {
        let reason = match self.error {
            Error::Expired => "expired",
            Error::TooSlow => "slow_subscriber",
            Error::Cancel => "cancelled",
            _ => "reset",
        };
        counter!(names::GROUPS_DROPPED, "reason" => reason).increment(1);
        if self.frames_left > 0 {
            counter!(names::FRAMES_DROPPED, "reason" => reason).increment(self.frames_left);
        }
    }
}

/// The peer keeps many streams open: it may now open `limit` at once in that direction.
pub struct StreamCreditRaised {
    pub bidirectional: bool,
    pub limit: u64,
}

impl StreamCreditRaised {
    pub fn emit(self) {
        let direction = if self.bidirectional { "bidi" } else { "uni" };
        tracing::debug!(direction, limit = self.limit, "stream credit raised");
    }
}

/// A stream was reset by us (`sent`) or by the peer.
pub struct StreamReset {
    pub sent: bool,
    pub code: u32,
}

impl StreamReset {
    pub fn emit(self) {
        let side = if self.sent { "sent" } else { "received" };
        counter!(names::STREAM_RESETS, "side" => side, "code" => code_name(self.code)).increment(1);
    }
}

/// Any error worth counting by type (the session or caller logs it where it has context).
pub struct ErrorOccurred<'a> {
    pub error: &'a Error,
}

impl ErrorOccurred<'_> {
    pub fn emit(self) {
        counter!(names::ERRORS, "error_type" => self.error.kind()).increment(1);
    }
}

/// Buckets for every transport histogram, for exporters that need them up front.
pub fn histogram_buckets() -> Vec<(&'static str, &'static [f64])> {
    vec![
        (names::FORWARDING_DELAY, names::DELAY_BUCKETS),
        (names::GROUP_AGE, names::DELAY_BUCKETS),
        (names::FIRST_GROUP, names::DELAY_BUCKETS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_types_follow_the_name_rule() {
        assert_eq!(track_type("video"), "video");
        assert_eq!(track_type("Video0"), "video");
        assert_eq!(track_type("audio/en"), "audio");
        assert_eq!(track_type("catalog.json"), "catalog");
        assert_eq!(track_type("seconds"), "data");
    }
}
