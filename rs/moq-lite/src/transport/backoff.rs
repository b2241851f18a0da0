//! Jittered exponential backoff between reconnection attempts, for every client of a relay: the
//! CLI's viewers and publishers, a relay's cluster dialers. Pure: the jitter comes in as a
//! number, so tests choose it.

use std::time::Duration;

/// Waits between attempts: `first` doubling up to `max`, each spread ±[`Self::JITTER`] so the
/// clients of a relay that restarts do not come back at the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// How far each wait is spread, either way, as a fraction of it.
    pub const JITTER: f64 = 0.25;

    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, next: first }
    }

    /// The wait before the next attempt, `unit` (in [0, 1]) placing it within the jitter; the
    /// one after doubles, up to the maximum.
    pub fn next(&mut self, unit: f64) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        base.mul_f64(1.0 - Self::JITTER + 2.0 * Self::JITTER * unit.clamp(0.0, 1.0))
    }

    /// Back to the first wait (a session came up, or lasted).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// A session ended after `lasted`: one that lasted at least `stable` counts as a success and
    /// starts the sequence again; a shorter one (a flapping peer) keeps backing off.
    pub fn session_ended(&mut self, lasted: Duration, stable: Duration) {
        if lasted >= stable {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_a_quarter_of_jitter_either_way() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| b.next(0.5).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next(0.0), Duration::from_millis(75));
        assert_eq!(b.next(1.0), Duration::from_millis(250));
        assert_eq!(b.next(7.0), Duration::from_millis(500), "clamped to +25 %");
        b.session_ended(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(b.next(0.5), Duration::from_millis(500), "a short session keeps backing off");
        b.session_ended(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(b.next(0.5), Duration::from_millis(100));
    }
}
