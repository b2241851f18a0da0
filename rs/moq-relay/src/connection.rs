//! One client connection: handshake, access decision, session run, teardown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use moq_lite::model::{Origin, Scope};
use moq_lite::session::{read_setup, Session, SessionConfig};
use moq_lite::telemetry::Reason;
use moq_lite::transport::{Incoming, Request, Server, Transport};
use moq_lite::{path, Error};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::access::audit::{AuditContext, TokenHash};
use crate::access::auth_server::AuthRequest;
use crate::access::gate::Gatekeeper;
use crate::access::limits::{AddressSlot, Limit};
use crate::access::policy::{query_token, Access};
use crate::serve::Stopping;
use crate::telemetry::cluster::{Direction, PeerConnected, PeerLost};
use crate::telemetry::{SessionAccepted, SessionRejected, Telemetry};
use crate::Sessions;

pub struct Context {
    pub telemetry: Telemetry,
    pub peer_ip: moq_telemetry::redact::PeerIp,
    /// True once shutdown began: sessions ending then left because of GOAWAY.
    pub draining: Stopping,
    pub origin: Origin,
    /// Access decisions, limits and the audit trail.
    pub gate: Arc<Gatekeeper>,
    pub hop_id: u64,
    /// Longest hop chain accepted or forwarded (`--cluster-max-hops`).
    pub max_hops: usize,
    /// Streams a peer may keep open at once, per direction (`--max-streams`).
    pub max_streams: u64,
    pub sessions: Sessions,
    pub admission: Admission,
    /// Which thread runs each new connection.
    pub workers: Arc<crate::workers::Workers>,
    /// Netplay rooms (`--netplay`), told when their members' sessions open and close.
    pub netplay: Option<Arc<crate::netplay::Netplay>>,
    /// Cluster peer links, where sessions with a peer grant are listed while they run.
    pub peers: crate::cluster::Peers,
}

/// The door: the session cap and the memory budget. Connection attempts hold a slot from before
/// the handshake until the session ends, so handshakes in flight count too and a flood cannot
/// grow memory past the cap; while resident memory is over the budget no new attempt is let in
/// (sessions already in keep running: refusing newcomers is what lets them keep their latency).
pub struct Admission {
    max: usize,
    admitted: Arc<std::sync::atomic::AtomicUsize>,
    memory: Option<MemoryBudget>,
}

/// Why the door stayed shut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `--max-sessions` sessions (or handshakes) are in already.
    Capacity { max: usize },
    /// Resident memory is over `--memory-budget-mib`.
    Memory { resident: u64, budget: u64 },
}

impl Refused {
    /// Counts and logs the refusal.
    pub(crate) fn emit(self) {
        match self {
            Refused::Capacity { max } => {
                SessionRejected { max_sessions: Some(max), ..SessionRejected::new(Reason::Capacity) }.emit()
            }
            Refused::Memory { resident, budget } => {
                SessionRejected { memory: Some((resident, budget)), ..SessionRejected::new(Reason::Memory) }.emit()
            }
        }
    }
}

/// Resident memory against a budget, read from /proc at most every [`MEMORY_SAMPLE_EVERY`] so a
/// connection flood does not turn into a flood of /proc reads.
struct MemoryBudget {
    budget: u64,
    resident: std::sync::atomic::AtomicU64,
    /// When `resident` was read, in milliseconds since `epoch`; `u64::MAX` before the first read.
    read_at_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

const MEMORY_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl MemoryBudget {
    fn resident(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        let read_at = self.read_at_ms.load(Ordering::Acquire);
        let stale = read_at == u64::MAX || now.saturating_sub(read_at) >= MEMORY_SAMPLE_EVERY.as_millis() as u64;
        // One caller refreshes; the others use the reading it replaces (at most 100 ms old).
        if stale && self.read_at_ms.compare_exchange(read_at, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if let Ok(resident) = moq_telemetry::process::resident_bytes() {
                self.resident.store(resident, Ordering::Release);
            }
        }
        self.resident.load(Ordering::Acquire)
    }
}

impl Admission {
    /// At most `max` sessions at once; with a `memory_budget` (bytes), none admitted while
    /// resident memory is above it.
    pub fn new(max: usize, memory_budget: Option<u64>) -> Self {
        let memory = memory_budget.map(|budget| MemoryBudget {
            budget,
            resident: Default::default(),
            read_at_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        });
        Self { max, admitted: Default::default(), memory }
    }

