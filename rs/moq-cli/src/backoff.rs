//! Jittered exponential backoff between reconnection attempts (`moq watch`, `moq publish`), and
//! the [`Outages`] both report: how often the relay went away, for how long, and how many
//! attempts it took to come back.

use std::time::{Duration, Instant};

pub use moq_lite::transport::Backoff;
use serde::Serialize;

/// Waits between reconnection attempts: [`FIRST`] doubling up to [`MAX`], each spread ±25 %
/// (moq-lite's [`Backoff`]) so a relay restart is not met by every client at the same instant.
pub fn backoff() -> Backoff {
    Backoff::new(FIRST, MAX)
}

pub const FIRST: Duration = Duration::from_millis(250);
pub const MAX: Duration = Duration::from_secs(5);

/// [`Backoff::next`] with a random jitter.
pub fn next_random(backoff: &mut Backoff) -> Duration {
    backoff.next(rand::random::<f64>())
}

/// What one client (a viewer, or the publisher) lived through: sessions lost and re-established,
/// the attempts it took, and the time without service.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Outages {
    /// Sessions re-established after one was lost.
    pub reconnects: u64,
    /// Connection attempts made after a loss (successful or not).
    pub reconnect_attempts: u64,
    /// Total time without service, in milliseconds (an outage still going on counts until now).
    pub outage_ms: f64,
    /// The longest single outage, in milliseconds.
    pub longest_outage_ms: f64,
    /// When the outage going on now began.
    #[serde(skip)]
    pub since: Option<Instant>,
}

impl Outages {
    /// Service stopped at `at` (the last frame or the end of the session).
    pub fn begin(&mut self, at: Instant) {
        self.since.get_or_insert(at);
    }

    /// Service is back at `at`; returns how long the outage lasted.
    pub fn end(&mut self, at: Instant) -> Option<Duration> {
        let took = at.saturating_duration_since(self.since.take()?);
        let ms = took.as_secs_f64() * 1000.0;
        self.outage_ms += ms;
        self.longest_outage_ms = self.longest_outage_ms.max(ms);
        Some(took)
    }

    /// These figures with an outage still going on counted until `now`.
    pub fn at(&self, now: Instant) -> Outages {
        let mut o = self.clone();
        o.end(now);
        o
    }

    /// Adds another client's figures (the longest is the longest of all).
    pub fn add(&mut self, other: &Outages) {
        self.reconnects += other.reconnects;
        self.reconnect_attempts += other.reconnect_attempts;
        self.outage_ms += other.outage_ms;
        self.longest_outage_ms = self.longest_outage_ms.max(other.longest_outage_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_first_to_max_without_jitter() {
        let mut b = backoff();
        let waits: Vec<u64> = (0..7).map(|_| b.next(0.5).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(0.5), FIRST);
    }

    #[test]
    fn jitter_spreads_a_quarter_either_way() {
        assert_eq!(backoff().next(0.0), Duration::from_micros(187_500));
        assert_eq!(backoff().next(1.0), Duration::from_micros(312_500));
        // Out-of-range units are clamped.
        assert_eq!(backoff().next(7.0), Duration::from_micros(312_500));
        for _ in 0..100 {
            let w = next_random(&mut backoff());
            assert!(w >= Duration::from_micros(187_500) && w <= Duration::from_micros(312_500), "{w:?}");
        }
    }

    #[test]
    fn outages_add_up_and_keep_the_longest() {
        let t0 = Instant::now();
        let mut o = Outages::default();
        assert_eq!(o.end(t0), None);
        o.begin(t0);
        o.begin(t0 + Duration::from_secs(1)); // already out: the first start stands
        assert_eq!(o.end(t0 + Duration::from_secs(2)), Some(Duration::from_secs(2)));
        o.begin(t0 + Duration::from_secs(10));
        assert_eq!(o.at(t0 + Duration::from_secs(13)).outage_ms, 5000.0);
        o.end(t0 + Duration::from_secs(11));
        assert_eq!((o.outage_ms, o.longest_outage_ms), (3000.0, 2000.0));
        let mut total = Outages { reconnects: 1, reconnect_attempts: 2, ..Default::default() };
        total.add(&o);
        assert_eq!((total.reconnects, total.outage_ms, total.longest_outage_ms), (1, 3000.0, 2000.0));
    }
}
