//! The netplay HTTP API on the public listener (docs/netplay.md): JSON in camelCase, CORS like
//! the other public endpoints.
//!
//! - `POST /api/netplay/sessions`: create (201, or an `{"error", "message"}` refusal);
//! - `POST /api/netplay/join`: join (200, or `{"accepted": false, "reason"}`);
//! - `DELETE /api/netplay/sessions/{id}`: end (host token) or leave (participant token), 204.
//!
//! Each request runs in a span named after its operation (`netplay.signaling.create|join|delete`),
//! a child of the client's `traceparent` when it sends one. Nothing under `/api/netplay` is ever
//! taken for a WebSocket session: the router answers all of it.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::sessions::{CreateRefusal, CreateRequest, JoinRefusal, HOST};
use super::{LeaveError, Netplay, PREFIX};
use crate::serve::websocket::Peer;
use crate::telemetry::catalog::NETPLAY_PROVIDER;
use crate::telemetry::netplay::{
    CreateRefused, JoinRefused, ParticipantJoined, SessionCreated, Signaled, TtlRequested,
};

/// What the API's CORS preflights allow.
pub const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// The largest request body read.
pub const MAX_BODY: usize = 16 * 1024;

/// The API's routes, to merge beside the public web routes (outside their WebSocket intercept).
pub fn router(netplay: Arc<Netplay>) -> Router {
    Router::new()
        .route("/api/netplay/sessions", post(create))
        .route("/api/netplay/join", post(join))
        .route("/api/netplay/sessions/{id}", delete(leave))
        .route("/api/netplay", any(not_found))
        .route("/api/netplay/", any(not_found))
        .route("/api/netplay/{*rest}", any(not_found))
        .layer(middleware::from_fn(|request, next| crate::web::cors_allowing(METHODS, request, next)))
        .with_state(netplay)
}