    pub(crate) fn try_admit(&self) -> Result<Slot, Refused> {
        if let Some(memory) = &self.memory {
            let resident = memory.resident();
            if resident > memory.budget {
                return Err(Refused::Memory { resident, budget: memory.budget });
            }
        }
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        if admitted >= self.max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Capacity { max: self.max });
        }
        Ok(Slot(self.admitted.clone()))
    }
}

/// One admitted attempt; frees its place when dropped.
pub(crate) struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn accept_loop(server: Arc<Server>, ctx: Arc<Context>, mut stop: Stopping) {
    let mut tasks = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = server.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            _ = stop.wait() => break,
        };
        while tasks.try_join_next().is_some() {}
        let slot = match ctx.admission.try_admit() {
            Ok(slot) => slot,
            Err(refused) => {
                refused.emit();
                incoming.refuse();
                continue;
            }
        };
        let Some(address) = ctx.admit_address(incoming.remote_address(), Transport::Quic) else {
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        // The handshake runs on the chosen worker, so quinn spawns the connection's driver there.
        let (worker, placement) = ctx.workers.place();
        tasks.spawn_on(
            async move {
                handle(incoming, ctx, placement.worker, address).await;
                drop((slot, placement));
            },
            &worker,
        );
    }
    // Sessions already running finish under the drain in main.
    tasks.detach_all();
}

impl Context {
    /// The address limits for a new connection from `remote`; `None` (counted, logged, audited)
    /// when the client is over its share.
    pub fn admit_address(&self, remote: std::net::SocketAddr, transport: Transport) -> Option<AddressSlot> {
        let client = self.peer_ip.show(remote);
        let audit = AuditContext::default().client(client.as_deref()).transport(transport);
        let slot = self.gate.admit_address(remote.ip(), &audit);
        if slot.is_none() {
            SessionRejected { client: client.as_deref(), ..SessionRejected::new(Reason::Limit) }.emit();
        }
        slot
    }

    /// A client that did not finish its handshake in time.
    fn handshake_timed_out(&self, peer: &str, transport: Transport) {
        let audit = AuditContext::default().client(Some(peer)).transport(transport);
        self.gate.limit_hit(&audit, Limit::HandshakeTimeout);
        SessionRejected { client: Some(peer), ..SessionRejected::new(Reason::Limit) }.emit();
    }
}

async fn handle(incoming: Incoming, ctx: Arc<Context>, worker: usize, address: AddressSlot) {
    let started = Instant::now();
    let remote = incoming.remote_address();
    let peer = ctx.peer_ip.show(remote).unwrap_or_default();
    let deadline = ctx.gate.limits.limits().handshake_timeout;
    let request = match tokio::time::timeout(deadline, incoming.handshake()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let rejected = SessionRejected::new(Reason::HandshakeFailed);
            SessionRejected { error: Some(&e), client: Some(&peer), ..rejected }.emit();
            return;
        }
        Err(_) => return ctx.handshake_timed_out(&peer, Transport::Quic),
    };
    serve(request, ctx, worker, started, peer, address).await
}

