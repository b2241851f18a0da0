//! The decoder properties every moq-lite decoder must satisfy on any input, shared by the
//! hostile-input unit tests and the cargo-fuzz target (`fuzz/fuzz_targets/decode.rs`).
//!
//! Compiled only for tests and under the `fuzzing` feature. [`check`] runs one decoder on one
//! input and panics, naming the decoder, the version and the input, when a property is violated:
//!
//! - decoding out of a slice, out of a `BytesMut`, through [`decode_partial`] and over a two-chunk
//!   (non-contiguous) buffer gives the same result, and a success consumes the same amount each way;
//! - an error leaves the `decode_partial` buffer untouched;
//! - appending bytes never changes a result other than [`DecodeError::Short`] (a success keeps its
//!   value and its length, an error stays the same error);
//! - a success re-encodes to at most the bytes it consumed, and those bytes decode back to an equal
//!   value, consuming them all;
//! - that canonical encoding is a fixed point (re-encoding its decoding gives the same bytes) and,
//!   up to [`PREFIX_CHECK_LIMIT`] bytes, every strict prefix of it is `Short`, consuming nothing;
//! - a stream type is one varint (1, 2, 4 or 8 bytes), can only fail with `Short`, and decodes to
//!   an unknown code only when no known type has that code.

use std::fmt::{self, Debug};

use bytes::{Buf, BufMut, BytesMut};

use super::*;
use crate::coding::{decode_partial, varint, Decode, DecodeError, Encode};

/// Every version, oldest first.
pub const VERSIONS: [Version; 4] = [Version::Lite03, Version::Lite04, Version::Lite05, Version::Lite06];

/// Every decodable thing on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    AnnounceRequest,
    Announce,
    Subscribe,
    SubscribeUpdate,
    SubscribeResponse,
    GroupHeader,
    FrameHeader,
    Probe,
    Goaway,
    Setup,
    AnnounceOk,
    /// A typed lite-06 announcement.
    AnnounceMessage,
    TrackRequest,
    TrackInfo,
    /// The varint opening a bidirectional stream ([`BiStreamType`]).
    BiStream,
    /// The varint opening a unidirectional stream ([`UniStreamType`]).
    UniStream,
    /// The private trace-context message of a traced subscribe stream.
    TraceContext,
}

/// Every [`Kind`], in declaration order (the fuzz target's selector indexes this).
pub const KINDS: [Kind; 17] = [
    Kind::AnnounceRequest,
    Kind::Announce,
    Kind::Subscribe,
    Kind::SubscribeUpdate,
    Kind::SubscribeResponse,
    Kind::GroupHeader,
    Kind::FrameHeader,
    Kind::Probe,
    Kind::Goaway,
    Kind::Setup,
    Kind::AnnounceOk,
    Kind::AnnounceMessage,
    Kind::TrackRequest,
    Kind::TrackInfo,
    Kind::BiStream,
    Kind::UniStream,
    Kind::TraceContext,
];

/// The longest canonical encoding whose every prefix [`check`] decodes (quadratic in the length).
pub const PREFIX_CHECK_LIMIT: usize = 512;

/// Bytes appended to an input to check that a non-`Short` result does not depend on what follows.
const TAIL: [u8; 8] = [0x00, 0xff, 0x40, 0x80, 0xc0, 0x01, 0x3f, 0x7f];

/// Decodes `input` as `kind` in `version` and checks every property listed in the module docs.
///
/// Returns the number of bytes consumed, or the decode error.
///
/// # Panics
/// When a property is violated, with a message naming the property, the kind, the version and
/// the input.
pub fn check(kind: Kind, version: Version, input: &[u8]) -> Result<usize, DecodeError> {
    dispatch(kind, Check(Context { kind, version, input }))
}

/// Decodes one `kind` out of `buf` (a `BytesMut`, a slice, a chain…) and returns its canonical
/// encoding, without any property check.
pub fn canonical<B: Buf>(kind: Kind, version: Version, buf: &mut B) -> Result<Vec<u8>, DecodeError> {
    dispatch(kind, Canonical { version, buf })
}

// ---------------------------------------------------------------------------------------------
// Dispatch: the only place that maps a Kind to its type.
// ---------------------------------------------------------------------------------------------

/// Something to do with the type behind a [`Kind`].
trait Visitor {
    type Output;
    fn visit<T: Wire>(self) -> Self::Output;
}

