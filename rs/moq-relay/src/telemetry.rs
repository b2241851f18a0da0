//! The relay's observable events and live state, exported through the Prometheus recorder.
//!
//! Like the transport's telemetry module: each event is a typed struct that logs and counts
//! itself; gauges are computed from live state in [`Telemetry::refresh`] right before each scrape.
//! Labels are bounded: transport (quic|webtransport), version (known ALPN tokens), reason (fixed
//! sets below), namespace and broadcast (capped in `moq_lite::telemetry`), worker (an index below
//! `--worker-threads`, itself capped in config.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use moq_lite::model::{Announcement, Origin};
use moq_lite::session::Session;
use moq_lite::telemetry::{self as lite, BroadcastLabels, LabelLimits};
use moq_lite::transport::Transport;
use moq_lite::Version;
use moq_telemetry::prometheus::{Builder, PrometheusHandle};

pub const ACTIVE_STREAMS: &str = "moq_relay_active_streams";
pub const ACTIVE_CONNECTIONS: &str = "moq_relay_active_connections";
pub const SESSIONS: &str = "moq_relay_sessions_total";
pub const SESSION_CLOSES: &str = "moq_relay_session_closes_total";
pub const HANDSHAKE: &str = "moq_relay_session_handshake_seconds";
pub const SESSION_DURATION: &str = "moq_relay_session_duration_seconds";
pub const QUIC_RTT: &str = "moq_relay_quic_rtt_seconds";
pub const QUIC_LOST: &str = "moq_relay_quic_lost_packets_total";
pub const QUIC_CONGESTION: &str = "moq_relay_quic_congestion_events_total";
pub const QUIC_UDP_BYTES: &str = "moq_relay_quic_udp_bytes_total";
pub const QUIC_UDP_DATAGRAMS: &str = "moq_relay_quic_udp_datagrams_total";
pub const QUIC_UDP_TRANSMITS: &str = "moq_relay_quic_udp_transmits_total";
pub const BUILD_INFO: &str = "moq_relay_build_info";
pub const CERT_EXPIRY: &str = "moq_relay_certificate_expiry_timestamp_seconds";
pub const MAX_SESSIONS: &str = "moq_relay_max_sessions";
pub const AVAILABLE_CPUS: &str = "moq_relay_available_cpus";
pub const WORKER_BUSY: &str = "moq_relay_worker_busy_ratio";
pub const WORKER_CONNECTIONS: &str = "moq_relay_worker_connections";

const HANDSHAKE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0];
const RTT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Relay telemetry without a recorder: every metric call is a no-op (`--ops-listen off`).
pub fn disabled() -> Telemetry {
    Telemetry { handle: None, inner: Default::default(), started: SystemTime::now(), info: Default::default() }
}

/// Installs the Prometheus recorder and returns the relay's telemetry state.
pub fn install(limits: LabelLimits) -> anyhow::Result<Telemetry> {
    // Per-broadcast series nobody holds or updates for the linger window disappear (ended
    // broadcasts age out, as their label slots do); the fixed label sets stay.
    let mut builder = Builder::new().expire_idle(&["broadcast", "namespace"], limits.linger);
    for (name, buckets) in lite::histogram_buckets() {
        builder = builder.buckets_for(name, buckets)?;
    }
    for (name, buckets) in
        [(HANDSHAKE, HANDSHAKE_BUCKETS), (SESSION_DURATION, DURATION_BUCKETS), (QUIC_RTT, RTT_BUCKETS)]
    {
        builder = builder.buckets_for(name, buckets)?;
    }
    let handle = builder.install()?;
    lite::configure(limits);
    lite::names::describe();
    describe();
    Ok(Telemetry {
        handle: Some(handle),
        inner: Arc::new(Mutex::new(State::default())),
        started: SystemTime::now(),
        info: Default::default(),
    })
}

