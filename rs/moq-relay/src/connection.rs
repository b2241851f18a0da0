//! One client connection: handshake, access decision, session run, teardown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use moq_lite::model::{Origin, Scope};
use moq_lite::session::{Session, SessionConfig};
use moq_lite::transport::{Incoming, Server};
use moq_lite::{path, Error};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::telemetry::{SessionAccepted, SessionRejected, Telemetry};
use crate::Sessions;

pub struct Context {
    pub telemetry: Telemetry,
    pub peer_ip: moq_telemetry::redact::PeerIp,
    /// True once shutdown began: sessions ending then left because of GOAWAY.
    pub draining: tokio::sync::watch::Receiver<bool>,
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

    fn try_admit(&self) -> Option<Slot> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        if admitted >= self.max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.admitted.clone()))
    }
}

/// One admitted attempt; frees its place when dropped.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

pub async fn accept_loop(server: Arc<Server>, ctx: Arc<Context>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = server.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        while tasks.try_join_next().is_some() {}
        let Some(slot) = ctx.admission.try_admit() else {
            SessionRejected { reason: "capacity" }.emit();
            // Debug only: under a connection flood an info line per attempt would flood the logs
            // too; the counter carries the rate.
            tracing::debug!(max_sessions = ctx.admission.max, "connection refused: at capacity");
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
            SessionRejected { reason: "handshake_failed" }.emit();
            tracing::debug!(client.address = %peer, error = %e, "handshake failed");
            return;
        }
    };
    let transport = request.transport();
    let root = request.url().map(|u| path::normalize(u.path())).unwrap_or_default();
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);

    // One span per session, named and attributed after OpenTelemetry semantic conventions. A
    // WebTransport client sends its trace context in the CONNECT's `traceparent` header; raw
    // QUIC lite-03/04 carries no request at all, so those sessions start their own trace.
    let span = tracing::info_span!(
        "moq.session",
        moq.session.id = id,
        network.transport = "udp",
        network.protocol.name = "moq-lite",
        network.protocol.version = tracing::field::Empty,
        moq.transport = %transport,
        url.path = %root,
        client.address = %peer,
        moq.worker = worker,
        moq.close.reason = tracing::field::Empty,
    );
    if let Some(traceparent) = request.header("traceparent") {
        moq_telemetry::set_parent(&span, traceparent);
    }

    // Access decision: the URL path must overlap an allow-list. Tokens are not verified yet, and
    // are never logged: only a short hash.
    let token = request.url().and_then(|u| u.query_pairs().find(|(k, _)| k == "jwt").map(|(_, v)| v.into_owned()));
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
            tracing::info!(reason = "auth_failed", token = token.as_deref(), "session rejected");
        }
    }
    if !allowed {
        SessionRejected { reason: "auth_failed" }.emit();
        request.reject(Error::Unauthorized).await;
        return;
    }

    let (conn, version) = match request.accept().await {
        Ok(c) => c,
        Err(e) => {
            SessionRejected { reason: e.kind() }.emit();
            span.in_scope(|| tracing::info!(error = %e, reason = e.kind(), "session rejected"));
            return;
        }
    };
    span.record("network.protocol.version", version.alpn());
    span.in_scope(|| tracing::info!(handshake_ms = started.elapsed().as_millis() as u64, "session opened"));

    let session = Session::new(
        conn,
        version,
        SessionConfig {
            publish: Some(serve),
            subscribe: Some(ingest),
            hop_id: ctx.hop_id,
            max_streams: ctx.max_streams,
        },
    );
    let guard = SessionAccepted { session: session.clone(), transport, version, handshake: started.elapsed() }
        .emit(&ctx.telemetry);
    ctx.sessions.insert(id, session.clone());
    let opened = Instant::now();
    let err = session.run().instrument(span.clone()).await;
    ctx.sessions.remove(id);
    let reason = if *ctx.draining.borrow() { "goaway" } else { close_reason(&err) };
    guard.closed(reason);
    span.record("moq.close.reason", reason);
    let duration_s = opened.elapsed().as_secs_f64();
    span.in_scope(|| {
        if err.is_protocol_violation() {
            tracing::warn!(reason, code = err.code(), error = %err, duration_s, "session closed");
        } else {
            tracing::info!(reason, error = %err, duration_s, "session closed");
        }
    });
}

fn close_reason(err: &Error) -> &'static str {
    match err {
        Error::Closed(msg) if msg.contains("timed out") => "idle_timeout",
        Error::Closed(_) | Error::Cancel => "client_closed",
        Error::GoingAway => "goaway",
        e => e.kind(),
    }
}
