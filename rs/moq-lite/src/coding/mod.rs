//! Primitive wire encodings shared by every moq-lite version: varints, strings, raw bytes,
//! booleans, "+1" optional integers and length-prefixed message bodies.
//!
//! Everything here is pure: decoding reads from a [`Buf`], encoding writes to a [`BufMut`], and
//! no function performs I/O. A decoder that runs out of input returns [`DecodeError::Short`]
//! so a stream reader can fetch more bytes and try again.

pub mod varint;

use bytes::{Buf, BufMut};

use crate::message::Version;

/// Upper bound for one length-prefixed control message body. The reference allows 64 MiB;
/// lite-04 control messages are a few hundred bytes, so anything larger is hostile.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Upper bound for any string on the wire (paths, track names, GOAWAY URIs).
pub const MAX_STRING_SIZE: usize = 8192;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed; nothing was consumed that matters to the caller.
    #[error("short buffer")]
    Short,
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge { what: &'static str, size: u64, limit: u64 },
    #[error("message length {declared} but the body used {used}")]
    LengthMismatch { declared: usize, used: usize },
    #[error("invalid {what}: {value}")]
    InvalidValue { what: &'static str, value: u64 },
    #[error("string is not UTF-8")]
    InvalidUtf8,
    #[error("hop id {0} repeats in the hop chain")]
    HopLoop(u64),
}

impl DecodeError {
    /// A stable, bounded label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::TooLarge { .. } => "too_large",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::InvalidValue { .. } => "invalid_value",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::HopLoop(_) => "hop_loop",
        }
    }
}

/// A value with a wire form that may differ between protocol versions.
pub trait Decode: Sized {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError>;
}

/// The encoding side of [`Decode`].
pub trait Encode {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version);
}

pub fn decode_u8<B: Buf>(buf: &mut B) -> Result<u8, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Short);
    }
    Ok(buf.get_u8())
}

pub fn decode_bool<B: Buf>(buf: &mut B, what: &'static str) -> Result<bool, DecodeError> {
    match decode_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidValue { what, value: v.into() }),
    }
}

/// A varint-length-prefixed UTF-8 string of at most [`MAX_STRING_SIZE`] bytes.
pub fn decode_string<B: Buf>(buf: &mut B, what: &'static str) -> Result<String, DecodeError> {
    let len = varint::decode(buf)?;
    if len > MAX_STRING_SIZE as u64 {
        return Err(DecodeError::TooLarge { what, size: len, limit: MAX_STRING_SIZE as u64 });
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    let mut bytes = vec![0; len];
    buf.copy_to_slice(&mut bytes);
    String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

pub fn encode_string<B: BufMut>(buf: &mut B, value: &str) {
    varint::encode(buf, value.len() as u64);
    buf.put_slice(value.as_bytes());
}

/// "Optional group" fields are `value + 1`, with 0 meaning absent.
pub fn decode_optional<B: Buf>(buf: &mut B) -> Result<Option<u64>, DecodeError> {
    Ok(varint::decode(buf)?.checked_sub(1))
}

pub fn encode_optional<B: BufMut>(buf: &mut B, value: Option<u64>) {
    varint::encode(buf, value.map_or(0, |v| v + 1));
}

/// Decodes `Length (i) | body`, requiring the body decoder to consume exactly `Length` bytes.
///
/// Returns [`DecodeError::Short`] until the whole body is buffered, so a reader can wait for it;
/// a declared length above [`MAX_MESSAGE_SIZE`] fails at once instead of buffering it.
pub fn decode_sized<B: Buf, T>(
    buf: &mut B,
    body: impl FnOnce(&mut &[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let declared = varint::decode(buf)?;
    if declared > MAX_MESSAGE_SIZE as u64 {
        return Err(DecodeError::TooLarge { what: "message", size: declared, limit: MAX_MESSAGE_SIZE as u64 });
    }
    let declared = declared as usize;
    if buf.remaining() < declared {
        return Err(DecodeError::Short);
    }
    let bytes = buf.copy_to_bytes(declared);
    let mut slice = &bytes[..];
    // Inside a complete body, running out of bytes is a length mismatch, not a short read.
    let value = body(&mut slice).map_err(|e| match e {
        DecodeError::Short => DecodeError::LengthMismatch { declared, used: declared + 1 },
        e => e,
    })?;
    if !slice.is_empty() {
        return Err(DecodeError::LengthMismatch { declared, used: declared - slice.len() });
    }
    Ok(value)
}

/// Encodes `Length (i) | body`.
pub fn encode_sized<B: BufMut>(buf: &mut B, body: impl FnOnce(&mut Vec<u8>)) {
    let mut tmp = Vec::with_capacity(64);
    body(&mut tmp);
    varint::encode(buf, tmp.len() as u64);
    buf.put_slice(&tmp);
}

/// Decodes a value from a buffer that is only partially filled: on success the consumed bytes
/// are removed from `buf`; on [`DecodeError::Short`] nothing is removed.
pub fn decode_partial<T: Decode>(buf: &mut bytes::BytesMut, version: Version) -> Result<T, DecodeError> {
    let mut cursor = std::io::Cursor::new(&buf[..]);
    let value = T::decode(&mut cursor, version)?;
    let used = cursor.position() as usize;
    buf.advance(used);
    Ok(value)
}
