//! The operator HTTP listener: `GET /metrics` (Prometheus text) and `GET /health`, optionally
//! behind a bearer token. Separate from the public listener so it can stay on a private address.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::telemetry::Telemetry;

#[derive(Clone)]
struct Ops {
    telemetry: Telemetry,
    token: Option<Arc<Secret>>,
}

pub fn router(telemetry: Telemetry, token: Option<Secret>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(Ops { telemetry, token: token.map(Arc::new) })
}

async fn metrics(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    if let Some(token) = &ops.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compare digests so the comparison time does not depend on the token's content.
        if Sha256::digest(presented.as_bytes()) != Sha256::digest(token.expose().as_bytes()) {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
                .into_response();
        }
    }
    let body = ops.telemetry.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
