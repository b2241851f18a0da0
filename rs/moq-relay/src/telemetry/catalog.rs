//! Every metric the relay defines itself, once. The transport's metrics come from
//! `moq_lite::telemetry::CATALOG` under the `moq_relay` prefix, the exporter's own from
//! `moq_telemetry::catalog`; [`all`] lists the three as the relay exports them.

use moq_lite::telemetry::Reason;
use moq_metrics::{Catalog, Label, Metric, Unit};

/// The prefix of the transport's metrics in the relay.
pub const TRANSPORT_PREFIX: &str = "moq_relay";

const HANDSHAKE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0];
const RTT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

const DIRECTION: &[Label] = &[Label::known("direction", &["tx", "rx"])];
const WORKER: &[Label] = &[Label::bounded("worker", "--worker-threads, at most 1024 (config::MAX_WORKER_THREADS)")];

/// How an accepted session ended: the peer left, it idled out, GOAWAY, or the error that ended it.
pub const CLOSE_REASONS: &[&str] = &[
    Reason::ClientClosed.as_str(),
    Reason::IdleTimeout.as_str(),
    Reason::Goaway.as_str(),
    Reason::NotFound.as_str(),
    Reason::Expired.as_str(),
    Reason::SlowSubscriber.as_str(),
    Reason::Duplicate.as_str(),
    Reason::TooManyTracks.as_str(),
    Reason::Reset.as_str(),
    Reason::ProtocolViolation.as_str(),
    Reason::UnexpectedStream.as_str(),
    Reason::AuthFailed.as_str(),
    Reason::Version.as_str(),
    Reason::Transport.as_str(),
];

