//! The relay's telemetry: what it exports through its Prometheus recorder and how.
//!
//! - [`catalog`]: every metric the relay exports, defined once (its own, and the lists of the
//!   transport's and the exporter's it exports too);
//! - [`events`]: the session events, each logging and counting itself ([`access`], [`netplay`] and
//!   [`cluster`]: the access, netplay and cluster events);
//! - `live`: state read into gauges right before each scrape; `quic`: QUIC connection stats
//!   folded into counters; `process`: CPU, memory and descriptors.
//!
//! Labels are bounded: transport (quic|webtransport|websocket), version (known ALPN tokens), reason (the
//! sets in the catalog), namespace and broadcast (capped by the transport's label pools), worker
//! (an index below `--worker-threads`, itself capped in config), peer (the configured peers, at
//! most 64, and inbound peer labels from the cluster registry's capped pool).

/// W3C trace context for subscriptions between relays (moq-lite's traced subscribe), through the
/// process's OpenTelemetry setup.
pub const TRACE_PROPAGATION: moq_lite::session::TracePropagation =
    moq_lite::session::TracePropagation { inject: moq_telemetry::traceparent, extract: moq_telemetry::set_parent };

pub mod access;
pub mod catalog;
pub mod cluster;
pub mod events;
mod live;
pub mod netplay;
mod process;
mod quic;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use moq_lite::model::{Announcement, Origin};
use moq_lite::telemetry::{LabelLimits, Telemetry as Transport};
use moq_telemetry::prometheus::{Builder, PrometheusHandle};

pub use events::{SessionAccepted, SessionRejected, UpgradeFailure, WebSocketUpgradeFailed};
use live::{BuildInfo, Live};

/// The relay's telemetry handle; cheap to clone. Without a recorder ([`disabled`]) it records
/// nothing and keeps no state.
#[derive(Clone)]
pub struct Telemetry {
    handle: Option<PrometheusHandle>,
    transport: Transport,
    live: Option<Arc<Mutex<Live>>>,
    started: SystemTime,
}

/// Relay telemetry without a recorder: nothing is counted or kept (`--ops-listen off`).
pub fn disabled() -> Telemetry {
    Telemetry { handle: None, transport: Transport::disabled(), live: None, started: SystemTime::now() }
}

/// Installs the Prometheus recorder and returns the relay's telemetry state.
pub fn install(limits: LabelLimits) -> anyhow::Result<Telemetry> {
    // Per-broadcast series nobody holds or updates for the linger window disappear (ended
    // broadcasts age out, as their label slots do); the fixed label sets stay.
    // Peer series go the same way once their peer is no longer configured or connected.
    let mut builder = Builder::new().expire_idle(&["broadcast", "namespace", "peer"], limits.linger);
    let catalogs = catalog::all();
    for (name, buckets) in catalogs.iter().flat_map(|c| c.buckets()) {
        builder = builder.buckets_for(&name, buckets)?;
    }
    let handle = builder.install()?;
    for c in catalogs.iter().filter(|c| c.metrics != catalog::PROCESS) {
        c.describe();
        c.zero_counters();
    }
    Ok(Telemetry {
        handle: Some(handle),
        transport: Transport::new(catalog::TRANSPORT_PREFIX, limits),
        live: Some(Arc::new(Mutex::new(Live::new(limits.linger)))),
        started: SystemTime::now(),
    })
}

impl Telemetry {
    /// The transport's telemetry, for the sessions' [`moq_lite::session::SessionConfig`].
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn live(&self) -> Option<MutexGuard<'_, Live>> {
        self.live.as_ref().map(|l| l.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records the build version, certificate expiry, session capacity and memory budget.
    pub fn started(
        &self,
        version: &str,
        cert_not_after: Option<SystemTime>,
        max_sessions: usize,
        memory_budget: Option<u64>,
    ) {
        if let Some(mut live) = self.live() {
            live.info = Some(BuildInfo {
                version: version.to_string(),
                cert_not_after,
                max_sessions,
                memory_budget,
                available_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            });
        }
    }

    /// Exports the cluster peers' series and this relay's cluster identity at each scrape.
    pub fn cluster(&self, peers: crate::cluster::Peers, node: &str, hop_id: u64) {
        peers.set_exporter(self.handle.clone());
        if let Some(mut live) = self.live() {
            live.cluster = Some(live::ClusterInfo { peers, node: node.to_string(), hop_id });
        }
    }

    /// Follows announcements so the stream gauges are live state.
    pub async fn watch_streams(self, origin: Origin) {
        if self.live.is_none() {
            return;
        }
        if let Some(mut live) = self.live() {
            live.origin = Some(origin.clone());
        }
        let mut announced = origin.announced("");
        loop {
            match announced.next().await {
                Announcement::Active { path, .. } => {
                    let labels = self.transport.broadcast_labels(&path);
                    if let Some(mut live) = self.live() {
                        live.announced(path, labels);
                    }
                }
                Announcement::Ended { path } => {
                    if let Some(mut live) = self.live() {
                        live.ended(&path);
                    }
                }
                // The same broadcast through another chain: nothing the stream gauges show.
                Announcement::Updated { .. } => {}
            }
        }
    }

    /// Renders the exposition after refreshing every live gauge.
    pub fn render(&self) -> String {
        let Some(handle) = &self.handle else { return String::new() };
        self.transport.refresh_gauges();
        if let Some(mut live) = self.live() {
            live.refresh();
        }
        let mut text = handle.render();
        process::render(&mut text, self.started);
        text
    }

    /// Keeps the workers' latest load for the next scrape.
    pub fn worker_loads(&self, loads: Vec<crate::workers::WorkerLoad>) {
        if let Some(mut live) = self.live() {
            live.workers = loads;
        }
    }

    /// Ages out idle per-broadcast series; call every few seconds.
    pub fn upkeep(&self) {
        if let Some(handle) = &self.handle {
            handle.upkeep();
        }
    }

    /// Expires lingering label slots and viewer entries; returns how many.
    pub fn sweep(&self) -> usize {
        self.transport.sweep()
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The counters `f` records, as sorted `name{label=value,...}` and their values (for unit tests).
#[cfg(test)]
pub(crate) fn counters_during(f: impl FnOnce()) -> Vec<(String, u64)> {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    let mut counts: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else { return None };
            let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Some((format!("{}{{{}}}", key.key().name(), labels.join(",")), n))
        })
        .collect();
    counts.sort();
    counts
}