fn describe() {
    describe_gauge!(ACTIVE_STREAMS, "Broadcasts currently announced, by namespace (first path segment, capped).");
    describe_gauge!(ACTIVE_CONNECTIONS, "Sessions currently open, by transport (quic|webtransport) and version.");
    describe_counter!(SESSIONS, "Session attempts by result (accepted|rejected|handshake_failed) and reason.");
    describe_counter!(
        SESSION_CLOSES,
        "Sessions closed, by reason (client_closed, idle_timeout, goaway, protocol_violation, ...)."
    );
    describe_histogram!(
        HANDSHAKE,
        Unit::Seconds,
        "Time from the first packet to an accepted session (QUIC, TLS and WebTransport CONNECT)."
    );
    describe_histogram!(SESSION_DURATION, Unit::Seconds, "Lifetime of closed sessions.");
    describe_histogram!(QUIC_RTT, Unit::Seconds, "Smoothed RTT of open QUIC connections, sampled at each scrape.");
    describe_counter!(QUIC_LOST, "Packets declared lost, summed over all QUIC connections.");
    describe_counter!(QUIC_CONGESTION, "Congestion events, summed over all QUIC connections.");
    describe_counter!(
        QUIC_UDP_BYTES,
        Unit::Bytes,
        "UDP payload bytes on the wire, by direction (tx|rx), summed over connections."
    );
    describe_counter!(QUIC_UDP_DATAGRAMS, "UDP datagrams, by direction (tx|rx), summed over connections.");
    describe_counter!(
        QUIC_UDP_TRANSMITS,
        "UDP sends (one system call each; with GSO one carries several datagrams), summed over connections."
    );
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the relay version.");
    describe_gauge!(CERT_EXPIRY, "Unix time when the serving TLS certificate expires.");
    describe_gauge!(MAX_SESSIONS, "Sessions the relay admits at once (--max-sessions); more are refused.");
    describe_gauge!(AVAILABLE_CPUS, "CPUs available to the relay process (for CPU saturation ratios).");
    describe_gauge!(
        WORKER_BUSY,
        "Fraction of the last 0.5 s each worker thread spent running tasks; new connections fill workers in order up to --worker-spill-at."
    );
    describe_gauge!(WORKER_CONNECTIONS, "Connections (handshakes included) running on each worker thread.");
}

#[derive(Default)]
struct State {
    /// Announced broadcasts and their reserved labels.
    streams: HashMap<String, BroadcastLabels>,
    /// Namespace labels that were reported at least once (reported 0 once they empty).
    namespaces_seen: HashMap<Arc<str>, Instant>,
    connections: HashMap<(Transport, Version), i64>,
    /// Per open session: the last QUIC stats folded into the counters.
    quic: HashMap<u64, (Session, QuicSample)>,
    /// Each worker thread's load at the last sample.
    workers: Vec<crate::workers::WorkerLoad>,
}

#[derive(Default, Clone, Copy)]
struct QuicSample {
    lost: u64,
    congestion: u64,
    tx: u64,
    rx: u64,
    tx_datagrams: u64,
    rx_datagrams: u64,
    transmits: u64,
}

/// Relay version, certificate expiry and session capacity, re-reported at each scrape.
#[derive(Clone)]
struct BuildInfo {
    version: String,
    cert_not_after: Option<SystemTime>,
    max_sessions: usize,
    /// Read once: on Linux it reads cgroup files, which a scrape need not repeat.
    available_cpus: usize,
}

#[derive(Clone)]
pub struct Telemetry {
    handle: Option<PrometheusHandle>,
    inner: Arc<Mutex<State>>,
    started: SystemTime,
    info: Arc<Mutex<Option<BuildInfo>>>,
}