pub const ACTIVE_STREAMS: Metric = Metric::gauge(
    "moq_relay_active_streams",
    Unit::Count("broadcasts"),
    "Broadcasts currently announced, by namespace (first path segment, capped).",
)
.labels(&[Label::bounded("namespace", "--metrics-max-namespaces (moq_lite::telemetry label pool)")]);
pub const ACTIVE_CONNECTIONS: Metric = Metric::gauge(
    "moq_relay_active_connections",
    Unit::Count("sessions"),
    "Sessions currently open, by transport (quic|webtransport|websocket) and version.",
)
.labels(&[
    Label::known("transport", &["quic", "webtransport", "websocket"]),
    Label::known("version", &["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"]),
]);
pub const SESSIONS: Metric = Metric::counter(
    "moq_relay_sessions_total",
    Unit::Count("sessions"),
    "Session attempts by result (accepted|rejected|handshake_failed) and reason.",
)
.labels(&[
    Label::known("result", &["accepted", "rejected", "handshake_failed"]),
    Label::known(
        "reason",
        &[
            Reason::Ok.as_str(),
            Reason::HandshakeFailed.as_str(),
            Reason::AuthFailed.as_str(),
            Reason::Version.as_str(),
            Reason::Transport.as_str(),
            Reason::Capacity.as_str(),
            Reason::Memory.as_str(),
            Reason::Limit.as_str(),
        ],
    ),
])
.initial(&[
    &["accepted", "ok"],
    &["handshake_failed", "handshake_failed"],
    &["rejected", "auth_failed"],
    &["rejected", "version"],
    &["rejected", "transport"],
    &["rejected", "capacity"],
    &["rejected", "limit"],
]);
pub const SESSION_CLOSES: Metric = Metric::counter(
    "moq_relay_session_closes_total",
    Unit::Count("sessions"),
    "Sessions closed, by reason (client_closed, idle_timeout, goaway, protocol_violation, ...).",
)
.labels(&[Label::known("reason", CLOSE_REASONS)]);
pub const HANDSHAKE: Metric = Metric::histogram(
    "moq_relay_session_handshake_seconds",
    Unit::Seconds,
    HANDSHAKE_BUCKETS,
    "Time from the first packet to an accepted session (QUIC, TLS and WebTransport CONNECT).",
);
pub const SESSION_DURATION: Metric = Metric::histogram(
    "moq_relay_session_duration_seconds",
    Unit::Seconds,
    DURATION_BUCKETS,
    "Lifetime of closed sessions.",
);
pub const QUIC_RTT: Metric = Metric::histogram(
    "moq_relay_quic_rtt_seconds",
    Unit::Seconds,
    RTT_BUCKETS,
    "Smoothed RTT of open QUIC connections, sampled at each scrape.",
);
/// ABR-ladder steps from 250 kbit/s to 1 Gbit/s, in bytes per second.
const SEND_RATE_BUCKETS: &[f64] = &[
    31_250.0,
    62_500.0,
    125_000.0,
    250_000.0,
    375_000.0,
    625_000.0,
    1_250_000.0,
    2_500_000.0,
    6_250_000.0,
    12_500_000.0,
    125_000_000.0,
];
pub const QUIC_SEND_RATE: Metric = Metric::histogram(
    "moq_relay_quic_send_rate_estimate_bytes_per_second",
    Unit::Count("bytes per second"),
    SEND_RATE_BUCKETS,
    "What each open QUIC connection lets the relay send (congestion window / smoothed RTT, the estimate PROBE reports), sampled at each scrape.",
);
pub const QUIC_LOST: Metric = Metric::counter(
    "moq_relay_quic_lost_packets_total",
    Unit::Count("packets"),
    "Packets declared lost, summed over all QUIC connections.",
);
pub const QUIC_CONGESTION: Metric = Metric::counter(
    "moq_relay_quic_congestion_events_total",
    Unit::Count("events"),
    "Congestion events, summed over all QUIC connections.",
);
pub const QUIC_UDP_BYTES: Metric = Metric::counter(
    "moq_relay_quic_udp_bytes_total",
    Unit::Bytes,
    "UDP payload bytes on the wire, by direction (tx|rx), summed over connections.",
)
.labels(DIRECTION);
pub const QUIC_UDP_DATAGRAMS: Metric = Metric::counter(
    "moq_relay_quic_udp_datagrams_total",
    Unit::Count("datagrams"),
    "UDP datagrams, by direction (tx|rx), summed over connections.",
)
.labels(DIRECTION);
pub const QUIC_UDP_TRANSMITS: Metric = Metric::counter(
    "moq_relay_quic_udp_transmits_total",
    Unit::Count("sends"),
    "UDP sends (one system call each; with GSO one carries several datagrams), summed over connections.",
);
pub const BUILD_INFO: Metric =
    Metric::gauge("moq_relay_build_info", Unit::Info, "Always 1; labels carry the relay version.")
        .labels(&[Label::bounded("version", "the crate version: one value per process")]);
pub const CERT_EXPIRY: Metric = Metric::gauge(
    "moq_relay_certificate_expiry_timestamp_seconds",
    Unit::Timestamp,
    "Unix time when the serving TLS certificate expires.",
);
pub const MAX_SESSIONS: Metric = Metric::gauge(
    "moq_relay_max_sessions",
    Unit::Count("sessions"),
    "Sessions the relay admits at once (--max-sessions); more are refused.",
);
pub const MEMORY_BUDGET: Metric = Metric::gauge(
    "moq_relay_memory_budget_bytes",
    Unit::Bytes,
    "Resident memory above which new sessions are refused (--memory-budget-mib); absent without a budget.",
);
pub const AVAILABLE_CPUS: Metric = Metric::gauge(
    "moq_relay_available_cpus",
    Unit::Count("CPUs"),
    "CPUs available to the relay process (for CPU saturation ratios).",
);
pub const WORKER_BUSY: Metric = Metric::gauge(
    "moq_relay_worker_busy_ratio",
    Unit::Ratio,
    "Fraction of the last 0.5 s each worker thread spent running tasks; new connections fill workers in order up to --worker-spill-at.",
)
.labels(WORKER);
pub const WORKER_CONNECTIONS: Metric = Metric::gauge(
    "moq_relay_worker_connections",
    Unit::Count("connections"),
    "Connections (handshakes included) running on each worker thread.",
)
.labels(WORKER);

