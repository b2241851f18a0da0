//! One connection under a moq-lite session, whatever carries it: QUIC (raw or WebTransport, both
//! through `web_transport_quinn`) or qmux over a WebSocket. The session layer sees only the
//! operations below, with errors already mapped to [`Error`]: a stream the peer reset or stopped
//! is [`Error::RemoteReset`], anything else ended is [`Error::Closed`].

use bytes::{Buf, Bytes};
use futures::FutureExt;
use web_transport_trait::{RecvStream as _, SendStream as _, Session as _};

use crate::Error;

/// A moq-lite connection. Cheap to clone (both variants are handles).
// One per session, never moved on a hot path: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Connection {
    /// Raw QUIC (ALPN = moq version) or WebTransport over HTTP/3.
    Quic(web_transport_quinn::Session),
    /// qmux over a WebSocket (`ws://`, `wss://`).
    WebSocket(qmux::Session),
}

impl From<web_transport_quinn::Session> for Connection {
    fn from(session: web_transport_quinn::Session) -> Self {
        Self::Quic(session)
    }
}

impl From<qmux::Session> for Connection {
    fn from(session: qmux::Session) -> Self {
        Self::WebSocket(session)
    }
}

fn closed(e: impl std::fmt::Display) -> Error {
    Error::Closed(e.to_string())
}

/// The peer's reset (on a receive stream) or stop (on a send stream) code, else `Closed`.
fn qmux_error(e: qmux::Error) -> Error {
    match e {
        qmux::Error::StreamReset(code) | qmux::Error::StreamStop(code) => {
            Error::RemoteReset(u32::try_from(code.into_inner()).unwrap_or(u32::MAX))
        }
        e => closed(e),
    }
}