impl Telemetry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the one-off gauges.
    /// Records the build version and certificate expiry (re-set at every scrape, so they never
    /// age out).
    pub fn started(&self, version: &str, cert_not_after: Option<SystemTime>, max_sessions: usize) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(BuildInfo {
            version: version.to_string(),
            cert_not_after,
            max_sessions,
            available_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        });
    }

    /// Follows announcements so the stream gauges are live state.
    pub async fn watch_streams(self, origin: Origin) {
        let mut announced = origin.announced("");
        loop {
            match announced.next().await {
                Announcement::Active { path, .. } => {
                    let labels = BroadcastLabels::acquire(&path);
                    self.state().streams.insert(path, labels);
                }
                Announcement::Ended { path } => {
                    self.state().streams.remove(&path);
                }
            }
        }
    }

    /// Renders the exposition after refreshing every live gauge.
    pub fn render(&self) -> String {
        let Some(handle) = &self.handle else { return String::new() };
        self.refresh();
        let mut text = handle.render();
        process_metrics(&mut text, self.started);
        text
    }

    /// Keeps the workers' latest load for the next scrape.
    pub fn worker_loads(&self, loads: Vec<crate::workers::WorkerLoad>) {
        if self.handle.is_some() {
            self.state().workers = loads;
        }
    }

    /// Ages out idle per-broadcast series; call every few seconds.
    pub fn upkeep(&self) {
        if let Some(handle) = &self.handle {
            handle.upkeep();
        }
    }

    fn refresh(&self) {
        lite::refresh_gauges();
        let linger = lite::limits().linger;
        let mut s = self.state();
        let mut per_namespace: HashMap<Arc<str>, usize> = HashMap::new();
        for labels in s.streams.values() {
            *per_namespace.entry(labels.namespace.clone()).or_default() += 1;
        }
        let now = Instant::now();
        for ns in per_namespace.keys() {
            s.namespaces_seen.insert(ns.clone(), now);
        }
        // An emptied namespace reads 0 for the linger window, then ages out.
        s.namespaces_seen.retain(|_, last| now.duration_since(*last) < linger);
        for ns in s.namespaces_seen.keys() {
            let n = per_namespace.get(ns).copied().unwrap_or(0);
            gauge!(ACTIVE_STREAMS, "namespace" => ns.to_string()).set(n as f64);
        }
        for ((transport, version), n) in &s.connections {
            gauge!(ACTIVE_CONNECTIONS, "transport" => transport.as_str(), "version" => version.alpn()).set(*n as f64);
        }
        for load in &s.workers {
            let worker = load.worker.to_string();
            gauge!(WORKER_BUSY, "worker" => worker.clone()).set(load.busy_ratio);
            gauge!(WORKER_CONNECTIONS, "worker" => worker).set(load.connections as f64);
        }
        let rtt = histogram!(QUIC_RTT);
        let mut quic = QuicDelta::default();
        for (session, last) in s.quic.values_mut() {
            quic.add(session, last, Some(&rtt));
        }
        drop(s);
        quic.emit();
        if let Some(info) = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            gauge!(BUILD_INFO, "version" => info.version).set(1.0);
            if let Some(t) = info.cert_not_after {
                gauge!(CERT_EXPIRY).set(unix(t));
            }
            gauge!(MAX_SESSIONS).set(info.max_sessions as f64);
            gauge!(AVAILABLE_CPUS).set(info.available_cpus as f64);
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// QUIC counter growth summed over connections: the registry is updated once per scrape, not
/// once per connection (each update is a label-set lookup).
#[derive(Default)]
struct QuicDelta {
    lost: u64,
    congestion: u64,
    tx: u64,
    rx: u64,
    tx_datagrams: u64,
    rx_datagrams: u64,
    transmits: u64,
}

impl QuicDelta {
    /// Adds the connection's stats since `last`, and samples its RTT into `rtt` if given.
    fn add(&mut self, session: &Session, last: &mut QuicSample, rtt: Option<&metrics::Histogram>) {
        let conn: &quinn::Connection = session.connection();
        let stats = conn.stats();
        let now = QuicSample {
            lost: stats.path.lost_packets,
            congestion: stats.path.congestion_events,
            tx: stats.udp_tx.bytes,
            rx: stats.udp_rx.bytes,
            tx_datagrams: stats.udp_tx.datagrams,
            rx_datagrams: stats.udp_rx.datagrams,
            // quinn counts one per transmit handed to the socket on the send side; its receive-side
            // count is per QUIC packet, not per system call, so only the send side is exported.
            transmits: stats.udp_tx.ios,
        };
        self.lost += now.lost.saturating_sub(last.lost);
        self.congestion += now.congestion.saturating_sub(last.congestion);
        self.tx += now.tx.saturating_sub(last.tx);
        self.rx += now.rx.saturating_sub(last.rx);
        self.tx_datagrams += now.tx_datagrams.saturating_sub(last.tx_datagrams);
        self.rx_datagrams += now.rx_datagrams.saturating_sub(last.rx_datagrams);
        self.transmits += now.transmits.saturating_sub(last.transmits);
        if let Some(rtt) = rtt {
            rtt.record(stats.path.rtt.as_secs_f64());
        }
        *last = now;
    }

    fn emit(self) {
        counter!(QUIC_LOST).increment(self.lost);
        counter!(QUIC_CONGESTION).increment(self.congestion);
        counter!(QUIC_UDP_BYTES, "direction" => "tx").increment(self.tx);
        counter!(QUIC_UDP_BYTES, "direction" => "rx").increment(self.rx);
        counter!(QUIC_UDP_DATAGRAMS, "direction" => "tx").increment(self.tx_datagrams);
        counter!(QUIC_UDP_DATAGRAMS, "direction" => "rx").increment(self.rx_datagrams);
        counter!(QUIC_UDP_TRANSMITS).increment(self.transmits);
    }
}

/// Appends process CPU, memory, descriptors and start time, read from /proc (Linux), in the
/// conventional `process_*` names. Rendered as text because CPU seconds are fractional and the
/// metrics facade's counters are integers.
fn process_metrics(out: &mut String, started: SystemTime) {
    use std::fmt::Write;
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
    };
    family("process_start_time_seconds", "gauge", "Unix time the relay process started.", unix(started));
    // Fields 14 and 15 (utime, stime) are in clock ticks; USER_HZ is 100 on Linux.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        if let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) {
            let ticks = u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
            family(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the relay process.",
                ticks as f64 / 100.0,
            );
        }
    }
    // statm's second field is resident pages; 4 KiB pages on the platforms the relay targets.
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()) {
            family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the relay process.",
                (pages * 4096) as f64,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family("process_open_fds", "gauge", "Open file descriptors of the relay process.", fds.count() as f64);
    }
}