/// Why a connection on the public TCP listener ended before a WebSocket session could start.
pub const WEBSOCKET_UPGRADE_FAILURES: Metric = Metric::counter(
    "moq_relay_websocket_upgrade_failures_total",
    Unit::Count("connections"),
    "Connections on the public TCP listener that failed before a WebSocket session started, by reason.",
)
.labels(&[Label::known("reason", &["no_protocol", "bad_request", "timeout", "tls", "io"])]);

/// Why an access decision came out as it did: accepted by its source, rejected by its denial.
/// Spelled from `access::Source` and `access::Denial` (a test holds them equal).
pub const AUTH_REASONS: &[&str] = &[
    "token",
    "public",
    "auth_server",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "unknown_key",
    "unknown_claim",
    "malformed",
    "bad_algorithm",
    "root_mismatch",
    "path_denied",
    "no_credentials",
    "limit",
    "auth_server_unavailable",
    "auth_server_denied",
    "revoked",
];
pub const AUTH_DECISIONS: Metric = Metric::counter(
    "moq_relay_auth_decisions_total",
    Unit::Count("decisions"),
    "Access decisions: sessions admitted or refused (reason = the grant's source or the denial), announces and subscribes refused outside a grant (path_denied), revalidations that withdrew a right (revoked, expired).",
)
.labels(&[Label::known("result", &["accepted", "rejected"]), Label::known("reason", AUTH_REASONS)])
.initial(&[&["accepted", "token"], &["accepted", "public"], &["rejected", "path_denied"], &["rejected", "expired"]]);
/// One limit each, spelled from `access::limits::Limit`.
pub const LIMIT_NAMES: &[&str] = &[
    "sessions_per_address",
    "sessions_per_subject",
    "session_rate_per_address",
    "announces_per_session",
    "subscriptions_per_session",
    "handshake_timeout",
    "websocket_upgrade_size",
];
pub const LIMIT_HITS: Metric = Metric::counter(
    "moq_relay_limit_hits_total",
    Unit::Count("refusals"),
    "Clients refused by a per-client limit, by limit. The client is refused; the relay and its other clients are not.",
)
.labels(&[Label::known("limit", LIMIT_NAMES)]);
const AUTH_SERVER_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
pub const AUTH_SERVER_REQUESTS: Metric = Metric::counter(
    "moq_relay_auth_server_requests_total",
    Unit::Count("requests"),
    "Requests to the --auth-url server, by event (connect|revalidate|end) and outcome (ok|denied|unavailable).",
)
.labels(&[
    Label::known("event", &["connect", "revalidate", "end"]),
    Label::known("outcome", &["ok", "denied", "unavailable"]),
]);
pub const AUTH_SERVER_DURATION: Metric = Metric::histogram(
    "moq_relay_auth_server_request_duration_seconds",
    Unit::Seconds,
    AUTH_SERVER_BUCKETS,
    "Time the --auth-url server took to answer (timeouts included, at the timeout).",
);
pub const AUDIT_DROPPED: Metric = Metric::counter(
    "moq_relay_audit_records_dropped_total",
    Unit::Count("records"),
    "Audit records dropped because the audit writer's bounded queue was full or its file failed.",
);

