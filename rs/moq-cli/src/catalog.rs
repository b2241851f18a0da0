//! Every metric `moq watch` exports, defined once. Each series also carries the `broadcast` label
//! the installer adds (one value per process: the broadcast it watches).

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
];

/// The client's catalog (full names).
pub fn catalog() -> moq_metrics::Catalog<'static> {
    moq_metrics::Catalog::new("", CATALOG)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalog_is_well_formed() {
        assert_eq!(moq_metrics::lint(&[super::catalog(), moq_telemetry::catalog::catalog()]), Vec::<String>::new());
    }
}