// ---- Events ----

/// A session was admitted; keep the guard for its lifetime.
pub struct SessionAccepted {
    pub session: Session,
    pub transport: Transport,
    pub version: Version,
    pub handshake: Duration,
}

impl SessionAccepted {
    pub fn emit(self, telemetry: &Telemetry) -> SessionGuard {
        counter!(SESSIONS, "result" => "accepted", "reason" => "ok").increment(1);
        histogram!(HANDSHAKE).record(self.handshake.as_secs_f64());
        let mut s = telemetry.state();
        *s.connections.entry((self.transport, self.version)).or_default() += 1;
        s.quic.insert(self.session.id(), (self.session.clone(), QuicSample::default()));
        SessionGuard {
            telemetry: telemetry.clone(),
            id: self.session.id(),
            key: (self.transport, self.version),
            opened: Instant::now(),
        }
    }
}

/// A session attempt that never became a session.
pub struct SessionRejected<'a> {
    /// One of: handshake_failed, auth_failed, version, transport, capacity.
    pub reason: &'a str,
}

impl SessionRejected<'_> {
    pub fn emit(self) {
        let result = if self.reason == "handshake_failed" { "handshake_failed" } else { "rejected" };
        counter!(SESSIONS, "result" => result, "reason" => self.reason.to_string()).increment(1);
    }
}

/// Holds a session's place in the live gauges; [`SessionGuard::closed`] records how it ended.
pub struct SessionGuard {
    telemetry: Telemetry,
    id: u64,
    key: (Transport, Version),
    opened: Instant,
}

impl SessionGuard {
    pub fn closed(self, reason: &'static str) {
        counter!(SESSION_CLOSES, "reason" => reason).increment(1);
        histogram!(SESSION_DURATION).record(self.opened.elapsed().as_secs_f64());
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut s = self.telemetry.state();
        if let Some(n) = s.connections.get_mut(&self.key) {
            *n -= 1;
        }
        if let Some((session, mut last)) = s.quic.remove(&self.id) {
            let mut quic = QuicDelta::default();
            quic.add(&session, &mut last, None);
            quic.emit();
        }
    }
}