/// A cluster peer: a configured peer's `host:port` (at most 64), or an inbound peer session's
/// grant subject (else its address) through the cluster registry's capped pool.
const PEER: Label = Label::bounded(
    "peer",
    "--cluster-connect and the connect-api file (at most 64, config::MAX_PEERS), plus inbound peer sessions by grant subject (cluster::registry pool, at most 64, then _other)",
);
pub const CLUSTER_PEER_UP: Metric = Metric::gauge(
    "moq_relay_cluster_peer_up",
    Unit::Count("0 or 1"),
    "1 while a session with the peer runs, else 0, by direction (outbound: we dial it; inbound: it dialed us with a peer grant). Configured peers always have a series.",
)
.labels(&[PEER, Label::known("direction", &["outbound", "inbound"])]);
pub const CLUSTER_PEER_RTT: Metric = Metric::gauge(
    "moq_relay_cluster_peer_rtt_seconds",
    Unit::Seconds,
    "QUIC smoothed RTT of the live session with the peer (NaN while none runs), sampled at each scrape.",
)
.labels(&[PEER]);
pub const CLUSTER_PEER_BYTES: Metric = Metric::counter(
    "moq_relay_cluster_peer_bytes_total",
    Unit::Bytes,
    "Frame payload bytes exchanged with the peer, by direction (tx|rx), over all its sessions.",
)
.labels(&[PEER, Label::known("direction", &["tx", "rx"])]);
pub const CLUSTER_PEER_FRAMES: Metric = Metric::counter(
    "moq_relay_cluster_peer_frames_total",
    Unit::Count("frames"),
    "Frames exchanged with the peer, by direction (tx|rx), over all its sessions.",
)
.labels(&[PEER, Label::known("direction", &["tx", "rx"])]);
pub const CLUSTER_PEER_DIALS: Metric = Metric::counter(
    "moq_relay_cluster_peer_dials_total",
    Unit::Count("dials"),
    "Dial attempts to a configured peer, by result (connected|failed).",
)
.labels(&[PEER, Label::known("result", &["connected", "failed"])]);
pub const CLUSTER_PEER_ROUTES: Metric = Metric::gauge(
    "moq_relay_cluster_peer_routes",
    Unit::Count("broadcasts"),
    "Broadcasts the peer announces to this relay right now (0 while no session runs).",
)
.labels(&[PEER]);
pub const CLUSTER_INFO: Metric = Metric::gauge(
    "moq_relay_cluster_info",
    Unit::Info,
    "Always 1; labels carry this relay's cluster node name and hop id.",
)
.labels(&[
    Label::bounded("node", "--cluster-node (else $HOSTNAME): one value per process"),
    Label::bounded("hop_id", "--cluster-id (else derived or random): one value per process"),
]);
pub const BROADCAST_ROUTE_HOPS: Metric = Metric::gauge(
    "moq_relay_broadcast_route_hops",
    Unit::Count("hops"),
    "Hop count of the route this relay serves each announced broadcast from (0 = published here), sampled at each scrape.",
)
.labels(&[Label::bounded("broadcast", "--metrics-max-broadcasts (moq_lite::telemetry label pool)")]);

/// The relay's own metrics, recorded through the `metrics` facade.
pub const RELAY: &[Metric] = &[
    ACTIVE_STREAMS,
    ACTIVE_CONNECTIONS,
    SESSIONS,
    SESSION_CLOSES,
    HANDSHAKE,
    SESSION_DURATION,
    QUIC_RTT,
    QUIC_SEND_RATE,
    QUIC_LOST,
    QUIC_CONGESTION,
    QUIC_UDP_BYTES,
    QUIC_UDP_DATAGRAMS,
    QUIC_UDP_TRANSMITS,
    BUILD_INFO,
    CERT_EXPIRY,
    MAX_SESSIONS,
    MEMORY_BUDGET,
    AVAILABLE_CPUS,
    WORKER_BUSY,
    WORKER_CONNECTIONS,
    WEBSOCKET_UPGRADE_FAILURES,
    AUTH_DECISIONS,
    LIMIT_HITS,
    AUTH_SERVER_REQUESTS,
    AUTH_SERVER_DURATION,
    AUDIT_DROPPED,
    CLUSTER_PEER_UP,
    CLUSTER_PEER_RTT,
    CLUSTER_PEER_BYTES,
    CLUSTER_PEER_FRAMES,
    CLUSTER_PEER_DIALS,
    CLUSTER_PEER_ROUTES,
    CLUSTER_INFO,
    BROADCAST_ROUTE_HOPS,
];