/// Why a qmux session ended, for `accept_*`/`open_*`: the peer's malformed qmux or WebSocket
/// input is a protocol violation (so it is counted as one), anything else a close.
fn qmux_session_error(e: qmux::Error) -> Error {
    use qmux::ws::tungstenite::Error as Ws;
    let violation = match &e {
        // A TCP reset without a closing handshake is a client that died, not a malformed one.
        qmux::Error::WebSocket(ws) => match &**ws {
            Ws::Protocol(qmux::ws::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => false,
            ws => matches!(ws, Ws::Capacity(_) | Ws::Protocol(_) | Ws::Utf8(_)),
        },
        qmux::Error::ConnectionClosed { .. }
        | qmux::Error::ConnectionReset { .. }
        | qmux::Error::Closed
        | qmux::Error::IdleTimeout
        | qmux::Error::Io(_)
        | qmux::Error::StreamClosed
        | qmux::Error::StreamReset(_)
        | qmux::Error::StreamStop(_) => false,
        _ => true,
    };
    match violation {
        true => Error::ProtocolViolation(format!("qmux: {e}")),
        false => closed(e),
    }
}

fn quinn_read_error(e: web_transport_quinn::ReadError) -> Error {
    use web_transport_quinn::ReadError;
    match e {
        ReadError::Reset(code) => Error::RemoteReset(code),
        ReadError::InvalidReset(code) => Error::RemoteReset(code.into_inner() as u32),
        e => closed(e),
    }
}

fn quinn_write_error(e: web_transport_quinn::WriteError) -> Error {
    use web_transport_quinn::WriteError;
    match e {
        WriteError::Stopped(code) => Error::RemoteReset(code),
        WriteError::InvalidStopped(code) => Error::RemoteReset(code.into_inner() as u32),
        e => closed(e),
    }
}

impl Connection {
    pub async fn open_uni(&self) -> Result<SendStream, Error> {
        match self {
            Self::Quic(s) => s.open_uni().await.map(SendStream::Quic).map_err(closed),
            Self::WebSocket(s) => {
                s.open_uni().await.map(|w| SendStream::WebSocket(Box::new(w))).map_err(qmux_session_error)
            }
        }
    }

    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), Error> {
        match self {
            Self::Quic(s) => s.open_bi().await.map(|(w, r)| (SendStream::Quic(w), RecvStream::Quic(r))).map_err(closed),
            Self::WebSocket(s) => s
                .open_bi()
                .await
                .map(|(w, r)| (SendStream::WebSocket(Box::new(w)), RecvStream::WebSocket(Box::new(r))))
                .map_err(qmux_session_error),
        }
    }

    pub async fn accept_uni(&self) -> Result<RecvStream, Error> {
        match self {
            Self::Quic(s) => s.accept_uni().await.map(RecvStream::Quic).map_err(closed),
            Self::WebSocket(s) => {
                s.accept_uni().await.map(|r| RecvStream::WebSocket(Box::new(r))).map_err(qmux_session_error)
            }
        }
    }

    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), Error> {
        match self {
            Self::Quic(s) => {
                s.accept_bi().await.map(|(w, r)| (SendStream::Quic(w), RecvStream::Quic(r))).map_err(closed)
            }
            Self::WebSocket(s) => s
                .accept_bi()
                .await
                .map(|(w, r)| (SendStream::WebSocket(Box::new(w)), RecvStream::WebSocket(Box::new(r))))
                .map_err(qmux_session_error),
        }
    }

    /// Closes the connection with an application `code` and `reason`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Self::Quic(s) => s.close(code, reason),
            Self::WebSocket(s) => s.close(code, &String::from_utf8_lossy(reason)),
        }
    }

    /// Resolves once the connection is closed, with why.
    pub async fn closed(&self) -> Error {
        match self {
            Self::Quic(s) => closed(s.closed().await),
            Self::WebSocket(s) => qmux_session_error(s.closed().await),
        }
    }

    /// Whether the peer ended the connection with a graceful close (application code 0): a
    /// publisher that is done and leaves, as opposed to one that failed or vanished.
    pub fn closed_cleanly(&self) -> bool {
        self.close_code() == Some(0)
    }

    /// The application code the peer closed the connection with, once it did (`None` while open,
    /// or when it ended otherwise: timeout, reset, our own close).
    pub fn close_code(&self) -> Option<u64> {
        match self {
            Self::Quic(s) => match s.close_reason() {
                Some(web_transport_quinn::SessionError::WebTransportError(
                    web_transport_quinn::WebTransportError::Closed(code, _),
                )) => Some(code.into()),
                Some(web_transport_quinn::SessionError::ConnectionError(
                    quinn::ConnectionError::ApplicationClosed(close),
                )) => Some(close.error_code.into_inner()),
                _ => None,
            },
            Self::WebSocket(s) => match s.closed().now_or_never() {
                Some(qmux::Error::ConnectionClosed { code, .. }) => Some(code.into_inner()),
                _ => None,
            },
        }
    }

    /// The negotiated application protocol (the moq version's ALPN), if any.
    pub fn protocol(&self) -> Option<&str> {
        match self {
            Self::Quic(s) => s.protocol(),
            Self::WebSocket(s) => web_transport_trait::Session::protocol(s),
        }
    }

    /// The QUIC connection, for its statistics; `None` over a WebSocket.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match self {
            Self::Quic(s) => Some(s),
            Self::WebSocket(_) => None,
        }
    }

    /// The WebTransport/raw QUIC session, when that is what carries this connection.
    pub fn as_quic(&self) -> Option<&web_transport_quinn::Session> {
        match self {
            Self::Quic(s) => Some(s),
            Self::WebSocket(_) => None,
        }
    }

    /// Lets the peer keep up to `count` streams of one direction open. QUIC only: qmux grants
    /// stream credit itself, from its [`qmux::Config`] limits, as streams finish.
    pub fn set_max_streams(&self, bidirectional: bool, count: u64) {
        let Self::Quic(s) = self else {
            return;
        };
        let count = quinn::VarInt::from_u64(count).unwrap_or(quinn::VarInt::MAX);
        if bidirectional {
            s.set_max_concurrent_bi_streams(count);
        } else {
            s.set_max_concurrent_uni_streams(count);
        }
    }
}

/// The sending half of a stream.
pub enum SendStream {
    Quic(web_transport_quinn::SendStream),
    /// Boxed: qmux's is twice quinn's, and a session holds one per group stream.
    WebSocket(Box<qmux::SendStream>),
}

impl SendStream {
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Error> {
        match self {
            Self::Quic(s) => s.write_chunk(chunk).await.map_err(quinn_write_error),
            Self::WebSocket(s) => {
                let mut chunk = chunk;
                while chunk.has_remaining() {
                    s.write_buf(&mut chunk).await.map_err(qmux_error)?;
                }
                Ok(())
            }
        }
    }

