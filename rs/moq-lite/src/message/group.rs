use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// The largest frame accepted from the network. Real media frames are far smaller; the bound
/// keeps one hostile stream from claiming unbounded memory.
pub const MAX_FRAME_SIZE: u64 = 16 * 1024 * 1024;

/// Follows the Group stream type:
/// `Length | Subscribe ID (i) | Group Sequence (i) | Frame Start (i, 06)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeader {
    pub subscribe_id: u64,
    pub sequence: u64,
    /// Index of the first frame on this stream (06; 0 unless a relay resumes mid-group).
    pub frame_start: u64,
}

impl Decode for GroupHeader {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let subscribe_id = varint::decode(b)?;
            let sequence = varint::decode(b)?;
            let frame_start = if version.has_frame_bounds() { varint::decode(b)? } else { 0 };
            Ok(Self { subscribe_id, sequence, frame_start })
        })
    }
}

impl Encode for GroupHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.subscribe_id);
            varint::encode(b, self.sequence);
            if version.has_frame_bounds() {
                varint::encode(b, self.frame_start);
            }
        })
    }
}

/// The prefix of each frame on a group stream: `Timestamp Delta (i, zigzag, 05+) | Payload
/// Length (i)`; the payload follows unframed. The delta is relative to the previous frame of the
/// group (the first frame's is its absolute timestamp), in the track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    pub timestamp_delta: i64,
    pub size: u64,
}

impl Decode for FrameHeader {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        let timestamp_delta = if version.has_timestamps() { varint::zigzag_decode(varint::decode(buf)?) } else { 0 };
        let size = varint::decode(buf)?;
        if size > MAX_FRAME_SIZE {
            return Err(DecodeError::TooLarge { what: "frame", size, limit: MAX_FRAME_SIZE });
        }
        Ok(Self { timestamp_delta, size })
    }
}

impl Encode for FrameHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        if version.has_timestamps() {
            varint::encode(buf, varint::zigzag_encode(self.timestamp_delta));
        }
        varint::encode(buf, self.size);
    }
}
