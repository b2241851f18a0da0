//! PROBE streams: the peer (a subscriber) opens one to learn the bitrate this side can send it
//! and the RTT. Reports follow QUIC's estimate as the reference does: the first at once, then
//! when the RTT moves by a quarter or the bitrate by a threshold that decays from a quarter
//! (after 100 ms) to any change (after 10 s), and at least every 10 s while known. The peer's
//! own PROBE messages (targets) are read and ignored; its FIN ends the stream cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stream::{Reader, Writer};
use super::Inner;
use crate::message::Probe;
use crate::Error;

/// How often the estimate is sampled, and the shortest spacing of two reports.
const INTERVAL: Duration = Duration::from_millis(100);
/// A report older than this is refreshed whatever the change.
const MAX_AGE: Duration = Duration::from_secs(10);
/// A relative change at least this large is reported at once.
const MAX_DELTA: f64 = 0.25;

pub(super) async fn serve(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<(), Error> {
    let mut last: Option<(Probe, Instant)> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            target = reader.decode_maybe::<Probe>() => match target? {
                Some(_) => continue,
                None => {
                    writer.finish();
                    return Ok(());
                }
            },
            _ = tick.tick() => {}
        }
        let Some(report) = estimate(inner) else { continue };
        let now = Instant::now();
        if !due(last.as_ref().map(|(p, at)| (p, now - *at)), &report) {
            continue;
        }
        writer.encode(&report).await?;
        tracing::trace!(bitrate = report.bitrate, rtt_ms = report.rtt_ms, "PROBE report");
        last = Some((report, now));
    }
}

/// QUIC's send-rate estimate and smoothed RTT; `None` on a transport without them (qmux over a
/// WebSocket: TCP's estimate is not ours to read, so that peer's PROBE stream stays open without
/// reports).
fn estimate(inner: &Inner) -> Option<Probe> {
    let conn = inner.conn.quic()?;
    let bitrate = send_rate_estimate(conn)?;
    let rtt = conn.rtt();
    let rtt_ms = if inner.version.has_probe_rtt() { (rtt.as_millis() as u64).max(1) } else { 0 };
    Some(Probe { bitrate, rtt_ms })
}

/// The rate, in bits per second, QUIC lets this side send to the peer now: congestion window
/// over smoothed RTT (the bandwidth-delay product read backwards). What PROBE reports, and what
/// the relay exports as its viewer-bandwidth histogram. `None` before both are known.
pub fn send_rate_estimate(conn: &quinn::Connection) -> Option<u64> {
    let rtt = conn.rtt();
    let cwnd = conn.stats().path.cwnd;
    if rtt.is_zero() || cwnd == 0 {
        return None;
    }
    Some(((cwnd as f64 * 8.0 / rtt.as_secs_f64()) as u64).max(1))
}

/// Whether `next` is worth reporting, given the last report and its age.
fn due(last: Option<(&Probe, Duration)>, next: &Probe) -> bool {
    let Some((prev, age)) = last else { return true };
    if age < INTERVAL {
        return false;
    }
    if moved(prev.rtt_ms, next.rtt_ms) >= MAX_DELTA || age >= MAX_AGE {
        return true;
    }
    let delta = moved(prev.bitrate, next.bitrate);
    if delta == 0.0 {
        return false;
    }
    // The threshold decays linearly from MAX_DELTA at INTERVAL to 0 at MAX_AGE.
    let fraction = (age - INTERVAL).as_secs_f64() / (MAX_AGE - INTERVAL).as_secs_f64();
    delta >= MAX_DELTA * (1.0 - fraction)
}

/// The relative change from `prev` to `next` (1 when one of them is unknown and the other not).
fn moved(prev: u64, next: u64) -> f64 {
    match (prev, next) {
        (0, 0) => 0.0,
        (0, _) | (_, 0) => 1.0,
        (p, n) => (n as f64 - p as f64).abs() / p as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(bitrate: u64, rtt_ms: u64) -> Probe {
        Probe { bitrate, rtt_ms }
    }

    #[test]
    fn reports_first_then_on_change_or_age() {
        let base = probe(1_000_000, 40);
        assert!(due(None, &base));
        // Too soon, however large the change.
        assert!(!due(Some((&base, Duration::from_millis(50))), &probe(9_000_000, 40)));
        // A quarter more bitrate, or a quarter more RTT: at once.
        assert!(due(Some((&base, INTERVAL)), &probe(1_250_000, 40)));
        assert!(due(Some((&base, INTERVAL)), &probe(1_000_000, 50)));
        // A small change waits until the threshold has decayed to it.
        let small = probe(1_050_000, 40);
        assert!(!due(Some((&base, Duration::from_secs(1))), &small));
        assert!(due(Some((&base, Duration::from_secs(9))), &small));
        // No change: refreshed at the max age only.
        assert!(!due(Some((&base, Duration::from_secs(9))), &base));
        assert!(due(Some((&base, MAX_AGE)), &base));
    }
}
