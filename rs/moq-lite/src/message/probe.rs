use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// `Length | Bitrate (i, bps, 0 = unknown) | RTT (i, ms, 0 = unknown; 04+)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    pub bitrate: u64,
    pub rtt_ms: u64,
}

impl Decode for Probe {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let bitrate = varint::decode(b)?;
            let rtt_ms = if version.has_probe_rtt() { varint::decode(b)? } else { 0 };
            Ok(Self { bitrate, rtt_ms })
        })
    }
}

impl Encode for Probe {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.bitrate);
            if version.has_probe_rtt() {
                varint::encode(b, self.rtt_ms);
            }
        })
    }
}
