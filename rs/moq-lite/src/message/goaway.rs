use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// `Length | New Session URI (s, ≤ 8192 bytes)`; an empty URI means "reconnect here".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Goaway {
    pub uri: String,
}

impl Decode for Goaway {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| Ok(Self { uri: decode_string(b, "goaway uri")? }))
    }
}

impl Encode for Goaway {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| encode_string(b, &self.uri))
    }
}
