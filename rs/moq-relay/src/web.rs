//! The relay's plain HTTP endpoints, served on TCP beside QUIC:
//!
//! - `GET /certificate.sha256`: the leaf certificate fingerprint, so browsers
//!   can pin a self-signed certificate with `serverCertificateHashes`.
//! - `GET /health`: liveness.
//! - `GET /announced[/{prefix}][?jwt=TOKEN]`: active broadcasts under a prefix that the caller may
//!   subscribe to (the token's grant, else the public patterns), one per line; 403 with the
//!   denial for a token that is refused.
//!
//! Browser apps fetch these from other origins, so every response allows CORS.

use std::{future::Future, sync::Arc};

use axum::{
    extract::{Path, RawQuery, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

/// Lists active broadcast paths under a prefix (relative to it) that the holder of the token (or
/// anyone, without one) may subscribe to; `Err` is the denial of a refused token.
pub type Announced = Arc<
    dyn Fn(String, Option<String>) -> futures::future::BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync,
>;

#[derive(Clone)]
pub struct WebState {
    /// Lowercase hex SHA-256 of the leaf certificate.
    pub fingerprint: String,
    pub announced: Announced,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/certificate.sha256", get(certificate))
        .route("/health", get(|| async { "ok" }))
        .route("/announced", get(announced_root))
        .route("/announced/", get(announced_root))
        .route("/announced/{*prefix}", get(announced))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves, then let in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn certificate(State(state): State<WebState>) -> impl IntoResponse {
    // The certificate may be regenerated on restart, so never cache its hash.
    ([(header::CACHE_CONTROL, "no-store")], state.fingerprint)
}

async fn announced_root(State(state): State<WebState>, RawQuery(query): RawQuery) -> Response {
    list(&state, "", query).await
}

async fn announced(State(state): State<WebState>, Path(prefix): Path<String>, RawQuery(query): RawQuery) -> Response {
    list(&state, &prefix, query).await
}

async fn list(state: &WebState, prefix: &str, query: Option<String>) -> Response {
    let token = query.as_deref().and_then(crate::access::policy::query_token);
    match (state.announced)(prefix.trim_matches('/').to_string(), token).await {
        Ok(paths) => paths.into_iter().map(|path| path + "\n").collect::<String>().into_response(),
        Err(denial) => (StatusCode::FORBIDDEN, format!("{denial}\n")).into_response(),
    }
}

/// Allow any origin, and answer every `OPTIONS` preflight directly.
async fn cors(request: Request, next: Next) -> Response {
    cors_allowing("GET, OPTIONS", request, next).await
}

/// [`cors`] for routes answering `methods` (the netplay API's POST and DELETE).
pub(crate) async fn cors_allowing(methods: &'static str, request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS;
    let request_headers = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();

    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };

    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if preflight {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
        // Echo what was asked for: nothing here depends on request headers.
        if let Some(requested) = request_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            headers.insert(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_interop::http;
    use std::net::SocketAddr;
    use tokio::{net::TcpListener, sync::oneshot};

    /// One HTTP/1.1 request on its own connection, sent by the test kit's blocking client off the
    /// runtime's thread (the server under test runs on it).
    async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
        let mut request = http::Request::new(method, &format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        tokio::task::spawn_blocking(move || request.send().unwrap()).await.unwrap()
    }

    async fn start() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let state = WebState {
            fingerprint: "ab".repeat(32),
            announced: Arc::new(|prefix: String, token: Option<String>| {
                Box::pin(async move {
                    match (prefix.as_str(), token.as_deref()) {
                        (_, Some("bad")) => Err("bad_signature".to_string()),
                        (_, Some(_)) => Ok(vec!["secret".into()]),
                        ("", None) => Ok(vec!["demo/clock".into(), "live".into()]),
                        ("demo", None) => Ok(vec!["clock".into()]),
                        _ => Ok(vec![]),
                    }
                })
            }),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(listener, router(state), shutdown).await.unwrap();
        });
        (addr, stop, task)
    }

    #[tokio::test]
    async fn routes() {
        let (addr, stop, task) = start().await;

        let reply = request(addr, "GET", "/certificate.sha256", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ab".repeat(32));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

        let reply = request(addr, "GET", "/health", &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

        for path in ["/announced", "/announced/"] {
            let reply = request(addr, "GET", path, &[]).await;
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.body, "demo/clock\nlive\n", "{path}");
            assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        }

        for path in ["/announced/demo", "/announced/demo/"] {
            let reply = request(addr, "GET", path, &[]).await;
            assert_eq!((reply.status, reply.body.as_str()), (200, "clock\n"), "{path}");
        }

        let reply = request(addr, "GET", "/announced/nothing", &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, ""));

        // A token's grant decides what is listed; a refused token is a 403 saying why.
        let reply = request(addr, "GET", "/announced/demo?x=1&jwt=good", &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "secret\n"));
        let reply = request(addr, "GET", "/announced?jwt=bad", &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (403, "bad_signature\n"));
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

        let reply = request(addr, "GET", "/nope", &[]).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

        let reply = request(
            addr,
            "OPTIONS",
            "/certificate.sha256",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "x-custom"),
            ],
        )
        .await;
        assert_eq!(reply.status, 204);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        assert_eq!(reply.header("access-control-allow-methods"), Some("GET, OPTIONS"));
        assert_eq!(reply.header("access-control-allow-headers"), Some("x-custom"));
        assert!(reply.body.is_empty());

        // Graceful shutdown ends `serve`.
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("server stopped").unwrap();
    }
}
