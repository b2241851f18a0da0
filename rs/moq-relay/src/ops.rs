//! The operator HTTP listener: `GET /metrics` (Prometheus text), `GET /health`, `GET /nodes`
//! (the cluster peers, JSON), and `POST /sessions/{id}/close` (end one session, e.g. an abusive
//! client), behind a bearer token when one is set. Separate from the public listener so it can stay on a private address. Every
//! operator action, and every request refused for a bad token, goes to the audit log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::access::audit::{Audit, AuditRecord};
use crate::access::{Denial, Source};
use crate::cluster::Peers;
use crate::config::Secret;
use crate::telemetry::Telemetry;
use crate::Sessions;

#[derive(Clone)]
struct Ops {
    telemetry: Telemetry,
    token: Option<Arc<Secret>>,
    sessions: Sessions,
    audit: Audit,
    peers: Peers,
}

pub fn router(telemetry: Telemetry, token: Option<Secret>, sessions: Sessions, audit: Audit, peers: Peers) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/nodes", get(nodes))
        .route("/sessions/{id}/close", post(close_session))
        .with_state(Ops { telemetry, token: token.map(Arc::new), sessions, audit, peers })
}

impl Ops {
    /// Whether the request carries the ops token (or none is required); a refusal is audited.
    fn authorized(&self, action: &'static str, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compare digests so the comparison time does not depend on the token's content.
        let ok = Sha256::digest(presented.as_bytes()) == Sha256::digest(token.expose().as_bytes());
        if !ok {
            let detail = if presented.is_empty() { "no ops token" } else { "wrong ops token" };
            let denial = if presented.is_empty() { Denial::NoCredentials } else { Denial::BadSignature };
            self.audit.record(AuditRecord::operator_action(action, method.as_str(), uri.path(), denial).detail(detail));
        }
        ok
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n").into_response()
}

async fn metrics(State(ops): State<Ops>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !ops.authorized("scrape", &method, &uri, &headers) {
        return unauthorized();
    }
    let body = ops.telemetry.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The cluster peers: one row per configured peer (whatever its state) and per inbound peer
/// session (docs/CLUSTER.md).
async fn nodes(State(ops): State<Ops>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !ops.authorized("nodes", &method, &uri, &headers) {
        return unauthorized();
    }
    let body = serde_json::to_string(&ops.peers.nodes()).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Closes one session with the `unauthorized` code: the operator's way to remove a client now.
async fn close_session(
    State(ops): State<Ops>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !ops.authorized("close_session", &method, &uri, &headers) {
        return unauthorized();
    }
    let session = id.parse::<u64>().ok().and_then(|id| ops.sessions.get(id));
    let record = AuditRecord::operator_action("close_session", method.as_str(), uri.path(), Source::Token);
    match session {
        Some(session) => {
            tracing::info!(moq.session.id = session.id(), "session closed by the operator");
            session.close(&moq_lite::Error::Unauthorized);
            ops.audit.record(record.detail("session closed"));
            (StatusCode::OK, "closed\n").into_response()
        }
        None => {
            ops.audit.record(record.detail("no such session"));
            (StatusCode::NOT_FOUND, "no such session\n").into_response()
        }
    }
}
