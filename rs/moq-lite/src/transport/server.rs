use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use url::Url;

use super::{QuicOptions, Transport};
use crate::session::Connection;
use crate::{Error, Version};

/// A QUIC endpoint accepting raw moq-lite and WebTransport sessions on one UDP port. (WebSocket
/// sessions arrive through the embedder's HTTP listener: [`Request::websocket`].)
pub struct Server {
    endpoint: quinn::Endpoint,
    versions: Vec<Version>,
}

impl Server {
    /// `tls` must allow TLS 1.3 (QUIC requires it); its ALPNs are replaced by `h3` plus one
    /// token per version.
    pub fn bind(
        addr: SocketAddr,
        mut tls: rustls::ServerConfig,
        versions: Vec<Version>,
        quic: &QuicOptions,
    ) -> anyhow::Result<Self> {
        tls.alpn_protocols = std::iter::once(web_transport_quinn::ALPN.to_string())
            .chain(versions.iter().map(|v| v.alpn().to_string()))
            .map(String::into_bytes)
            .collect();
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("the TLS configuration cannot carry QUIC")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(quic.transport_config());

        let socket = super::quic::bind_udp(addr, quic.socket_buffer).with_context(|| format!("binding UDP {addr}"))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self { endpoint, versions })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The next connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        let incoming = self.endpoint.accept().await?;
        Some(Incoming { incoming, versions: self.versions.clone() })
    }

    /// Stops accepting; existing connections are closed with `code`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.endpoint.close(code.into(), reason);
    }

    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await
    }
}

/// A connection attempt, not yet handshaken.
pub struct Incoming {
    incoming: quinn::Incoming,
    versions: Vec<Version>,
}

impl Incoming {
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Refuses the attempt before any handshake work (QUIC CONNECTION_REFUSED).
    pub fn refuse(self) {
        self.incoming.refuse();
    }

    /// Completes the QUIC handshake and, for WebTransport, reads the CONNECT request, choosing
    /// the version from the ALPN or the client's `wt-available-protocols` (never from bytes).
    pub async fn handshake(self) -> Result<Request, Error> {
        let conn = self.incoming.await.map_err(|e| Error::Transport(e.to_string()))?;
        let alpn = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default();
        if alpn == web_transport_quinn::ALPN {
            let request =
                web_transport_quinn::Request::accept(conn).await.map_err(|e| Error::Transport(e.to_string()))?;
            let version =
                request.protocols.iter().find_map(|p| Version::from_alpn(p).filter(|v| self.versions.contains(v)));
            return Ok(Request { inner: RequestKind::WebTransport(Box::new(request)), version });
        }
        let version = Version::from_alpn(&alpn).filter(|v| self.versions.contains(v));
        Ok(Request { inner: RequestKind::Raw(conn), version })
    }
}

enum RequestKind {
    Raw(quinn::Connection),
    WebTransport(Box<web_transport_quinn::Request>),
    WebSocket(Box<super::websocket::Upgrade>),
}

/// A handshaken session request awaiting the server's decision.
pub struct Request {
    inner: RequestKind,
    version: Option<Version>,
}

impl Request {
    /// A WebSocket upgrade the HTTP layer parsed, its sub-protocol already chosen (see
    /// [`super::websocket::choose`]).
    pub fn websocket(upgrade: super::websocket::Upgrade) -> Self {
        let version = Some(upgrade.version);
        Self { inner: RequestKind::WebSocket(Box::new(upgrade)), version }
    }

    pub fn transport(&self) -> Transport {
        match self.inner {
            RequestKind::Raw(_) => Transport::Quic,
            RequestKind::WebTransport(_) => Transport::WebTransport,
            RequestKind::WebSocket(_) => Transport::WebSocket,
        }
    }

    /// The negotiated version; `None` when the client offered nothing we speak.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The WebTransport CONNECT or WebSocket upgrade URL. Raw QUIC lite-03/04 carries no URL:
    /// root scope.
    pub fn url(&self) -> Option<&Url> {
        match &self.inner {
            RequestKind::Raw(_) => None,
            RequestKind::WebTransport(r) => Some(&r.url),
            RequestKind::WebSocket(u) => Some(&u.url),
        }
    }

    /// A request header of the WebTransport CONNECT or WebSocket upgrade (e.g. `traceparent`).
    pub fn header(&self, name: &str) -> Option<&str> {
        let headers = match &self.inner {
            RequestKind::Raw(_) => return None,
            RequestKind::WebTransport(r) => &r.headers,
            RequestKind::WebSocket(u) => &u.headers,
        };
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn remote_address(&self) -> SocketAddr {
        match &self.inner {
            RequestKind::Raw(c) => c.remote_address(),
            RequestKind::WebTransport(r) => r.conn().remote_address(),
            RequestKind::WebSocket(u) => u.remote,
        }
    }

    /// The QUIC connection; `None` for a WebSocket.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match &self.inner {
            RequestKind::Raw(c) => Some(c),
            RequestKind::WebTransport(r) => Some(r.conn()),
            RequestKind::WebSocket(_) => None,
        }
    }

    /// Accepts the session, answering WebTransport with the chosen `wt-protocol`.
    pub async fn accept(self) -> Result<(Connection, Version), Error> {
        let Some(version) = self.version else {
            self.reject(Error::Version).await;
            return Err(Error::Version);
        };
        match self.inner {
            RequestKind::Raw(conn) => Ok((web_transport_quinn::Session::raw(conn).into(), version)),
            RequestKind::WebTransport(request) => {
                let response = web_transport_quinn::proto::ConnectResponse::OK.with_protocol(version.alpn());
                let session = request.respond(response).await.map_err(|e| Error::Transport(e.to_string()))?;
                Ok((session.into(), version))
            }
            RequestKind::WebSocket(upgrade) => Ok((Connection::WebSocket(upgrade.accept().await?), version)),
        }
    }

    /// Refuses the session: an HTTP status for WebTransport and WebSocket, a close code for raw
    /// QUIC.
    pub async fn reject(self, err: Error) {
        let status = match err {
            Error::Unauthorized => http::StatusCode::FORBIDDEN,
            Error::Version => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        };
        match self.inner {
            RequestKind::Raw(conn) => conn.close(err.code().into(), err.to_string().as_bytes()),
            RequestKind::WebTransport(request) => {
                // Dropping the connection at once would discard the response in flight: the client
                // would see the connection vanish instead of the status. Let it read the answer and
                // close, for at most a moment.
                let conn = request.conn().clone();
                if request.reject(status).await.is_ok() {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
                }
            }
            RequestKind::WebSocket(upgrade) => upgrade.reject(status),
        }
    }
}
