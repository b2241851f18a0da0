//! Telemetry's periodic work, off the forwarding path: following announcements for the stream
//! gauges, sampling the workers' load, aging out idle per-broadcast series, and expiring
//! lingering label slots and viewer entries.

use std::sync::Arc;
use std::time::Duration;

use moq_lite::model::Origin;
use tokio::task::JoinSet;

use crate::telemetry::Telemetry;
use crate::workers::{self, Workers};

/// How often idle per-broadcast series are checked for expiry.
const EXPORTER_UPKEEP: Duration = Duration::from_secs(5);
/// How often lingering label slots and viewer entries are expired.
const CLEANUP_SWEEP: Duration = Duration::from_secs(30);

pub struct Upkeep {
    pub telemetry: Telemetry,
    pub workers: Arc<Workers>,
    pub origin: Origin,
}

impl Upkeep {
    /// Runs until dropped (the caller aborts it at shutdown).
    pub async fn run(self) {
        let Self { telemetry, workers, origin } = self;
        let mut tasks = JoinSet::new();
        tasks.spawn(telemetry.clone().watch_streams(origin));
        tasks.spawn(every(workers::SAMPLE_EVERY, {
            let telemetry = telemetry.clone();
            move || telemetry.worker_loads(workers.sample())
        }));
        tasks.spawn(every(EXPORTER_UPKEEP, {
            let telemetry = telemetry.clone();
            move || telemetry.upkeep()
        }));
        tasks.spawn(every(CLEANUP_SWEEP, move || cleanup_sweep(&telemetry)));
        while tasks.join_next().await.is_some() {}
    }
}

async fn every(period: Duration, mut f: impl FnMut() + Send + 'static) {
    loop {
        tokio::time::sleep(period).await;
        f();
    }
}

/// Expires state kept past its use, reporting at info only when something expired.
fn cleanup_sweep(telemetry: &Telemetry) {
    let started = std::time::Instant::now();
    let expired = telemetry.sweep();
    let duration_us = started.elapsed().as_micros() as u64;
    if expired > 0 {
        tracing::info!(expired, duration_us, "cleanup sweep");
    } else {
        tracing::debug!(expired, duration_us, "cleanup sweep");
    }
}
