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

use crate::serve::Stopping;
use crate::telemetry::{SessionAccepted, SessionRejected, Telemetry};
use crate::Sessions;

pub struct Context {
    pub telemetry: Telemetry,
    pub peer_ip: moq_telemetry::redact::PeerIp,
    /// True once shutdown began: sessions ending then left because of GOAWAY.
    pub draining: Stopping,
    pub origin: Origin,
    pub publish_allow: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub hop_id: u64,
    /// Streams a peer may keep open at once, per direction (`--max-streams`).
    pub max_streams: u64,
    pub sessions: Sessions,
    pub admission: Admission,
    /// Which thread runs each new connection.
    pub workers: Arc<crate::workers::Workers>,
}

/// The session cap: connection attempts hold a slot from before the handshake until the session
/// ends, so handshakes in flight count too and a flood cannot grow memory past the cap.
pub struct Admission {
    max: usize,
    admitted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Admission {
    pub fn new(max: usize) -> Self {
        Self { max, admitted: Default::default() }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn try_admit(&self) -> Option<Slot> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        if admitted >= self.max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.admitted.clone()))
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
        let Some(slot) = ctx.admission.try_admit() else {
            SessionRejected { max_sessions: Some(ctx.admission.max), ..SessionRejected::new(Reason::Capacity) }.emit();
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        // The handshake runs on the chosen worker, so quinn spawns the connection's driver there.
        let (worker, placement) = ctx.workers.place();
        tasks.spawn_on(
            async move {
                handle(incoming, ctx, placement.worker).await;
                drop((slot, placement));
            },
            &worker,
        );
    }
    // Sessions already running finish under the drain in main.
    tasks.detach_all();
}

async fn handle(incoming: Incoming, ctx: Arc<Context>, worker: usize) {
    let started = Instant::now();
    let remote = incoming.remote_address();
    let peer = ctx.peer_ip.show(remote).unwrap_or_default();
    let request = match incoming.handshake().await {
        Ok(r) => r,
        Err(e) => {
            let rejected = SessionRejected::new(Reason::HandshakeFailed);
            SessionRejected { error: Some(&e), client: Some(&peer), ..rejected }.emit();
            return;
        }
    };
    serve(request, ctx, worker, started, peer).await
}

/// One session request, whatever carried it (QUIC, WebTransport, or a WebSocket upgrade the
/// HTTP listener handed over): access decision, session run, teardown.
pub async fn serve(request: Request, ctx: Arc<Context>, worker: usize, started: Instant, peer: String) {
    let transport = request.transport();
    let traceparent = request.header("traceparent").map(str::to_owned);
    // Raw QUIC lite-05+ carries the request target in the client's SETUP Path, which must be read
    // before the access decision; WebTransport, WebSocket (and lite-03/04 raw QUIC, rooted at "")
    // use the URL.
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
            match read_setup(&conn, version).await {
                Ok(setup) => {
                    (Target::of_setup_path(setup.path.as_deref().unwrap_or("")), Stage::SetUp(conn, version, setup))
                }
                Err(e) => {
                    SessionRejected { error: Some(&e), client: Some(&peer), ..SessionRejected::new(e.reason()) }.emit();
                    conn.close(e.code(), e.to_string().as_bytes());
                    return;
                }
            }
        }
    };
    let root = target.root;
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
        moq.close.reason = tracing::field::Empty,
    );
    if let Some(traceparent) = &traceparent {
        moq_telemetry::set_parent(&span, traceparent);
    }

    // Access decision: the URL path must overlap an allow-list. Tokens are not verified yet, and
    // are never logged: only a short hash.
    let token = target.token;
    let serve = Scope::new(ctx.origin.clone(), &root, ctx.subscribe_allow.clone());
    let ingest = Scope::new(ctx.origin.clone(), &root, ctx.publish_allow.clone());
    let allowed = serve.overlaps("") || ingest.overlaps("");
    {
        let auth = tracing::info_span!(parent: &span, "moq.auth", moq.auth.result = if allowed { "allowed" } else { "denied" });
        let _enter = auth.enter();
        let token = token.as_deref().map(moq_telemetry::redact::secret);
        if allowed {
            tracing::debug!(token = token.as_deref(), "anonymous access granted by allow-list");
        } else {
            SessionRejected { token: token.as_deref(), ..SessionRejected::new(Reason::AuthFailed) }.emit();
        }
    }
    if !allowed {
        match stage {
            Stage::SetUp(conn, _, _) => conn.close(Error::Unauthorized.code(), b"unauthorized"),
            Stage::Requested(request) => request.reject(Error::Unauthorized).await,
        }
        return;
    }

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
            ..Default::default()
        },
    );
    let handshake = started.elapsed();
    let guard =
        span.in_scope(|| SessionAccepted { session: &session, transport, version, handshake }.emit(&ctx.telemetry));
    ctx.sessions.insert(id, session.clone());
    let err = session.run().instrument(span.clone()).await;
    ctx.sessions.remove(id);
    let reason = span.in_scope(|| guard.closed(&err, ctx.draining.began()));
    span.record("moq.close.reason", reason.as_str());
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
    /// The whole query (undecoded, without `?`), for the access layer.
    #[allow(dead_code)] // read by the token-auth work (issue 21)
    query: String,
    token: Option<String>,
}

impl Target {
    fn of_url(url: Option<&url::Url>) -> Self {
        let Some(url) = url else { return Self { root: String::new(), query: String::new(), token: None } };
        let token = url.query_pairs().find(|(k, _)| k == "jwt").map(|(_, v)| v.into_owned());
        Self { root: path::normalize(url.path()), query: url.query().unwrap_or("").to_string(), token }
    }

    fn of_setup_path(target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let token =
            url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "jwt").map(|(_, v)| v.into_owned());
        Self { root: path::normalize(path), query: query.to_string(), token }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

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
}
