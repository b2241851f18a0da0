//! `--auth-url`: every access decision delegated to an HTTP auth server speaking the reference
//! contract (moq-auth 0.2, served by `moq auth serve`).
//!
//! One JSON `POST` per session event (`connect`, `revalidate`, `end`) carrying what the relay
//! knows about the session. The server answers a grant (2xx + JSON) whose patterns are relative
//! to the dialed path, a refusal (401/403 with the reason as text), or `204` to an `end`.
//! Anything else (another status, a malformed or oversized answer, a transport failure, a
//! timeout) means the server is unavailable, never that the session is allowed.
//!
//! The grant is returned with absolute patterns (rooted at the dialed path), like every other
//! [`Grant`] in this relay. Of the contract's grant fields, `root` and `mounts` would re-point the
//! session elsewhere, which this relay cannot honour: a grant using them is refused rather than
//! silently read as something else. `tier` (a stats label) changes no right and is ignored;
//! `peer: true` marks the session as a cluster peer relay ([`Grant::peer`]), widening nothing.
//!
//! The request carries the client's query, which usually holds its token: nothing here logs
//! it, and the error details never contain it.

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use moq_lite::pattern::{Pattern, Patterns};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use super::{Denial, Grant, Refusal, Source};

/// The most of an answer read: a grant is a few hundred bytes, a refusal one line. A server that
/// sends more is misbehaving and is treated as unavailable rather than buffered.
const MAX_ANSWER: usize = 64 * 1024;

/// The most of a refusal's text kept in a [`Refusal`] detail.
const MAX_DETAIL: usize = 200;

/// What the relay knows about a session, sent with every event.
///
/// Mirrors the reference's request (moq-auth `Request`), minus the moq-transport SETUP token and
/// the client certificate, which this relay does not collect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// Built by the session layer once `--auth-url` is wired.
#[allow(dead_code)]
pub struct AuthRequest {
    /// Random 128-bit hex, the same for every event of one session.
    pub id: String,
    /// The operator's name for this relay.
    pub node: String,
    /// How the session arrived: one of [`AuthRequest::QUIC`], [`AuthRequest::WEBSOCKET`], ...
    pub transport: &'static str,
    /// The client's address; `None` on a transport without one.
    pub remote: Option<SocketAddr>,
    /// The relay's address the session arrived on.
    pub local: Option<SocketAddr>,
    /// The SNI the client presented (or the HTTP authority when there was none).
    pub server_name: Option<String>,
    /// The negotiated ALPN.
    pub alpn: Option<String>,
    /// The dialed path, normalized, without leading slash (`""` for the root). Sent as
    /// `/demo/room` (`/` for the root), as the reference does.
    pub path: String,
    /// The raw query without the leading `?`. Holds credentials: never log it.
    pub query: Option<String>,
    /// [`AuthRequest::PUBLISHER`] or [`AuthRequest::SUBSCRIBER`] when the client declared one
    /// direction at SETUP; `None` means both.
    pub role: Option<&'static str>,
}

// The names on the wire, which the reference server accepts (anything else is a 422 there).
#[allow(dead_code)]
impl AuthRequest {
    /// QUIC, raw or WebTransport over HTTP/3: the reference relay reports both as `quic`.
    pub const QUIC: &'static str = "quic";
    /// qmux over WebSocket.
    pub const WEBSOCKET: &'static str = "websocket";
    /// qmux over plain TCP.
    pub const TCP: &'static str = "tcp";
    /// qmux over a unix socket.
    pub const UNIX: &'static str = "unix";
    /// A one-shot HTTP request on the web listener.
    pub const HTTP: &'static str = "http";

    /// The client will only publish.
    pub const PUBLISHER: &'static str = "publisher";
    /// The client will only subscribe.
    pub const SUBSCRIBER: &'static str = "subscriber";
}

/// What an ended session did, for the `end` event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(dead_code)] // Built by the session layer once `--auth-url` is wired.
pub struct SessionEnd {
    /// Why it closed (free text; the reference uses `expired`, `refused`, `invalid`, or the
    /// session's own close reason).
    pub reason: String,
    /// How long it was admitted.
    pub duration: Duration,
    /// Bytes the relay sent to the client.
    pub sent: u64,
    /// Bytes the relay received from the client.
    pub received: u64,
}

/// A client for one auth server. Cheap to clone; one connection per request.
#[derive(Clone)]
#[allow(dead_code)] // Constructed from `--auth-url` once wired.
pub struct AuthServer {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    target: Target,
    /// Bounds connect + request + answer.
    timeout: Duration,
    /// The request target: the URL's path and query (`/` over a unix socket).
    request_target: String,
    /// The `Host` header.
    authority: String,
}

