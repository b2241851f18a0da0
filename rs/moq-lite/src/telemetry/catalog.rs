//! Every metric the transport records, defined once. Names are stems: the embedder gives the
//! prefix (the relay: `moq_relay`, so `bytes_sent_total` is `moq_relay_bytes_sent_total`), or
//! records none of them (a client passes no [`super::Telemetry`]).
//!
//! Counts are of **payload** bytes (frame payloads as the application produced them), not wire
//! bytes: headers, QUIC framing and retransmissions are excluded, so received and sent totals
//! can be compared exactly.

use moq_metrics::{Label, Metric, Unit};

use super::reason::{Reason, CODE_NAMES, DROP_REASONS, ERROR_TYPES};

/// Histogram buckets for live media delays: sub-millisecond forwarding up to multi-second stalls.
pub const DELAY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Hop counts of announced routes (0 = published on the node itself).
const HOP_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0];

const BROADCAST: Label = Label::bounded("broadcast", "--metrics-max-broadcasts (moq_lite::telemetry label pool)");
const NAMESPACE: Label = Label::bounded("namespace", "--metrics-max-namespaces (moq_lite::telemetry label pool)");
const TRACK_TYPE: Label = Label::known("track_type", &["video", "audio", "catalog", "data"]);
const SENT: &[Label] = &[BROADCAST, TRACK_TYPE, Label::known("direction", &["subscribe"])];
const RECEIVED: &[Label] = &[BROADCAST, TRACK_TYPE, Label::known("direction", &["publish"])];
const REQUEST: [Label; 2] = [
    Label::known("result", &["accepted", "rejected"]),
    Label::known("reason", super::reason::spelled![Ok, AuthFailed, NotFound, TooManyTracks]),
];
const DROPPED: &[Label] = &[Label::known("reason", DROP_REASONS)];

pub const BYTES_SENT: Metric = Metric::counter(
    "bytes_sent_total",
    Unit::Bytes,
    "Frame payload bytes handed to outgoing group streams, summed over subscribers; labels broadcast (capped), track_type, direction.",
)
.labels(SENT);
pub const BYTES_RECEIVED: Metric = Metric::counter(
    "bytes_received_total",
    Unit::Bytes,
    "Frame payload bytes read from incoming group streams; labels broadcast (capped), track_type, direction.",
)
.labels(RECEIVED);
pub const FRAMES_SENT: Metric =
    Metric::counter("frames_sent_total", Unit::Count("frames"), "Frames handed to outgoing group streams.")
        .labels(SENT);
pub const FRAMES_RECEIVED: Metric =
    Metric::counter("frames_received_total", Unit::Count("frames"), "Frames read from incoming group streams.")
        .labels(RECEIVED);
pub const GROUPS_SENT: Metric = Metric::counter(
    "groups_sent_total",
    Unit::Count("groups"),
    "Group streams completed (FIN) toward subscribers after every frame was written.",
)
.labels(SENT);
pub const GROUPS_RECEIVED: Metric =
    Metric::counter("groups_received_total", Unit::Count("groups"), "Group streams completed (FIN) by publishers.")
        .labels(RECEIVED);