/// The netplay signaling provider this relay is (the only `provider` label value).
pub const NETPLAY_PROVIDER: &str = "moq-relay";
const PROVIDER: Label = Label::known("provider", &[NETPLAY_PROVIDER]);
const NETPLAY_MINUTES_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 1440.0];
const NETPLAY_LATENCY_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];
const NETPLAY_SWEEP_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0];
/// How a create request came out: spelled from `netplay::sessions::CreateRefusal` (and `ok`).
pub const NETPLAY_CREATE_RESULTS: &[&str] =
    &["ok", "invalid_request", "invalid_ttl", "conflict", "rate_limited", "capacity", "error"];
/// How a join request came out: spelled from `netplay::sessions::JoinRefusal` (and `accepted`).
pub const NETPLAY_JOIN_RESULTS: &[&str] =
    &["accepted", "unknown_code", "expired", "full", "duplicate", "rate_limited", "invalid_request", "error"];
/// Why a netplay session ended: spelled from `netplay::sessions::EndReason`.
pub const NETPLAY_END_REASONS: &[&str] = &["hostLeft", "timeout", "cleanupJob"];

pub const NETPLAY_CREATED: Metric = Metric::counter(
    "netplay_sessions_created_total",
    Unit::Count("requests"),
    "Netplay session create requests (POST /api/netplay/sessions), by result.",
)
.labels(&[PROVIDER, Label::known("result", NETPLAY_CREATE_RESULTS)]);
pub const NETPLAY_DURATION: Metric = Metric::histogram(
    "netplay_session_duration_minutes",
    Unit::Count("minutes"),
    NETPLAY_MINUTES_BUCKETS,
    "Lifetime of ended netplay sessions, from creation to their end.",
)
.labels(&[PROVIDER]);
pub const NETPLAY_JOINED: Metric = Metric::counter(
    "netplay_participants_joined_total",
    Unit::Count("requests"),
    "Netplay join requests (POST /api/netplay/join), by result: accepted or why refused.",
)
.labels(&[Label::known("result", NETPLAY_JOIN_RESULTS)]);
pub const NETPLAY_LATENCY: Metric = Metric::histogram(
    "netplay_signaling_latency_ms",
    Unit::Count("milliseconds"),
    NETPLAY_LATENCY_BUCKETS,
    "Time the relay took to handle a netplay signaling request, by operation (create|join|delete).",
)
.labels(&[PROVIDER, Label::known("operation", &["create", "join", "delete"])]);
pub const NETPLAY_SWEEPS: Metric =
    Metric::counter("netplay_cleanup_sweeps_total", Unit::Count("sweeps"), "Netplay cleanup sweeps run.");
pub const NETPLAY_SWEEP_DURATION: Metric = Metric::histogram(
    "netplay_cleanup_duration_ms",
    Unit::Count("milliseconds"),
    NETPLAY_SWEEP_BUCKETS,
    "Time one netplay cleanup sweep took.",
);
pub const NETPLAY_ACTIVE: Metric =
    Metric::gauge("netplay_active_sessions", Unit::Count("sessions"), "Netplay sessions currently live.")
        .labels(&[PROVIDER]);
