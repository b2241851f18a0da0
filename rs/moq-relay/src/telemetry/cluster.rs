//! The cluster events (docs/CLUSTER.md "Telemetry"): each writes its log line (target
//! `moq_relay::cluster`, with `peer`) and updates its metrics together, so the dialers and the
//! registry only say what happened. A peer's traffic counters and gauges are read from its
//! sessions at scrape time ([`PeerSeries::export`]), never on the per-frame path. URLs appear
//! without their query (it may hold a token).

use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge};
use moq_lite::session::Traffic;
use moq_lite::Version;

use super::catalog;

/// The log target of every cluster line.
pub const TARGET: &str = "moq_relay::cluster";

/// Which side dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// We dial the peer (`--cluster-connect`).
    Outbound,
    /// The peer dialed us with a peer grant.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Frames and payload bytes exchanged with a peer, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub frames_tx: u64,
    pub frames_rx: u64,
    pub bytes_tx: u64,
    pub bytes_rx: u64,
}

impl Totals {
    pub fn of(traffic: &Traffic) -> Self {
        Self {
            frames_tx: traffic.frames_sent.load(Ordering::Relaxed),
            frames_rx: traffic.frames_received.load(Ordering::Relaxed),
            bytes_tx: traffic.bytes_sent.load(Ordering::Relaxed),
            bytes_rx: traffic.bytes_received.load(Ordering::Relaxed),
        }
    }

    pub fn add(&mut self, other: Totals) {
        self.frames_tx += other.frames_tx;
        self.frames_rx += other.frames_rx;
        self.bytes_tx += other.bytes_tx;
        self.bytes_rx += other.bytes_rx;
    }
}

/// One peer's series, held while the peer is configured (or its inbound label is in the pool),
/// so the exporter never ages them out meanwhile; dropped, they age out after the linger window.
pub struct PeerSeries {
    peer: String,
    direction: Direction,
    /// Re-registered when a removed peer is configured again ([`Self::revive`]).
    up: std::sync::Mutex<Gauge>,
    rtt: Gauge,
    routes: Gauge,
    /// tx, rx.
    bytes: [Counter; 2],
    frames: [Counter; 2],
    /// connected, failed (outbound peers only).
    dials: Option<[Counter; 2]>,
    /// What the counters were last advanced to: they move by the growth since, so a label whose
    /// totals restart (a peer removed and added again) never makes its counters go back.
    exported: std::sync::Mutex<Totals>,
}

impl PeerSeries {
    pub fn new(peer: &str, direction: Direction) -> Self {
        let peer = peer.to_string();
        let pair = |name: &'static str, label: &'static str, values: [&'static str; 2]| {
            values.map(|v| counter!(name, "peer" => peer.clone(), label => v))
        };
        let dials = (direction == Direction::Outbound)
            .then(|| pair(catalog::CLUSTER_PEER_DIALS.name, "result", ["connected", "failed"]));
        // Configured peers have their dial series from the start, at 0.
        for d in dials.iter().flatten() {
            d.increment(0);
        }
        let series = Self {
            up: std::sync::Mutex::new(up_gauge(&peer, direction)),
            rtt: gauge!(catalog::CLUSTER_PEER_RTT.name, "peer" => peer.clone()),
            routes: gauge!(catalog::CLUSTER_PEER_ROUTES.name, "peer" => peer.clone()),
            bytes: pair(catalog::CLUSTER_PEER_BYTES.name, "direction", ["tx", "rx"]),
            frames: pair(catalog::CLUSTER_PEER_FRAMES.name, "direction", ["tx", "rx"]),
            dials,
            exported: Default::default(),
            peer,
            direction,
        };
        series.up().set(0.0);
        series
    }

    fn up(&self) -> std::sync::MutexGuard<'_, Gauge> {
        self.up.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer was removed from the configuration: its link-state series goes now, so no
    /// PeerDown fires for a peer nobody dials any more (its counters age out as usual).
    pub fn retire(&self, exporter: Option<&moq_telemetry::prometheus::PrometheusHandle>) {
        if let Some(exporter) = exporter {
            let labels = [("peer", self.peer.as_str()), ("direction", self.direction.as_str())];
            exporter.forget(catalog::CLUSTER_PEER_UP.name, &labels);
        }
    }

    /// The peer is configured again: its link-state series comes back (down until connected).
    pub fn revive(&self) {
        let mut up = self.up();
        *up = up_gauge(&self.peer, self.direction);
        up.set(0.0);
    }

