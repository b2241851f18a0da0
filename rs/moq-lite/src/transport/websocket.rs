//! moq-lite over qmux over a WebSocket (`ws://`, `wss://`): the sub-protocol choice, the bounds
//! every WebSocket session gets, and the client's dial. The server side's HTTP upgrade is the
//! embedder's (it owns the HTTP listener); it hands the pending upgrade over as an [`Upgrade`],
//! which becomes a [`super::Request`] like any other.
//!
//! The moq version comes from `Sec-WebSocket-Protocol` only: `qmux-01.moq-lite-04` is qmux
//! draft-01 carrying lite-04. The bare forms (`qmux-01`, `webtransport`) name no moq version and
//! are refused.
//!
//! Bounds (peer input is hostile):
//! - a WebSocket message is at most [`MAX_MESSAGE`] bytes (tungstenite drops the connection past
//!   it), and a qmux record at most [`MAX_RECORD`] (qmux closes the session past it);
//! - sending: qmux queues at most 8 STREAM frames of at most 16 KiB per session before a write
//!   waits (its `PriorityQueue` capacity), then feeds at most a 64 KiB batch to tungstenite,
//!   whose write buffer is flushed before the next batch. Its control lane (RESET_STREAM,
//!   STOP_SENDING, window updates) is unbounded, and a peer that never reads can make it grow by
//!   opening and abandoning streams; [`StallGuard`] therefore fails the socket when a write
//!   makes no progress for [`WRITE_STALL`], which ends the session and frees all of it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use qmux::ws::tokio_tungstenite::{self, tungstenite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use url::Url;

use super::QuicOptions;
use crate::Version;

/// Largest WebSocket message (and frame) accepted.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Largest qmux record accepted (one record per WebSocket message).
pub const MAX_RECORD: u64 = 64 * 1024;
/// A write to the socket that makes no progress for this long fails the session.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// How long a dial, or an accepted upgrade's hand-over, may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The qmux wire-format prefixes we accept, with the version they name.
const PREFIXES: [(&str, qmux::Version); 3] =
    [("qmux-02.", qmux::Version::QMux02), ("qmux-01.", qmux::Version::QMux01), ("qmux-00.", qmux::Version::QMux00)];

/// The prefixes a client offers, newest first (draft-02 is not offered: browsers speak 01/00).
const OFFERED: [&str; 2] = ["qmux-01.", "qmux-00."];

/// The `Sec-WebSocket-Protocol` entries a client offers for `versions` (in its preference order).
pub fn offer(versions: &[Version]) -> Vec<String> {
    versions.iter().flat_map(|v| OFFERED.iter().map(move |p| format!("{p}{}", v.alpn()))).collect()
}

/// The moq version a negotiated sub-protocol names, if it is one of `versions`.
pub fn version_of(subprotocol: &str, versions: &[Version]) -> Option<Version> {
    let alpn = PREFIXES.iter().find_map(|(prefix, _)| subprotocol.strip_prefix(prefix))?;
    Version::from_alpn(alpn).filter(|v| versions.contains(v))
}

/// The server's choice: the first entry the client offered (in the order of its
/// `Sec-WebSocket-Protocol` header values, comma-separated) that names a qmux draft we speak and
/// a moq version in `versions`. `None` when none does (bare `qmux-01`, `webtransport`, nothing).
pub fn choose<'a>(offered: impl IntoIterator<Item = &'a str>, versions: &[Version]) -> Option<(String, Version)> {
    offered
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|p| version_of(p, versions).map(|v| (p.to_string(), v)))
}

/// Settings of every WebSocket session, from the QUIC ones so both transports behave alike.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    pub keep_alive: qmux::ws::KeepAlive,
    /// Most streams the peer may keep open at once, per direction.
    pub max_streams: u64,
    /// Connection-level receive window.
    pub receive_window: u64,
    pub stream_receive_window: u64,
    pub idle_timeout: Duration,
}

