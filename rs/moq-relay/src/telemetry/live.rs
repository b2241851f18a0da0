//! The relay's live state behind its gauges: announced broadcasts per namespace, open sessions
//! per transport and version, the workers' load, the QUIC stats of open sessions, and the
//! one-off facts (version, certificate, capacity), the cluster peers and the hop count of each
//! announced broadcast's route. Set into the gauges right before each scrape.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use metrics::gauge;
use moq_lite::model::Origin;
use moq_lite::telemetry::{BroadcastLabels, Lingering, OVERFLOW};
use moq_lite::transport::Transport;
use moq_lite::Version;

use super::catalog;
use super::quic::QuicStats;
use crate::workers::WorkerLoad;

pub(super) struct Live {
    /// Announced broadcasts and their reserved labels.
    streams: HashMap<String, BroadcastLabels>,
    /// Held once per announced broadcast of the namespace; an emptied namespace reads 0 for the
    /// linger window, then ages out.
    namespaces: Lingering<Arc<str>>,
    pub connections: HashMap<(Transport, Version), i64>,
    pub quic: QuicStats,
    /// Each worker thread's load at the last sample.
    pub workers: Vec<WorkerLoad>,
    pub info: Option<BuildInfo>,
    /// The origin whose routes the broadcasts are served from (for their hop counts).
    pub origin: Option<Origin>,
    pub cluster: Option<ClusterInfo>,
}

/// The cluster peers and this relay's identity in the cluster.
pub(super) struct ClusterInfo {
    pub peers: crate::cluster::Peers,
    pub node: String,
    pub hop_id: u64,
}

/// Relay version, certificate expiry and session capacity, re-reported at each scrape (so they
/// never age out).
#[derive(Clone)]
pub(super) struct BuildInfo {
    pub version: String,
    pub cert_not_after: Option<SystemTime>,
    pub max_sessions: usize,
    pub memory_budget: Option<u64>,
    /// Read once: on Linux it reads cgroup files, which a scrape need not repeat.
    pub available_cpus: usize,
}

impl Live {
    pub fn new(linger: std::time::Duration) -> Self {
        Self {
            streams: HashMap::new(),
            namespaces: Lingering::new(linger),
            connections: HashMap::new(),
            quic: QuicStats::default(),
            workers: Vec::new(),
            info: None,
            origin: None,
            cluster: None,
        }
    }

    pub fn announced(&mut self, path: String, labels: BroadcastLabels) {
        self.namespaces.acquire(labels.namespace.clone(), || ());
        if let Some(old) = self.streams.insert(path, labels) {
            self.namespaces.release(&old.namespace, Instant::now());
        }
    }

    pub fn ended(&mut self, path: &str) {
        if let Some(old) = self.streams.remove(path) {
            self.namespaces.release(&old.namespace, Instant::now());
        }
    }

    /// Sets every relay gauge from this state.
    pub fn refresh(&mut self) {
        self.namespaces.expire(Instant::now());
        for (namespace, held) in self.namespaces.iter() {
            gauge!(catalog::ACTIVE_STREAMS.name, "namespace" => namespace.to_string()).set(held.refs() as f64);
        }
        for ((transport, version), n) in &self.connections {
            gauge!(catalog::ACTIVE_CONNECTIONS.name, "transport" => transport.as_str(), "version" => version.alpn())
                .set(*n as f64);
        }
        for load in &self.workers {
            let worker = load.worker.to_string();
            gauge!(catalog::WORKER_BUSY.name, "worker" => worker.clone()).set(load.busy_ratio);
            gauge!(catalog::WORKER_CONNECTIONS.name, "worker" => worker).set(load.connections as f64);
        }
        self.quic.sample();
        if let Some(origin) = &self.origin {
            // Per broadcast label: past the cap, `_other` stands for many routes and has none.
            for (path, labels) in self.streams.iter().filter(|(_, l)| &*l.broadcast != OVERFLOW) {
                if let Some(route) = origin.route(path) {
                    gauge!(catalog::BROADCAST_ROUTE_HOPS.name, "broadcast" => labels.broadcast.to_string())
                        .set(route.hops.len() as f64);
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            super::cluster::info(&cluster.node, cluster.hop_id);
            cluster.peers.export();
        }
        if let Some(info) = &self.info {
            gauge!(catalog::BUILD_INFO.name, "version" => info.version.clone()).set(1.0);
            if let Some(t) = info.cert_not_after {
                gauge!(catalog::CERT_EXPIRY.name).set(super::unix(t));
            }
            gauge!(catalog::MAX_SESSIONS.name).set(info.max_sessions as f64);
            if let Some(budget) = info.memory_budget {
                gauge!(catalog::MEMORY_BUDGET.name).set(budget as f64);
            }
            gauge!(catalog::AVAILABLE_CPUS.name).set(info.available_cpus as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use moq_lite::telemetry::{LabelLimits, Telemetry};
    use std::time::Duration;

    #[test]
    fn a_namespace_counts_its_announced_broadcasts_and_reads_zero_while_it_lingers() {
        let linger = Duration::from_millis(40);
        let transport = Telemetry::new("t", LabelLimits { linger, ..LabelLimits::default() });
        let mut live = Live::new(linger);
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let streams = |live: &mut Live| {
            metrics::with_local_recorder(&recorder, || live.refresh());
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(k, ..)| k.key().name() == catalog::ACTIVE_STREAMS.name)
                .map(|(k, _, _, v)| {
                    let DebugValue::Gauge(v) = v else { panic!("a gauge") };
                    (k.key().labels().next().unwrap().value().to_string(), v.into_inner())
                })
                .collect::<Vec<_>>()
        };
        live.announced("room/a".into(), transport.broadcast_labels("room/a"));
        live.announced("room/b".into(), transport.broadcast_labels("room/b"));
        // The same path announced again (a replacing publisher) is still one broadcast.
        live.announced("room/b".into(), transport.broadcast_labels("room/b"));
        assert_eq!(streams(&mut live), vec![("room".to_string(), 2.0)]);
        live.ended("room/a");
        live.ended("room/b");
        assert_eq!(streams(&mut live), vec![("room".to_string(), 0.0)], "0 while it lingers");
        std::thread::sleep(linger * 2);
        metrics::with_local_recorder(&recorder, || live.refresh());
        assert_eq!(live.namespaces.len(), 0, "gone after the window");
    }
}
