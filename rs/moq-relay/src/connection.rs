//! One client connection: handshake, access decision, session run, teardown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use moq_lite::model::{Origin, Scope};
use moq_lite::session::{Session, SessionConfig};
use moq_lite::transport::{Incoming, Server};
use moq_lite::{path, Error};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::telemetry::{SessionAccepted, SessionRejected, Telemetry};
use crate::Sessions;

pub struct Context {
    pub telemetry: Telemetry,
    /// True once shutdown began: sessions ending then left because of GOAWAY.
    pub draining: tokio::sync::watch::Receiver<bool>,
    pub origin: Origin,
    pub publish_allow: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub hop_id: u64,
    pub sessions: Sessions,
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
        tasks.spawn(handle(incoming, ctx.clone()));
    }
    // Sessions already running finish under the drain in main.
    tasks.detach_all();
}

async fn handle(incoming: Incoming, ctx: Arc<Context>) {
    let started = Instant::now();
    let remote = incoming.remote_address();
    let request = match incoming.handshake().await {
        Ok(r) => r,
        Err(e) => {
            SessionRejected { reason: "handshake_failed" }.emit();
            tracing::debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let transport = request.transport();
    let root = request.url().map(|u| path::normalize(u.path())).unwrap_or_default();
    if let Some(token) =
        request.url().and_then(|u| u.query_pairs().find(|(k, _)| k == "jwt").map(|(_, v)| v.into_owned()))
    {
        // Signed tokens are not verified yet; access comes from the allow-lists. Never log the token.
        tracing::debug!(token_sha256 = %short_hash(&token), "ignoring presented token: anonymous access");
    }

    // Peers may subscribe from the subscribe allow-list and publish into the publish allow-list.
    let serve = Scope::new(ctx.origin.clone(), &root, ctx.subscribe_allow.clone());
    let ingest = Scope::new(ctx.origin.clone(), &root, ctx.publish_allow.clone());
    if !serve.overlaps("") && !ingest.overlaps("") {
        SessionRejected { reason: "auth_failed" }.emit();
        tracing::info!(%remote, %transport, root = %root, reason = "auth_failed", "session rejected");
        request.reject(Error::Unauthorized).await;
        return;
    }

    let (conn, version) = match request.accept().await {
        Ok(c) => c,
        Err(e) => {
            SessionRejected { reason: e.kind() }.emit();
            tracing::info!(%remote, %transport, error = %e, reason = e.kind(), "session rejected");
            return;
        }
    };
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id, %transport, version = %version, root = %root);
    let _enter = span.enter();
    tracing::info!(%remote, handshake_ms = started.elapsed().as_millis() as u64, "session opened");
    drop(_enter);

    let session = Session::new(
        conn,
        version,
        SessionConfig { publish: Some(serve), subscribe: Some(ingest), hop_id: ctx.hop_id },
    );
    let guard = SessionAccepted { session: session.clone(), transport, version, handshake: started.elapsed() }
        .emit(&ctx.telemetry);
    ctx.sessions.insert(id, session.clone());
    let opened = Instant::now();
    let err = session.run().await;
    ctx.sessions.remove(id);
    let reason = if *ctx.draining.borrow() { "goaway" } else { close_reason(&err) };
    guard.closed(reason);
    log_close(&span, remote, &err, opened);
}

fn log_close(span: &tracing::Span, remote: SocketAddr, err: &Error, started: Instant) {
    let _enter = span.enter();
    let duration_s = started.elapsed().as_secs_f64();
    if err.is_protocol_violation() {
        tracing::warn!(%remote, reason = "protocol_violation", error = %err, duration_s, "session closed");
    } else {
        tracing::info!(%remote, reason = close_reason(err), error = %err, duration_s, "session closed");
    }
}

fn close_reason(err: &Error) -> &'static str {
    match err {
        Error::Closed(msg) if msg.contains("timed out") => "idle_timeout",
        Error::Closed(_) | Error::Cancel => "client_closed",
        Error::GoingAway => "goaway",
        e => e.kind(),
    }
}

/// A short, irreversible name for a secret, for correlating log lines.
fn short_hash(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..6])
}
