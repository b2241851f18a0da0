//! The netplay service's `run()`: the cleanup sweep every `--netplay-sweep-interval` (rooms past
//! their TTL end with `cleanupJob`, one `netplay.cleanup.run` span each), and in between the
//! timers of host grace (`hostLeft`) and idleness (`timeout`), woken at their deadline rather than
//! at the next sweep.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::sessions::Now;
use super::Netplay;
use crate::telemetry::netplay::CleanupSwept;

impl Netplay {
    /// Runs the sweep and the timers until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let period = self.registry().settings().sweep_interval;
        let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.registry().next_deadline();
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sweeps.tick() => self.sweep(),
                _ = timer => self.reap(),
                // A deadline may have moved: look again.
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Ends the rooms whose host grace or idle timeout ran out.
    pub(super) fn reap(&self) {
        let ended = self.registry().reap(Now::real());
        self.finish(ended);
    }

    /// One cleanup sweep: ends the rooms past their TTL, counts and logs it.
    pub(super) fn sweep(&self) {
        let span = tracing::info_span!(
            "netplay.cleanup.run",
            netplay.cleanup.expired_sessions = tracing::field::Empty,
            netplay.cleanup.past_ttl = tracing::field::Empty,
        );
        let _entered = span.enter();
        let started = Instant::now();
        let swept = self.registry().sweep(Now::real());
        let expired = swept.ended.len();
        self.finish(swept.ended);
        let took = started.elapsed();
        CleanupSwept { expired, past_ttl: swept.past_ttl, took, processed_at: SystemTime::now() }.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::service;

    /// The idle timer fires at its deadline, long before the next sweep.
    #[tokio::test]
    async fn the_timers_do_not_wait_for_the_sweep() {
        use crate::netplay::sessions::CreateRequest;
        let settings = crate::netplay::Settings {
            enabled: true,
            idle_timeout: std::time::Duration::from_millis(50),
            sweep_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let netplay = crate::netplay::Netplay::new(settings, crate::Sessions::default()).unwrap();
        let run = tokio::spawn(netplay.clone().run());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let room = netplay.create(&CreateRequest::default(), "192.0.2.1".parse().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while netplay.registry().contains(&room.id) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!netplay.registry().contains(&room.id), "ended by the idle timer");
        run.abort();
    }

    #[test]
    fn a_sweep_is_counted_even_when_it_ends_nothing() {
        let netplay = service();
        let counts = crate::telemetry::counters_during(|| {
            netplay.sweep();
            netplay.reap();
        });
        assert_eq!(counts, vec![("netplay_cleanup_sweeps_total{}".to_string(), 1)]);
    }
}