    /// Sets the series from the peer's state now (at a scrape): whether a session runs, the
    /// traffic totals of all its sessions so far, and its link gauges.
    pub fn export(&self, up: bool, totals: Totals, rtt: Option<Duration>, routes: u64) {
        self.up().set(if up { 1.0 } else { 0.0 });
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        let last = *exported;
        self.bytes[0].increment(totals.bytes_tx.saturating_sub(last.bytes_tx));
        self.bytes[1].increment(totals.bytes_rx.saturating_sub(last.bytes_rx));
        self.frames[0].increment(totals.frames_tx.saturating_sub(last.frames_tx));
        self.frames[1].increment(totals.frames_rx.saturating_sub(last.frames_rx));
        *exported = totals;
        self.rtt.set(rtt.map_or(f64::NAN, |r| r.as_secs_f64()));
        self.routes.set(routes as f64);
    }

    fn dialed(&self, connected: bool) {
        if let Some(dials) = &self.dials {
            dials[if connected { 0 } else { 1 }].increment(1);
        }
    }
}

fn up_gauge(peer: &str, direction: Direction) -> Gauge {
    gauge!(catalog::CLUSTER_PEER_UP.name, "peer" => peer.to_string(), "direction" => direction.as_str())
}

/// This relay's cluster identity, re-set at every scrape (so it never ages out).
pub(super) fn info(node: &str, hop_id: u64) {
    gauge!(catalog::CLUSTER_INFO.name, "node" => node.to_string(), "hop_id" => hop_id.to_string()).set(1.0);
}

/// The cluster service started.
pub struct ClusterStarted<'a> {
    pub node: &'a str,
    pub hop_id: u64,
    /// Peers from `--cluster-connect`.
    pub peers: usize,
    pub connect_api: Option<&'a std::path::Path>,
    pub max_hops: usize,
}

impl ClusterStarted<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: TARGET,
            node = self.node,
            hop_id = self.hop_id,
            peers = self.peers,
            connect_api = self.connect_api.map(|p| tracing::field::display(p.display())),
            max_hops = self.max_hops,
            "cluster ready"
        );
    }
}

/// A session with a peer started: one we dialed, or a peer grant's session we accepted. Emit
/// inside its span.
pub struct PeerConnected<'a> {
    pub peer: &'a str,
    pub direction: Direction,
    /// The dialed URL without its query (outbound).
    pub url: Option<&'a str>,
    pub version: Version,
    /// The peer's hop id, when its SETUP was read here.
    pub hop_id: Option<u64>,
    pub rtt: Option<Duration>,
    pub series: Option<&'a PeerSeries>,
}

impl PeerConnected<'_> {
    pub fn emit(self) {
        if let Some(series) = self.series {
            series.dialed(true);
        }
        tracing::info!(
            target: TARGET,
            peer = self.peer,
            direction = self.direction.as_str(),
            url = self.url,
            version = self.version.alpn(),
            hop_id = self.hop_id,
            rtt_ms = self.rtt.map(|r| r.as_secs_f64() * 1000.0),
            "cluster peer connected"
        );
    }
}

/// A dial attempt failed. Logged only when `log` (the dialer thins them, see
/// `cluster::peers::Backoff::should_log`); always counted.
pub struct PeerDialFailed<'a> {
    pub peer: &'a str,
    pub url: &'a str,
    /// Already stripped of the token.
    pub error: &'a str,
    /// Consecutive failures, this one included.
    pub attempt: u64,
    pub retry_in: Duration,
    pub log: bool,
    pub series: &'a PeerSeries,
}

impl PeerDialFailed<'_> {
    pub fn emit(self) {
        self.series.dialed(false);
        if self.log {
            tracing::warn!(
                target: TARGET,
                peer = self.peer,
                url = self.url,
                error = self.error,
                attempt = self.attempt,
                retry_in_ms = self.retry_in.as_millis() as u64,
                "cluster peer dial failed"
            );
        }
    }
}

/// A session with a peer ended. `expected`: we ended it (shutdown, peer removed) or the peer
/// said GOAWAY; logged at info then, else at warn.
pub struct PeerLost<'a> {
    pub peer: &'a str,
    pub direction: Direction,
    pub error: &'a dyn Display,
    pub after: Duration,
    pub expected: bool,
}

impl PeerLost<'_> {
    pub fn emit(self) {
        let (peer, direction, after_s) = (self.peer, self.direction.as_str(), self.after.as_secs_f64());
        let error = tracing::field::display(self.error);
        match self.expected {
            true => tracing::info!(target: TARGET, peer, direction, error, after_s, "cluster peer lost"),
            false => tracing::warn!(target: TARGET, peer, direction, error, after_s, "cluster peer lost"),
        }
    }
}

