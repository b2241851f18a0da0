use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// The largest frame accepted from the network. Real media frames are far smaller; the bound
/// keeps one hostile stream from claiming unbounded memory.
pub const MAX_FRAME_SIZE: u64 = 16 * 1024 * 1024;

/// Follows the Group stream type: `Length | Subscribe ID (i) | Group Sequence (i)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeader {
    pub subscribe_id: u64,
    pub sequence: u64,
}

impl Decode for GroupHeader {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| Ok(Self { subscribe_id: varint::decode(b)?, sequence: varint::decode(b)? }))
    }
}

impl Encode for GroupHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.subscribe_id);
            varint::encode(b, self.sequence);
        })
    }
}

/// The prefix of each frame on a group stream: `Payload Length (i)`; the payload follows
/// unframed (03/04 carry no timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub size: u64,
}

impl Decode for FrameHeader {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        let size = varint::decode(buf)?;
        if size > MAX_FRAME_SIZE {
            return Err(DecodeError::TooLarge { what: "frame", size, limit: MAX_FRAME_SIZE });
        }
        Ok(Self { size })
    }
}

impl Encode for FrameHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        varint::encode(buf, self.size);
    }
}
