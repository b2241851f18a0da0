//! How many streams the peer may keep open at once: small for a new session, raised as the peer
//! uses it (see [`crate::transport::INITIAL_STREAMS`] for why it starts small).

use super::Connection;
use crate::transport::INITIAL_STREAMS;

/// The stream credit of one direction of a session.
#[derive(Debug)]
pub(crate) struct StreamCredit {
    limit: u64,
    max: u64,
    bidirectional: bool,
}

impl StreamCredit {
    /// The credit a connection from [`crate::transport::QuicOptions`] starts with, growing up to `max`.
    pub fn new(max: u64, bidirectional: bool) -> Self {
        Self { limit: max.min(INITIAL_STREAMS), max, bidirectional }
    }

    /// The peer now has `open` streams of this direction open: raises its credit on `conn` when
    /// [`Self::opened`] says so.
    pub fn update(&mut self, conn: &Connection, open: usize) {
        let Some(limit) = self.opened(open) else {
            return;
        };
        conn.set_max_streams(self.bidirectional, limit);
        crate::telemetry::StreamCreditRaised { bidirectional: self.bidirectional, limit }.emit();
    }

    /// The peer now has `open` streams of this direction open. Returns the new limit when it
    /// should rise: once half of it is in use, so the peer gets more credit an RTT before it
    /// would have to wait for it. Doubling keeps the raises few; `max` bounds what one peer can
    /// make this session allocate.
    pub fn opened(&mut self, open: usize) -> Option<u64> {
        if self.limit >= self.max || (open as u64).saturating_mul(2) < self.limit {
            return None;
        }
        self.limit = self.limit.saturating_mul(2).min(self.max);
        Some(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_doubles_once_half_is_used_and_stops_at_the_cap() {
        let mut credit = StreamCredit::new(1_000, false);
        assert_eq!(credit.opened(1), None);
        assert_eq!(credit.opened(31), None);
        assert_eq!(credit.opened(32), Some(128));
        assert_eq!(credit.opened(33), None);
        assert_eq!(credit.opened(64), Some(256));
        assert_eq!(credit.opened(128), Some(512));
        assert_eq!(credit.opened(256), Some(1_000));
        assert_eq!(credit.opened(999), None);
    }

    #[test]
    fn a_cap_below_the_initial_credit_is_never_raised() {
        let mut credit = StreamCredit::new(10, true);
        assert_eq!(credit.opened(10), None);
        let mut credit = StreamCredit::new(0, false);
        assert_eq!(credit.opened(0), None);
    }
}