fn dispatch<V: Visitor>(kind: Kind, visitor: V) -> V::Output {
    match kind {
        Kind::AnnounceRequest => visitor.visit::<AnnounceRequest>(),
        Kind::Announce => visitor.visit::<Announce>(),
        Kind::Subscribe => visitor.visit::<Subscribe>(),
        Kind::SubscribeUpdate => visitor.visit::<SubscribeUpdate>(),
        Kind::SubscribeResponse => visitor.visit::<SubscribeResponse>(),
        Kind::GroupHeader => visitor.visit::<GroupHeader>(),
        Kind::FrameHeader => visitor.visit::<FrameHeader>(),
        Kind::Probe => visitor.visit::<Probe>(),
        Kind::Goaway => visitor.visit::<Goaway>(),
        Kind::Setup => visitor.visit::<Setup>(),
        Kind::AnnounceOk => visitor.visit::<AnnounceOk>(),
        Kind::AnnounceMessage => visitor.visit::<AnnounceMessage>(),
        Kind::TrackRequest => visitor.visit::<TrackRequest>(),
        Kind::TrackInfo => visitor.visit::<TrackInfo>(),
        Kind::BiStream => visitor.visit::<StreamType<BiStreamType>>(),
        Kind::UniStream => visitor.visit::<StreamType<UniStreamType>>(),
        Kind::TraceContext => visitor.visit::<TraceContext>(),
    }
}

struct Canonical<'a, B> {
    version: Version,
    buf: &'a mut B,
}

impl<B: Buf> Visitor for Canonical<'_, B> {
    type Output = Result<Vec<u8>, DecodeError>;

    fn visit<T: Wire>(self) -> Self::Output {
        T::decode(self.buf, self.version).map(|value| encode(&value, self.version))
    }
}

// ---------------------------------------------------------------------------------------------
// Decodable types, with the properties particular to each.
// ---------------------------------------------------------------------------------------------

/// A decodable, re-encodable wire value.
trait Wire: Decode + Encode + PartialEq + Debug {
    /// Properties of a value decoded from `used` bytes, beyond the common ones.
    fn check_value(&self, _used: usize, _cx: &Context) {}

    /// Properties of a decode error, beyond the common ones.
    fn check_error(_err: &DecodeError, _cx: &Context) {}
}

macro_rules! messages {
    ($($ty:ty),* $(,)?) => {
        $(impl Wire for $ty {})*
    };
}

messages!(
    AnnounceRequest,
    Announce,
    Subscribe,
    SubscribeUpdate,
    SubscribeResponse,
    GroupHeader,
    FrameHeader,
    Probe,
    Goaway,
    Setup,
    AnnounceOk,
    AnnounceMessage,
    TrackRequest,
    TrackInfo,
    TraceContext,
);

/// A stream-opening type: a known type or, as `Err`, an unknown code.
trait StreamCode: Copy + PartialEq + Debug + 'static {
    /// Every known type.
    const KNOWN: &'static [Self];
    fn decode_code<B: Buf>(buf: &mut B) -> Result<Result<Self, u64>, DecodeError>;
    fn encode_code<B: BufMut>(self, buf: &mut B);
    fn code(self) -> u64;
}

macro_rules! stream_codes {
    ($($ty:ident: [$($known:ident),* $(,)?]),* $(,)?) => {$(
        impl StreamCode for $ty {
            const KNOWN: &'static [Self] = &[$($ty::$known),*];

            fn decode_code<B: Buf>(buf: &mut B) -> Result<Result<Self, u64>, DecodeError> {
                $ty::decode(buf)
            }

            fn encode_code<B: BufMut>(self, buf: &mut B) {
                self.encode(buf)
            }

            fn code(self) -> u64 {
                $ty::code(self)
            }
        }
    )*};
}

stream_codes! {
    BiStreamType: [Announce, Subscribe, Fetch, Probe, Goaway, Track],
    UniStreamType: [Group, Setup],
}

/// Adapts a stream type's version-independent codec to [`Decode`]/[`Encode`], so that it goes
/// through the same checks as every message. An unknown code re-encodes as its shortest varint.
#[derive(Debug, PartialEq)]
struct StreamType<T>(Result<T, u64>);

impl<T: StreamCode> Decode for StreamType<T> {
    fn decode<B: Buf>(buf: &mut B, _version: Version) -> Result<Self, DecodeError> {
        T::decode_code(buf).map(StreamType)
    }
}

impl<T: StreamCode> Encode for StreamType<T> {
    fn encode<B: BufMut>(&self, buf: &mut B, _version: Version) {
        match self.0 {
            Ok(known) => known.encode_code(buf),
            Err(code) => varint::encode(buf, code),
        }
    }
}

