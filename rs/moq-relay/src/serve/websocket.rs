//! WebSocket upgrades on the public HTTP listener: a `GET` with `Upgrade: websocket` at any path
//! is a moq-lite session request, rooted at that path with its query (`?jwt=`) going to the
//! access decision exactly as a WebTransport CONNECT's. The sub-protocol (`qmux-01.<alpn>`)
//! names the moq version; nothing else does. The upgrade is answered only once `connection.rs`
//! has decided: 101 with the chosen sub-protocol, or the refusal's HTTP status.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moq_lite::transport::websocket::{self, Upgrade};
use moq_lite::transport::WebSocketOptions;
use moq_lite::Version;
use qmux::ws::tungstenite::handshake::derive_accept_key;
use tokio::sync::oneshot;
use url::Url;

use crate::connection::{self, Context, Refused};
use crate::telemetry::{UpgradeFailure, WebSocketUpgradeFailed};

/// What the listener knows of the connection a request arrived on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// Turns WebSocket upgrades into sessions; cheap to clone.
#[derive(Clone)]
pub struct WebSockets {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Context>,
    versions: Vec<Version>,
    options: WebSocketOptions,
}

impl WebSockets {
    pub fn new(ctx: Arc<Context>, versions: Vec<Version>, options: WebSocketOptions) -> Self {
        Self { inner: Arc::new(Inner { ctx, versions, options }) }
    }
}

/// Router middleware: an upgrade to WebSocket at any path is a session request; every other
/// request goes on to the routes.
pub async fn intercept(State(ws): State<WebSockets>, request: Request, next: Next) -> Response {
    if !has_token(request.headers(), header::UPGRADE, "websocket") {
        return next.run(request).await;
    }
    ws.upgrade(request).await
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The request's URL: its path and query as sent (the session root and the credential); the
/// host is informational.
fn request_url(request: &Request, tls: bool) -> Option<Url> {
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if !path.starts_with('/') {
        return None;
    }
    let scheme = if tls { "wss" } else { "ws" };
    let mut url = Url::parse(&format!("{scheme}://relay{path}")).ok()?;
    if let Some(host) = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
        let host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
        let _ = url.set_host(Some(host));
    }
    Some(url)
}

impl WebSockets {
    async fn upgrade(&self, mut request: Request) -> Response {
        let ctx = &self.inner.ctx;
        let peer = request.extensions().get::<Peer>().copied();
        let remote = peer.map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.remote);
        let client = ctx.peer_ip.show(remote).unwrap_or_default();
        let refuse = |reason: UpgradeFailure, error: &dyn Display, status: StatusCode| {
            WebSocketUpgradeFailed { reason, error: Some(error), client: Some(&client) }.emit();
            (status, format!("{error}\n")).into_response()
        };

        // RFC 6455 §4.2.1: what a server must see in an opening handshake.
        let headers = request.headers();
        let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
        let valid = request.method() == Method::GET
            && has_token(headers, header::CONNECTION, "upgrade")
            && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13")
            && key.as_ref().is_some_and(|k| !k.is_empty() && k.len() <= 64);
        let (Some(key), true) = (key, valid) else {
            return refuse(UpgradeFailure::BadRequest, &"malformed WebSocket upgrade", StatusCode::BAD_REQUEST);
        };
        let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
        let Some((subprotocol, version)) = websocket::choose(offered, &self.inner.versions) else {
            let error = "no supported sub-protocol (expected qmux-01.<moq version>)";
            return refuse(UpgradeFailure::NoProtocol, &error, StatusCode::BAD_REQUEST);
        };
        let Some(url) = request_url(&request, peer.is_some_and(|p| p.tls)) else {
            return refuse(UpgradeFailure::BadRequest, &"unusable request target", StatusCode::BAD_REQUEST);
        };
        let Ok(protocol_header) = HeaderValue::from_str(&subprotocol) else {
            return refuse(UpgradeFailure::BadRequest, &"unusable sub-protocol", StatusCode::BAD_REQUEST);
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let upgraded: websocket::Upgraded = Box::pin(async move {
            let upgraded = on_upgrade.await.map_err(std::io::Error::other)?;
            Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)) as Box<dyn websocket::Io>)
        });

        let slot = match ctx.admission.try_admit() {
            Ok(slot) => slot,
            Err(refused) => {
                refused.emit();
                let why = match refused {
                    Refused::Capacity { .. } => "at capacity\n",
                    Refused::Memory { .. } => "over the memory budget\n",
                };
                return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
            }
        };
        let Some(address) = ctx.admit_address(remote, moq_lite::transport::Transport::WebSocket) else {
            return (StatusCode::TOO_MANY_REQUESTS, "too many sessions from this address\n").into_response();
        };
        let (respond, decision) = oneshot::channel();
        let upgrade = Upgrade {
            url,
            headers: request.headers().clone(),
            remote,
            subprotocol,
            version,
            respond,
            upgraded,
            options: self.inner.options.clone(),
        };
        let started = Instant::now();
        let (worker, placement) = ctx.workers.place();
        let ctx = ctx.clone();
        worker.spawn(async move {
            let request = moq_lite::transport::Request::websocket(upgrade);
            connection::serve(request, ctx, placement.worker, started, client, address).await;
            drop((slot, placement));
        });

        match decision.await {
            Ok(Ok(())) => (
                StatusCode::SWITCHING_PROTOCOLS,
                [
                    (header::UPGRADE, HeaderValue::from_static("websocket")),
                    (header::CONNECTION, HeaderValue::from_static("upgrade")),
                    (header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&derive_accept_key(&key)).expect("base64")),
                    (header::SEC_WEBSOCKET_PROTOCOL, protocol_header),
                ],
            )
                .into_response(),
            Ok(Err(status)) => (status, "session refused\n").into_response(),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "session ended\n").into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_keeps_path_and_query_whatever_the_host_says() {
        let request = Request::builder()
            .uri("/demo/room?jwt=abc")
            .header(header::HOST, "evil/x:443")
            .body(axum::body::Body::empty())
            .unwrap();
        let url = request_url(&request, true).unwrap();
        assert_eq!((url.scheme(), url.path(), url.query()), ("wss", "/demo/room", Some("jwt=abc")));
        let request =
            Request::builder().uri("/").header(header::HOST, "[::1]:4443").body(axum::body::Body::empty()).unwrap();
        let url = request_url(&request, false).unwrap();
        assert_eq!((url.scheme(), url.host_str(), url.path()), ("ws", Some("[::1]"), "/"));
    }

    #[test]
    fn upgrade_tokens_are_case_insensitive_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, header::UPGRADE, "websocket"));
    }
}