/// One session request, whatever carried it (QUIC, WebTransport, or a WebSocket upgrade the
/// HTTP listener handed over): access decision, session run, teardown. `address` is the client's
/// place in the per-address limits, held until the session ends.
pub async fn serve(
    request: Request,
    ctx: Arc<Context>,
    worker: usize,
    started: Instant,
    peer: String,
    address: AddressSlot,
) {
    let transport = request.transport();
    let remote = request.remote_address();
    let traceparent = request.header("traceparent").map(str::to_owned);
    let server_name = request.url().and_then(|u| u.host_str()).map(str::to_owned);
    // Raw QUIC lite-05+ carries the request target in the client's SETUP Path, which must be read
    // before the access decision (within what is left of the handshake deadline); WebTransport,
    // WebSocket (and lite-03/04 raw QUIC, rooted at "") use the URL.
    let (target, stage) = match request.version().filter(|v| transport == Transport::Quic && v.has_setup()) {
        None => (Target::of_url(request.url()), Stage::Requested(request)),
        Some(_) => {
            let (conn, version) = match request.accept().await {
                Ok(c) => c,
                Err(e) => {
                    SessionRejected { error: Some(&e), client: Some(&peer), ..SessionRejected::new(e.reason()) }.emit();
                    return;
                }
            };
            let left = ctx.gate.limits.limits().handshake_timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, read_setup(&conn, version)).await {
                Ok(Ok(setup)) => {
                    (Target::of_setup_path(setup.path.as_deref().unwrap_or("")), Stage::SetUp(conn, version, setup))
                }
                Ok(Err(e)) => {
                    SessionRejected { error: Some(&e), client: Some(&peer), ..SessionRejected::new(e.reason()) }.emit();
                    conn.close(e.code(), e.to_string().as_bytes());
                    return;
                }
                Err(_) => {
                    conn.close(Error::Unauthorized.code(), b"no SETUP in time");
                    return ctx.handshake_timed_out(&peer, transport);
                }
            }
        }
    };
    let root = target.root.clone();
    // The one id of this session: its span, moq-lite's log lines and the QUIC stats all use it.
    let id = moq_lite::session::next_id();

    // One span per session, named and attributed after OpenTelemetry semantic conventions. A
    // WebTransport client sends its trace context in the CONNECT's `traceparent` header; raw
    // QUIC lite-03/04 carries no request at all, so those sessions start their own trace. A
    // WebSocket upgrade may carry it as a header too.
    let span = tracing::info_span!(
        "moq.session",
        moq.session.id = id,
        network.transport = if transport == Transport::WebSocket { "tcp" } else { "udp" },
        network.protocol.name = "moq-lite",
        network.protocol.version = tracing::field::Empty,
        moq.transport = %transport,
        url.path = %root,
        client.address = %peer,
        moq.worker = worker,
        moq.cluster.peer = tracing::field::Empty,
        moq.close.reason = tracing::field::Empty,
    );
    if let Some(traceparent) = &traceparent {
        moq_telemetry::set_parent(&span, traceparent);
    }

    // The access decision. The token is never logged: only its short hash.
    let audit = AuditContext::session(id)
        .client(Some(&peer))
        .transport(transport)
        .path(&root)
        .token(target.token.as_deref().map(TokenHash::of));
    let auth_request = AuthRequest {
        id: format!("{:016x}{id:016x}", crate::random_u64()),
        node: ctx.gate.node.clone(),
        transport: if transport == Transport::WebSocket { AuthRequest::WEBSOCKET } else { AuthRequest::QUIC },
        remote: Some(remote),
        local: None,
        server_name,
        alpn: request_alpn(&stage),
        path: root.clone(),
        query: Some(target.query.clone()).filter(|q| !q.is_empty()),
        role: None,
    };
    let auth_span = tracing::info_span!(
        parent: &span,
        "moq.auth",
        moq.auth.result = tracing::field::Empty,
        moq.auth.reason = tracing::field::Empty,
        moq.auth.token = audit.token.as_ref().map(|t| t.as_str()),
        moq.auth.publish = tracing::field::Empty,
        moq.auth.subscribe = tracing::field::Empty,
    );
    let access = Access { dialed: &root, token: target.token.as_deref(), request: &auth_request };
    let decided = ctx.gate.decide(&audit, &access).instrument(auth_span.clone()).await;
    let admitted = match decided {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let reason =
                if refusal.denial == crate::access::Denial::Limit { Reason::Limit } else { Reason::AuthFailed };
            span.in_scope(|| SessionRejected { error: Some(&refusal), ..SessionRejected::new(reason) }.emit());
            match stage {
                Stage::SetUp(conn, _, _) => conn.close(Error::Unauthorized.code(), b"unauthorized"),
                Stage::Requested(request) => request.reject(Error::Unauthorized).await,
            }
            return;
        }
    };
    let audit = audit.subject(admitted.grant.subject.as_deref());
    let serve = Scope::new(ctx.origin.clone(), &root, admitted.grant.subscribe.clone());
    let ingest = Scope::new(ctx.origin.clone(), &root, admitted.grant.publish.clone());

    let (conn, version, peer_setup) = match stage {
        Stage::SetUp(conn, version, setup) => (conn, version, Some(setup)),
        Stage::Requested(request) => match request.accept().await {
            Ok((conn, version)) => (conn, version, None),
            Err(e) => {
                span.in_scope(|| SessionRejected { error: Some(&e), ..SessionRejected::new(e.reason()) }.emit());
                return;
            }
        },
    };
    span.record("network.protocol.version", version.alpn());

    let limits = ctx.gate.limits.limits();
    // A peer relay's session (a peer grant) counts its traffic for the peer metrics; its hop id
    // is known here when it came in the SETUP read above (raw QUIC lite-05+).
    let traffic = admitted.grant.peer.then(|| Arc::new(moq_lite::session::Traffic::default()));
    let peer_hop = peer_setup.as_ref().and_then(|s| s.hop).filter(|h| *h != 0);
    let session = Session::new(
        conn,
        version,
        SessionConfig {
            publish: Some(serve),
            subscribe: Some(ingest),
            hop_id: ctx.hop_id,
            max_streams: ctx.max_streams,
            telemetry: ctx.telemetry.transport().clone(),
            id: Some(id),
            peer_setup,
            max_announces: limits.announces_per_session,
            max_subscriptions: limits.subscriptions_per_session,
            gate: Some(span.in_scope(|| ctx.gate.session_gate(audit.clone()))),
            trace: Some(crate::telemetry::TRACE_PROPAGATION),
            traffic: traffic.clone(),
            max_hops: ctx.max_hops,
            ..Default::default()
        },
    );
    let handshake = started.elapsed();
    let guard =
        span.in_scope(|| SessionAccepted { session: &session, transport, version, handshake }.emit(&ctx.telemetry));
    ctx.sessions.insert(id, session.clone(), admitted.grant.subject.clone());
    // Listed as an inbound cluster peer (by its grant's subject, else its address) while it runs.
    let inbound = traffic.map(|traffic| {
        let wanted =
            admitted.grant.subject.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| match peer.is_empty() {
                true => "_anonymous".to_string(),
                false => peer.clone(),
            });
        let inbound = ctx.peers.inbound(&wanted, &session, traffic, peer_hop);
        span.record("moq.cluster.peer", inbound.label());
        span.in_scope(|| {
            PeerConnected {
                peer: inbound.label(),
                direction: Direction::Inbound,
                url: None,
                version,
                hop_id: peer_hop,
                rtt: session.connection().quic().map(|q| q.rtt()),
                series: None,
            }
            .emit()
        });
        inbound
    });
    // A netplay member is present in its room while this runs (registered above first, so a room
    // ending from now on finds it to close; one that ended since the decision closes it here).
    let presence = ctx
        .netplay
        .as_ref()
        .and_then(|n| n.opened(target.token.as_deref(), admitted.grant.subject.as_deref(), &session));
    let opened = Instant::now();
    // The session runs until it ends by itself or its right ends (expiry, revocation).
    let watch = ctx.gate.watch(&audit, &admitted.grant, &auth_request);
    let err = async {
        let run = session.run();
        tokio::pin!(run);
        tokio::select! {
            err = &mut run => err,
            _ = watch => {
                session.close(&Error::Unauthorized);
                // Let the session notice and wind down its tasks.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut run).await;
                Error::Unauthorized
            }
        }
    }
    .instrument(span.clone())
    .await;
    ctx.sessions.remove(id);
    if let Some(inbound) = &inbound {
        let expected = ctx.draining.began() || crate::telemetry::cluster::left_on_purpose(&err);
        let (peer, after) = (inbound.label(), opened.elapsed());
        span.in_scope(|| PeerLost { peer, direction: Direction::Inbound, error: &err, after, expected }.emit());
    }
    let reason = span.in_scope(|| guard.closed(&err, ctx.draining.began()));
    span.record("moq.close.reason", reason.as_str());
    let (sent, received) = session
        .connection()
        .quic()
        .map(|q| {
            let stats = q.stats();
            (stats.udp_tx.bytes, stats.udp_rx.bytes)
        })
        .unwrap_or_default();
    ctx.gate.ended(auth_request, reason.as_str(), opened.elapsed(), sent, received);
    drop((admitted, address, presence, inbound));
}

