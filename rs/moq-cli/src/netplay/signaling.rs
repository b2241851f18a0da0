//! The HTTP/1.1 JSON client of the relay's netplay API (docs/netplay.md): create, join, delete,
//! over `http://` or `https://` (trusting the server as `--tls-insecure` / `--tls-fingerprint`
//! say, else the system roots), each call in its `netplay.signaling.*` span with `traceparent`
//! sent along, retried with jittered exponential backoff on connection failures, 5xx and 429,
//! never on a definitive refusal (any other 4xx).
//!
//! Tokens and join codes travel as [`Secret`]s: their `Debug` shows only a hash, so no log line
//! or error message can carry one by accident.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;
use url::Url;

use super::telemetry::{self, Operation};
use crate::connect::ConnectArgs;

/// Largest answer read (the API's answers are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// A token or join code: sent where it must go, shown nowhere else (`Debug` gives its hash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: for the request that needs it, or the one stdout line meant for the user.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:` + 12 hex digits, what logs, spans and metrics may show.
    pub fn hash(&self) -> String {
        moq_telemetry::redact::secret(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.hash())
    }
}

/// `POST /api/netplay/sessions` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_minutes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rom_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator_user_id: Option<String>,
}

/// Its `201` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateResponse {
    pub session_id: String,
    pub join_code: Secret,
    pub ttl_minutes: u32,
    pub expires_at: String,
    pub path: String,
    pub host_token: Secret,
    pub host_broadcast: String,
    pub provider: String,
}

/// `POST /api/netplay/join` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub join_code: Secret,
    pub participant_user_id: String,
}

/// Its `200` answer (`accepted: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub accepted: bool,
    pub session_id: String,
    pub participant_token: Secret,
    pub expires_at: String,
    pub path: String,
    pub host_broadcast: String,
    pub participant_broadcast: String,
}

/// Any refusal: `{"error", "message"}` (create, delete) or `{"accepted": false, "reason"}` (join).
#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorBody {
    error: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

/// Why a signaling call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connecting, TLS or the exchange failed, or it timed out. Retried.
    Unreachable { code: &'static str, detail: String },
    /// An answer that is not a success. Retried when [`retryable_status`].
    Status { status: u16, code: String, message: Option<String>, retry_after: Option<Duration> },
    /// A success whose body is not what the API promises. Not retried.
    Malformed { status: u16, detail: String },
}

