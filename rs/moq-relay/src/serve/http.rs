//! An HTTP listener on one TCP address serving a router until shutdown, then letting requests in
//! flight finish: the public endpoints beside QUIC, and the operator listener.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;

use super::Stopping;

pub struct HttpListener {
    listener: tokio::net::TcpListener,
    router: Router,
    /// What it serves, for logs.
    what: &'static str,
}

impl HttpListener {
    pub async fn bind(addr: SocketAddr, router: Router, what: &'static str) -> anyhow::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on TCP {addr} ({what})"))?;
        Ok(Self { listener, router, what })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, mut stop: Stopping) {
        let shutdown = async move { stop.wait().await };
        if let Err(e) = crate::web::serve(self.listener, self.router, shutdown).await {
            tracing::error!(error = %e, listener = self.what, "HTTP listener failed");
        }
    }
}
