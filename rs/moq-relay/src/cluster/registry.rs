//! Every peer this relay has a link with, for `/nodes` and the peer metrics: the configured peers
//! (one entry each, whatever their state) and the inbound peer sessions, grouped by label. Inbound
//! labels come from the peers (a grant's subject, else the client's address), so they go through
//! a capped pool: at most [`INBOUND_LABELS`] distinct values, then [`OVERFLOW`]; a label stays
//! reserved while a session uses it and for the linger window after, like the broadcast labels
//! of `moq_lite::telemetry`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use moq_lite::session::{Session, Traffic};
use moq_lite::Version;
use serde::Serialize;

use crate::telemetry::cluster::{Direction, PeerSeries, Totals};

/// Distinct inbound peer labels at once (in use or lingering).
pub const INBOUND_LABELS: usize = 64;
/// The label shared by inbound peers beyond the cap.
pub const OVERFLOW: &str = moq_lite::telemetry::OVERFLOW;

/// What a configured peer's dialer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    /// Waiting to redial.
    Backoff,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Backoff => "backoff",
        }
    }
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    outbound: BTreeMap<String, Outbound>,
    inbound: HashMap<Arc<str>, Inbound>,
    linger: Duration,
    /// The exporter, to drop a removed peer's link-state series at once.
    exporter: Option<moq_telemetry::prometheus::PrometheusHandle>,
}

struct Outbound {
    traffic: Arc<Traffic>,
    state: State,
    since: SystemTime,
    redials: u64,
    session: Option<Session>,
    version: Option<Version>,
    series: Arc<PeerSeries>,
    /// Dialers of this label (a changed URL restarts it: the new one may start first).
    dialers: usize,
    /// No dialer since then: kept for the linger window, so a peer added back continues its
    /// traffic totals.
    retired: Option<Instant>,
}

struct Inbound {
    sessions: BTreeMap<u64, InboundSession>,
    /// What its ended sessions exchanged.
    ended: Totals,
    series: PeerSeries,
    /// Its last session ended then.
    released: Option<Instant>,
}

struct InboundSession {
    session: Session,
    traffic: Arc<Traffic>,
    since: SystemTime,
    hop_id: Option<u64>,
}

/// One row of `GET /nodes`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub peer: String,
    pub direction: &'static str,
    pub state: &'static str,
    /// The peer's hop id, from its SETUP (lite-05+; none on 03/04, which have no SETUP).
    pub hop_id: Option<u64>,
    pub version: Option<&'static str>,
    pub rtt_ms: Option<f64>,
    /// RFC 3339: since when the peer is connected, or not connected.
    pub since: String,
    /// Dials after the first (outbound).
    pub redials: u64,
    /// Broadcasts the peer announces to us now.
    pub routes: u64,
}

fn rtt(session: &Session) -> Option<Duration> {
    session.connection().quic().map(|q| q.rtt())
}

