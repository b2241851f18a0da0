//! The relay's long-running parts, each a value with its own `run()`: the QUIC/WebTransport
//! listener, the HTTP listeners (public, with WebSocket sessions, and operator) and the telemetry
//! upkeep. `main.rs` builds them from the configuration, runs them and owns shutdown.

mod http;
mod quic;
mod upkeep;
pub mod websocket;

pub use http::HttpListener;
pub use quic::QuicListener;
pub use upkeep::Upkeep;
pub use websocket::WebSockets;

/// Resolves once shutdown has begun.
#[derive(Clone)]
pub struct Stopping(pub tokio::sync::watch::Receiver<bool>);

impl Stopping {
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Whether shutdown has begun.
    pub fn began(&self) -> bool {
        *self.0.borrow()
    }
}