/// The negotiated ALPN of a request, for the auth server.
fn request_alpn(stage: &Stage) -> Option<String> {
    match stage {
        Stage::SetUp(_, version, _) => Some(version.alpn().to_string()),
        Stage::Requested(request) => request.version().map(|v| v.alpn().to_string()),
    }
}

/// How far a session request got before the access decision.
// One per session request, held only across the access decision: boxing saves nothing.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Not answered yet (WebTransport CONNECT, WebSocket upgrade, raw QUIC before lite-05).
    Requested(Request),
    /// Raw QUIC lite-05+: accepted, and the client's SETUP read.
    SetUp(moq_lite::session::Connection, moq_lite::Version, moq_lite::message::Setup),
}

/// What a session asks for: its root path and the credential in the query (`?jwt=`), from the
/// WebTransport CONNECT URL or the SETUP Path (`path?query`) of a raw-QUIC lite-05+ client.
struct Target {
    root: String,
    /// The whole query (undecoded, without `?`), for the auth server.
    query: String,
    token: Option<String>,
}

impl Target {
    fn of_url(url: Option<&url::Url>) -> Self {
        let Some(url) = url else { return Self { root: String::new(), query: String::new(), token: None } };
        let query = url.query().unwrap_or("").to_string();
        Self { root: path::normalize(url.path()), token: query_token(&query), query }
    }