impl Failure {
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Unreachable { .. } => true,
            Failure::Status { status, .. } => retryable_status(*status),
            Failure::Malformed { .. } => false,
        }
    }

    /// The `errorCode` of the log line: the API's code, or what went wrong on the way.
    pub fn error_code(&self) -> &str {
        match self {
            Failure::Unreachable { code, .. } => code,
            Failure::Status { code, .. } => code,
            Failure::Malformed { .. } => "malformed_answer",
        }
    }

    /// The `providerStatus` of the log line: the HTTP status, when there was an answer.
    pub fn provider_status(&self) -> Option<u16> {
        match self {
            Failure::Unreachable { .. } => None,
            Failure::Status { status, .. } | Failure::Malformed { status, .. } => Some(*status),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable { detail, .. } => write!(f, "{detail}"),
            Failure::Status { status, code, message: Some(message), .. } => {
                write!(f, "{code} (HTTP {status}): {message}")
            }
            Failure::Status { status, code, message: None, .. } => write!(f, "{code} (HTTP {status})"),
            Failure::Malformed { status, detail } => write!(f, "unexpected answer (HTTP {status}): {detail}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Statuses worth asking again: the server's trouble (5xx) or its rate limit (429). Every other
/// 4xx is a definitive refusal.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The code of an answer without one in its body.
fn status_code_name(status: u16) -> String {
    match status {
        400 => "invalid_request".into(),
        401 => "unauthorized".into(),
        403 => "forbidden".into(),
        404 => "not_found".into(),
        409 => "conflict".into(),
        410 => "expired".into(),
        429 => "rate_limited".into(),
        503 => "unavailable".into(),
        other => format!("http_{other}"),
    }
}

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first retry's delay bound; each further retry doubles it, up to `max`.
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn new(retries: u32) -> Self {
        Self { retries, base: Duration::from_millis(250), max: Duration::from_secs(5) }
    }

    /// The exponential bound of retry `retry` (1-based): `base`·2^(retry-1), at most `max`.
    pub fn bound(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `retry`: half the bound plus a random share (`unit` in 0..1) of the
    /// other half, so clients refused together do not come back together; never shorter than a
    /// `Retry-After` (itself capped at `max`).
    pub fn delay(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let bound = self.bound(retry);
        let jittered = bound / 2 + (bound / 2).mul_f64(unit.clamp(0.0, 1.0));
        jittered.max(retry_after.map_or(Duration::ZERO, |r| r.min(self.max)))
    }
}

/// A call's answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: Bytes,
}

impl Reply {
    fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The refusal this answer carries.
    fn failure(&self) -> Failure {
        let body: ErrorBody = serde_json::from_slice(&self.body).unwrap_or_default();
        Failure::Status {
            status: self.status,
            code: body.reason.or(body.error).unwrap_or_else(|| status_code_name(self.status)),
            message: body.message,
            retry_after: self.retry_after,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Failure::Malformed { status: self.status, detail: format!("invalid JSON: {e}") })
    }
}

/// A created session and the round trip of the request that created it.
#[derive(Debug)]
pub struct Created {
    pub session: CreateResponse,
    pub latency: Duration,
}

/// The relay's signaling API.
#[derive(Clone)]
pub struct Signaling {
    base: Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub policy: RetryPolicy,
    /// Bound of one request (connect, TLS, answer).
    pub timeout: Duration,
}

impl Signaling {
    /// The API at `base` (`http://` or `https://`); an `https://` one trusts the server as the
    /// connection flags say.
    pub fn new(base: Url, connect: &ConnectArgs, policy: RetryPolicy, timeout: Duration) -> anyhow::Result<Self> {
        let tls = match base.scheme() {
            "http" => None,
            "https" => Some(Arc::new(tls_config(connect.tls_insecure, &connect.tls_fingerprint)?)),
            other => anyhow::bail!("the signaling API needs an http:// or https:// URL, not {other}://"),
        };
        anyhow::ensure!(base.host_str().is_some(), "the signaling URL has no host");
        Ok(Self { base, tls, policy, timeout })
    }

    /// The API's base URL: `api_url` when given, else the relay's HTTP listener behind `url` (same
    /// host and port: `http://` and `ws://` → `http://`; `https://`, `wss://` and `moqt://` →
    /// `https://`), at its root.
    pub fn base_url(url: &Url, api_url: Option<&Url>) -> anyhow::Result<Url> {
        if let Some(api) = api_url {
            let mut api = api.clone();
            api.set_query(None);
            if !api.path().ends_with('/') {
                let path = format!("{}/", api.path());
                api.set_path(&path);
            }
            return Ok(api);
        }
        let scheme = match url.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" | "moqt" | "moql" => "https",
            other => anyhow::bail!("no signaling API for a {other}:// URL; give --api-url"),
        };
        let host = url.host_str().context("the URL has no host")?;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Url::parse(&format!("{scheme}://{host}{port}/")).context("signaling URL")
    }

    /// Creates a session: logs `netplay session creation request sent` before the first request
    /// and `netplay session created` after the answer, all in the `netplay.signaling.create` span.
    pub async fn create(&self, request: &CreateRequest) -> Result<Created, Failure> {
        let span = telemetry::span(Operation::Create, &self.base_for_logs());
        if let Some(id) = &request.session_id {
            span.record("netplay.session.id", id.as_str());
        }
        async {
            telemetry::creation_request_sent(request);
            let body = serde_json::to_vec(request).expect("serializable");
            let created = self
                .retrying(Operation::Create, &span, || async {
                    let started = Instant::now();
                    let reply = self.attempt(Operation::Create, &span, "api/netplay/sessions", Some(&body), None).await;
                    let latency = started.elapsed();
                    let result = reply.and_then(|reply| match reply.success() {
                        true => reply.parse::<CreateResponse>().map(|session| Created { session, latency }),
                        false => Err(reply.failure()),
                    });
                    telemetry::count_created(&result);
                    result
                })
                .await?;
            if request.session_id.is_none() {
                span.record("netplay.session.id", created.session.session_id.as_str());
            }
            span.record("netplay.join_code.hash", created.session.join_code.hash());
            telemetry::session_created(&created.session, created.latency);
            Ok(created)
        }
        .instrument(span.clone())
        .await
    }

    /// Joins with a code; a refusal is a [`Failure::Status`] with the API's reason as its code.
    pub async fn join(&self, request: &JoinRequest) -> Result<JoinResponse, Failure> {
        let span = telemetry::span(Operation::Join, &self.base_for_logs());
        span.record("netplay.join_code.hash", request.join_code.hash());
        span.record("netplay.participant.id", request.participant_user_id.as_str());
        async {
            let body = serde_json::to_vec(request).expect("serializable");
            let joined = self
                .retrying(Operation::Join, &span, || async {
                    let reply = self.attempt(Operation::Join, &span, "api/netplay/join", Some(&body), None).await;
                    let result = reply.and_then(|reply| match reply.success() {
                        true => match reply.parse::<JoinResponse>()? {
                            joined if joined.accepted => Ok(joined),
                            _ => Err(reply.failure()),
                        },
                        false => Err(reply.failure()),
                    });
                    telemetry::count_joined(&result);
                    result
                })
                .await?;
            span.record("netplay.session.id", joined.session_id.as_str());
            tracing::info!(sessionId = %joined.session_id, participantUserId = %request.participant_user_id, "netplay session joined");
            Ok(joined)
        }
        .instrument(span.clone())
        .await
    }

    /// Ends the session (with the host's token) or leaves it (with a participant's).
    pub async fn delete(&self, session_id: &str, token: &Secret) -> Result<(), Failure> {
        let span = telemetry::span(Operation::Delete, &self.base_for_logs());
        span.record("netplay.session.id", session_id);
        let path = format!("api/netplay/sessions/{session_id}");
        async {
            self.retrying(Operation::Delete, &span, || async {
                let reply = self.attempt(Operation::Delete, &span, &path, None, Some(token)).await?;
                match reply.success() {
                    true => Ok(()),
                    false => Err(reply.failure()),
                }
            })
            .await?;
            // The host's delete ends the session, a participant's leaves it.
            tracing::info!(sessionId = %session_id, "netplay delete accepted");
            Ok(())
        }
        .instrument(span.clone())
        .await
    }

    fn base_for_logs(&self) -> String {
        self.base.to_string()
    }

    /// Runs `attempt` until it succeeds, fails definitively, or the retries are spent; every
    /// failure is logged (`netplay signaling error`: warn, error once retries are exhausted).
    async fn retrying<T, F, Fut>(&self, op: Operation, span: &tracing::Span, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut retries = 0u32;
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let exhausted = failure.retryable() && retries >= self.policy.retries;
            telemetry::signaling_error(op, &failure, retries, exhausted);
            span.record("netplay.retry_count", retries);
            if !failure.retryable() || exhausted {
                return Err(failure);
            }
            retries += 1;
            let delay = self.policy.delay(retries, rand::random::<f64>(), failure.retry_after());
            tokio::time::sleep(delay).await;
        }
    }

    /// One request; the round trip of an answered one is recorded.
    async fn attempt(
        &self,
        op: Operation,
        span: &tracing::Span,
        path: &str,
        body: Option<&[u8]>,
        bearer: Option<&Secret>,
    ) -> Result<Reply, Failure> {
        let method = if body.is_some() { http::Method::POST } else { http::Method::DELETE };
        let started = Instant::now();
        let reply = tokio::time::timeout(self.timeout, self.exchange(method, path, body, bearer, span))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Unreachable {
                    code: "timeout",
                    detail: format!("no answer from {} within {:?}", self.base, self.timeout),
                })
            })?;
        telemetry::record_latency(op, started.elapsed());
        span.record("http.response.status_code", reply.status);
        Ok(reply)
    }

    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&[u8]>,
        bearer: Option<&Secret>,
        span: &tracing::Span,
    ) -> Result<Reply, Failure> {
        let unreachable = |code: &'static str| move |detail: String| Failure::Unreachable { code, detail };
        let url = self.base.join(path).map_err(|e| unreachable("invalid_url")(format!("{path}: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.path())
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, concat!("moq-cli/", env!("CARGO_PKG_VERSION")))
            // One request per connection: the server closes once it has answered.
            .header(http::header::CONNECTION, "close");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(tp) = moq_telemetry::traceparent(span) {
            request = request.header("traceparent", tp);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| unreachable("invalid_request")(format!("building the request: {e}")))?;

        let target = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tcp = tokio::net::TcpStream::connect((target.as_str(), port))
            .await
            .map_err(|e| unreachable("connect_failed")(format!("connecting to {}: {e}", self.base)))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => send(tcp, request).await,
            Some(config) => {
                let name = match target.parse::<std::net::IpAddr>() {
                    Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => rustls::pki_types::ServerName::try_from(target.clone())
                        .map_err(|e| unreachable("tls_failed")(format!("TLS server name {target:?}: {e}")))?,
                };
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable("tls_failed")(format!("TLS handshake with {}: {e}", self.base)))?;
                send(tls, request).await
            }
        }
    }
}

/// HTTP/1.1 over `stream`: the status, `Retry-After` and at most [`MAX_ANSWER`] bytes of body.
async fn send<S>(stream: S, request: http::Request<Full<Bytes>>) -> Result<Reply, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |detail: String| Failure::Unreachable { code: "http_failed", detail };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| failed(format!("HTTP exchange: {e}")))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Reply { status, retry_after, body })
    }
    .await;
    driver.abort();
    result
}

/// A rustls client configuration for `https://` signaling, trusting the server exactly as the MoQ
/// connection does (moq-lite's): any certificate (`--tls-insecure`), exactly the pinned
/// fingerprints, or the system roots.
pub fn tls_config(insecure: bool, fingerprints: &[String]) -> anyhow::Result<rustls::ClientConfig> {
    let tls = moq_lite::transport::ClientTls { insecure, fingerprints: fingerprints.to_vec(), roots: vec![] };
    let mut config = moq_lite::transport::rustls_client_config(&tls, true)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
