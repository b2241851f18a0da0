//! The relay's threads: one single-threaded Tokio runtime per worker, and which worker takes each
//! new connection.
//!
//! quinn spawns a connection's driver on the runtime that accepts it, and the relay spawns the
//! session's tasks there too, so a connection lives on one worker for its whole life. New
//! connections *fill* workers in order: the first worker whose estimated load is below
//! `spill_at` takes it, else the least loaded. A lightly loaded relay therefore runs on one
//! thread and pays none of a work-stealing runtime's cross-thread hand-offs (docs/BENCHMARKS.md,
//! tenth round), and further workers take connections as load needs them. The QUIC endpoint (one
//! socket, one driver) stays on worker 0, so a client whose address changes still finds its
//! connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};

/// Load assumed for a connection placed since the last sample, before its worker's measured
/// load shows it: a 2 Mbit/s, 30 fps viewer cost about 0.06 % of a core on the benchmark VM.
const NEW_CONNECTION_LOAD: f64 = 1.0 / 2000.0;

/// How often each worker's busy time is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

pub struct Workers {
    workers: Vec<Worker>,
    spill_at: f64,
    /// Dropped to stop the extra workers' threads.
    stop: Mutex<Option<tokio::sync::watch::Sender<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

struct Worker {
    handle: Handle,
    /// Connections placed here and not yet ended.
    connections: Arc<AtomicUsize>,
    sample: Mutex<Sample>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    busy: Duration,
    /// Fraction of the last sample period this worker spent running tasks.
    ratio: f64,
    connections: usize,
}

/// What one worker looked like at the last sample.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLoad {
    pub worker: usize,
    pub busy_ratio: f64,
    pub connections: usize,
}

/// Held by a connection's task; counts the connection on its worker until dropped.
pub struct Placement {
    pub worker: usize,
    count: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count - 1` worker threads beside the calling one, whose runtime (`main`) is
    /// worker 0.
    pub fn start(main: Handle, count: usize, spill_at: f64) -> std::io::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let mut handles = vec![main];
        let mut threads = Vec::new();
        for index in 1..count.max(1) {
            let runtime = single_threaded()?;
            handles.push(runtime.handle().clone());
            let mut stop = stop_rx.clone();
            threads.push(std::thread::Builder::new().name(format!("moq-worker-{index}")).spawn(move || {
                // Runs the worker's tasks until the relay stops; dropping the runtime then
                // cancels what is left.
                runtime.block_on(async move {
                    let _ = stop.changed().await;
                });
            })?);
        }
        let now = Instant::now();
        let workers = handles
            .into_iter()
            .map(|handle| {
                let busy = handle.metrics().worker_total_busy_duration(0);
                Worker {
                    handle,
                    connections: Default::default(),
                    sample: Mutex::new(Sample { at: now, busy, ratio: 0.0, connections: 0 }),
                }
            })
            .collect();
        Ok(Self { workers, spill_at, stop: Mutex::new(Some(stop_tx)), threads: Mutex::new(threads) })
    }

    /// Picks the worker for a new connection and counts it there.
    pub fn place(&self) -> (Handle, Placement) {
        let estimates: Vec<f64> = self.workers.iter().map(Worker::estimate).collect();
        let index = choose(&estimates, self.spill_at);
        let worker = &self.workers[index];
        worker.connections.fetch_add(1, Ordering::Relaxed);
        (worker.handle.clone(), Placement { worker: index, count: worker.connections.clone() })
    }

    /// Samples every worker's busy time; call every [`SAMPLE_EVERY`].
    pub fn sample(&self) -> Vec<WorkerLoad> {
        let now = Instant::now();
        self.workers
            .iter()
            .enumerate()
            .map(|(index, worker)| {
                let busy = worker.handle.metrics().worker_total_busy_duration(0);
                let connections = worker.connections.load(Ordering::Relaxed);
                let mut sample = worker.sample.lock().unwrap();
                let period = now.saturating_duration_since(sample.at).as_secs_f64();
                let ratio = if period > 0.0 {
                    (busy.saturating_sub(sample.busy).as_secs_f64() / period).min(1.0)
                } else {
                    sample.ratio
                };
                *sample = Sample { at: now, busy, ratio, connections };
                WorkerLoad { worker: index, busy_ratio: ratio, connections }
            })
            .collect()
    }

    /// Stops the extra workers' threads (their remaining tasks are dropped) and waits for them.
    pub fn stop(&self) {
        self.stop.lock().unwrap().take();
        for thread in self.threads.lock().unwrap().drain(..) {
            let _ = thread.join();
        }
    }
}

impl Worker {
    fn estimate(&self) -> f64 {
        estimate(*self.sample.lock().unwrap(), self.connections.load(Ordering::Relaxed))
    }
}

/// Measured load plus what connections placed since the sample are expected to add: as much as
/// the sampled connections cost each, and no less than [`NEW_CONNECTION_LOAD`].
fn estimate(sample: Sample, connections: usize) -> f64 {
    let per_connection = match sample.connections {
        0 => NEW_CONNECTION_LOAD,
        n => (sample.ratio / n as f64).max(NEW_CONNECTION_LOAD),
    };
    sample.ratio + connections.saturating_sub(sample.connections) as f64 * per_connection
}

/// The first worker estimated below `spill_at`, else the least loaded one.
fn choose(estimates: &[f64], spill_at: f64) -> usize {
    if let Some(first) = estimates.iter().position(|&e| e < spill_at) {
        return first;
    }
    estimates.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

pub fn single_threaded() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_first_worker_below_the_threshold() {
        assert_eq!(choose(&[0.2, 0.0, 0.0], 0.5), 0);
        assert_eq!(choose(&[0.6, 0.3, 0.0], 0.5), 1);
        assert_eq!(choose(&[0.6, 0.7, 0.55], 0.5), 2);
    }

    #[test]
    fn estimates_connections_placed_since_the_sample() {
        let sample = |ratio, connections| Sample { at: Instant::now(), busy: Duration::ZERO, ratio, connections };
        // Costs learnt from the sample: 100 connections at 30 % busy, 50 more expected to add 15 %.
        assert!((estimate(sample(0.3, 100), 150) - 0.45).abs() < 1e-9);
        // Nothing learnt yet: each new connection counts as NEW_CONNECTION_LOAD, so a burst of
        // connections cannot all land on one worker before its load shows.
        assert!((estimate(sample(0.0, 0), 1000) - 0.5).abs() < 1e-9);
        // Idle connections are not taken as free.
        assert!((estimate(sample(0.0, 10), 20) - 10.0 * NEW_CONNECTION_LOAD).abs() < 1e-9);
        // Connections that ended since the sample do not lower it.
        assert_eq!(estimate(sample(0.4, 100), 80), 0.4);
    }

    #[test]
    fn spills_to_the_least_loaded_when_all_are_above() {
        assert_eq!(choose(&[0.9, 0.6, 0.8], 0.5), 1);
        assert_eq!(choose(&[0.9], 0.5), 0);
    }
}
