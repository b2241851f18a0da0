use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// The timescale of tracks whose wire carries no timestamps (03/04) or whose publisher named
/// none: milliseconds, as the reference uses.
pub const DEFAULT_TIMESCALE: u64 = 1000;

/// Opens a Track stream (05+): `Length | Broadcast Path (s) | Track Name (s)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackRequest {
    pub broadcast: String,
    pub track: String,
}

impl Decode for TrackRequest {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            Ok(Self { broadcast: decode_string(b, "broadcast path")?, track: decode_string(b, "track name")? })
        })
    }
}

impl Encode for TrackRequest {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| {
            encode_string(b, &self.broadcast);
            encode_string(b, &self.track);
        })
    }
}

/// The publisher's answer on a Track stream, then FIN: `Length | Publisher Priority (8) |
/// Ordered (8, 05 only, written 0) | Max Age (i, ms) | Timescale (i, non-zero)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    pub priority: u8,
    pub max_age_ms: u64,
    /// Timestamp units per second.
    pub timescale: u64,
}

impl Default for TrackInfo {
    fn default() -> Self {
        Self { priority: 127, max_age_ms: 0, timescale: DEFAULT_TIMESCALE }
    }
}

impl Decode for TrackInfo {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let priority = decode_u8(b)?;
            if version.has_ordered_byte() {
                decode_u8(b)?; // ignored, whatever its value
            }
            let max_age_ms = varint::decode(b)?;
            let timescale = varint::decode(b)?;
            if timescale == 0 {
                return Err(DecodeError::InvalidValue { what: "timescale", value: 0 });
            }
            Ok(Self { priority, max_age_ms, timescale })
        })
    }
}

impl Encode for TrackInfo {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            b.put_u8(self.priority);
            if version.has_ordered_byte() {
                b.put_u8(0);
            }
            varint::encode(b, self.max_age_ms);
            varint::encode(b, self.timescale.max(1));
        })
    }
}