#[derive(Clone)]
enum Target {
    Tcp(Address),
    Tls { address: Address, name: ServerName<'static>, config: Arc<rustls::ClientConfig> },
    Unix(PathBuf),
}

#[derive(Clone)]
enum Address {
    Ip(SocketAddr),
    Name(String, u16),
}

impl std::fmt::Debug for AuthServer {
    // The URL may carry a query the operator considers secret: show only where it goes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.inner.target {
            Target::Tcp(address) => format!("http://{address}"),
            Target::Tls { address, .. } => format!("https://{address}"),
            Target::Unix(path) => format!("unix:{}", path.display()),
        };
        f.debug_struct("AuthServer").field("target", &target).field("timeout", &self.inner.timeout).finish()
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(addr) => write!(f, "{addr}"),
            Address::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

#[allow(dead_code)] // Wired by the session layer.
impl AuthServer {
    /// A client for the auth server at `url`: `http://` to a loopback address only (the request
    /// carries the client's token), `https://` anywhere (verified against the platform's roots,
    /// or the CA given to [`with_root_ca`](Self::with_root_ca)), or `unix:///path/to.sock`
    /// (also `unix:/path/to.sock`). `timeout` bounds each request from connect to the last byte.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        ensure!(!timeout.is_zero(), "the auth server timeout must be above zero");
        // The parse error, not the URL: it may carry a secret.
        let url = Url::parse(url).map_err(|err| anyhow::anyhow!("invalid auth URL: {err}"))?;
        let shown = redact(&url);
        ensure!(
            url.username().is_empty() && url.password().is_none(),
            "auth URL {shown}: credentials in the URL are not supported"
        );

        let inner = match url.scheme() {
            "http" | "https" => {
                let host = url.host().with_context(|| format!("auth URL {shown} has no host"))?;
                let port = url.port_or_known_default().context("no port")?;
                let address = match &host {
                    url::Host::Ipv4(ip) => Address::Ip(SocketAddr::new(IpAddr::V4(*ip), port)),
                    url::Host::Ipv6(ip) => Address::Ip(SocketAddr::new(IpAddr::V6(*ip), port)),
                    url::Host::Domain(name) => Address::Name(name.to_string(), port),
                };
                let target = if url.scheme() == "http" {
                    let loopback = match &host {
                        url::Host::Ipv4(ip) => ip.is_loopback(),
                        url::Host::Ipv6(ip) => ip.is_loopback(),
                        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
                    };
                    ensure!(
                        loopback,
                        "auth URL {shown}: http:// is only allowed to a loopback address (the request \
                         carries the client's token); use https:// or unix://"
                    );
                    Target::Tcp(address)
                } else {
                    let name = match &host {
                        url::Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(*ip).into()),
                        url::Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(*ip).into()),
                        url::Host::Domain(name) => ServerName::try_from(name.to_string())
                            .with_context(|| format!("auth URL {shown}: invalid TLS server name"))?,
                    };
                    Target::Tls { address, name, config: tls_config(platform_roots())? }
                };
                let authority = match url.port() {
                    Some(port) => format!("{}:{port}", host_str(&host)),
                    None => host_str(&host),
                };
                let mut request_target = url.path().to_string();
                if let Some(query) = url.query() {
                    request_target.push('?');
                    request_target.push_str(query);
                }
                Inner { target, timeout, request_target, authority }
            }
            "unix" => {
                ensure!(
                    matches!(url.host_str(), None | Some("" | "localhost")),
                    "auth URL {shown}: a unix socket URL has no host (unix:///path/to.sock)"
                );
                let path = match url.to_file_path() {
                    Ok(path) if path.is_absolute() => path,
                    _ => bail!("auth URL {shown}: expected an absolute socket path (unix:///path/to.sock)"),
                };
                // The socket is the transport; the request goes to the server's root, as the
                // reference client sends it.
                Inner { target: Target::Unix(path), timeout, request_target: "/".into(), authority: "localhost".into() }
            }
            _ => bail!("auth URL {shown}: must be https://, unix://, or http:// to a loopback address"),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Trust only the CA certificates in the PEM file at `path` (instead of the platform's
    /// roots) for an `https://` auth server.
    pub fn with_root_ca(self, path: &Path) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("failed to read CA certificates from {}", path.display()))?;
        ensure!(!certs.is_empty(), "no CA certificate in {}", path.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).with_context(|| format!("invalid CA certificate in {}", path.display()))?;
        }

        let mut inner = Arc::unwrap_or_clone(self.inner);
        match &mut inner.target {
            Target::Tls { config, .. } => *config = tls_config(roots)?,
            _ => bail!("a CA file only applies to an https:// auth URL"),
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Ask whether a new session may connect: its grant (absolute patterns), or why not.
    pub async fn connect(&self, req: &AuthRequest) -> Result<Grant, Refusal> {
        self.ask(req, Event::Connect).await
    }

    /// Ask again for a running session, on the grant's `revalidate` cadence.
    pub async fn revalidate(&self, req: &AuthRequest) -> Result<Grant, Refusal> {
        self.ask(req, Event::Revalidate).await
    }

    /// Report that a session ended. Any 2xx is an acknowledgement (the reference answers 204).
    pub async fn end(&self, req: &AuthRequest, end: &SessionEnd) -> Result<(), Refusal> {
        let (status, answer) = self.post(&wire(req, Event::End(end))).await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            _ => Err(refused(status, &answer)),
        }
    }

    async fn ask(&self, req: &AuthRequest, event: Event<'_>) -> Result<Grant, Refusal> {
        let (status, answer) = self.post(&wire(req, event)).await?;
        match status.as_u16() {
            // Any 2xx carries the grant, as the reference client reads it.
            200..=299 => decode_grant(&answer, &req.path, SystemTime::now()),
            _ => Err(refused(status, &answer)),
        }
    }

    /// One POST, bounded by the timeout: the status and the (bounded) answer.
    async fn post(&self, request: &WireRequest<'_>) -> Result<(http::StatusCode, Bytes), Refusal> {
        let body = serde_json::to_vec(request).expect("a request serializes");
        let timeout = self.inner.timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(body)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}", humantime::format_duration(timeout))),
        };
        result.map_err(|detail| {
            tracing::debug!(server = ?self, event = request.event, %detail, "auth server request failed");
            Refusal::new(Denial::AuthServerUnavailable, detail)
        })
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<(http::StatusCode, Bytes), String> {
        let inner = &self.inner;
        let request = http::Request::post(inner.request_target.as_str())
            .header(http::header::HOST, inner.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/plain")
            .header(http::header::USER_AGENT, concat!("moq-relay/", env!("CARGO_PKG_VERSION")))
            // One request per connection: the server closes once it has answered.
            .header(http::header::CONNECTION, "close")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("invalid request: {err}"))?;

        match &inner.target {
            Target::Tcp(address) => send(connect_tcp(address).await?, request).await,
            Target::Tls { address, name, config } => {
                let tcp = connect_tcp(address).await?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| format!("TLS handshake failed: {err}"))?;
                send(tls, request).await
            }
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(|err| connect_error(&err))?;
                send(stream, request).await
            }
        }
    }
}