impl Peers {
    /// `linger`: how long an unused label (and its totals) stays (`--metrics-linger`).
    pub fn new(linger: Duration) -> Self {
        let inner = Inner { outbound: BTreeMap::new(), inbound: HashMap::new(), linger, exporter: None };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    /// The exporter whose series a removed peer's link state is dropped from.
    pub fn set_exporter(&self, exporter: Option<moq_telemetry::prometheus::PrometheusHandle>) {
        self.lock().exporter = exporter;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A dialer for the configured peer `label` starts: its traffic counters (the label's, if it
    /// was configured within the linger window) and its series.
    pub fn configured(&self, label: &str) -> (Arc<Traffic>, Arc<PeerSeries>) {
        let mut inner = self.lock();
        let entry = inner.outbound.entry(label.to_string()).or_insert_with(|| Outbound {
            traffic: Arc::default(),
            state: State::Connecting,
            since: SystemTime::now(),
            redials: 0,
            session: None,
            version: None,
            series: Arc::new(PeerSeries::new(label, Direction::Outbound)),
            dialers: 0,
            retired: None,
        });
        entry.dialers += 1;
        if entry.retired.take().is_some() {
            entry.series.revive();
            // Added back: a fresh start, the same totals.
            (entry.state, entry.since, entry.session, entry.version) =
                (State::Connecting, SystemTime::now(), None, None);
        }
        (entry.traffic.clone(), entry.series.clone())
    }

    /// The dialer of `label` stopped (the peer was removed from the configuration).
    pub fn unconfigured(&self, label: &str) {
        let mut inner = self.lock();
        let Inner { outbound, exporter, .. } = &mut *inner;
        if let Some(entry) = outbound.get_mut(label) {
            entry.dialers = entry.dialers.saturating_sub(1);
            if entry.dialers == 0 {
                entry.retired = Some(Instant::now());
                entry.session = None;
                // Its final totals; the counters age out once the entry is forgotten. Its link
                // state goes now: nobody dials it, so it is neither up nor down.
                entry.series.export(false, Totals::of(&entry.traffic), None, 0);
                entry.series.retire(exporter.as_ref());
            }
        }
    }

    /// The dialer of `label` is now in `state`; `session` while connected.
    pub fn set_state(&self, label: &str, state: State, session: Option<&Session>) {
        let mut inner = self.lock();
        let Some(entry) = inner.outbound.get_mut(label) else { return };
        if state == State::Connecting && entry.state != State::Connecting {
            entry.redials += 1;
        }
        // Up since, or down since: a redial going from backoff to connecting changes nothing.
        if (entry.state == State::Connected) != (state == State::Connected) {
            entry.since = SystemTime::now();
        }
        entry.state = state;
        entry.version = session.map(|s| s.version());
        entry.session = session.cloned();
    }

    /// A session with a peer grant started: it is listed under `wanted` (or [`OVERFLOW`] when
    /// the pool is full) until the returned guard drops (which knows the label used).
    pub fn inbound(&self, wanted: &str, session: &Session, traffic: Arc<Traffic>, hop_id: Option<u64>) -> InboundPeer {
        let mut inner = self.lock();
        let now = Instant::now();
        let label = inner.inbound_label(wanted, now);
        let entry = inner.inbound.entry(label.clone()).or_insert_with(|| Inbound {
            sessions: BTreeMap::new(),
            ended: Totals::default(),
            series: PeerSeries::new(&label, Direction::Inbound),
            released: None,
        });
        entry.released = None;
        let id = session.id();
        entry
            .sessions
            .insert(id, InboundSession { session: session.clone(), traffic, since: SystemTime::now(), hop_id });
        InboundPeer { peers: self.clone(), label, id }
    }

    /// Sets every peer series from the live state; call right before rendering a scrape.
    pub fn export(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.expire(now);
        // rtt and routes are per label: a label both dialed and dialing in reports both links.
        let mut links: BTreeMap<Arc<str>, (Option<Duration>, u64)> = BTreeMap::new();
        for (label, o) in inner.outbound.iter().filter(|(_, o)| o.retired.is_none()) {
            let link = links.entry(Arc::from(label.as_str())).or_default();
            link.0 = o.session.as_ref().and_then(rtt);
            link.1 += o.traffic.routes.load(Ordering::Relaxed);
        }
        for (label, i) in &inner.inbound {
            let link = links.entry(label.clone()).or_default();
            for s in i.sessions.values() {
                link.0 = link.0.or_else(|| rtt(&s.session));
                link.1 += s.traffic.routes.load(Ordering::Relaxed);
            }
        }
        for (label, o) in inner.outbound.iter().filter(|(_, o)| o.retired.is_none()) {
            let (rtt, routes) = links.get(label.as_str()).copied().unwrap_or_default();
            o.series.export(o.state == State::Connected, Totals::of(&o.traffic), rtt, routes);
        }
        for (label, i) in &inner.inbound {
            let mut totals = i.ended;
            for s in i.sessions.values() {
                totals.add(Totals::of(&s.traffic));
            }
            let (rtt, routes) = links.get(label).copied().unwrap_or_default();
            i.series.export(!i.sessions.is_empty(), totals, rtt, routes);
        }
    }

    /// The rows of `GET /nodes`: configured peers by label, then inbound peer sessions.
    pub fn nodes(&self) -> Vec<Node> {
        let inner = self.lock();
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let mut nodes = Vec::new();
        for (label, o) in inner.outbound.iter().filter(|(_, o)| o.retired.is_none()) {
            nodes.push(Node {
                peer: label.clone(),
                direction: Direction::Outbound.as_str(),
                state: o.state.as_str(),
                hop_id: o.session.as_ref().and_then(Session::peer_hop),
                version: o.version.map(|v| v.alpn()),
                rtt_ms: o.session.as_ref().and_then(rtt).map(|r| r.as_secs_f64() * 1000.0),
                since: time(o.since),
                redials: o.redials,
                routes: o.traffic.routes.load(Ordering::Relaxed),
            });
        }
        let mut inbound: Vec<(&Arc<str>, &InboundSession)> =
            inner.inbound.iter().flat_map(|(label, i)| i.sessions.values().map(move |s| (label, s))).collect();
        inbound.sort_by(|a, b| a.0.cmp(b.0).then(a.1.since.cmp(&b.1.since)));
        for (label, s) in inbound {
            nodes.push(Node {
                peer: label.to_string(),
                direction: Direction::Inbound.as_str(),
                state: State::Connected.as_str(),
                hop_id: s.hop_id.or_else(|| s.session.peer_hop()),
                version: Some(s.session.version().alpn()),
                rtt_ms: rtt(&s.session).map(|r| r.as_secs_f64() * 1000.0),
                since: time(s.since),
                redials: 0,
                routes: s.traffic.routes.load(Ordering::Relaxed),
            });
        }
        nodes
    }

    /// Configured peers (dialers running) and inbound labels (`in:` before them).
    #[cfg(test)]
    fn labels(&self) -> Vec<String> {
        let inner = self.lock();
        let mut labels: Vec<String> =
            inner.outbound.iter().filter(|(_, o)| o.retired.is_none()).map(|(l, _)| l.clone()).collect();
        labels.extend(inner.inbound.keys().map(|l| format!("in:{l}")));
        labels.sort();
        labels
    }
}

impl Inner {
    /// The pool: `wanted` if it is in use or lingering, or if there is room; else [`OVERFLOW`].
    fn inbound_label(&mut self, wanted: &str, now: Instant) -> Arc<str> {
        if let Some((label, _)) = self.inbound.get_key_value(wanted) {
            return label.clone();
        }
        if wanted == OVERFLOW {
            return Arc::from(OVERFLOW);
        }
        self.expire(now);
        let used = self.inbound.keys().filter(|l| &***l != OVERFLOW).count();
        if used >= INBOUND_LABELS {
            return Arc::from(OVERFLOW);
        }
        Arc::from(wanted)
    }

    /// Forgets inbound labels and retired peers unused for the linger window.
    fn expire(&mut self, now: Instant) {
        let linger = self.linger;
        let gone = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) >= linger);
        self.inbound.retain(|_, i| !(i.sessions.is_empty() && gone(i.released)));
        self.outbound.retain(|_, o| !gone(o.retired));
    }
}

/// An inbound peer session's place in the registry; leaves it when dropped (its traffic then
/// counts into its label's totals).
pub struct InboundPeer {
    peers: Peers,
    label: Arc<str>,
    id: u64,
}

impl InboundPeer {
    /// The label the session is listed under.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for InboundPeer {
    fn drop(&mut self) {
        let mut inner = self.peers.lock();
        if let Some(entry) = inner.inbound.get_mut(&self.label) {
            if let Some(s) = entry.sessions.remove(&self.id) {
                s.traffic.routes.store(0, Ordering::Relaxed);
                entry.ended.add(Totals::of(&s.traffic));
            }
            if entry.sessions.is_empty() {
                entry.released = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_peer_is_listed_in_every_state_and_keeps_its_totals_when_added_back() {
        let peers = Peers::new(Duration::from_secs(60));
        let (traffic, _series) = peers.configured("b:1");
        assert_eq!(peers.labels(), ["b:1"]);
        let node = |peers: &Peers| peers.nodes().into_iter().next().unwrap();
        assert_eq!((node(&peers).state, node(&peers).direction, node(&peers).redials), ("connecting", "outbound", 0));
        peers.set_state("b:1", State::Backoff, None);
        assert_eq!(node(&peers).state, "backoff");
        peers.set_state("b:1", State::Connecting, None);
        assert_eq!((node(&peers).state, node(&peers).redials), ("connecting", 1));
        traffic.routes.store(3, Ordering::Relaxed);
        assert_eq!(node(&peers).routes, 3);
        peers.export();

        // Removed: not listed; added back within the linger window: the same counters.
        peers.unconfigured("b:1");
        assert!(peers.nodes().is_empty() && peers.labels().is_empty());
        let (again, _) = peers.configured("b:1");
        assert!(Arc::ptr_eq(&traffic, &again));
        // A restart (new dialer before the old one stopped) keeps it configured.
        let _ = peers.configured("b:1");
        peers.unconfigured("b:1");
        assert_eq!(peers.labels(), ["b:1"]);
        // The registry forgets a removed peer after the window.
        let peers = Peers::new(Duration::ZERO);
        peers.configured("c:1");
        peers.unconfigured("c:1");
        peers.export();
        assert!(peers.lock().outbound.is_empty());
    }

    fn idle(label: &str) -> Inbound {
        Inbound {
            sessions: BTreeMap::new(),
            ended: Totals::default(),
            series: PeerSeries::new(label, Direction::Inbound),
            released: Some(Instant::now()),
        }
    }

    #[test]
    fn a_removed_peer_leaves_no_link_state_and_is_down_again_when_added_back() {
        let (recorder, exporter) = moq_telemetry::prometheus::Builder::new().build();
        let up = r#"moq_relay_cluster_peer_up{peer="p:1",direction="outbound"}"#;
        metrics::with_local_recorder(&recorder, || {
            let peers = Peers::new(Duration::from_secs(300));
            peers.set_exporter(Some(exporter.clone()));
            let _ = peers.configured("p:1");
            peers.export();
            assert!(exporter.render().contains(&format!("{up} 0")));
            // Removed (the connect-api file dropped it): no series PeerDown could fire on.
            peers.unconfigured("p:1");
            peers.export();
            assert!(!exporter.render().contains(up), "{}", exporter.render());
            let _ = peers.configured("p:1");
            peers.export();
            assert!(exporter.render().contains(&format!("{up} 0")), "{}", exporter.render());
        });
    }

    #[test]
    fn inbound_labels_are_capped_and_freed_after_the_linger_window() {
        let linger = Duration::from_millis(30);
        let peers = Peers::new(linger);
        let mut inner = peers.lock();
        let now = Instant::now();
        for i in 0..INBOUND_LABELS {
            let label = inner.inbound_label(&format!("relay-{i}"), now);
            assert_eq!(&*label, format!("relay-{i}"));
            inner.inbound.insert(label.clone(), idle(&label));
        }
        assert_eq!(&*inner.inbound_label("relay-new", now), OVERFLOW, "the pool is full");
        assert_eq!(&*inner.inbound_label("relay-3", now), "relay-3", "a label in the pool is shared");
        inner.inbound.insert(Arc::from(OVERFLOW), idle(OVERFLOW));
        assert_eq!(&*inner.inbound_label("relay-new", now), OVERFLOW, "_other takes no slot, and none is free");
        assert_eq!(&*inner.inbound_label("relay-new", now + linger * 2), "relay-new", "lingering labels expired");
        assert!(inner.inbound.is_empty());
    }
}
