//! Connecting and accepting moq-lite sessions over raw QUIC (ALPN = version token) and over
//! WebTransport (ALPN `h3`, version in `wt-available-protocols` / `wt-protocol`), and over qmux on a
//! WebSocket (version in `Sec-WebSocket-Protocol`: `qmux-01.<alpn>`).

mod backoff;
mod client;
mod conn;
mod fingerprint;
mod quic;
mod server;
pub mod websocket;

pub use backoff::Backoff;
pub use client::*;
pub use conn::{Connection, RecvStream, SendStream};
pub use quic::{QuicOptions, DEFAULT_MAX_STREAMS, INITIAL_STREAMS};
pub use server::*;
pub use websocket::WebSocketOptions;

/// How a session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Quic,
    WebTransport,
    /// qmux over a WebSocket (`ws://`, `wss://`).
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::WebTransport => "webtransport",
            Transport::WebSocket => "websocket",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
