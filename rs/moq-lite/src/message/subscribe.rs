use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// `Length | Subscribe ID (i) | Broadcast (s) | Track (s) | Priority (8) | Ordered (8, up to 05) |
/// Max Latency (i, ms) | Start Group | End Group (i, +1) | Start Frame (i, 06) | End Frame (i, +1, 06)`.
///
/// Start Group is `+1` encoded up to 05 (0 = the latest group) and a plain number on 06 (0 =
/// resolve from the max latency); both decode to `None` for "not given".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub id: u64,
    /// The full broadcast path relative to the session root.
    pub broadcast: String,
    pub track: String,
    pub priority: u8,
    /// Carried up to lite-05, ignored (groups are always sent newest first).
    pub ordered: bool,
    pub max_latency_ms: u64,
    /// `None` = start at the latest group, from its first frame.
    pub start_group: Option<u64>,
    /// `None` = open-ended.
    pub end_group: Option<u64>,
    /// First frame of the start group (06; non-zero needs a start group).
    pub start_frame: u64,
    /// Exclusive end frame of the end group (06; needs an end group).
    pub end_frame: Option<u64>,
}

impl Decode for Subscribe {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let id = varint::decode(b)?;
            let broadcast = decode_string(b, "broadcast path")?;
            let track = decode_string(b, "track name")?;
            let window = Window::decode(b, version)?;
            Ok(Self {
                id,
                broadcast,
                track,
                priority: window.priority,
                ordered: window.ordered,
                max_latency_ms: window.max_latency_ms,
                start_group: window.start_group,
                end_group: window.end_group,
                start_frame: window.start_frame,
                end_frame: window.end_frame,
            })
        })
    }
}

impl Encode for Subscribe {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        encode_sized(buf, |b| {
            varint::encode(b, self.id);
            encode_string(b, &self.broadcast);
            encode_string(b, &self.track);
            self.window().encode(b, version);
        })
    }
}

impl Subscribe {
    fn window(&self) -> Window {
        Window {
            priority: self.priority,
            ordered: self.ordered,
            max_latency_ms: self.max_latency_ms,
            start_group: self.start_group,
            end_group: self.end_group,
            start_frame: self.start_frame,
            end_frame: self.end_frame,
        }
    }
}

/// SUBSCRIBE_UPDATE, sent by the subscriber on the subscribe stream after SUBSCRIBE, untyped:
/// SUBSCRIBE's fields from Priority on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeUpdate {
    pub priority: u8,
    pub ordered: bool,
    pub max_latency_ms: u64,
    pub start_group: Option<u64>,
    pub end_group: Option<u64>,
    pub start_frame: u64,
    pub end_frame: Option<u64>,
}

impl Decode for SubscribeUpdate {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let w = Window::decode(b, version)?;
            Ok(Self {
                priority: w.priority,
                ordered: w.ordered,
                max_latency_ms: w.max_latency_ms,
                start_group: w.start_group,
                end_group: w.end_group,
                start_frame: w.start_frame,
                end_frame: w.end_frame,
            })
        })
    }
}

impl Encode for SubscribeUpdate {
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        let window = Window {
            priority: self.priority,
            ordered: self.ordered,
            max_latency_ms: self.max_latency_ms,
            start_group: self.start_group,
            end_group: self.end_group,
            start_frame: self.start_frame,
            end_frame: self.end_frame,
        };
        encode_sized(buf, |b| window.encode(b, version))
    }
}

/// The delivery window shared by SUBSCRIBE and SUBSCRIBE_UPDATE.
struct Window {
    priority: u8,
    ordered: bool,
    max_latency_ms: u64,
    start_group: Option<u64>,
    end_group: Option<u64>,
    start_frame: u64,
    end_frame: Option<u64>,
}

