//! Every metric `moq watch` and `moq netplay` export, defined once. Each `moq watch` series also
//! carries the `broadcast` label the installer adds (one value per process: the broadcast it
//! watches); `moq netplay` adds none (a session id would make one series per session).

use moq_metrics::{Label, Metric, Unit};

/// Buckets of every client histogram (seconds).
pub const BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const RENDITION: &[Label] =
    &[Label::bounded("rendition", "the catalog's video renditions (moq publish: at most 8) and audio")];

pub const STARTUP: Metric = Metric::histogram(
    "moq_client_startup_time_seconds",
    Unit::Seconds,
    BUCKETS,
    "Time from connect start to the first frame played.",
);
pub const BUFFER: Metric = Metric::histogram(
    "moq_client_buffer_length_seconds",
    Unit::Seconds,
    BUCKETS,
    "Media buffered ahead of playback, sampled every 100 ms.",
);
pub const REBUFFERS: Metric =
    Metric::counter("moq_client_rebuffer_count_total", Unit::Count("rebuffers"), "Playback stalls longer than 200 ms.");
pub const REBUFFER_DURATION: Metric =
    Metric::histogram("moq_client_rebuffer_duration_seconds", Unit::Seconds, BUCKETS, "Duration of each rebuffer.");
pub const LATENCY: Metric = Metric::histogram(
    "moq_client_latency_seconds",
    Unit::Seconds,
    BUCKETS,
    "Live-edge latency of each played frame: wall clock minus capture time.",
);
pub const SWITCHES: Metric = Metric::counter(
    "moq_client_quality_switches_total",
    Unit::Count("switches"),
    "Adaptive rendition switches, by direction (up|down).",
)
.labels(&[Label::known("direction", &["up", "down"])]);
pub const FRAMES: Metric = Metric::counter(
    "moq_client_frames_received_total",
    Unit::Count("frames"),
    "Frames received, by rendition (0 = highest, audio).",
)
.labels(RENDITION);
pub const BYTES: Metric =
    Metric::counter("moq_client_bytes_received_total", Unit::Bytes, "Frame payload bytes received, by rendition.")
        .labels(RENDITION);
pub const DROPPED: Metric = Metric::counter(
    "moq_client_frames_dropped_total",
    Unit::Count("frames"),
    "Received video frames never played, by reason (late: behind the playback position).",
)
.labels(&[Label::known("reason", &["late"])]);
pub const CONNECTIONS: Metric = Metric::counter(
    "moq_client_connections_total",
    Unit::Count("sessions"),
    "Sessions established, by transport (quic|webtransport|websocket).",
)
.labels(&[Label::known("transport", &["quic", "webtransport", "websocket"])]);
pub const ACTIVE_VIEWERS: Metric = Metric::gauge(
    "moq_client_active_viewers",
    Unit::Count("viewers"),
    "Viewers in this process currently connected and watching.",
);

/// Buckets of `moq_client_outage_seconds` (seconds): a restart takes seconds, a failover minutes.
pub const OUTAGE_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

pub const RECONNECTS: Metric = Metric::counter(
    "moq_client_reconnects_total",
    Unit::Count("sessions"),
    "Sessions re-established after the relay went away (connection error, idle timeout, GOAWAY, restart).",
);
pub const RECONNECT_ATTEMPTS: Metric = Metric::counter(
    "moq_client_reconnect_attempts_total",
    Unit::Count("attempts"),
    "Connection attempts made after a session was lost, successful or not.",
);
pub const OUTAGE: Metric = Metric::histogram(
    "moq_client_outage_seconds",
    Unit::Seconds,
    OUTAGE_BUCKETS,
    "Each outage: from the last frame before a session was lost to the first frame after it came back.",
);

pub const CATALOG: &[Metric] = &[
    STARTUP,
    BUFFER,
    REBUFFERS,
    REBUFFER_DURATION,
    LATENCY,
    SWITCHES,
    FRAMES,
    BYTES,
    DROPPED,
    CONNECTIONS,
    ACTIVE_VIEWERS,
    RECONNECTS,
    RECONNECT_ATTEMPTS,
    OUTAGE,
];

/// The client's catalog (full names).
pub fn catalog() -> moq_metrics::Catalog<'static> {
    moq_metrics::Catalog::new("", CATALOG)
}

/// The signaling provider of netplay sessions: the relay itself (the only value of `provider`).
pub const NETPLAY_PROVIDER: &str = "moq-relay";

const PROVIDER: Label = Label::known("provider", &[NETPLAY_PROVIDER]);

/// Buckets of `netplay_signaling_latency_ms` (milliseconds), as docs/netplay.md gives them.
pub const NETPLAY_LATENCY_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

pub const NETPLAY_SIGNALING_LATENCY: Metric = Metric::histogram(
    "netplay_signaling_latency_ms",
    Unit::Count("milliseconds"),
    NETPLAY_LATENCY_BUCKETS,
    "Round trip of each netplay signaling request that got an answer, by operation (create|join|delete).",
)
.labels(&[PROVIDER, Label::known("operation", &["create", "join", "delete"])]);
pub const NETPLAY_SESSIONS_CREATED: Metric = Metric::counter(
    "netplay_sessions_created_total",
    Unit::Count("requests"),
    "Netplay session create requests sent (each retry counts), by result.",
)
.labels(&[
    PROVIDER,
    Label::known("result", &["ok", "invalid_request", "invalid_ttl", "conflict", "rate_limited", "capacity", "error"]),
]);
pub const NETPLAY_PARTICIPANTS_JOINED: Metric = Metric::counter(
    "netplay_participants_joined_total",
    Unit::Count("requests"),
    "Netplay join requests sent (each retry counts), by result.",
)
.labels(&[Label::known(
    "result",
    &["accepted", "unknown_code", "expired", "full", "duplicate", "rate_limited", "invalid_request", "error"],
)]);

pub const NETPLAY: &[Metric] = &[NETPLAY_SIGNALING_LATENCY, NETPLAY_SESSIONS_CREATED, NETPLAY_PARTICIPANTS_JOINED];

/// The `moq netplay` client's signaling metrics (full names, as the relay names its own).
pub fn netplay_catalog() -> moq_metrics::Catalog<'static> {
    moq_metrics::Catalog::new("", NETPLAY)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalog_is_well_formed() {
        let catalogs = [super::catalog(), super::netplay_catalog(), moq_telemetry::catalog::catalog()];
        assert_eq!(moq_metrics::lint(&catalogs), Vec::<String>::new());
    }
}
