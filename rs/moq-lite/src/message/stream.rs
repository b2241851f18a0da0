use bytes::{Buf, BufMut};

use crate::coding::{varint, DecodeError};

/// The varint that opens every bidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiStreamType {
    Announce,
    Subscribe,
    Fetch,
    Probe,
    Goaway,
    /// TRACK / TRACK_INFO (05+).
    Track,
    /// A stream preceded by its trace context (`TRACE_CONTEXT`, then the inner stream's type
    /// and messages): a private extension between nodes of this implementation, used only toward
    /// peers that advertise it in SETUP, for SUBSCRIBE and TRACK streams (see `message::trace`).
    Traced,
}

impl BiStreamType {
    pub fn code(self) -> u64 {
        match self {
            Self::Announce => 0x1,
            Self::Subscribe => 0x2,
            Self::Fetch => 0x3,
            Self::Probe => 0x4,
            Self::Goaway => 0x5,
            Self::Track => 0x6,
            Self::Traced => 0x7f00,
        }
    }

    /// `Ok(None)` is an unknown type: the caller resets that stream only.
    pub fn decode<B: Buf>(buf: &mut B) -> Result<Result<Self, u64>, DecodeError> {
        Ok(match varint::decode(buf)? {
            0x1 => Ok(Self::Announce),
            0x2 => Ok(Self::Subscribe),
            0x3 => Ok(Self::Fetch),
            0x4 => Ok(Self::Probe),
            0x5 => Ok(Self::Goaway),
            0x6 => Ok(Self::Track),
            0x7f00 => Ok(Self::Traced),
            other => Err(other),
        })
    }

    pub fn encode<B: BufMut>(self, buf: &mut B) {
        varint::encode(buf, self.code());
    }
}

/// The varint that opens every unidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniStreamType {
    Group,
    /// One SETUP per side (05+).
    Setup,
}

impl UniStreamType {
    pub fn code(self) -> u64 {
        match self {
            Self::Group => 0x0,
            Self::Setup => 0x1,
        }
    }

    pub fn decode<B: Buf>(buf: &mut B) -> Result<Result<Self, u64>, DecodeError> {
        Ok(match varint::decode(buf)? {
            0x0 => Ok(Self::Group),
            0x1 => Ok(Self::Setup),
            other => Err(other),
        })
    }

    pub fn encode<B: BufMut>(self, buf: &mut B) {
        varint::encode(buf, self.code());
    }
}