    /// Writes every chunk, in order.
    pub async fn write_all_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), Error> {
        match self {
            Self::Quic(s) => s.write_all_chunks(chunks).await.map_err(quinn_write_error),
            Self::WebSocket(s) => {
                for chunk in chunks.iter_mut() {
                    while chunk.has_remaining() {
                        s.write_buf(chunk).await.map_err(qmux_error)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes as much of `chunks` as the stream takes right now, without waiting: bytes taken
    /// are advanced out of `chunks` (fully written chunks end up empty), nothing is lost when it
    /// stops early. Returns how many bytes it took.
    ///
    /// quinn takes what fits its send buffer at once. qmux's `write_buf` commits each piece to
    /// its queue synchronously after its last await (queue slot, then flow-control credit), so
    /// abandoning it at the first `Pending` keeps what was queued and leaves the rest in place.
    pub fn try_write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<usize, Error> {
        match self {
            Self::Quic(s) => match s.write_chunks(chunks).now_or_never() {
                None => Ok(0),
                Some(written) => written.map(|w| w.bytes).map_err(quinn_write_error),
            },
            Self::WebSocket(s) => {
                let mut taken = 0;
                for chunk in chunks.iter_mut() {
                    while chunk.has_remaining() {
                        let before = chunk.len();
                        let result = s.write_buf(chunk).now_or_never();
                        taken += before - chunk.len();
                        match result {
                            None => return Ok(taken),
                            Some(Err(e)) if taken == 0 => return Err(qmux_error(e)),
                            Some(Err(_)) => return Ok(taken),
                            Some(Ok(_)) => {}
                        }
                    }
                }
                Ok(taken)
            }
        }
    }

    /// Higher goes first.
    pub fn set_priority(&mut self, priority: i32) {
        match self {
            // The trait method: the inherent one's only error is a closed stream.
            Self::Quic(s) => web_transport_trait::SendStream::set_priority(s, priority),
            Self::WebSocket(s) => s.set_priority(priority),
        }
    }

    /// Ends the stream after what was written.
    pub fn finish(&mut self) {
        match self {
            Self::Quic(s) => {
                let _ = s.finish();
            }
            Self::WebSocket(s) => {
                let _ = s.finish();
            }
        }
    }

    /// Abandons the stream with `code`.
    pub fn reset(&mut self, code: u32) {
        match self {
            Self::Quic(s) => {
                let _ = s.reset(code);
            }
            Self::WebSocket(s) => s.reset(code),
        }
    }
}

/// The receiving half of a stream.
pub enum RecvStream {
    Quic(web_transport_quinn::RecvStream),
    WebSocket(Box<qmux::RecvStream>),
}

impl RecvStream {
    /// Up to `max` bytes in stream order; `None` at the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, Error> {
        match self {
            Self::Quic(s) => s.read_chunk(max, true).await.map(|c| c.map(|c| c.bytes)).map_err(quinn_read_error),
            Self::WebSocket(s) => s.read_chunk(max).await.map_err(qmux_error),
        }
    }

    /// Asks the peer to stop sending, with `code`.
    pub fn stop(&mut self, code: u32) {
        match self {
            Self::Quic(s) => {
                let _ = s.stop(code);
            }
            Self::WebSocket(s) => s.stop(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_reset_is_a_close_and_malformed_frames_a_violation() {
        use qmux::ws::tungstenite::error::ProtocolError;
        use qmux::ws::tungstenite::Error as Ws;
        let ws = |e: Ws| qmux::Error::WebSocket(std::sync::Arc::new(e));
        let reset = qmux_session_error(ws(Ws::Protocol(ProtocolError::ResetWithoutClosingHandshake)));
        assert!(matches!(reset, Error::Closed(_)), "{reset:?}");
        let bad = qmux_session_error(ws(Ws::Protocol(ProtocolError::NonZeroReservedBits)));
        assert!(matches!(bad, Error::ProtocolViolation(_)), "{bad:?}");
    }

    #[test]
    fn stream_errors_map_to_remote_reset_and_the_rest_to_closed() {
        let code = 7u32.into();
        assert_eq!(qmux_error(qmux::Error::StreamReset(code)), Error::RemoteReset(7));
        assert_eq!(qmux_error(qmux::Error::StreamStop(code)), Error::RemoteReset(7));
        assert!(matches!(qmux_error(qmux::Error::Closed), Error::Closed(_)));
        assert!(matches!(qmux_session_error(qmux::Error::FrameTooLarge), Error::ProtocolViolation(_)));
        assert!(matches!(qmux_session_error(qmux::Error::InvalidFrameType(9)), Error::ProtocolViolation(_)));
        assert!(matches!(qmux_session_error(qmux::Error::IdleTimeout), Error::Closed(_)));
    }
}