impl WebSocketOptions {
    /// The QUIC limits, with windows capped: a WebSocket has TCP's flow control underneath, and
    /// every byte of qmux window is memory a peer can make us hold.
    pub fn from_quic(quic: &QuicOptions) -> Self {
        Self {
            keep_alive: qmux::ws::KeepAlive::new(quic.keep_alive, quic.idle_timeout.max(quic.keep_alive * 2)),
            max_streams: quic.max_streams,
            receive_window: quic.receive_window.min(16 * 1024 * 1024),
            stream_receive_window: quic.stream_receive_window.min(1024 * 1024),
            idle_timeout: quic.idle_timeout,
        }
    }

    pub(crate) fn session(&self) -> qmux::Config {
        let mut config = qmux::Config::default();
        config.max_streams_bidi = self.max_streams;
        config.max_streams_uni = self.max_streams;
        config.max_data = self.receive_window;
        config.max_stream_data_bidi_local = self.stream_receive_window;
        config.max_stream_data_bidi_remote = self.stream_receive_window;
        config.max_stream_data_uni = self.stream_receive_window;
        config.max_idle_timeout = self.idle_timeout.as_millis().try_into().unwrap_or(u64::MAX);
        config.max_record_size = MAX_RECORD;
        config.max_datagram_frame_size = 0;
        config
    }

    pub(crate) fn websocket() -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(64 * 1024)
            .max_write_buffer_size(1024 * 1024)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
    }

    /// A qmux session over an established WebSocket that negotiated `subprotocol`.
    pub(crate) fn wrap<S>(
        &self,
        ws: tokio_tungstenite::WebSocketStream<S>,
        subprotocol: &str,
        server: bool,
    ) -> qmux::Session
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgraded = qmux::ws::Upgraded::new(ws)
            .with_alpn(subprotocol)
            .with_keep_alive(self.keep_alive)
            .with_session_config(self.session());
        match server {
            true => upgraded.accept(),
            false => upgraded.connect(),
        }
    }
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        Self::from_quic(&QuicOptions::default())
    }
}

/// A byte stream the HTTP layer upgraded.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The upgraded connection, once the HTTP layer has sent the 101 response.
pub type Upgraded = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>;

/// A WebSocket upgrade request the HTTP layer has parsed and not yet answered: the server's
/// decision goes back through `respond` (`Ok` = 101 Switching Protocols with `subprotocol`, or an
/// error status), after which `upgraded` yields the socket.
pub struct Upgrade {
    /// The request URL (path and query: the session root and the credential).
    pub url: Url,
    pub headers: http::HeaderMap,
    pub remote: SocketAddr,
    /// The chosen `Sec-WebSocket-Protocol` entry, and the moq version it names.
    pub subprotocol: String,
    pub version: Version,
    pub respond: oneshot::Sender<Result<(), http::StatusCode>>,
    pub upgraded: Upgraded,
    pub options: WebSocketOptions,
}

impl Upgrade {
    /// Answers 101 and starts qmux on the upgraded socket.
    pub(crate) async fn accept(self) -> Result<qmux::Session, crate::Error> {
        let _ = self.respond.send(Ok(()));
        let io = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.upgraded)
            .await
            .map_err(|_| crate::Error::Transport("WebSocket upgrade timed out".into()))?
            .map_err(|e| crate::Error::Transport(format!("WebSocket upgrade: {e}")))?;
        let io = StallGuard::new(io, WRITE_STALL);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tungstenite::protocol::Role::Server,
            Some(WebSocketOptions::websocket()),
        )
        .await;
        Ok(self.options.wrap(ws, &self.subprotocol, true))
    }

    pub(crate) fn reject(self, status: http::StatusCode) {
        let _ = self.respond.send(Err(status));
    }
}

