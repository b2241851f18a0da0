//! Sessions on the QUIC endpoint: stream credit, admission, worker threads, idle timeout,
//! keep-alive and the shutdown drain. Stream credit and the timeouts default to what the
//! transport itself uses ([`QuicOptions::default`]).

use std::time::Duration;

use anyhow::ensure;
use moq_lite::transport::QuicOptions;

use super::cli::Settings;

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// One worker per CPU.
const DEFAULT_WORKER_THREADS: usize = 0;
const DEFAULT_WORKER_SPILL_AT: f64 = 0.5;
/// The most worker threads, explicit or one per CPU.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The resolved QUIC and session settings, for the fields of [`super::Config`] of the same names.
pub(super) struct Quic {
    pub(super) versions: Vec<moq_lite::Version>,
    pub(super) drain_timeout: Duration,
    pub(super) max_streams: u64,
    pub(super) max_sessions: usize,
    pub(super) memory_budget: Option<u64>,
    pub(super) worker_threads: usize,
    pub(super) worker_spill_at: f64,
    pub(super) idle_timeout: Duration,
    pub(super) keep_alive: Duration,
}

impl Quic {
    pub(super) fn resolve(settings: &Settings) -> anyhow::Result<Self> {
        let transport = QuicOptions::default();

        let mut versions = settings.versions.clone().unwrap_or_else(|| moq_lite::Version::ALL.to_vec());
        ensure!(!versions.is_empty(), "at least one moq-lite version is needed");
        let mut seen = Vec::new();
        versions.retain(|v| {
            if seen.contains(v) {
                false
            } else {
                seen.push(*v);
                true
            }
        });

        let max_streams = settings.max_streams.unwrap_or(transport.max_streams);
        ensure!(max_streams > 0, "max streams must be at least 1");
        let max_sessions = settings.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        ensure!(max_sessions > 0, "max sessions must be at least 1");
        ensure!(settings.memory_budget_mib != Some(0), "memory budget must be at least 1 MiB");
        let memory_budget = settings.memory_budget_mib.map(|mib| mib.saturating_mul(1 << 20));

        let worker_threads = settings.worker_threads.unwrap_or(DEFAULT_WORKER_THREADS);
        // Also bounds the `worker` label of the relay's per-worker metrics.
        ensure!(worker_threads <= MAX_WORKER_THREADS, "worker threads must be at most {MAX_WORKER_THREADS}");
        let worker_spill_at = settings.worker_spill_at.unwrap_or(DEFAULT_WORKER_SPILL_AT);
        ensure!(
            worker_spill_at > 0.0 && worker_spill_at <= 1.0,
            "worker spill threshold must be above 0 and at most 1, got {worker_spill_at}"
        );

        let idle_timeout = settings.idle_timeout.unwrap_or(transport.idle_timeout);
        let keep_alive = settings.keep_alive.unwrap_or(transport.keep_alive);
        // Otherwise healthy but quiet sessions would be dropped as idle.
        ensure!(
            keep_alive < idle_timeout,
            "keep alive ({}) must be shorter than idle timeout ({})",
            humantime::format_duration(keep_alive),
            humantime::format_duration(idle_timeout)
        );

        Ok(Self {
            versions,
            drain_timeout: settings.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            max_streams,
            max_sessions,
            memory_budget,
            worker_threads,
            worker_spill_at,
            idle_timeout,
            keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn worker_settings_are_checked() {
        let config = load(&["--tls-generate=h", "--worker-threads=3"], &[("MOQ_WORKER_SPILL_AT", "0.8")]).unwrap();
        assert_eq!((config.worker_threads, config.worker_spill_at), (3, 0.8));
        for (flag, needle) in [
            ("--worker-spill-at=0", "spill threshold"),
            ("--worker-spill-at=1.5", "spill threshold"),
            ("--worker-spill-at=NaN", "spill threshold"),
            ("--worker-threads=5000", "worker threads"),
        ] {
            let err = load(&["--tls-generate=h", flag], &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
    }
}
