use std::sync::Arc;
use std::time::Duration;

/// Streams a new connection lets its peer open at once, per direction. quinn allocates a slot
/// for every stream it gives credit for, from the handshake on (about 130 KiB per connection at
/// 1 000 per direction, most of an idle session's memory), while a viewer keeps a handful open;
/// a [`crate::session::Session`] raises the credit as its peer keeps more streams open, up to
/// [`QuicOptions::max_streams`].
pub const INITIAL_STREAMS: u64 = 64;

/// Default cap on the streams a peer may keep open at once, per direction.
pub const DEFAULT_MAX_STREAMS: u64 = 1_000;

/// QUIC limits sized for one unidirectional stream per group per subscriber.
#[derive(Debug, Clone)]
pub struct QuicOptions {
    /// Most streams the peer may keep open at once, per direction: the credit starts at
    /// [`INITIAL_STREAMS`] (or this, if lower) and the session raises it on demand up to this.
    pub max_streams: u64,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
    /// Connection-level receive window.
    pub receive_window: u64,
    pub stream_receive_window: u64,
    pub send_window: u64,
    /// SO_SNDBUF/SO_RCVBUF requested for the UDP socket (0 keeps the kernel's). The kernel
    /// default (~208 KiB) overflows when one frame fans out to hundreds of connections in a burst:
    /// packets drop, get retransmitted, and cost the sender CPU and the viewers latency.
    pub socket_buffer: usize,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            // Finished streams return their credit, so 1 000 open at once suffice.
            max_streams: DEFAULT_MAX_STREAMS,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            receive_window: 64 * 1024 * 1024,
            stream_receive_window: 4 * 1024 * 1024,
            send_window: 64 * 1024 * 1024,
            socket_buffer: 4 * 1024 * 1024,
        }
    }
}

impl QuicOptions {
    pub(crate) fn transport_config(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        let initial = self.max_streams.min(INITIAL_STREAMS);
        let streams = quinn::VarInt::from_u64(initial).unwrap_or(quinn::VarInt::MAX);
        t.max_concurrent_bidi_streams(streams);
        t.max_concurrent_uni_streams(streams);
        t.max_idle_timeout(self.idle_timeout.try_into().ok());
        t.keep_alive_interval(Some(self.keep_alive));
        t.receive_window(quinn::VarInt::from_u64(self.receive_window).unwrap_or(quinn::VarInt::MAX));
        t.stream_receive_window(quinn::VarInt::from_u64(self.stream_receive_window).unwrap_or(quinn::VarInt::MAX));
        t.send_window(self.send_window);
        // Streams of equal priority go out one after the other instead of interleaved packet by
        // packet: a group's frames arrive in order and sooner, and the scheduler does less work
        // per packet (about 12 % less relay CPU per frame at 200 viewers in the benchmark).
        t.send_fairness(false);
        Arc::new(t)
    }
}

/// Binds a UDP socket with `buffer` bytes of send and receive buffer asked for (the kernel caps
/// the request at net.core.{w,r}mem_max; what it grants is logged at debug level).
pub(crate) fn bind_udp(addr: std::net::SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the OS allows it, like std's bind.
        let _ = socket.set_only_v6(false);
    }
    if buffer > 0 {
        // Best effort: a smaller buffer still works, only less well under bursts.
        let _ = socket.set_send_buffer_size(buffer);
        let _ = socket.set_recv_buffer_size(buffer);
    }
    socket.bind(&addr.into())?;
    tracing::debug!(
        %addr,
        send = socket.send_buffer_size().unwrap_or(0),
        recv = socket.recv_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    Ok(socket.into())
}
