use std::sync::Arc;
use std::time::Duration;

/// QUIC limits sized for one unidirectional stream per group per subscriber.
#[derive(Debug, Clone)]
pub struct QuicOptions {
    pub max_streams: u64,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    /// Connection-level receive window.
    pub receive_window: u64,
    pub stream_receive_window: u64,
    pub send_window: u64,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            receive_window: 64 * 1024 * 1024,
            stream_receive_window: 4 * 1024 * 1024,
            send_window: 64 * 1024 * 1024,
        }
    }
}

impl QuicOptions {
    pub(crate) fn transport_config(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        let streams = quinn::VarInt::from_u64(self.max_streams).unwrap_or(quinn::VarInt::MAX);
        t.max_concurrent_bidi_streams(streams);
        t.max_concurrent_uni_streams(streams);
        t.max_idle_timeout(self.idle_timeout.try_into().ok());
        t.keep_alive_interval(Some(self.keep_alive));
        t.receive_window(quinn::VarInt::from_u64(self.receive_window).unwrap_or(quinn::VarInt::MAX));
        t.stream_receive_window(quinn::VarInt::from_u64(self.stream_receive_window).unwrap_or(quinn::VarInt::MAX));
        t.send_window(self.send_window);
        Arc::new(t)
    }
}
