use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// Most parameters one SETUP may carry.
pub const MAX_SETUP_PARAMS: u64 = 64;

const PARAM_PROBE: u64 = 0x1;
const PARAM_PATH: u64 = 0x2;
const PARAM_ROLE: u64 = 0x3;
const PARAM_COST: u64 = 0x4;
const PARAM_HOP: u64 = 0x5;
/// Private: the sender serves traced subscribe streams (see `message::trace`). Other
/// implementations ignore it, as they ignore every unknown parameter.
const PARAM_TRACE_CONTEXT: u64 = 0x7f00;

/// Whether the sender, as a publisher, answers PROBE streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ProbeLevel {
    #[default]
    None,
    /// Reports its send-rate estimate.
    Report,
    /// Reports, and may also raise its rate on request (any level above 2 reads as this).
    Increase,
}

impl ProbeLevel {
    fn from_code(code: u64) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Report,
            _ => Self::Increase,
        }
    }

    fn code(self) -> u64 {
        match self {
            Self::None => 0,
            Self::Report => 1,
            Self::Increase => 2,
        }
    }
}

/// What the client intends to do; absent (or an unknown code) means both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// The one message of a Setup uni stream (05+): `Length | Count (i) | (ID (i) | Length (i) |
/// Value)…`. Integer parameters are a varint inside their value; unknown ids are ignored, a
/// repeated id is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    pub probe: ProbeLevel,
    /// The request target `path` or `path?query`: client only, raw QUIC only.
    pub path: Option<String>,
    pub role: Option<Role>,
    /// The link cost the sender adds to announcements it forwards (06; absent = 1).
    pub cost: Option<u64>,
    /// The sender's hop id in announcement chains (0 = none).
    pub hop: Option<u64>,
    /// The sender accepts traced subscribe streams (a private extension of this implementation).
    pub trace_context: bool,
}

impl Decode for Setup {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let count = varint::decode(b)?;
            if count > MAX_SETUP_PARAMS {
                return Err(DecodeError::TooLarge { what: "setup parameters", size: count, limit: MAX_SETUP_PARAMS });
            }
            let mut seen = Vec::with_capacity(count as usize);
            let mut setup = Setup::default();
            for _ in 0..count {
                let id = varint::decode(b)?;
                if seen.contains(&id) {
                    return Err(DecodeError::InvalidValue { what: "duplicate setup parameter", value: id });
                }
                seen.push(id);
                let len = varint::decode(b)?;
                if len > b.remaining() as u64 {
                    return Err(DecodeError::Short);
                }
                let mut value = b.copy_to_bytes(len as usize);
                match id {
                    PARAM_PROBE => setup.probe = ProbeLevel::from_code(param_varint(&mut value)?),
                    PARAM_PATH => {
                        if len > MAX_STRING_SIZE as u64 {
                            let limit = MAX_STRING_SIZE as u64;
                            return Err(DecodeError::TooLarge { what: "setup path", size: len, limit });
                        }
                        let path = String::from_utf8(value.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
                        setup.path = Some(path);
                    }
                    PARAM_ROLE => {
                        setup.role = match param_varint(&mut value)? {
                            1 => Some(Role::Publisher),
                            2 => Some(Role::Subscriber),
                            _ => None,
                        }
                    }
                    PARAM_COST => setup.cost = Some(param_varint(&mut value)?),
                    PARAM_HOP => setup.hop = Some(param_varint(&mut value)?).filter(|h| *h != 0),
                    PARAM_TRACE_CONTEXT => setup.trace_context = param_varint(&mut value)? == 1,
                    _ => {} // unknown parameters are ignored
                }
            }
            Ok(setup)
        })
    }
}

/// An integer parameter: exactly one varint filling the value.
fn param_varint(value: &mut bytes::Bytes) -> Result<u64, DecodeError> {
    let declared = value.len();
    let v = varint::decode(value)?;
    if value.has_remaining() {
        return Err(DecodeError::LengthMismatch { declared, used: declared - value.remaining() });
    }
    Ok(v)
}

impl Encode for Setup {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        // In ascending id order, so the bytes are deterministic.
        let mut params: Vec<(u64, Vec<u8>)> = Vec::new();
        let int = |v: u64| {
            let mut out = Vec::with_capacity(8);
            varint::encode(&mut out, v);
            out
        };
        if self.probe != ProbeLevel::None {
            params.push((PARAM_PROBE, int(self.probe.code())));
        }
        if let Some(path) = &self.path {
            params.push((PARAM_PATH, path.as_bytes().to_vec()));
        }
        if let Some(role) = self.role {
            params.push((PARAM_ROLE, int(if role == Role::Publisher { 1 } else { 2 })));
        }
        if let Some(cost) = self.cost {
            params.push((PARAM_COST, int(cost)));
        }
        if let Some(hop) = self.hop {
            params.push((PARAM_HOP, int(hop)));
        }
        if self.trace_context {
            params.push((PARAM_TRACE_CONTEXT, int(1)));
        }
        encode_sized(buf, |b| {
            varint::encode(b, params.len() as u64);
            for (id, value) in &params {
                varint::encode(b, *id);
                varint::encode(b, value.len() as u64);
                b.put_slice(value);
            }
        })
    }
}
