//! Framed reading and writing of moq-lite messages on one QUIC/WebTransport stream.

use bytes::{Buf, Bytes, BytesMut};

use crate::coding::{decode_partial, Decode, DecodeError, Encode};
use crate::message::FrameHeader;
use crate::telemetry::Telemetry;
use crate::transport::{RecvStream, SendStream};
use crate::{Error, Version};

/// Bytes requested from the transport per read.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Reader {
    stream: RecvStream,
    buf: BytesMut,
    version: Version,
}

impl Reader {
    pub fn new(stream: RecvStream, version: Version) -> Self {
        Self { stream, buf: BytesMut::new(), version }
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Error> {
        match self.stream.read_chunk(READ_CHUNK).await? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The next message, or `None` if the stream ended cleanly at a message boundary.
    pub async fn decode_maybe<T: Decode>(&mut self) -> Result<Option<T>, Error> {
        loop {
            if !self.buf.is_empty() {
                match decode_partial::<T>(&mut self.buf, self.version) {
                    Ok(msg) => return Ok(Some(msg)),
                    Err(DecodeError::Short) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !self.fill().await? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(Error::ProtocolViolation("stream ended inside a message".into())),
                };
            }
        }
    }

    pub async fn decode<T: Decode>(&mut self) -> Result<T, Error> {
        self.decode_maybe()
            .await?
            .ok_or_else(|| Error::ProtocolViolation("stream ended before a required message".into()))
    }

    /// Exactly `size` payload bytes.
    pub async fn read_payload(&mut self, size: usize) -> Result<Bytes, Error> {
        if self.buf.len() >= size {
            return Ok(self.buf.split_to(size).freeze());
        }
        // Avoid a copy when the whole payload arrives as one chunk.
        if self.buf.is_empty() {
            if let Some(chunk) = self.stream.read_chunk(size).await? {
                if chunk.len() == size {
                    return Ok(chunk);
                }
                self.buf.extend_from_slice(&chunk);
            } else {
                return Err(Error::ProtocolViolation("stream ended inside a frame".into()));
            }
        }
        let mut out = BytesMut::with_capacity(size);
        self.read_into(&mut out, size).await?;
        Ok(out.freeze())
    }

    /// A frame in wire form: its header (as this session's version encodes it), then the
    /// payload, in one buffer (the one copy a relayed frame gets; every viewer's stream of the
    /// same frame layout then shares it). Returns the buffer and the header's length.
    pub async fn read_frame_wire(&mut self, header: &FrameHeader) -> Result<(Bytes, usize), Error> {
        let size = header.size as usize;
        let mut out = BytesMut::with_capacity(16 + size);
        header.encode(&mut out, self.version);
        let header_len = out.len();
        self.read_into(&mut out, header_len + size).await?;
        Ok((out.freeze(), header_len))
    }

    /// Appends buffered bytes, then stream data, to `out` until it holds `len` bytes; reads from
    /// the stream straight into `out`, never past the frame.
    async fn read_into(&mut self, out: &mut BytesMut, len: usize) -> Result<(), Error> {
        while out.len() < len {
            if self.buf.is_empty() {
                match self.stream.read_chunk(len - out.len()).await? {
                    Some(chunk) => out.extend_from_slice(&chunk),
                    None => return Err(Error::ProtocolViolation("stream ended inside a frame".into())),
                }
                continue;
            }
            let take = (len - out.len()).min(self.buf.len());
            out.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
        }
        Ok(())
    }

    /// Waits for the peer to finish its side; any further bytes are a protocol violation.
    pub async fn finished(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() || self.fill().await? {
            return Err(Error::ProtocolViolation("unexpected bytes after the last message".into()));
        }
        Ok(())
    }

    pub fn stop(&mut self, code: u32) {
        self.stream.stop(code);
    }
}

/// Writes messages to a stream. Dropped without [`Writer::finish`] it *resets* the stream
/// (quinn would otherwise FIN it, and a truncated group would look complete to the peer).
pub(crate) struct Writer {
    stream: SendStream,
    buf: BytesMut,
    version: Version,
    closed: bool,
    /// Where resets are counted.
    telemetry: Telemetry,
}

impl Writer {
    pub fn new(stream: SendStream, version: Version, telemetry: &Telemetry) -> Self {
        Self { stream, buf: BytesMut::new(), version, closed: false, telemetry: telemetry.clone() }
    }

    pub async fn encode<T: Encode>(&mut self, msg: &T) -> Result<(), Error> {
        msg.encode(&mut self.buf, self.version);
        self.flush().await
    }

    /// Queues a message without writing it yet (to batch a header with the next write).
    pub fn queue<T: Encode>(&mut self, msg: &T) {
        msg.encode(&mut self.buf, self.version);
    }

    pub fn queue_raw(&mut self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.buf)
    }

    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = self.buf.split().freeze();
        self.stream.write_chunk(bytes).await
    }

    /// Writes queued bytes (if any) and then `chunk`, without copying it.
    pub async fn write_bytes(&mut self, chunk: Bytes) -> Result<(), Error> {
        if self.buf.is_empty() {
            return self.stream.write_chunk(chunk).await;
        }
        let mut chunks = [self.buf.split().freeze(), chunk];
        self.stream.write_all_chunks(&mut chunks).await
    }

    /// Writes as much of `chunks` as the stream takes right now, without waiting: `false` when it
    /// took nothing (blocked, or bytes are still queued here); on `true` the chunks not yet
    /// written are left non-empty in `chunks`.
    pub fn try_write(&mut self, chunks: &mut [Bytes]) -> Result<bool, Error> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        Ok(self.stream.try_write_chunks(chunks)? > 0)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether nothing is queued here (every message so far was handed to the stream).
    pub fn is_flushed(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn set_priority(&mut self, priority: i32) {
        self.stream.set_priority(priority);
    }

    /// Ends the stream (FIN after what was written); once only, later calls do nothing.
    pub fn finish(&mut self) {
        if !self.closed {
            self.closed = true;
            self.stream.finish();
        }
    }

    pub fn reset(&mut self, code: u32) {
        if !self.closed {
            self.closed = true;
            crate::telemetry::StreamReset { sent: true, code }.emit(&self.telemetry);
            self.stream.reset(code);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.reset(crate::code::CANCEL);
    }
}