async fn connect_tcp(address: &Address) -> Result<tokio::net::TcpStream, String> {
    let stream = match address {
        Address::Ip(addr) => tokio::net::TcpStream::connect(addr).await,
        Address::Name(host, port) => tokio::net::TcpStream::connect((host.as_str(), *port)).await,
    }
    .map_err(|err| connect_error(&err))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn connect_error(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::NotFound => "socket not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("connect failed: {err}"),
    }
}

/// Aborts the connection task when the exchange ends or is abandoned (the timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// HTTP/1.1 over `stream`: the status and at most [`MAX_ANSWER`] bytes of the answer.
async fn send<S>(stream: S, request: http::Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    let response = sender.send_request(request).await.map_err(|err| format!("HTTP exchange failed: {err}"))?;
    let status = response.status();
    let answer = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|err| {
        if err.downcast_ref::<LengthLimitError>().is_some() {
            format!("answer larger than {} KiB", MAX_ANSWER / 1024)
        } else {
            format!("reading the answer failed: {err}")
        }
    })?;
    Ok((status, answer.to_bytes()))
}

/// A refusal for a non-2xx status: 401/403 is the server's decision, with its reason; anything
/// else is an outage.
fn refused(status: http::StatusCode, answer: &[u8]) -> Refusal {
    match status.as_u16() {
        401 | 403 => {
            let reason = sanitize(&String::from_utf8_lossy(answer));
            let detail = if reason.is_empty() { format!("HTTP {}", status.as_u16()) } else { reason };
            Refusal::new(Denial::AuthServerDenied, detail)
        }
        code => Refusal::new(Denial::AuthServerUnavailable, format!("HTTP {code}")),
    }
}

/// `text` on one line, without control characters, at most [`MAX_DETAIL`] characters.
fn sanitize(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for c in text.trim().chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => continue,
            c => c,
        };
        if chars == MAX_DETAIL {
            out.push('…');
            break;
        }
        out.push(c);
        chars += 1;
    }
    out
}

fn host_str(host: &url::Host<&str>) -> String {
    match host {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        host => host.to_string(),
    }
}

/// `url` without userinfo, query, or fragment, any of which may hold a secret.
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

fn platform_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    // A certificate the platform store holds but webpki cannot parse is skipped, not fatal.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

fn tls_config(roots: rustls::RootCertStore) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    // Explicit provider: don't depend on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Clone, Copy)]
enum Event<'a> {
    Connect,
    Revalidate,
    End(&'a SessionEnd),
}

