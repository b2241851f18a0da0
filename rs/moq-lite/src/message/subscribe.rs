use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// `Length | Subscribe ID (i) | Broadcast (s) | Track (s) | Priority (8) | Ordered (8) |
/// Max Latency (i, ms) | Start Group (i, +1) | End Group (i, +1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub id: u64,
    /// The full broadcast path relative to the session root.
    pub broadcast: String,
    pub track: String,
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    /// `None` = start at the latest group, from its first frame.
    pub start_group: Option<u64>,
    /// `None` = open-ended.
    pub end_group: Option<u64>,
}

impl Decode for Subscribe {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                id: varint::decode(b)?,
                broadcast: decode_string(b, "broadcast path")?,
                track: decode_string(b, "track name")?,
                priority: decode_u8(b)?,
                ordered: decode_bool(b, "ordered")?,
                max_latency_ms: varint::decode(b)?,
                start_group: decode_optional(b)?,
                end_group: decode_optional(b)?,
            })
        })
    }
}

impl Encode for Subscribe {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.id);
            encode_string(b, &self.broadcast);
            encode_string(b, &self.track);
            b.put_u8(self.priority);
            b.put_u8(self.ordered as u8);
            varint::encode(b, self.max_latency_ms);
            encode_optional(b, self.start_group);
            encode_optional(b, self.end_group);
        })
    }
}

/// The subscription parameters shared by SUBSCRIBE_UPDATE and SUBSCRIBE_OK:
/// `Length | Priority (8) | Ordered (8) | Max Latency (i) | Start Group (i,+1) | End Group (i,+1)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeParams {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    pub start_group: Option<u64>,
    pub end_group: Option<u64>,
}

impl Decode for SubscribeParams {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self {
                priority: decode_u8(b)?,
                ordered: decode_bool(b, "ordered")?,
                max_latency_ms: varint::decode(b)?,
                start_group: decode_optional(b)?,
                end_group: decode_optional(b)?,
            })
        })
    }
}

impl Encode for SubscribeParams {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| {
            b.put_u8(self.priority);
            b.put_u8(self.ordered as u8);
            varint::encode(b, self.max_latency_ms);
            encode_optional(b, self.start_group);
            encode_optional(b, self.end_group);
        })
    }
}

/// SUBSCRIBE_UPDATE: sent by the subscriber on the subscribe stream after SUBSCRIBE, untyped.
pub type SubscribeUpdate = SubscribeParams;

/// The publisher's typed replies on a subscribe stream: `Type (i) | Length | body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeResponse {
    /// Type 0, always first.
    Ok(SubscribeParams),
    /// Type 1: groups `start..=end` will never arrive.
    Drop { start: u64, end: u64, error_code: u64 },
}

impl Decode for SubscribeResponse {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        match varint::decode(buf)? {
            0 => Ok(Self::Ok(SubscribeParams::decode(buf, version)?)),
            1 => decode_sized(buf, |b| {
                Ok(Self::Drop { start: varint::decode(b)?, end: varint::decode(b)?, error_code: varint::decode(b)? })
            }),
            other => Err(DecodeError::InvalidValue { what: "subscribe response type", value: other }),
        }
    }
}

impl Encode for SubscribeResponse {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        match self {
            Self::Ok(params) => {
                varint::encode(buf, 0);
                params.encode(buf, version);
            }
            Self::Drop { start, end, error_code } => {
                varint::encode(buf, 1);
                encode_sized(buf, |b| {
                    varint::encode(b, *start);
                    varint::encode(b, *end);
                    varint::encode(b, *error_code);
                });
            }
        }
    }
}
