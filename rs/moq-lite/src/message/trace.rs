//! A private extension between nodes of this implementation: the W3C trace context of a
//! subscription, so one trace follows a viewer's request from relay to relay.
//!
//! Sent only to a peer whose SETUP carried [`crate::message::Setup::trace_context`] (never to
//! other implementations, which would reset the unknown stream type): a *traced* stream is
//! `0x7f00 (type) | TRACE_CONTEXT | inner type | …`, i.e. an ordinary SUBSCRIBE or TRACK stream
//! preceded by this message, so the work it asks of the peer continues the asker's trace.

use bytes::{Buf, BufMut};

use super::Version;
use crate::coding::*;

/// Longest traceparent accepted (W3C version 00 is 55 characters; later versions may append).
pub const MAX_TRACEPARENT: usize = 256;

/// `Length | Traceparent (s)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceContext {
    pub traceparent: String,
}

impl Decode for TraceContext {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        decode_sized(buf, |b| {
            let traceparent = decode_string(b, "traceparent")?;
            if traceparent.len() > MAX_TRACEPARENT {
                let (size, limit) = (traceparent.len() as u64, MAX_TRACEPARENT as u64);
                return Err(DecodeError::TooLarge { what: "traceparent", size, limit });
            }
            Ok(Self { traceparent })
        })
    }
}

impl Encode for TraceContext {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        encode_sized(buf, |b| encode_string(b, &self.traceparent))
    }
}
