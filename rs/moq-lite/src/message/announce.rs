use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// The longest hop chain accepted or forwarded.
pub const MAX_HOPS: usize = 32;

/// Sent by the side that wants to learn broadcasts: `Length | Prefix (s) | Exclude Hop (i, 04
/// and 05 only)`.
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
            let exclude_hop = if version.has_exclude_hop() { varint::decode(b)? } else { 0 };
            Ok(Self { prefix, exclude_hop })
        })
    }
}

impl Encode for AnnounceRequest {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            encode_string(b, &self.prefix);
            if version.has_exclude_hop() {
                varint::encode(b, self.exclude_hop);
            }
        })
    }
}

/// One broadcast appearing or disappearing, up to lite-05:
/// `Length | Status (8) | Path Suffix (s) | Hop Count (i) | Hop IDs (i)… (04+)`.
///
/// lite-03 carries only the hop count; decoding it yields that many zero ids. lite-05 also
/// accepts status 2 ("restart") as active.
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
                2 if version >= Version::Lite05 => true,
                v => return Err(DecodeError::InvalidValue { what: "announce status", value: v.into() }),
            };
            let suffix = decode_string(b, "path suffix")?;
            let hops = decode_hops(b, version)?;
            Ok(Self { active, suffix, hops })
        })
    }
}

impl Encode for Announce {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            b.put_u8(self.active as u8);
            encode_string(b, &self.suffix);
            encode_hops(b, &self.hops, version);
        })
    }
}

/// `Hop Count (i) | Hop IDs (i)…`; lite-03 has only the count (decoded as that many zero ids).
fn decode_hops<B: Buf>(b: &mut B, version: Version) -> Result<Vec<u64>, DecodeError> {
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
    Ok(hops)
}

fn encode_hops<B: BufMut>(b: &mut B, hops: &[u64], version: Version) {
    varint::encode(b, hops.len() as u64);
    if version.has_hop_ids() {
        for hop in hops {
            varint::encode(b, *hop);
        }
    }
}

/// The publisher's first reply on an announce stream (05+): `Length | Hop ID (i) | Active
/// Count (i)` — its hop id (the receiver appends it to every chain on this stream) and how many
/// announcements follow as the initial set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnnounceOk {
    pub hop: u64,
    pub active: u64,
}

impl Decode for AnnounceOk {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| Ok(Self { hop: varint::decode(b)?, active: varint::decode(b)? }))
    }
}

impl Encode for AnnounceOk {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.hop);
            varint::encode(b, self.active);
        })
    }
}

/// The largest route cost; sums saturate here.
pub const MAX_COST: u64 = (1 << 62) - 1;

/// A route's cost (06): `Cost Warm (i) | Cost Cold (i)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub warm: u64,
    pub cold: u64,
}

/// A lite-06 announcement, typed: `Type (i) | Length (i) | body`. Each START takes the next
/// announce id of its stream (0, 1, 2, …, never on the wire); END and UPDATE name one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnounceMessage {
    /// Type 0: `Suffix (s) | Hops | Cost`.
    Start { suffix: String, hops: Vec<u64>, cost: Cost },
    /// Type 1: `Announce ID (i)`.
    End { id: u64 },
    /// Type 2: `Announce ID (i) | Hops | Cost`, replacing the route in place.
    Update { id: u64, hops: Vec<u64>, cost: Cost },
    /// An unknown type, skipped by its length.
    Unknown(u64),
}

impl Decode for AnnounceMessage {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        let kind = varint::decode(buf)?;
        decode_sized(buf, |b| {
            let cost = |b: &mut &[u8]| -> Result<Cost, DecodeError> {
                Ok(Cost { warm: varint::decode(b)?.min(MAX_COST), cold: varint::decode(b)?.min(MAX_COST) })
            };
            Ok(match kind {
                0 => {
                    let suffix = decode_string(b, "path suffix")?;
                    let hops = decode_hops(b, version)?;
                    Self::Start { suffix, hops, cost: cost(b)? }
                }
                1 => Self::End { id: varint::decode(b)? },
                2 => {
                    let id = varint::decode(b)?;
                    let hops = decode_hops(b, version)?;
                    Self::Update { id, hops, cost: cost(b)? }
                }
                other => {
                    b.advance(b.len());
                    Self::Unknown(other)
                }
            })
        })
    }
}

impl Encode for AnnounceMessage {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        let kind = match self {
            Self::Start { .. } => 0,
            Self::End { .. } => 1,
            Self::Update { .. } => 2,
            Self::Unknown(kind) => *kind,
        };
        varint::encode(buf, kind);
        encode_sized(buf, |b| match self {
            Self::Start { suffix, hops, cost } => {
                encode_string(b, suffix);
                encode_hops(b, hops, version);
                varint::encode(b, cost.warm);
                varint::encode(b, cost.cold);
            }
            Self::End { id } => varint::encode(b, *id),
            Self::Update { id, hops, cost } => {
                varint::encode(b, *id);
                encode_hops(b, hops, version);
                varint::encode(b, cost.warm);
                varint::encode(b, cost.cold);
            }
            Self::Unknown(_) => {}
        })
    }
}
