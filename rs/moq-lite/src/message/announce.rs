use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// The longest hop chain accepted or forwarded.
pub const MAX_HOPS: usize = 32;

/// Sent by the side that wants to learn broadcasts: `Length | Prefix (s) | Exclude Hop (i, 04+)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub prefix: String,
    /// The requester's own hop id (0 = none); the publisher skips chains containing it.
    pub exclude_hop: u64,
}

impl Decode for AnnounceRequest {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let prefix = decode_string(b, "prefix")?;
            let exclude_hop = if version.has_hop_ids() { varint::decode(b)? } else { 0 };
            Ok(Self { prefix, exclude_hop })
        })
    }
}

impl Encode for AnnounceRequest {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            encode_string(b, &self.prefix);
            if version.has_hop_ids() {
                varint::encode(b, self.exclude_hop);
            }
        })
    }
}

/// One broadcast appearing or disappearing:
/// `Length | Status (8) | Path Suffix (s) | Hop Count (i) | Hop IDs (i)… (04+)`.
///
/// lite-03 carries only the hop count; decoding it yields that many zero ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub active: bool,
    pub suffix: String,
    pub hops: Vec<u64>,
}

impl Decode for Announce {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let active = match decode_u8(b)? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::InvalidValue { what: "announce status", value: v.into() }),
            };
            let suffix = decode_string(b, "path suffix")?;
            let count = varint::decode(b)?;
            if count > MAX_HOPS as u64 {
                return Err(DecodeError::TooLarge { what: "hop chain", size: count, limit: MAX_HOPS as u64 });
            }
            let mut hops = Vec::with_capacity(count as usize);
            for _ in 0..count {
                if !version.has_hop_ids() {
                    hops.push(0);
                    continue;
                }
                let hop = varint::decode(b)?;
                if hop != 0 && hops.contains(&hop) {
                    return Err(DecodeError::HopLoop(hop));
                }
                hops.push(hop);
            }
            Ok(Self { active, suffix, hops })
        })
    }
}

impl Encode for Announce {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            b.put_u8(self.active as u8);
            encode_string(b, &self.suffix);
            varint::encode(b, self.hops.len() as u64);
            if version.has_hop_ids() {
                for hop in &self.hops {
                    varint::encode(b, *hop);
                }
            }
        })
    }
}