/// Whether a peer session ended the way peers leave on purpose: we ended it, or the peer said
/// GOAWAY or closed with the GOAWAY code (a relay shutting down), rather than failing or timing out.
pub fn left_on_purpose(err: &moq_lite::Error) -> bool {
    use moq_lite::Error;
    match err {
        Error::GoingAway | Error::Cancel => true,
        // The close's code or its reason text, as the transport reports them.
        Error::Closed(msg) => {
            msg.contains(&format!("code={}", moq_lite::code::GOAWAY_TIMEOUT))
                || msg.contains(&Error::GoingAway.to_string())
        }
        _ => false,
    }
}

/// The `--cluster-connect-api` file changed the set of peers dialed (by label; `changed`: a new
/// URL, cost or token for a peer, which is redialed).
pub struct PeersChanged<'a> {
    pub added: &'a [String],
    pub removed: &'a [String],
    pub changed: &'a [String],
}

impl PeersChanged<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: TARGET,
            added = ?self.added,
            removed = ?self.removed,
            changed = ?self.changed,
            "cluster peers changed"
        );
    }
}

/// The `--cluster-connect-api` file could not be used; the peers dialed stay as they were.
/// Logged when the error changes (a file broken for an hour says so once).
pub struct ConnectApiFailed<'a> {
    pub path: &'a std::path::Path,
    pub error: &'a anyhow::Error,
}

impl ConnectApiFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: TARGET,
            path = %self.path.display(),
            error = format!("{:#}", self.error),
            "cluster connect api unusable: keeping the current peers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goaway_and_our_own_ends_are_on_purpose_failures_are_not() {
        use moq_lite::Error;
        let wt = Error::Closed("session error: webtransport error: closed: code=16 reason=going away".into());
        for err in [Error::GoingAway, Error::Cancel, wt] {
            assert!(left_on_purpose(&err), "{err:?}");
        }
        for err in [Error::Closed("connection lost: timed out".into()), Error::ProtocolViolation("x".into())] {
            assert!(!left_on_purpose(&err), "{err:?}");
        }
    }

    #[test]
    fn counters_advance_by_growth_and_never_go_back() {
        let counts = crate::telemetry::counters_during(|| {
            let series = PeerSeries::new("b:1", Direction::Outbound);
            let t = |n: u64| Totals { frames_tx: n, frames_rx: 2 * n, bytes_tx: 10 * n, bytes_rx: 20 * n };
            series.export(true, t(3), Some(Duration::from_millis(5)), 2);
            series.export(true, t(5), None, 0);
            PeerConnected {
                peer: "b:1",
                direction: Direction::Outbound,
                url: Some("https://b:1/"),
                version: Version::Lite05,
                hop_id: None,
                rtt: None,
                series: Some(&series),
            }
            .emit();
            // A second series of the same label (re-added, totals from 0) adds to the same counters.
            let again = PeerSeries::new("b:1", Direction::Outbound);
            again.export(false, t(1), None, 0);
            PeerDialFailed {
                peer: "b:1",
                url: "https://b:1/",
                error: "refused",
                attempt: 1,
                retry_in: Duration::from_millis(500),
                log: false,
                series: &again,
            }
            .emit();
            let inbound = PeerSeries::new("relay-c", Direction::Inbound);
            PeerConnected {
                peer: "relay-c",
                direction: Direction::Inbound,
                url: None,
                version: Version::Lite06,
                hop_id: Some(7),
                rtt: None,
                series: Some(&inbound),
            }
            .emit();
        });
        let get = |name: &str| counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("moq_relay_cluster_peer_frames_total{peer=b:1,direction=tx}"), Some(6));
        assert_eq!(get("moq_relay_cluster_peer_bytes_total{peer=b:1,direction=rx}"), Some(120));
        assert_eq!(get("moq_relay_cluster_peer_dials_total{peer=b:1,result=connected}"), Some(1));
        assert_eq!(get("moq_relay_cluster_peer_dials_total{peer=b:1,result=failed}"), Some(1));
        // Inbound peers have no dial series.
        assert!(!counts.iter().any(|(n, _)| n.contains("dials_total{peer=relay-c")), "{counts:?}");
        assert_eq!(get("moq_relay_cluster_peer_frames_total{peer=relay-c,direction=tx}"), Some(0));
    }
}
