//! An HTTP listener on one TCP address serving a router until shutdown, then letting requests in
//! flight finish: the public endpoints beside QUIC, and the operator listener.
//!
//! The public one also takes `wss://`: a connection whose first byte opens a TLS ClientHello
//! (0x16) gets the relay's certificate and then the same router, so plain `http://`/`ws://` and
//! `https://`/`wss://` share the port. Each connection must finish its TLS handshake and each
//! request its head within [`REQUEST_TIMEOUT`], or it is dropped and counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use super::websocket::Peer;
use super::Stopping;
use crate::telemetry::{UpgradeFailure, WebSocketUpgradeFailed};

/// How long a connection may take to send the first byte, finish TLS, or send a request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpListener {
    listener: tokio::net::TcpListener,
    router: Router,
    /// What it serves, for logs.
    what: &'static str,
    public: Option<Public>,
}

/// The public listener's extras: TLS on the same port, and its connection handling.
struct Public {
    tls: tokio_rustls::TlsAcceptor,
    peer_ip: moq_telemetry::redact::PeerIp,
    /// The upgrade-size limit and where its hits are counted.
    gate: Arc<crate::access::gate::Gatekeeper>,
}

impl HttpListener {
    pub async fn bind(addr: SocketAddr, router: Router, what: &'static str) -> anyhow::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on TCP {addr} ({what})"))?;
        Ok(Self { listener, router, what, public: None })
    }

    /// Serves connections itself (TLS detection, request timeouts, upgrades) instead of
    /// through `axum::serve`; `tls`'s ALPN is set to `http/1.1`.
    pub fn public(
        mut self,
        mut tls: rustls::ServerConfig,
        peer_ip: moq_telemetry::redact::PeerIp,
        gate: Arc<crate::access::gate::Gatekeeper>,
    ) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.public = Some(Public { tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)), peer_ip, gate });
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, mut stop: Stopping) {
        let Some(public) = self.public else {
            let shutdown = async move { stop.wait().await };
            if let Err(e) = crate::web::serve(self.listener, self.router, shutdown).await {
                tracing::error!(error = %e, listener = self.what, "HTTP listener failed");
            }
            return;
        };
        let public = Arc::new(public);
        let mut connections = JoinSet::new();
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        tracing::warn!(error = %e, listener = self.what, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.wait() => break,
            };
            while connections.try_join_next().is_some() {}
            connections.spawn(connection(tcp, remote, self.router.clone(), public.clone()));
        }
        // Requests in flight finish; upgraded sessions run in tasks of their own, under the drain.
        connections.detach_all();
    }
}

/// One TCP connection of the public listener: TLS or not, then HTTP/1.1 with upgrades.
async fn connection(tcp: tokio::net::TcpStream, remote: SocketAddr, router: Router, public: Arc<Public>) {
    let _ = tcp.set_nodelay(true);
    let fail = |reason: UpgradeFailure, error: &dyn std::fmt::Display| {
        let client = public.peer_ip.show(remote).unwrap_or_default();
        WebSocketUpgradeFailed { reason, error: Some(error), client: Some(&client) }.emit();
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(REQUEST_TIMEOUT, tcp.peek(&mut first)).await {
        Err(_) => return fail(UpgradeFailure::Timeout, &"nothing sent"),
        Ok(Err(e)) => return fail(UpgradeFailure::Io, &e),
        // Closed without a byte: a port probe, nothing to count.
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => {}
    }
    // 0x16: a TLS handshake record, which no HTTP request starts with.
    if first[0] == 0x16 {
        let stream = match tokio::time::timeout(REQUEST_TIMEOUT, public.tls.accept(tcp)).await {
            Err(_) => return fail(UpgradeFailure::Timeout, &"TLS handshake timed out"),
            Ok(Err(e)) => return fail(UpgradeFailure::Tls, &e),
            Ok(Ok(stream)) => stream,
        };
        http(stream, Peer { remote, tls: true }, router, &public, fail).await
    } else {
        http(tcp, Peer { remote, tls: false }, router, &public, fail).await
    }
}

async fn http<S>(
    io: S,
    peer: Peer,
    router: Router,
    public: &Public,
    fail: impl Fn(UpgradeFailure, &dyn std::fmt::Display),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Whether a request arrived: a kept-alive connection that later idles out is not a failure.
    let served = Arc::new(AtomicBool::new(false));
    let seen = served.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        seen.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(peer);
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, request).await }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(public.gate.limits.limits().websocket_upgrade_bytes)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    let Err(e) = result else {
        return;
    };
    if served.load(Ordering::Relaxed) && !e.is_parse() {
        return;
    }
    if e.is_parse_too_large() {
        let client = public.peer_ip.show(peer.remote);
        let audit = crate::access::audit::AuditContext::default().client(client.as_deref());
        public.gate.limit_hit(&audit, crate::access::limits::Limit::WebSocketUpgradeSize);
    }
    let reason = match () {
        _ if e.is_timeout() => UpgradeFailure::Timeout,
        _ if e.is_parse() || e.is_parse_too_large() || e.is_parse_version_h2() => UpgradeFailure::BadRequest,
        _ => UpgradeFailure::Io,
    };
    fail(reason, &e);
}