/// Fails writes that make no progress for `limit` (the peer stopped reading), so a stalled
/// WebSocket session ends instead of holding what qmux queued for it.
pub struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write or flush is pending.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, stall: None }
    }

    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let limit = self.limit;
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// Dials `url` (`ws://` or `wss://`), offering `versions`; `tls` is used for `wss://`.
pub(crate) async fn connect(
    url: &Url,
    headers: http::HeaderMap,
    versions: &[Version],
    tls: Option<Arc<rustls::ClientConfig>>,
    options: &WebSocketOptions,
) -> anyhow::Result<(qmux::Session, Version)> {
    use tungstenite::client::IntoClientRequest;

    let secure = url.scheme() == "wss";
    let host = url.host_str().context("URL has no host")?.to_string();
    let port = url.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });
    let target = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect((target.as_str(), port)))
        .await
        .context("WebSocket connect timed out")?
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let _ = tcp.set_nodelay(true);

    let mut request = url.as_str().into_client_request().context("WebSocket request")?;
    request.headers_mut().extend(headers);
    let offered = offer(versions).join(", ");
    request
        .headers_mut()
        .insert(http::header::SEC_WEBSOCKET_PROTOCOL, http::HeaderValue::from_str(&offered).context("sub-protocols")?);

    let handshake = async {
        if secure {
            let tls = tls.context("wss:// needs a TLS configuration")?;
            let name = match target.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(target.clone()).context("TLS server name")?,
            };
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
            finish(stream, request, versions, options).await
        } else {
            finish(tcp, request, versions, options).await
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await.context("WebSocket handshake timed out")?
}

async fn finish<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    request: tungstenite::handshake::client::Request,
    versions: &[Version],
    options: &WebSocketOptions,
) -> anyhow::Result<(qmux::Session, Version)> {
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(WebSocketOptions::websocket()))
            .await
            .context("WebSocket upgrade")?;
    let chosen = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    let version = version_of(&chosen, versions)
        .with_context(|| format!("server selected no supported sub-protocol ({chosen:?})"))?;
    Ok((options.wrap(ws, &chosen, false), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Version] = &[Version::Lite04, Version::Lite03];

    #[test]
    fn the_first_offered_supported_entry_wins() {
        let chosen = choose(["qmux-01.moq-lite-04, qmux-00.moq-lite-04, qmux-01.moq-lite-03"], BOTH);
        assert_eq!(chosen, Some(("qmux-01.moq-lite-04".into(), Version::Lite04)));
        // The client's order, not ours.
        let chosen = choose(["qmux-00.moq-lite-03", "qmux-01.moq-lite-04"], BOTH);
        assert_eq!(chosen, Some(("qmux-00.moq-lite-03".into(), Version::Lite03)));
        assert_eq!(choose(["qmux-02.moq-lite-04"], BOTH), Some(("qmux-02.moq-lite-04".into(), Version::Lite04)));
    }

    #[test]
    fn unknown_versions_and_drafts_are_skipped() {
        let chosen =
            choose(["qmux-01.moq-lite-06, qmux-09.moq-lite-04,webtransport.moq-lite-04 , qmux-00.moq-lite-04"], BOTH);
        assert_eq!(chosen, Some(("qmux-00.moq-lite-04".into(), Version::Lite04)));
    }

    #[test]
    fn only_configured_versions_are_chosen() {
        assert_eq!(choose(["qmux-01.moq-lite-04"], &[Version::Lite03]), None);
        let chosen = choose(["qmux-01.moq-lite-04, qmux-01.moq-lite-03"], &[Version::Lite03]);
        assert_eq!(chosen, Some(("qmux-01.moq-lite-03".into(), Version::Lite03)));
    }

    #[test]
    fn bare_forms_and_nothing_are_refused() {
        assert_eq!(choose(["qmux-01, qmux-00, webtransport"], BOTH), None);
        assert_eq!(choose(["qmux-01.", "moq-lite-04", ""], BOTH), None);
        assert_eq!(choose([], BOTH), None);
    }

    #[test]
    fn the_client_offers_every_version_newest_first_in_both_drafts() {
        assert_eq!(
            offer(BOTH),
            ["qmux-01.moq-lite-04", "qmux-00.moq-lite-04", "qmux-01.moq-lite-03", "qmux-00.moq-lite-03"]
        );
        assert_eq!(version_of("qmux-00.moq-lite-03", BOTH), Some(Version::Lite03));
        assert_eq!(version_of("qmux-01", BOTH), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_limit() {
        use tokio::io::AsyncWriteExt;
        // A duplex pipe with a 16-byte buffer nobody reads.
        let (a, _b) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(a, Duration::from_secs(10));
        guarded.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }
}
