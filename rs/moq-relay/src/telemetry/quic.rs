//! QUIC connection statistics folded into relay-wide counters. The registry is updated once per
//! scrape (and once when a session closes), not per connection: each update is a label-set
//! lookup, and there may be thousands of connections.

use std::collections::HashMap;

use metrics::{counter, histogram};
use moq_lite::session::Session;

use super::catalog;

/// Open sessions and the stats of each last folded into the counters.
#[derive(Default)]
pub(super) struct QuicStats {
    sessions: HashMap<u64, (Session, Sample)>,
}

impl QuicStats {
    pub fn opened(&mut self, session: &Session) {
        self.sessions.insert(session.id(), (session.clone(), Sample::default()));
    }

    /// Folds in what the session did since the last scrape, and forgets it.
    pub fn closed(&mut self, id: u64) {
        if let Some((session, mut last)) = self.sessions.remove(&id) {
            let mut delta = Delta::default();
            delta.add(&session, &mut last, false);
            delta.emit();
        }
    }

    /// Folds in every open session's growth and samples its RTT and send-rate estimate.
    pub fn sample(&mut self) {
        let mut delta = Delta::default();
        for (session, last) in self.sessions.values_mut() {
            delta.add(session, last, true);
        }
        delta.emit();
    }
}

/// One connection's counters at some moment.
#[derive(Default, Clone, Copy)]
pub(super) struct Sample {
    lost: u64,
    congestion: u64,
    tx: u64,
    rx: u64,
    tx_datagrams: u64,
    rx_datagrams: u64,
    transmits: u64,
}

impl Sample {
    fn of(stats: &quinn::ConnectionStats) -> Self {
        Self {
            lost: stats.path.lost_packets,
            congestion: stats.path.congestion_events,
            tx: stats.udp_tx.bytes,
            rx: stats.udp_rx.bytes,
            tx_datagrams: stats.udp_tx.datagrams,
            rx_datagrams: stats.udp_rx.datagrams,
            // quinn counts one per transmit handed to the socket on the send side; its receive-side
            // count is per QUIC packet, not per system call, so only the send side is exported.
            transmits: stats.udp_tx.ios,
        }
    }
}

/// Counter growth summed over connections.
#[derive(Default)]
struct Delta {
    sum: Sample,
    rtts: Vec<f64>,
    /// Send-rate estimates, bytes per second.
    rates: Vec<f64>,
}

impl Delta {
    /// Adds the connection's growth since `last`, and its RTT if `rtt`. WebSocket sessions
    /// have no QUIC connection, so add nothing.
    fn add(&mut self, session: &Session, last: &mut Sample, rtt: bool) {
        let Some(conn) = session.connection().quic() else {
            return;
        };
        let stats = conn.stats();
        let now = Sample::of(&stats);
        let s = &mut self.sum;
        s.lost += now.lost.saturating_sub(last.lost);
        s.congestion += now.congestion.saturating_sub(last.congestion);
        s.tx += now.tx.saturating_sub(last.tx);
        s.rx += now.rx.saturating_sub(last.rx);
        s.tx_datagrams += now.tx_datagrams.saturating_sub(last.tx_datagrams);
        s.rx_datagrams += now.rx_datagrams.saturating_sub(last.rx_datagrams);
        s.transmits += now.transmits.saturating_sub(last.transmits);
        if rtt {
            self.rtts.push(stats.path.rtt.as_secs_f64());
            if let Some(bits) = moq_lite::session::send_rate_estimate(conn) {
                self.rates.push(bits as f64 / 8.0);
            }
        }
        *last = now;
    }

    fn emit(self) {
        let s = self.sum;
        counter!(catalog::QUIC_LOST.name).increment(s.lost);
        counter!(catalog::QUIC_CONGESTION.name).increment(s.congestion);
        counter!(catalog::QUIC_UDP_BYTES.name, "direction" => "tx").increment(s.tx);
        counter!(catalog::QUIC_UDP_BYTES.name, "direction" => "rx").increment(s.rx);
        counter!(catalog::QUIC_UDP_DATAGRAMS.name, "direction" => "tx").increment(s.tx_datagrams);
        counter!(catalog::QUIC_UDP_DATAGRAMS.name, "direction" => "rx").increment(s.rx_datagrams);
        counter!(catalog::QUIC_UDP_TRANSMITS.name).increment(s.transmits);
        if !self.rtts.is_empty() {
            let rtt = histogram!(catalog::QUIC_RTT.name);
            for r in self.rtts {
                rtt.record(r);
            }
        }
        if !self.rates.is_empty() {
            let rate = histogram!(catalog::QUIC_SEND_RATE.name);
            for r in self.rates {
                rate.record(r);
            }
        }
    }
}