pub const SUBSCRIBE_REQUESTS: Metric = Metric::counter(
    "subscribe_requests_total",
    Unit::Count("requests"),
    "SUBSCRIBE requests served, by result (accepted|rejected) and reason.",
)
.labels(&REQUEST)
.initial(&[
    &["accepted", "ok"],
    &["rejected", "auth_failed"],
    &["rejected", "not_found"],
    &["rejected", "too_many_tracks"],
]);
pub const ANNOUNCE_REQUESTS: Metric = Metric::counter(
    "announce_requests_total",
    Unit::Count("requests"),
    "ANNOUNCE_REQUEST streams served, by result (accepted|rejected) and reason.",
)
.labels(&[Label::known("result", &["accepted"]), Label::known("reason", &[Reason::Ok.as_str()])]);
pub const GROUPS_DROPPED: Metric = Metric::counter(
    "groups_dropped_total",
    Unit::Count("groups"),
    "Groups not delivered in full to a subscriber, by reason (expired|slow_subscriber|cancel|reset).",
)
.labels(DROPPED);
pub const FRAMES_DROPPED: Metric = Metric::counter(
    "frames_dropped_total",
    Unit::Count("frames"),
    "Frames of dropped groups that were never written, by reason.",
)
.labels(DROPPED);
pub const STREAM_RESETS: Metric = Metric::counter(
    "stream_resets_total",
    Unit::Count("resets"),
    "QUIC stream resets, by side (sent|received) and code name.",
)
.labels(&[Label::known("side", &["sent", "received"]), Label::known("code", CODE_NAMES)]);
pub const ERRORS: Metric = Metric::counter(
    "errors_total",
    Unit::Count("sessions"),
    "Sessions that ended on an error, by error_type (protocol_violation, transport, ...); normal closes are not counted.",
)
.labels(&[Label::known("error_type", ERROR_TYPES)]);
pub const FORWARDING_DELAY: Metric = Metric::histogram(
    "forwarding_delay_seconds",
    Unit::Seconds,
    DELAY_BUCKETS,
    "Time from a frame fully received to it being written to a subscriber's stream.",
);
pub const GROUP_AGE: Metric = Metric::histogram(
    "group_age_at_egress_seconds",
    Unit::Seconds,
    DELAY_BUCKETS,
    "Age of a group when its stream to a subscriber is opened (cached groups for late joiners are older).",
);
pub const FIRST_GROUP: Metric = Metric::histogram(
    "subscribe_first_group_seconds",
    Unit::Seconds,
    DELAY_BUCKETS,
    "Time from SUBSCRIBE to the first group stream opened for it.",
);
pub const CARDINALITY_OVERFLOW: Metric = Metric::counter(
    "metric_cardinality_overflow_total",
    Unit::Count("acquisitions"),
    "Label acquisitions folded into _other because the per-label cap was reached (one per series set, not per distinct value), by label.",
)
.labels(&[Label::known("label", &["broadcast", "namespace"])]);
pub const ACTIVE_SUBSCRIPTIONS: Metric = Metric::gauge(
    "active_subscriptions",
    Unit::Count("subscriptions"),
    "Subscriptions currently served, by side (downstream = to subscribers, upstream = to publishers).",
)
.labels(&[Label::known("side", &["downstream", "upstream"])]);
pub const ACTIVE_SUBSCRIBERS: Metric = Metric::gauge(
    "active_subscribers",
    Unit::Count("sessions"),
    "Distinct sessions currently subscribed to a broadcast, by namespace and broadcast (capped).",
)
.labels(&[NAMESPACE, BROADCAST]);
pub const QUEUED_GROUP_STREAMS: Metric = Metric::gauge(
    "queued_group_streams",
    Unit::Count("streams"),
    "Group streams open toward subscribers and not yet finished (send backlog).",
);
pub const QUEUED_BYTES: Metric = Metric::gauge(
    "queued_bytes",
    Unit::Bytes,
    "Frame payload bytes group writers are waiting to hand to QUIC, blocked by flow control or a full send buffer (all sessions).",
);
pub const CACHED_BYTES: Metric = Metric::gauge(
    "cached_bytes",
    Unit::Bytes,
    "Frame payload bytes held in memory by live groups (cache and in-flight).",
);
pub const ANNOUNCEMENTS_RECEIVED: Metric = Metric::counter(
    "announcements_received_total",
    Unit::Count("announcements"),
    "Announcements received from peers and publishers, by event (started|updated|ended|looped|refused): looped = dropped because this node's hop id was in the chain, refused = outside the session's publish rights or over its limit.",
)
.labels(&[Label::known("event", &["started", "updated", "ended", "looped", "refused"])])
.initial(&[&["started"], &["updated"], &["ended"], &["looped"], &["refused"]]);
pub const ANNOUNCE_HOPS: Metric = Metric::histogram(
    "announce_hops",
    Unit::Count("hops"),
    HOP_BUCKETS,
    "Hop count of each route received (0 = published by a client of this node, 1 = by a client of the peer that sent it).",
);

/// The transport's metrics, stems only: see [`super::Telemetry::catalog`] for the exported names.
pub const CATALOG: &[Metric] = &[
    BYTES_SENT,
    BYTES_RECEIVED,
    FRAMES_SENT,
    FRAMES_RECEIVED,
    GROUPS_SENT,
    GROUPS_RECEIVED,
    SUBSCRIBE_REQUESTS,
    ANNOUNCE_REQUESTS,
    GROUPS_DROPPED,
    FRAMES_DROPPED,
    STREAM_RESETS,
    ERRORS,
    FORWARDING_DELAY,
    GROUP_AGE,
    FIRST_GROUP,
    CARDINALITY_OVERFLOW,
    ACTIVE_SUBSCRIPTIONS,
    ACTIVE_SUBSCRIBERS,
    QUEUED_GROUP_STREAMS,
    QUEUED_BYTES,
    CACHED_BYTES,
    ANNOUNCEMENTS_RECEIVED,
    ANNOUNCE_HOPS,
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalog_is_well_formed() {
        let problems = moq_metrics::lint(&[moq_metrics::Catalog::new("moq_relay", super::CATALOG)]);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