/// The request on the wire, field for field the reference's (moq-auth `Request`): absent
/// fields are omitted, never `null`.
#[derive(Serialize)]
struct WireRequest<'a> {
    id: &'a str,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// Seconds, fractional.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<WireBytes>,
    node: &'a str,
    transport: &'static str,
    /// `"ip:port"` (`"[::1]:443"` for IPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpn: Option<&'a str>,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

#[derive(Serialize)]
struct WireBytes {
    sent: u64,
    received: u64,
}

fn wire<'a>(req: &'a AuthRequest, event: Event<'a>) -> WireRequest<'a> {
    let (name, end) = match event {
        Event::Connect => ("connect", None),
        Event::Revalidate => ("revalidate", None),
        Event::End(end) => ("end", Some(end)),
    };
    WireRequest {
        id: &req.id,
        event: name,
        reason: end.map(|end| end.reason.as_str()),
        duration: end.map(|end| end.duration.as_secs_f64()),
        bytes: end.map(|end| WireBytes { sent: end.sent, received: end.received }),
        node: &req.node,
        transport: req.transport,
        remote: req.remote,
        local: req.local,
        server_name: req.server_name.as_deref(),
        alpn: req.alpn.as_deref(),
        // The reference sends the path as dialed, with its leading slash, `/` for the root.
        path: format!("/{}", req.path.trim_start_matches('/')),
        query: req.query.as_deref(),
        role: req.role,
    }
}

/// The grant on the wire (moq-auth `Grant`). Unknown fields are ignored, as the reference does.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireGrant {
    publish: Vec<String>,
    subscribe: Vec<String>,
    root: Option<String>,
    mounts: BTreeMap<String, String>,
    /// Unix seconds.
    expires: Option<i64>,
    /// Seconds.
    revalidate: Option<u64>,
    /// Only `true` marks a peer relay (any other value, like a missing one, marks nothing).
    peer: Option<serde_json::Value>,
    // `tier` (a stats label) grants no right; not read.
}