/// The handling span of one signaling request, parented by the client's `traceparent`.
macro_rules! signaling_span {
    ($name:literal, $headers:expr) => {{
        let span = tracing::info_span!(
            $name,
            netplay.provider = NETPLAY_PROVIDER,
            netplay.session.id = tracing::field::Empty,
            netplay.join_code.hash = tracing::field::Empty,
            netplay.participant.id = tracing::field::Empty,
            netplay.result = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(traceparent) = $headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            moq_telemetry::set_parent(&span, traceparent);
        }
        span
    }};
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    session_id: Option<String>,
    ttl_minutes: Option<serde_json::Number>,
    rom_id: Option<String>,
    initiator_user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinBody {
    join_code: String,
    participant_user_id: String,
}

async fn create(State(netplay): State<Arc<Netplay>>, request: Request) -> Response {
    let started = Instant::now();
    let span = signaling_span!("netplay.signaling.create", request.headers());
    let client = client(&request);
    async move {
        let body = match body(request).await {
            Some(b) if b.iter().all(u8::is_ascii_whitespace) => Some(CreateBody::default()),
            Some(b) => serde_json::from_slice::<CreateBody>(&b).ok(),
            None => None,
        };
        let outcome = body
            .ok_or(CreateRefusal::InvalidRequest("the body is not a JSON object with the documented fields"))
            .and_then(|body| {
                let ttl_minutes = body.ttl_minutes.as_ref().and_then(serde_json::Number::as_f64);
                TtlRequested(ttl_minutes.unwrap_or(f64::from(netplay.settings().default_ttl_minutes))).emit();
                let request = CreateRequest {
                    session_id: body.session_id,
                    ttl_minutes,
                    rom_id: body.rom_id,
                    initiator_user_id: body.initiator_user_id,
                };
                netplay.create(&request, client)
            });
        let span = tracing::Span::current();
        let response = match outcome {
            Ok(created) => {
                let code_hash = created.code.hash();
                span.record("netplay.session.id", created.id.as_str());
                span.record("netplay.join_code.hash", code_hash.as_str());
                let latency = started.elapsed();
                SessionCreated { id: &created.id, join_code: &code_hash, ttl_minutes: created.ttl_minutes, latency }
                    .emit();
                let path = format!("{PREFIX}/{}", created.id);
                let body = json!({
                    "sessionId": created.id,
                    "joinCode": created.code.to_string(),
                    "ttlMinutes": created.ttl_minutes,
                    "expiresAt": rfc3339(created.expires),
                    "hostBroadcast": format!("{path}/{HOST}"),
                    "path": path,
                    "hostToken": created.host_token,
                    "provider": NETPLAY_PROVIDER,
                });
                reply(StatusCode::CREATED, body)
            }
            Err(refusal) => {
                let message = refusal.to_string();
                let log = netplay.log_refusal(client);
                let shown = netplay.shown(client);
                CreateRefused { result: refusal.as_str(), message: &message, client: shown.as_deref(), log }.emit();
                let status = match refusal {
                    CreateRefusal::InvalidRequest(_) | CreateRefusal::InvalidTtl { .. } => StatusCode::BAD_REQUEST,
                    CreateRefusal::Conflict => StatusCode::CONFLICT,
                    CreateRefusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    CreateRefusal::Capacity => StatusCode::SERVICE_UNAVAILABLE,
                    CreateRefusal::Error(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                span.record("netplay.result", refusal.as_str());
                error(status, refusal.as_str(), &message)
            }
        };
        finish(&span, "create", started, response)
    }
    .instrument(span.clone())
    .await
}

async fn join(State(netplay): State<Arc<Netplay>>, request: Request) -> Response {
    let started = Instant::now();
    let span = signaling_span!("netplay.signaling.join", request.headers());
    let client = client(&request);
    async move {
        let span = tracing::Span::current();
        let body = body(request).await.and_then(|b| serde_json::from_slice::<JoinBody>(&b).ok());
        let outcome = match &body {
            None => Err(super::sessions::JoinRefused { reason: JoinRefusal::InvalidRequest, session: None }),
            Some(body) => {
                if let Some(code) = super::codes::JoinCode::parse(&body.join_code) {
                    span.record("netplay.join_code.hash", code.hash().as_str());
                }
                span.record("netplay.participant.id", body.participant_user_id.as_str());
                netplay.join(&body.join_code, &body.participant_user_id, client)
            }
        };
        let response = match outcome {
            Ok(joined) => {
                span.record("netplay.session.id", joined.id.as_str());
                span.record("netplay.result", "accepted");
                ParticipantJoined { id: &joined.id, participant: &joined.participant }.emit();
                let path = format!("{PREFIX}/{}", joined.id);
                let body = json!({
                    "accepted": true,
                    "sessionId": joined.id,
                    "participantToken": joined.token,
                    "expiresAt": rfc3339(joined.expires),
                    "hostBroadcast": format!("{path}/{HOST}"),
                    "participantBroadcast": format!("{path}/p/{}", joined.participant),
                    "path": path,
                });
                reply(StatusCode::OK, body)
            }
            Err(refused) => {
                let reason = refused.reason.as_str();
                span.record("netplay.result", reason);
                if let Some(id) = &refused.session {
                    span.record("netplay.session.id", id.as_str());
                }
                // A participant id is logged only once it is known to be a plain one.
                let participant =
                    body.as_ref().map(|b| b.participant_user_id.as_str()).filter(|_| reason != "invalid_request");
                let log = netplay.log_refusal(client);
                let shown = netplay.shown(client);
                JoinRefused { reason, id: refused.session.as_deref(), participant, client: shown.as_deref(), log }
                    .emit();
                let status = match refused.reason {
                    JoinRefusal::UnknownCode => StatusCode::NOT_FOUND,
                    JoinRefusal::Expired => StatusCode::GONE,
                    JoinRefusal::Full | JoinRefusal::Duplicate => StatusCode::CONFLICT,
                    JoinRefusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    JoinRefusal::InvalidRequest => StatusCode::BAD_REQUEST,
                    JoinRefusal::Error => StatusCode::INTERNAL_SERVER_ERROR,
                };
                reply(status, json!({"accepted": false, "reason": reason}))
            }
        };
        finish(&span, "join", started, response)
    }
    .instrument(span.clone())
    .await
}

async fn leave(State(netplay): State<Arc<Netplay>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let span = signaling_span!("netplay.signaling.delete", headers);
    let _entered = span.enter();
    span.record("netplay.session.id", id.as_str());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let response = match netplay.leave(&id, token) {
        Ok(()) => {
            span.record("netplay.result", "ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(LeaveError::UnknownSession) => {
            span.record("netplay.result", "unknown_session");
            error(StatusCode::NOT_FOUND, "unknown_session", "no such netplay session")
        }
        Err(LeaveError::Unauthorized(detail)) => {
            span.record("netplay.result", "unauthorized");
            tracing::debug!(sessionId = id.as_str(), detail, "netplay delete refused");
            let mut response =
                error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid token of this session is needed");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    };
    finish(&span, "delete", started, response)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such netplay endpoint")
}

/// Records the outcome on the span and the handling time.
fn finish(span: &tracing::Span, operation: &'static str, started: Instant, response: Response) -> Response {
    span.record("http.response.status_code", response.status().as_u16());
    Signaled { operation, took: started.elapsed() }.emit();
    response
}

/// The client's address, as the public listener saw it (unspecified when it is not known).
fn client(request: &Request) -> IpAddr {
    request.extensions().get::<Peer>().map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.remote.ip())
}

/// The request body, if it is at most [`MAX_BODY`] bytes.
async fn body(request: Request) -> Option<axum::body::Bytes> {
    axum::body::to_bytes(request.into_body(), MAX_BODY).await.ok()
}

fn reply(status: StatusCode, body: Value) -> Response {
    // Answers carry tokens: never cached.
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")];
    (status, headers, body.to_string()).into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    reply(status, json!({"error": code, "message": message}))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::tests::service;
    use super::super::Settings;
    use super::*;
    use axum::body::Body;
    use std::net::SocketAddr;

    struct Reply {
        status: u16,
        headers: HeaderMap,
        json: Value,
    }

    /// One request through the API router, from `from`.
    async fn call(router: &Router, method: &str, uri: &str, body: &str, headers: &[(&str, &str)], from: &str) -> Reply {
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let remote: SocketAddr = format!("{from}:40000").parse().unwrap();
        let request = request.extension(Peer { remote, tls: false }).body(Body::from(body.to_string())).unwrap();
        let response = tower_service::Service::call(&mut router.clone(), request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, headers, json }
    }

    const A: &str = "192.0.2.1";

    async fn post(router: &Router, uri: &str, body: &str) -> Reply {
        call(router, "POST", uri, body, &[("content-type", "application/json")], A).await
    }

    #[tokio::test]
    async fn create_answers_per_the_spec() {
        let router = router(service());
        let reply = post(
            &router,
            "/api/netplay/sessions",
            r#"{"ttlMinutes": 30, "romId": "smb3", "initiatorUserId": "alice"}"#,
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.json);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["access-control-allow-origin"], "*");
        assert_eq!(reply.headers["cache-control"], "no-store");
        let j = &reply.json;
        let id = j["sessionId"].as_str().unwrap();
        assert!(super::super::codes::parse_session_id(id).is_some());
        let code = j["joinCode"].as_str().unwrap();
        assert!(super::super::codes::JoinCode::parse(code).is_some() && code.len() == 9, "{code}");
        assert_eq!(j["ttlMinutes"], 30);
        assert!(humantime::parse_rfc3339(j["expiresAt"].as_str().unwrap()).is_ok());
        assert_eq!(j["path"], format!("netplay/{id}"));
        assert_eq!(j["hostBroadcast"], format!("netplay/{id}/host"));
        assert_eq!(j["provider"], "moq-relay");
        assert_eq!(j["hostToken"].as_str().unwrap().split('.').count(), 3);

        // The client's own id; again: conflict.
        let body = r#"{"sessionId": "0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2d"}"#;
        let reply = post(&router, "/api/netplay/sessions", body).await;
        assert_eq!(
            (reply.status, reply.json["sessionId"].as_str()),
            (201, Some("0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2d"))
        );
        assert_eq!(reply.json["ttlMinutes"], 60, "the default");
        let reply = post(&router, "/api/netplay/sessions", body).await;
        assert_eq!((reply.status, &reply.json["error"]), (409, &json!("conflict")));
        assert!(reply.json["message"].is_string());

        // An empty body is a create with every default.
        assert_eq!(post(&router, "/api/netplay/sessions", "").await.status, 201);

        for (body, status, code) in [
            (r#"{"ttlMinutes": 1}"#, 400, "invalid_ttl"),
            (r#"{"ttlMinutes": 241}"#, 400, "invalid_ttl"),
            (r#"{"ttlMinutes": 2.5}"#, 400, "invalid_ttl"),
            (r#"{"ttlMinutes": 1e300}"#, 400, "invalid_ttl"),
            (r#"{"ttlMinutes": -30}"#, 400, "invalid_ttl"),
            (r#"{"ttlMinutes": "30"}"#, 400, "invalid_request"),
            (r#"{"sessionId": "nope"}"#, 400, "invalid_request"),
            (r#"{"romId": "a/b"}"#, 400, "invalid_request"),
            ("[]", 400, "invalid_request"),
            ("{", 400, "invalid_request"),
        ] {
            let reply = post(&router, "/api/netplay/sessions", body).await;
            assert_eq!((reply.status, reply.json["error"].as_str()), (status, Some(code)), "{body}");
        }
        let huge = format!(r#"{{"romId": "{}"}}"#, "a".repeat(MAX_BODY));
        assert_eq!(post(&router, "/api/netplay/sessions", &huge).await.json["error"], "invalid_request");
    }

    #[tokio::test]
    async fn create_refuses_past_the_rate_and_at_capacity() {
        let settings = Settings { enabled: true, max_sessions: 6, ..Default::default() };
        let netplay = Netplay::new(settings, crate::Sessions::default()).unwrap();
        let router = router(netplay);
        for _ in 0..5 {
            assert_eq!(post(&router, "/api/netplay/sessions", "{}").await.status, 201);
        }
        let reply = post(&router, "/api/netplay/sessions", "{}").await;
        assert_eq!((reply.status, reply.json["error"].as_str()), (429, Some("rate_limited")));
        let other = call(&router, "POST", "/api/netplay/sessions", "{}", &[], "198.51.100.1").await;
        assert_eq!(other.status, 201);
        let full = call(&router, "POST", "/api/netplay/sessions", "{}", &[], "198.51.100.2").await;
        assert_eq!((full.status, full.json["error"].as_str()), (503, Some("capacity")));
    }

    #[tokio::test]
    async fn join_answers_per_the_spec() {
        let settings = Settings {
            enabled: true,
            max_participants: 1,
            create_rate: "1000/s:1000".parse().unwrap(),
            ..Default::default()
        };
        let router = router(Netplay::new(settings, crate::Sessions::default()).unwrap());
        let created = post(&router, "/api/netplay/sessions", "{}").await.json;
        let (id, code) = (created["sessionId"].as_str().unwrap(), created["joinCode"].as_str().unwrap());
        let typed = code.to_lowercase().replace('-', "");
        let body = format!(r#"{{"joinCode": "{typed}", "participantUserId": "bob"}}"#);
        let reply = post(&router, "/api/netplay/join", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        let j = &reply.json;
        assert_eq!((j["accepted"].as_bool(), j["sessionId"].as_str()), (Some(true), Some(id)));
        assert_eq!(j["path"], format!("netplay/{id}"));
        assert_eq!(j["hostBroadcast"], format!("netplay/{id}/host"));
        assert_eq!(j["participantBroadcast"], format!("netplay/{id}/p/bob"));
        assert_eq!(j["expiresAt"], created["expiresAt"]);
        assert_eq!(j["participantToken"].as_str().unwrap().split('.').count(), 3);

        let refused = |status: u16, reason: &str| (status, json!({"accepted": false, "reason": reason}));
        let join = |code: &str, who: &str| format!(r#"{{"joinCode": "{code}", "participantUserId": "{who}"}}"#);
        assert_eq!(
            {
                let r = post(&router, "/api/netplay/join", &join(code, "bob")).await;
                (r.status, r.json)
            },
            refused(409, "duplicate")
        );
        let r = post(&router, "/api/netplay/join", &join(code, "carol")).await;
        assert_eq!((r.status, r.json), refused(409, "full"));
        let r = post(&router, "/api/netplay/join", &join("2345-6789", "carol")).await;
        assert_eq!((r.status, r.json), refused(404, "unknown_code"));
        let r = post(&router, "/api/netplay/join", &join(code, "carol")).await;
        assert_eq!((r.status, r.json), refused(409, "full"));
        // Five attempts a burst from one address: the sixth is refused.
        let r = post(&router, "/api/netplay/join", &join(code, "dave")).await;
        assert_eq!((r.status, r.json), refused(429, "rate_limited"));
        for (body, from) in [
            (join(code, "host"), "198.51.100.1"),
            (join(code, "a b"), "198.51.100.2"),
            (join("nope", "erin"), "198.51.100.3"),
            (r#"{"joinCode": "ABCD-EFGH"}"#.to_string(), "198.51.100.4"),
            ("{".to_string(), "198.51.100.5"),
        ] {
            let r = call(&router, "POST", "/api/netplay/join", &body, &[], from).await;
            assert_eq!((r.status, r.json), refused(400, "invalid_request"), "{body}");
        }

        // The host ends it: the code then answers expired.
        let token = created["hostToken"].as_str().unwrap();
        let bearer = format!("Bearer {token}");
        let r =
            call(&router, "DELETE", &format!("/api/netplay/sessions/{id}"), "", &[("authorization", &bearer)], A).await;
        assert_eq!(r.status, 204);
        let r = call(&router, "POST", "/api/netplay/join", &join(code, "erin"), &[], "198.51.100.9").await;
        assert_eq!((r.status, r.json), refused(410, "expired"));
    }

    #[tokio::test]
    async fn delete_answers_per_the_spec() {
        let router = router(service());
        let created = post(&router, "/api/netplay/sessions", "{}").await.json;
        let id = created["sessionId"].as_str().unwrap();
        let code = created["joinCode"].as_str().unwrap();
        let joined =
            post(&router, "/api/netplay/join", &format!(r#"{{"joinCode": "{code}", "participantUserId": "bob"}}"#))
                .await
                .json;
        let uri = format!("/api/netplay/sessions/{id}");
        let delete = |token: &str| {
            let bearer = format!("Bearer {token}");
            let (router, uri) = (router.clone(), uri.clone());
            async move { call(&router, "DELETE", &uri, "", &[("authorization", &bearer)], A).await }
        };

        let r = call(&router, "DELETE", &uri, "", &[], A).await;
        assert_eq!((r.status, r.json["error"].as_str()), (401, Some("unauthorized")));
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        assert_eq!(delete("garbage").await.status, 401);
        let r = call(&router, "DELETE", "/api/netplay/sessions/nope", "", &[], A).await;
        assert_eq!((r.status, r.json["error"].as_str()), (404, Some("unknown_session")));

        // A participant leaves; the session goes on; its token is spent.
        assert_eq!(delete(joined["participantToken"].as_str().unwrap()).await.status, 204);
        assert_eq!(delete(joined["participantToken"].as_str().unwrap()).await.status, 401);
        // The host ends it.
        assert_eq!(delete(created["hostToken"].as_str().unwrap()).await.status, 204);
        assert_eq!(delete(created["hostToken"].as_str().unwrap()).await.status, 404);
    }

    #[tokio::test]
    async fn preflights_unknown_paths_and_methods() {
        let router = router(service());
        let preflight = [("origin", "https://app.example"), ("access-control-request-method", "DELETE")];
        let r = call(&router, "OPTIONS", "/api/netplay/sessions/x", "", &preflight, A).await;
        assert_eq!(r.status, 204);
        assert_eq!(r.headers["access-control-allow-methods"], METHODS);
        assert_eq!(r.headers["access-control-allow-origin"], "*");
        for path in ["/api/netplay", "/api/netplay/", "/api/netplay/nope", "/api/netplay/sessions/a/b"] {
            let r = call(&router, "GET", path, "", &[], A).await;
            assert_eq!((r.status, r.json["error"].as_str()), (404, Some("not_found")), "{path}");
        }
        assert_eq!(call(&router, "GET", "/api/netplay/sessions", "", &[], A).await.status, 405);
    }

    /// Merged beside the web routes behind their WebSocket intercept (as lib.rs does), an upgrade
    /// request to the API reaches the API, and anything else still reaches the intercept.
    #[tokio::test]
    async fn the_api_is_never_taken_for_a_websocket_session() {
        let intercepted = |_: Request, _: middleware::Next| async { StatusCode::IM_A_TEAPOT.into_response() };
        let web = Router::new().fallback(|| async { "web" }).layer(middleware::from_fn(intercepted));
        let public = web.merge(router(service()));
        let upgrade = [("upgrade", "websocket"), ("connection", "upgrade")];
        let r = call(&public, "POST", "/api/netplay/sessions", "{}", &upgrade, A).await;
        assert_eq!(r.status, 201);
        let r = call(&public, "GET", "/api/netplay/whatever", "", &upgrade, A).await;
        assert_eq!(r.status, 404);
        let r = call(&public, "GET", "/demo/room", "", &upgrade, A).await;
        assert_eq!(r.status, 418);
    }
}
