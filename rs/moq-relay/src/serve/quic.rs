//! The QUIC/WebTransport listener on one UDP address: accepts connections and hands each to
//! `connection.rs` on the worker chosen for it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use moq_lite::transport::{QuicOptions, Server};
use moq_lite::Version;

use super::Stopping;
use crate::connection::{self, Context};

pub struct QuicListener {
    server: Arc<Server>,
    ctx: Arc<Context>,
}

impl QuicListener {
    pub fn bind(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        versions: &[Version],
        quic: &QuicOptions,
        ctx: Arc<Context>,
    ) -> anyhow::Result<Self> {
        let server =
            Server::bind(addr, tls, versions.to_vec(), quic).with_context(|| format!("listening on UDP {addr}"))?;
        let names: Vec<&str> = versions.iter().map(|v| v.alpn()).collect();
        tracing::info!(addr = %server.local_addr()?, versions = ?names, "QUIC/WebTransport listening");
        Ok(Self { server: Arc::new(server), ctx })
    }

    /// The server, so shutdown can close it once sessions drained.
    pub fn server(&self) -> Arc<Server> {
        self.server.clone()
    }

    /// Accepts until shutdown begins; sessions already running finish under the drain.
    pub async fn run(self, stop: Stopping) {
        connection::accept_loop(self.server, self.ctx, stop).await
    }
}