/// Read a 2xx answer for a session dialed at `dialed` (normalized, no leading slash), checked
/// the way the reference checks it (moq-auth `Grant::validate`, and its client's mapping of the
/// failures): a grant of nothing is a refusal; a re-check without an expiry, a zero cadence, or
/// an expiry already past is an answer the relay cannot use, so the server counts as
/// unavailable.
pub fn decode_grant(answer: &[u8], dialed: &str, now: SystemTime) -> Result<Grant, Refusal> {
    let unavailable = |detail: String| Refusal::new(Denial::AuthServerUnavailable, sanitize(&detail));
    let denied = |detail: &str| Refusal::new(Denial::AuthServerDenied, detail);

    let wire: WireGrant =
        serde_json::from_slice(answer).map_err(|err| unavailable(format!("malformed grant: {err}")))?;
    let parse = |texts: &[String]| {
        texts
            .iter()
            .map(|text| {
                text.parse::<Pattern>().map_err(|err| unavailable(format!("malformed grant: pattern `{text}`: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let publish = parse(&wire.publish)?;
    let subscribe = parse(&wire.subscribe)?;

    // A root equal to the dialed path is the default spelled out; any other would move the
    // session, and mounts would graft other subtrees in. Refused, so nothing is widened.
    let moved = wire.root.as_deref().is_some_and(|root| normalize(root) != normalize(dialed));
    if moved || !wire.mounts.is_empty() {
        return Err(denied("grant uses root/mounts, unsupported"));
    }

    if publish.is_empty() && subscribe.is_empty() {
        return Err(denied("grant grants nothing"));
    }
    let expires = match wire.expires {
        None => None,
        Some(secs) if secs <= 0 => Some(UNIX_EPOCH),
        Some(secs) => Some(
            UNIX_EPOCH
                .checked_add(Duration::from_secs(secs.unsigned_abs()))
                .ok_or_else(|| unavailable("malformed grant: expires out of range".into()))?,
        ),
    };
    let revalidate = wire.revalidate.map(Duration::from_secs);
    if revalidate.is_some() && expires.is_none() {
        return Err(unavailable("grant asks to be revalidated but never expires".into()));
    }
    if revalidate.is_some_and(|cadence| cadence.is_zero()) {
        return Err(unavailable("grant asks to be revalidated at no interval".into()));
    }
    if expires.is_some_and(|expires| expires <= now) {
        return Err(unavailable("grant has already expired".into()));
    }

    let root = |patterns: Vec<Pattern>| {
        patterns
            .into_iter()
            .map(|pattern| {
                pattern
                    .rooted(dialed)
                    .map_err(|err| unavailable(format!("malformed grant: pattern `{pattern}`: {err}")))
            })
            .collect::<Result<Patterns, _>>()
    };
    Ok(Grant {
        publish: root(publish)?,
        subscribe: root(subscribe)?,
        expires,
        revalidate,
        subject: None,
        source: Source::AuthServer,
        peer: wire.peer == Some(serde_json::Value::Bool(true)),
    })
}

fn normalize(path: &str) -> String {
    path.split('/').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "moq-relay-auth-server-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn moq() -> PathBuf {
        // A missing binary fails the test (the kit asserts), never skips it.
        moq_interop::reference("moq-cli", "0.14.10").with_file_name("moq")
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    /// A key, and the reference server answering with it on `listen`.
    struct Reference {
        dir: TempDir,
        _server: moq_interop::Proc,
    }

    impl Reference {
        fn start(listen: impl FnOnce(&Path) -> String) -> Self {
            let dir = TempDir::new();
            let key = dir.0.join("key.jwk");
            let out = moq_interop::run(
                "moq auth generate",
                Command::new(moq()).args(["auth", "generate", "--algorithm", "HS256", "--id", "k1", "--out"]).arg(&key),
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "moq auth generate: {}", String::from_utf8_lossy(&out.stderr));
            let mut server = moq_interop::Proc::spawn(
                "moq auth serve",
                Command::new(moq())
                    .args(["auth", "serve", "--listen", &listen(&dir.0), "--key"])
                    .arg(&key)
                    .args(["--public-subscribe", "anon/**"]),
            );
            server.wait_line(Duration::from_secs(30), |line| line.contains("listening"));
            Self { dir, _server: server }
        }

        fn sign(&self, expires: u64) -> String {
            let out = moq_interop::run(
                "moq auth sign",
                Command::new(moq())
                    .args(["auth", "sign", "--key"])
                    .arg(self.dir.0.join("key.jwk"))
                    .args(["--root", "demo", "--publish", "bbb/**", "--subscribe", "**", "--expires"])
                    .arg(expires.to_string()),
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "moq auth sign: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    }

    fn request(path: &str, query: Option<String>) -> AuthRequest {
        AuthRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            node: "relay-test".into(),
            transport: AuthRequest::QUIC,
            remote: Some("127.0.0.1:50000".parse().unwrap()),
            local: Some("127.0.0.1:4443".parse().unwrap()),
            server_name: Some("localhost".into()),
            alpn: Some("moq-lite-03".into()),
            path: path.into(),
            query,
            role: None,
        }
    }

    fn strings(patterns: &Patterns) -> Vec<String> {
        patterns.iter().map(|pattern| pattern.to_string()).collect()
    }

    fn end() -> SessionEnd {
        SessionEnd { reason: "closed".into(), duration: Duration::from_millis(1500), sent: 10, received: 20 }
    }

    /// The decisions of the reference server, read through this client.
    async fn check_reference(server: &AuthServer, reference: &Reference) {
        let expires = now() + 3600;
        let token = reference.sign(expires);
        let with_token = |path: &str| request(path, Some(format!("jwt={token}")));

        // Token rooted at `demo`, dialed at `/demo`: the server answers `bbb/**` and `**`
        // relative to the dialed path; the grant holds them absolute.
        let grant = server.connect(&with_token("demo")).await.unwrap();
        assert_eq!(strings(&grant.publish), ["demo/bbb/**"]);
        assert_eq!(strings(&grant.subscribe), ["demo/**"]);
        assert_eq!(grant.expires, Some(UNIX_EPOCH + Duration::from_secs(expires)));
        assert_eq!(grant.revalidate, None);
        assert_eq!(grant.source, Source::AuthServer);

        // Dialed deeper: the publish pattern does not reach `demo/room`, so the server drops it.
        let grant = server.connect(&with_token("demo/room")).await.unwrap();
        assert!(grant.publish.is_empty(), "{:?}", strings(&grant.publish));
        assert_eq!(strings(&grant.subscribe), ["demo/room/**"]);

        // Dialed at the root: the server answers patterns with the token root prefixed.
        let grant = server.connect(&with_token("")).await.unwrap();
        assert_eq!(strings(&grant.publish), ["demo/bbb/**"]);
        assert_eq!(strings(&grant.subscribe), ["demo/**"]);

        // Anonymous: the public rule `anon/**` is rooted at `/`.
        let grant = server.connect(&request("anon/x", None)).await.unwrap();
        assert!(grant.publish.is_empty());
        assert_eq!(strings(&grant.subscribe), ["anon/x/**"]);
        assert_eq!(grant.expires, None);
        let grant = server.connect(&request("", None)).await.unwrap();
        assert_eq!(strings(&grant.subscribe), ["anon/**"]);

        let refusal = server.connect(&request("other", None)).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerDenied, "{refusal}");
        assert_eq!(refusal.detail, "nothing is granted at `other`");

        let expired = reference.sign(now() - 3600);
        let refusal = server.connect(&request("demo", Some(format!("jwt={expired}")))).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerDenied, "{refusal}");
        assert!(refusal.detail.contains("expired"), "{refusal}");
        assert!(!refusal.detail.contains(&expired), "the detail never holds the token");

        let grant = server.revalidate(&with_token("demo")).await.unwrap();
        assert_eq!(strings(&grant.publish), ["demo/bbb/**"]);
        assert_eq!(strings(&grant.subscribe), ["demo/**"]);

        server.end(&with_token("demo"), &end()).await.unwrap();
    }

    #[tokio::test]
    async fn reference_server_over_tcp() {
        let port = moq_interop::free_port();
        let reference = Reference::start(|_| format!("127.0.0.1:{port}"));
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(10)).unwrap();
        check_reference(&server, &reference).await;

        // A transport or role the reference does not know is its 422: an outage, not a grant.
        let mut odd = request("anon", None);
        odd.transport = "webtransport";
        let refusal = server.connect(&odd).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerUnavailable, "{refusal}");
        assert_eq!(refusal.detail, "HTTP 422");

        // `localhost` is loopback too.
        let server = AuthServer::new(&format!("http://localhost:{port}"), Duration::from_secs(10)).unwrap();
        server.connect(&request("anon", None)).await.unwrap();
    }

    #[tokio::test]
    async fn reference_server_over_unix() {
        let reference = Reference::start(|dir| format!("unix:{}", dir.join("auth.sock").display()));
        let socket = reference.dir.0.join("auth.sock");
        let server = AuthServer::new(&format!("unix://{}", socket.display()), Duration::from_secs(10)).unwrap();
        check_reference(&server, &reference).await;

        let server = AuthServer::new(&format!("unix:{}", socket.display()), Duration::from_secs(10)).unwrap();
        let grant = server.connect(&request("anon", None)).await.unwrap();
        assert_eq!(strings(&grant.subscribe), ["anon/**"]);
    }

    /// A one-shot HTTP server on loopback: reads one request, writes `response` verbatim, and
    /// hands back what it read.
    async fn canned(response: Vec<u8>) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let received = read_request(&mut stream).await;
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            received
        });
        (port, task)
    }

    /// One HTTP/1.1 request with a `Content-Length` body, as text.
    async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .map(|v| v.parse::<usize>().unwrap())
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return text;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn response(status: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
    }

    fn body_json(received: &str) -> serde_json::Value {
        serde_json::from_str(received.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[tokio::test]
    async fn wire_request_matches_the_reference_shape() {
        let (port, task) = canned(response("204 No Content", "")).await;
        let server =
            AuthServer::new(&format!("http://127.0.0.1:{port}/auth?tenant=a"), Duration::from_secs(5)).unwrap();
        let mut req = request("demo/room", Some("jwt=abc".into()));
        req.remote = Some("[2001:db8::1]:4433".parse().unwrap());
        req.role = Some(AuthRequest::PUBLISHER);
        server.end(&req, &end()).await.unwrap();

        let received = task.await.unwrap();
        let head = received.split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
        assert!(head.starts_with("post /auth?tenant=a http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        assert_eq!(
            body_json(&received),
            serde_json::json!({
                "id": "0123456789abcdef0123456789abcdef",
                "event": "end",
                "reason": "closed",
                "duration": 1.5,
                "bytes": {"sent": 10, "received": 20},
                "node": "relay-test",
                "transport": "quic",
                "remote": "[2001:db8::1]:4433",
                "local": "127.0.0.1:4443",
                "server_name": "localhost",
                "alpn": "moq-lite-03",
                "path": "/demo/room",
                "query": "jwt=abc",
                "role": "publisher",
            })
        );

        // A connect at the root, with nothing optional: `/`, and no nulls.
        let (port, task) = canned(response("200 OK", r#"{"subscribe":["**"]}"#)).await;
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5)).unwrap();
        let req =
            AuthRequest { id: "00ff".into(), node: "n".into(), transport: AuthRequest::UNIX, ..Default::default() };
        let grant = server.connect(&req).await.unwrap();
        assert_eq!(strings(&grant.subscribe), ["**"]);
        assert_eq!(
            body_json(&task.await.unwrap()),
            serde_json::json!({"id": "00ff", "event": "connect", "node": "n", "transport": "unix", "path": "/"})
        );
    }

    #[tokio::test]
    async fn server_down_is_unavailable_quickly() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(10)).unwrap();
        let start = std::time::Instant::now();
        let refusal = server.connect(&request("demo", None)).await.unwrap_err();
        assert_eq!(refusal, Refusal::new(Denial::AuthServerUnavailable, "connection refused"));
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

        let dir = TempDir::new();
        let server =
            AuthServer::new(&format!("unix://{}", dir.0.join("none.sock").display()), Duration::from_secs(10)).unwrap();
        let refusal = server.end(&request("demo", None), &end()).await.unwrap_err();
        assert_eq!(refusal, Refusal::new(Denial::AuthServerUnavailable, "socket not found"));
    }

    #[tokio::test]
    async fn black_hole_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let hold = held.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                hold.lock().unwrap().push(stream);
            }
        });
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_millis(300)).unwrap();
        let start = std::time::Instant::now();
        let refusal = server.connect(&request("demo", None)).await.unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(refusal, Refusal::new(Denial::AuthServerUnavailable, "timed out after 300ms"));
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(held.lock().unwrap().len(), 1);
        task.abort();
    }

    #[tokio::test]
    async fn bad_answers_are_unavailable() {
        let unavailable = |detail: &str| Refusal::new(Denial::AuthServerUnavailable, detail);
        let cases = [
            (response("500 Internal Server Error", "boom"), unavailable("HTTP 500")),
            (response("302 Found", ""), unavailable("HTTP 302")),
            (response("200 OK", "not json"), unavailable("malformed grant: expected ident at line 1 column 2")),
            (
                response("200 OK", &format!(r#"{{"subscribe":["**"],"pad":"{}"}}"#, "x".repeat(100 * 1024))),
                unavailable("answer larger than 64 KiB"),
            ),
        ];
        for (answer, expected) in cases {
            let (port, _task) = canned(answer).await;
            let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap();
            assert_eq!(server.connect(&request("demo", None)).await.unwrap_err(), expected);
        }

        // Closed without an answer.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
        });
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap();
        let refusal = server.connect(&request("demo", None)).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerUnavailable, "{refusal}");
        assert!(refusal.detail.starts_with("HTTP exchange failed"), "{refusal}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn refusals_carry_the_reason_sanitized() {
        let reason = format!("line one\nline\x1b[31m two {}", "y".repeat(500));
        let (port, _task) = canned(response("403 Forbidden", &reason)).await;
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap();
        let refusal = server.connect(&request("demo", None)).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerDenied);
        assert!(refusal.detail.starts_with("line one line[31m two yyy"), "{}", refusal.detail);
        assert_eq!(refusal.detail.chars().count(), MAX_DETAIL + 1);
        assert!(refusal.detail.ends_with('…'));

        let (port, _task) = canned(response("401 Unauthorized", "")).await;
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap();
        let refusal = server.revalidate(&request("demo", None)).await.unwrap_err();
        assert_eq!(refusal, Refusal::new(Denial::AuthServerDenied, "HTTP 401"));

        // An `end` the server refuses is reported, not swallowed.
        let (port, _task) = canned(response("403 Forbidden", "unknown session")).await;
        let server = AuthServer::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap();
        let refusal = server.end(&request("demo", None), &end()).await.unwrap_err();
        assert_eq!(refusal, Refusal::new(Denial::AuthServerDenied, "unknown session"));
    }

    #[test]
    fn urls() {
        let timeout = Duration::from_secs(1);
        for ok in [
            "http://127.0.0.1:4440/",
            "http://127.1.2.3",
            "http://[::1]:4440/auth",
            "http://localhost:4440",
            "https://auth.example.com/check",
            "https://203.0.113.9:8443/",
            "unix:///run/moq/auth.sock",
            "unix:/run/moq/auth.sock",
            "unix://localhost/run/moq/auth.sock",
        ] {
            AuthServer::new(ok, timeout).unwrap_or_else(|err| panic!("{ok}: {err:#}"));
        }
        for (bad, why) in [
            ("http://10.0.0.1:4440/", "only allowed to a loopback"),
            ("http://auth.example.com/", "only allowed to a loopback"),
            ("http://[2001:db8::1]/", "only allowed to a loopback"),
            ("ftp://127.0.0.1/", "must be https://"),
            ("unix://host/run/auth.sock", "has no host"),
            ("unix:auth.sock", "absolute socket path"),
            ("https://user:secret@auth.example.com/", "credentials"),
            ("not a url", "invalid auth URL"),
        ] {
            let err = format!("{:#}", AuthServer::new(bad, timeout).err().unwrap_or_else(|| panic!("{bad} accepted")));
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let err = AuthServer::new("https://auth.example.com/?key=hush", timeout)
            .unwrap()
            .with_root_ca(Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/ca.pem"), "{err:#}");
        assert!(AuthServer::new("http://127.0.0.1/", Duration::ZERO).is_err());
        let err = AuthServer::new("http://127.0.0.1/", timeout).unwrap().with_root_ca(Path::new("/x")).unwrap_err();
        assert!(format!("{err:#}").contains("failed to read"), "{err:#}");
    }

    #[test]
    fn grants_are_checked_and_rooted() {
        let now = SystemTime::now();
        let at = |secs: u64| now + Duration::from_secs(secs);
        let unix = |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let parse = |json: String, dialed: &str| decode_grant(json.as_bytes(), dialed, now);

        let ok = parse(
            format!(
                r#"{{"publish":["bbb/**"],"subscribe":["**"],"expires":{},"revalidate":30,"tier":"gold","peer":true,"extra":1}}"#,
                unix(at(60))
            ),
            "demo",
        )
        .unwrap();
        assert_eq!(strings(&ok.publish), ["demo/bbb/**"]);
        assert_eq!(strings(&ok.subscribe), ["demo/**"]);
        assert_eq!(ok.revalidate, Some(Duration::from_secs(30)));
        assert_eq!(ok.expires, Some(UNIX_EPOCH + Duration::from_secs(unix(at(60)))));
        assert_eq!(ok.subject, None);
        assert_eq!(ok.source, Source::AuthServer);
        assert!(ok.peer, "peer: true marks a peer relay");
        let plain = parse(r#"{"subscribe":["**"],"peer":"yes"}"#.into(), "demo").unwrap();
        assert!(!plain.peer, "only true marks one");
        assert!(!parse(r#"{"subscribe":["**"]}"#.into(), "demo").unwrap().peer);

        // A root spelling out the dialed path is the default.
        let same = parse(r#"{"subscribe":["x"],"root":"/demo/"}"#.into(), "demo").unwrap();
        assert_eq!(strings(&same.subscribe), ["demo/x"]);

        let denied = |detail: &str| Err(Refusal::new(Denial::AuthServerDenied, detail));
        let unavailable = |detail: &str| Err(Refusal::new(Denial::AuthServerUnavailable, detail));
        assert_eq!(
            parse(r#"{"subscribe":["**"],"root":"pid/room"}"#.into(), "demo"),
            denied("grant uses root/mounts, unsupported")
        );
        assert_eq!(
            parse(r#"{"subscribe":["**"],"mounts":{".svc":".svc/pid"}}"#.into(), "demo"),
            denied("grant uses root/mounts, unsupported")
        );
        assert_eq!(parse("{}".into(), "demo"), denied("grant grants nothing"));
        assert_eq!(
            parse(r#"{"publish":[],"subscribe":[],"expires":1}"#.into(), "demo"),
            denied("grant grants nothing")
        );
        assert_eq!(
            parse(r#"{"publish":["**"],"revalidate":30}"#.into(), "demo"),
            unavailable("grant asks to be revalidated but never expires")
        );
        assert_eq!(
            parse(format!(r#"{{"publish":["**"],"revalidate":0,"expires":{}}}"#, unix(at(60))), "demo"),
            unavailable("grant asks to be revalidated at no interval")
        );
        assert_eq!(
            parse(format!(r#"{{"publish":["**"],"expires":{}}}"#, unix(now) - 1), "demo"),
            unavailable("grant has already expired")
        );
        assert_eq!(
            parse(r#"{"publish":["**"],"expires":-5}"#.into(), "demo"),
            unavailable("grant has already expired")
        );
        let refusal = parse(r#"{"publish":["a/**/b/**"]}"#.into(), "demo").unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerUnavailable, "{refusal}");
        assert!(refusal.detail.starts_with("malformed grant: pattern `a/**/b/**`"), "{refusal}");
        let refusal = parse(r#"{"publish":"**"}"#.into(), "demo").unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerUnavailable, "{refusal}");
    }

    #[tokio::test]
    async fn https_with_an_explicit_ca() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let dir = TempDir::new();
        let ca = dir.0.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut received = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                // The second client does not trust the certificate: its handshake fails.
                let Ok(mut stream) = acceptor.accept(stream).await else { continue };
                received.push(read_request(&mut stream).await);
                let answer = response("200 OK", r#"{"publish":["**"],"subscribe":["**"]}"#);
                stream.write_all(&answer).await.unwrap();
                stream.shutdown().await.unwrap();
            }
            received
        });

        let url = format!("https://localhost:{port}/grant");
        let server = AuthServer::new(&url, Duration::from_secs(5)).unwrap().with_root_ca(&ca).unwrap();
        let grant = server.connect(&request("live", None)).await.unwrap();
        assert_eq!(strings(&grant.publish), ["live/**"]);
        assert_eq!(strings(&grant.subscribe), ["live/**"]);

        // Without the CA, the platform roots do not know it.
        let untrusting = AuthServer::new(&url, Duration::from_secs(5)).unwrap();
        let refusal = untrusting.connect(&request("live", None)).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::AuthServerUnavailable, "{refusal}");
        assert!(refusal.detail.starts_with("TLS handshake failed"), "{refusal}");

        let received = task.await.unwrap();
        assert_eq!(received.len(), 1);
        let head = received[0].split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
        assert!(head.starts_with("post /grant http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: localhost:{port}\r\n")), "{head}");
    }
}
