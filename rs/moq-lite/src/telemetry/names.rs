//! Metric names and help texts of the transport. Counts are of **payload** bytes (frame
//! payloads as the application produced them), not wire bytes: headers, QUIC framing and
//! retransmissions are excluded, so received and sent totals can be compared exactly.

pub const BYTES_SENT: &str = "moq_relay_bytes_sent_total";
pub const BYTES_RECEIVED: &str = "moq_relay_bytes_received_total";
pub const FRAMES_SENT: &str = "moq_relay_frames_sent_total";
pub const FRAMES_RECEIVED: &str = "moq_relay_frames_received_total";
pub const GROUPS_SENT: &str = "moq_relay_groups_sent_total";
pub const GROUPS_RECEIVED: &str = "moq_relay_groups_received_total";
pub const SUBSCRIBE_REQUESTS: &str = "moq_relay_subscribe_requests_total";
pub const ANNOUNCE_REQUESTS: &str = "moq_relay_announce_requests_total";
pub const GROUPS_DROPPED: &str = "moq_relay_groups_dropped_total";
pub const FRAMES_DROPPED: &str = "moq_relay_frames_dropped_total";
pub const STREAM_RESETS: &str = "moq_relay_stream_resets_total";
pub const ERRORS: &str = "moq_relay_errors_total";
pub const FORWARDING_DELAY: &str = "moq_relay_forwarding_delay_seconds";
pub const GROUP_AGE: &str = "moq_relay_group_age_at_egress_seconds";
pub const FIRST_GROUP: &str = "moq_relay_subscribe_first_group_seconds";
pub const CARDINALITY_OVERFLOW: &str = "moq_relay_metric_cardinality_overflow_total";
pub const ACTIVE_SUBSCRIPTIONS: &str = "moq_relay_active_subscriptions";
pub const ACTIVE_SUBSCRIBERS: &str = "moq_relay_active_subscribers";
pub const QUEUED_GROUP_STREAMS: &str = "moq_relay_queued_group_streams";
pub const CACHED_BYTES: &str = "moq_relay_cached_bytes";
pub const QUEUED_BYTES: &str = "moq_relay_queued_bytes";

/// Histogram buckets for live media delays: sub-millisecond forwarding up to multi-second stalls.
pub const DELAY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Registers HELP text and units for every transport metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    let by = "labels broadcast (capped), track_type (video|audio|catalog|data), direction (publish = with publishing peers, subscribe = with subscribing peers)";
    describe_counter!(BYTES_SENT, Unit::Bytes, format!("Frame payload bytes written to QUIC streams; {by}."));
    describe_counter!(BYTES_RECEIVED, Unit::Bytes, format!("Frame payload bytes read from QUIC streams; {by}."));
    describe_counter!(FRAMES_SENT, format!("Frames written to QUIC streams; {by}."));
    describe_counter!(FRAMES_RECEIVED, format!("Frames read from QUIC streams; {by}."));
    describe_counter!(GROUPS_SENT, format!("Group streams completed (FIN) toward subscribers; {by}."));
    describe_counter!(GROUPS_RECEIVED, format!("Group streams completed (FIN) by publishers; {by}."));
    describe_counter!(SUBSCRIBE_REQUESTS, "SUBSCRIBE requests served, by result (accepted|rejected) and reason.");
    describe_counter!(ANNOUNCE_REQUESTS, "ANNOUNCE_REQUEST streams served, by result (accepted|rejected) and reason.");
    describe_counter!(
        GROUPS_DROPPED,
        "Groups not delivered in full to a subscriber, by reason (expired|slow_subscriber|reset|cancelled)."
    );
    describe_counter!(FRAMES_DROPPED, "Frames of dropped groups that were never written, by reason.");
    describe_counter!(STREAM_RESETS, "QUIC stream resets, by side (sent|received) and code name.");
    describe_counter!(ERRORS, "Sessions that ended on an error, by error_type (protocol_violation, transport, ...); normal closes are not counted.");
    describe_histogram!(
        FORWARDING_DELAY,
        Unit::Seconds,
        "Time from a frame fully received to it being written to a subscriber's stream."
    );
    describe_histogram!(
        GROUP_AGE,
        Unit::Seconds,
        "Age of a group when its stream to a subscriber is opened (cached groups for late joiners are older)."
    );
    describe_histogram!(FIRST_GROUP, Unit::Seconds, "Time from SUBSCRIBE to the first group stream opened for it.");
    describe_counter!(
        CARDINALITY_OVERFLOW,
        "Label acquisitions folded into _other because the per-label cap was reached (one per series set, not per distinct value), by label."
    );
    describe_gauge!(
        ACTIVE_SUBSCRIPTIONS,
        "Subscriptions currently served, by side (downstream = to subscribers, upstream = to publishers)."
    );
    describe_gauge!(
        ACTIVE_SUBSCRIBERS,
        "Distinct sessions currently subscribed to a broadcast, by namespace and broadcast (capped)."
    );
    describe_gauge!(QUEUED_GROUP_STREAMS, "Group streams open toward subscribers and not yet finished (send backlog).");
    describe_gauge!(
        QUEUED_BYTES,
        Unit::Bytes,
        "Frame payload bytes group writers are waiting to hand to QUIC, blocked by flow control or a full send buffer (all sessions)."
    );
    describe_gauge!(
        CACHED_BYTES,
        Unit::Bytes,
        "Frame payload bytes held in memory by live groups (cache and in-flight)."
    );
}