impl Window {
    fn decode(b: &mut &[u8], version: Version) -> Result<Self, DecodeError> {
        let priority = decode_u8(b)?;
        let ordered = if version.has_ordered_byte() { decode_bool(b, "ordered")? } else { false };
        let max_latency_ms = varint::decode(b)?;
        let start_group = match version.has_frame_bounds() {
            true => Some(varint::decode(b)?),
            false => decode_optional(b)?,
        };
        let end_group = decode_optional(b)?;
        let (start_frame, end_frame) = match version.has_frame_bounds() {
            true => (varint::decode(b)?, decode_optional(b)?),
            false => (0, None),
        };
        if (start_frame != 0 && start_group.is_none()) || (end_frame.is_some() && end_group.is_none()) {
            return Err(DecodeError::InvalidValue { what: "frame bound without its group", value: start_frame });
        }
        // On 06 a start of group 0 at frame 0 is "resolve the start", like absent on 05.
        let start_group = match (start_group, start_frame) {
            (Some(0), 0) if version.has_frame_bounds() => None,
            (start, _) => start,
        };
        Ok(Self { priority, ordered, max_latency_ms, start_group, end_group, start_frame, end_frame })
    }

    fn encode(&self, b: &mut Vec<u8>, version: Version) {
        b.put_u8(self.priority);
        if version.has_ordered_byte() {
            b.put_u8(self.ordered as u8);
        }
        varint::encode(b, self.max_latency_ms);
        match version.has_frame_bounds() {
            true => varint::encode(b, self.start_group.unwrap_or(0)),
            false => encode_optional(b, self.start_group),
        }
        encode_optional(b, self.end_group);
        if version.has_frame_bounds() {
            varint::encode(b, self.start_frame);
            encode_optional(b, self.end_frame);
        }
    }
}

/// SUBSCRIBE_OK's body (03/04 only):
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

/// The publisher's typed replies on a subscribe stream: `Type (i) | Length | body`.
///
/// 03/04: 0 SUBSCRIBE_OK, 1 SUBSCRIBE_DROP. 05/06: 0 SUBSCRIBE_START, 1 SUBSCRIBE_END,
/// 2 SUBSCRIBE_DROP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeResponse {
    /// 03/04, always first.
    Ok(SubscribeParams),
    /// 05+: the absolute first group that will be delivered.
    Start { group: u64 },
    /// 05+: the exclusive end: the first sequence that will never come.
    End { group: u64 },
    /// Groups `start..=end` will never arrive.
    Drop { start: u64, end: u64, error_code: u64 },
}

impl Decode for SubscribeResponse {
    fn decode<B: Buf>(buf: &mut B, version: Version) -> Result<Self, DecodeError> {
        let kind = varint::decode(buf)?;
        let drop = |b: &mut &[u8]| -> Result<Self, DecodeError> {
            Ok(Self::Drop { start: varint::decode(b)?, end: varint::decode(b)?, error_code: varint::decode(b)? })
        };
        match (kind, version.has_track_stream()) {
            (0, false) => Ok(Self::Ok(SubscribeParams::decode(buf, version)?)),
            (1, false) => decode_sized(buf, drop),
            (0, true) => decode_sized(buf, |b| Ok(Self::Start { group: varint::decode(b)? })),
            (1, true) => decode_sized(buf, |b| Ok(Self::End { group: varint::decode(b)? })),
            (2, true) => decode_sized(buf, drop),
            (other, _) => Err(DecodeError::InvalidValue { what: "subscribe response type", value: other }),
        }
    }
}

impl Encode for SubscribeResponse {
    /// A variant the version does not have (OK on 05+, START/END before 05) is a caller bug;
    /// it is written as the nearest equivalent so the stream stays decodable.
    fn encode<B: BufMut>(&self, buf: &mut B, version: Version) {
        let modern = version.has_track_stream();
        match self {
            Self::Ok(params) if !modern => {
                varint::encode(buf, 0);
                params.encode(buf, version);
            }
            Self::Ok(_) | Self::Start { .. } if !modern => {
                varint::encode(buf, 0);
                SubscribeParams::default().encode(buf, version);
            }
            Self::Ok(_) => {
                debug_assert!(false, "SUBSCRIBE_OK does not exist on {version}");
            }
            Self::Start { group } => {
                varint::encode(buf, 0);
                encode_sized(buf, |b| varint::encode(b, *group));
            }
            Self::End { group } => {
                if modern {
                    varint::encode(buf, 1);
                    encode_sized(buf, |b| varint::encode(b, *group));
                }
            }
            Self::Drop { start, end, error_code } => {
                varint::encode(buf, if modern { 2 } else { 1 });
                encode_sized(buf, |b| {
                    varint::encode(b, *start);
                    varint::encode(b, *end);
                    varint::encode(b, *error_code);
                });
            }
        }
    }
}
