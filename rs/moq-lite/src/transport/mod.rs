//! Connecting and accepting moq-lite sessions over raw QUIC (ALPN = version token) and over
//! WebTransport (ALPN `h3`, version in `wt-available-protocols` / `wt-protocol`).

mod client;
mod fingerprint;
mod quic;
mod server;

pub use client::*;
pub use quic::{QuicOptions, DEFAULT_MAX_STREAMS, INITIAL_STREAMS};
pub use server::*;

/// How a session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Quic,
    WebTransport,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::WebTransport => "webtransport",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