impl<T: StreamCode> Wire for StreamType<T> {
    fn check_value(&self, used: usize, cx: &Context) {
        assert!(matches!(used, 1 | 2 | 4 | 8), "{cx}: a stream type consumed {used} bytes, not one varint");
        match self.0 {
            Ok(known) => assert!(T::KNOWN.contains(&known), "{cx}: {known:?} is missing from the known types"),
            Err(code) => {
                assert!(code <= varint::MAX, "{cx}: unknown code {code} is not a varint");
                let clash = T::KNOWN.iter().find(|known| known.code() == code);
                assert!(clash.is_none(), "{cx}: code {code} of {clash:?} decoded as unknown");
            }
        }
    }

    fn check_error(err: &DecodeError, cx: &Context) {
        assert_eq!(err, &DecodeError::Short, "{cx}: a stream type can only be short");
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// What is being checked, for panic messages.
struct Context<'a> {
    kind: Kind,
    version: Version,
    input: &'a [u8],
}

impl fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {} on {:02x?}", self.kind, self.version, self.input)
    }
}

struct Check<'a>(Context<'a>);

impl Visitor for Check<'_> {
    type Output = Result<usize, DecodeError>;

    fn visit<T: Wire>(self) -> Self::Output {
        check_as::<T>(&self.0)
    }
}

fn encode<T: Encode>(value: &T, version: Version) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out, version);
    out
}

/// Decodes `input` out of a slice, returning the result and the bytes consumed.
fn decode_slice<T: Decode>(input: &[u8], version: Version) -> (Result<T, DecodeError>, usize) {
    let mut slice = input;
    let result = T::decode(&mut slice, version);
    (result, input.len() - slice.len())
}

fn check_as<T: Wire>(cx: &Context) -> Result<usize, DecodeError> {
    let Context { version, input, .. } = *cx;

    // The same decoder four ways.
    let (result, used) = decode_slice::<T>(input, version);

    let mut direct = BytesMut::from(input);
    let direct_result = T::decode(&mut direct, version);
    assert_eq!(result, direct_result, "{cx}: slice vs BytesMut");

    let mut partial = BytesMut::from(input);
    let partial_result = decode_partial::<T>(&mut partial, version);
    assert_eq!(result, partial_result, "{cx}: slice vs decode_partial");

    let split = input.len() / 2;
    let mut chained = (&input[..split]).chain(&input[split..]);
    let chained_result = T::decode(&mut chained, version);
    assert_eq!(result, chained_result, "{cx}: slice vs two-chunk buffer");

    // The same decoder with more bytes after the input.
    let extended = [input, &TAIL[..]].concat();
    let (extended_result, extended_used) = decode_slice::<T>(&extended, version);

    match result {
        Ok(value) => {
            assert_eq!(input.len() - direct.len(), used, "{cx}: BytesMut consumed a different amount");
            assert_eq!(input.len() - partial.len(), used, "{cx}: decode_partial consumed a different amount");
            assert_eq!(input.len() - chained.remaining(), used, "{cx}: two-chunk buffer consumed a different amount");
            assert_eq!(extended_result.as_ref(), Ok(&value), "{cx}: appending bytes changed a success");
            assert_eq!(extended_used, used, "{cx}: appending bytes changed the length of a success");
            value.check_value(used, cx);

            let re = encode(&value, version);
            assert!(re.len() <= used, "{cx}: re-encoding {re:02x?} is longer than the {used} bytes consumed");
            let (again, again_used) = decode_slice::<T>(&re, version);
            assert_eq!(again.as_ref(), Ok(&value), "{cx}: re-encoding {re:02x?} decodes differently");
            assert_eq!(again_used, re.len(), "{cx}: re-encoding {re:02x?} is not consumed exactly");

            let re2 = encode(&again.unwrap(), version);
            assert_eq!(re2, re, "{cx}: canonical encoding {re:02x?} is not a fixed point");
            if re.len() <= PREFIX_CHECK_LIMIT {
                for cut in 0..re.len() {
                    let mut prefix = BytesMut::from(&re[..cut]);
                    let prefix_result = decode_partial::<T>(&mut prefix, version);
                    assert_eq!(prefix_result, Err(DecodeError::Short), "{cx}: prefix {cut} of {re:02x?} is not Short");
                    assert_eq!(prefix.len(), cut, "{cx}: prefix {cut} of {re:02x?} was consumed");
                }
            }
            Ok(used)
        }
        Err(err) => {
            assert_eq!(&partial[..], input, "{cx}: decode_partial consumed input on error {err:?}");
            if err != DecodeError::Short {
                assert_eq!(extended_result, Err(err.clone()), "{cx}: appending bytes changed an error");
            }
            T::check_error(&err, cx);
            Err(err)
        }
    }
}