pub const NETPLAY_ENDED: Metric = Metric::counter(
    "netplay_sessions_ended_total",
    Unit::Count("sessions"),
    "Netplay sessions ended, by reason (hostLeft, timeout: abandoned, cleanupJob: TTL passed).",
)
.labels(&[PROVIDER, Label::known("reason", NETPLAY_END_REASONS)]);
pub const NETPLAY_SWEEP_EXPIRED: Metric = Metric::gauge(
    "netplay_cleanup_expired_sessions",
    Unit::Count("sessions"),
    "Netplay sessions the last cleanup sweep ended (their TTL had passed).",
);
pub const NETPLAY_PAST_TTL: Metric = Metric::gauge(
    "netplay_sessions_past_ttl",
    Unit::Count("sessions"),
    "Netplay sessions past their TTL still alive after the last cleanup sweep; anything but 0 means cleanup is failing.",
);
pub const NETPLAY_REQUESTED_TTL: Metric = Metric::histogram(
    "netplay_requested_ttl_minutes",
    Unit::Count("minutes"),
    NETPLAY_MINUTES_BUCKETS,
    "TTLs create requests asked for (the default when they named none), valid or not.",
);
pub const NETPLAY_TTL_LIMIT: Metric = Metric::gauge(
    "netplay_ttl_limit_minutes",
    Unit::Count("minutes"),
    "The configured netplay TTL bounds (--netplay-min/max/default-ttl-minutes).",
)
.labels(&[Label::known("bound", &["min", "max", "default"])]);

/// The netplay sessions' metrics (`--netplay`; exported at 0 without it).
pub const NETPLAY: &[Metric] = &[
    NETPLAY_CREATED,
    NETPLAY_DURATION,
    NETPLAY_JOINED,
    NETPLAY_LATENCY,
    NETPLAY_SWEEPS,
    NETPLAY_SWEEP_DURATION,
    NETPLAY_ACTIVE,
    NETPLAY_ENDED,
    NETPLAY_SWEEP_EXPIRED,
    NETPLAY_PAST_TTL,
    NETPLAY_REQUESTED_TTL,
    NETPLAY_TTL_LIMIT,
];

pub const PROCESS_CPU: Metric =
    Metric::counter("process_cpu_seconds_total", Unit::Seconds, "User and system CPU time of the relay process.");
pub const PROCESS_MEMORY: Metric =
    Metric::gauge("process_resident_memory_bytes", Unit::Bytes, "Resident memory of the relay process.");
pub const PROCESS_FDS: Metric =
    Metric::gauge("process_open_fds", Unit::Count("descriptors"), "Open file descriptors of the relay process.");
pub const PROCESS_START: Metric =
    Metric::gauge("process_start_time_seconds", Unit::Timestamp, "Unix time the relay process started.");

/// Process metrics, rendered as text at each scrape (CPU seconds are fractional, the facade's
/// counters are integers), so never registered with the recorder.
pub const PROCESS: &[Metric] = &[PROCESS_CPU, PROCESS_MEMORY, PROCESS_FDS, PROCESS_START];

/// Every metric the relay exports, under the names it exports them with.
pub fn all() -> Vec<Catalog<'static>> {
    vec![
        Catalog::new(TRANSPORT_PREFIX, moq_lite::telemetry::CATALOG),
        Catalog::new("", RELAY),
        Catalog::new("", NETPLAY),
        Catalog::new("", PROCESS),
        moq_telemetry::catalog::catalog(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_lite::telemetry::ERROR_TYPES;

    #[test]
    fn the_catalogs_are_well_formed_and_disjoint() {
        assert_eq!(moq_metrics::lint(&all()), Vec::<String>::new());
    }

    #[test]
    fn known_versions_are_the_versions_the_relay_speaks() {
        let moq_metrics::Values::Known(versions) = ACTIVE_CONNECTIONS.labels[1].values else { panic!() };
        let spoken: Vec<&str> = moq_lite::Version::ALL.iter().map(|v| v.alpn()).collect();
        assert_eq!(versions, spoken.as_slice());
    }

    #[test]
    fn close_reasons_cover_every_error_but_the_normal_ends() {
        for e in ERROR_TYPES {
            let normal = [Reason::Cancel.as_str(), Reason::Closed.as_str()];
            assert!(normal.contains(e) || CLOSE_REASONS.contains(e), "{e}");
        }
    }
}