    fn of_setup_path(target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self { root: path::normalize(path), query: query.to_string(), token: query_token(query) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_path_splits_into_root_and_token() {
        let t = Target::of_setup_path("/demo/room/?jwt=a%2Bb&x=1");
        assert_eq!((t.root.as_str(), t.token.as_deref()), ("demo/room", Some("a+b")));
        assert_eq!(t.query, "jwt=a%2Bb&x=1");
        let t = Target::of_setup_path("");
        assert_eq!((t.root.as_str(), t.token), ("", None));
        let url = url::Url::parse("https://relay:443/live?jwt=t").unwrap();
        let t = Target::of_url(Some(&url));
        assert_eq!((t.root.as_str(), t.token.as_deref()), ("live", Some("t")));
    }

    #[test]
    fn the_door_counts_slots_and_reads_memory_against_the_budget() {
        let door = Admission::new(2, None);
        let (a, b) = (door.try_admit().unwrap(), door.try_admit().unwrap());
        assert_eq!(door.try_admit().err(), Some(Refused::Capacity { max: 2 }));
        drop(a);
        let _c = door.try_admit().expect("a freed slot admits again");
        drop(b);

        // Any running process is resident over one byte, and under an exabyte.
        match Admission::new(10, Some(1)).try_admit() {
            Err(Refused::Memory { resident, budget: 1 }) => assert!(resident > 1),
            other => panic!("expected a memory refusal, got {:?}", other.map(|_| ())),
        }
        assert!(Admission::new(10, Some(1 << 60)).try_admit().is_ok());
    }
}
