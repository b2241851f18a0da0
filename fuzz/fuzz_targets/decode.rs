//! Feeds arbitrary bytes to every moq-lite decoder.
//!
//! The first input byte picks the version (bit 7: lite-04, else lite-03) and the decoder (low
//! nibble); the rest is the wire input. Each decoder is run three ways — straight out of a
//! `BytesMut`, through `decode_partial`, and over a two-chunk buffer — and the results must agree.
//! A success must re-encode to at most the bytes it consumed and decode back to an equal value;
//! an error other than `Short` must not change when more bytes are appended, and `decode_partial`
//! must consume nothing on any error.

#![no_main]

use std::fmt::Debug;

use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use moq_lite::coding::{decode_partial, Decode, DecodeError, Encode};
use moq_lite::message::*;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = if selector & 0x80 != 0 {
        Version::Lite04
    } else {
        Version::Lite03
    };
    match selector & 0x0f {
        0 => check::<AnnounceRequest>(version, input),
        1 => check::<Announce>(version, input),
        2 => check::<Subscribe>(version, input),
        3 => check::<SubscribeUpdate>(version, input),
        4 => check::<SubscribeResponse>(version, input),
        5 => check::<GroupHeader>(version, input),
        6 => check::<FrameHeader>(version, input),
        7 => check::<Probe>(version, input),
        8 => check::<Goaway>(version, input),
        9 => check_stream_type(input, |b| BiStreamType::decode(b), |t, b| t.encode(b)),
        10 => check_stream_type(input, |b| UniStreamType::decode(b), |t, b| t.encode(b)),
        _ => {
            // Every decoder on the same bytes.
            for v in [Version::Lite03, Version::Lite04] {
                check::<AnnounceRequest>(v, input);
                check::<Announce>(v, input);
                check::<Subscribe>(v, input);
                check::<SubscribeUpdate>(v, input);
                check::<SubscribeResponse>(v, input);
                check::<GroupHeader>(v, input);
                check::<FrameHeader>(v, input);
                check::<Probe>(v, input);
                check::<Goaway>(v, input);
            }
        }
    }
});

fn decode_all<T: Decode>(bytes: &[u8], version: Version) -> (Result<T, DecodeError>, usize) {
    let mut buf = BytesMut::from(bytes);
    let result = T::decode(&mut buf, version);
    (result, bytes.len() - buf.len())
}

fn check<T: Decode + Encode + PartialEq + Debug>(version: Version, input: &[u8]) {
    // 1. Straight out of a BytesMut (used as a `Buf`).
    let (direct, direct_used) = decode_all::<T>(input, version);

    // 2. Through decode_partial, which must consume nothing unless it succeeds.
    let mut partial = BytesMut::from(input);
    let partial_result = decode_partial::<T>(&mut partial, version);
    assert_eq!(direct, partial_result, "direct vs decode_partial");

    // 3. Over a non-contiguous buffer.
    let split = input.len() / 2;
    let mut chained = (&input[..split]).chain(&input[split..]);
    assert_eq!(
        T::decode(&mut chained, version),
        partial_result,
        "chained buffer"
    );

    // Appending bytes never changes a result other than Short.
    let mut extended = input.to_vec();
    extended.extend_from_slice(&[0x00, 0xff, 0x40, 0x80, 0xc0, 0x01, 0x3f, 0x7f]);
    let (extended_result, extended_used) = decode_all::<T>(&extended, version);

    match partial_result {
        Ok(value) => {
            let used = input.len() - partial.len();
            assert_eq!(used, direct_used);
            assert_eq!(used, input.len() - chained.remaining());
            assert_eq!(
                extended_result.as_ref(),
                Ok(&value),
                "appending bytes changed a success"
            );
            assert_eq!(extended_used, used);

            let mut re = Vec::new();
            value.encode(&mut re, version);
            assert!(
                re.len() <= used,
                "re-encoding is longer than the input it came from"
            );
            let (again, again_used) = decode_all::<T>(&re, version);
            assert_eq!(
                again.as_ref(),
                Ok(&value),
                "re-encoded bytes decode differently"
            );
            assert_eq!(again_used, re.len());

            // The canonical encoding is a fixed point, and each strict prefix of it is Short.
            let mut re2 = Vec::new();
            again.unwrap().encode(&mut re2, version);
            assert_eq!(re, re2);
            if re.len() <= 512 {
                for cut in 0..re.len() {
                    let mut prefix = BytesMut::from(&re[..cut]);
                    assert_eq!(
                        decode_partial::<T>(&mut prefix, version),
                        Err(DecodeError::Short)
                    );
                    assert_eq!(prefix.len(), cut);
                }
            }
        }
        Err(err) => {
            assert_eq!(
                &partial[..],
                input,
                "decode_partial consumed input on error"
            );
            if err != DecodeError::Short {
                assert_eq!(
                    extended_result,
                    Err(err),
                    "appending bytes changed an error"
                );
            }
        }
    }
}

fn check_stream_type<T: PartialEq + Debug + Copy>(
    input: &[u8],
    decode: impl Fn(&mut &[u8]) -> Result<Result<T, u64>, DecodeError>,
    encode: impl Fn(T, &mut Vec<u8>),
) {
    let mut buf = input;
    match decode(&mut buf) {
        Ok(Ok(kind)) => {
            let used = input.len() - buf.len();
            let mut re = Vec::new();
            encode(kind, &mut re);
            assert!(re.len() <= used);
            assert_eq!(decode(&mut &re[..]), Ok(Ok(kind)));
        }
        Ok(Err(code)) => {
            let used = input.len() - buf.len();
            assert!((1..=8).contains(&used));
            assert!(code < 1 << 62);
        }
        Err(err) => {
            assert_eq!(err, DecodeError::Short);
            assert_eq!(buf.len(), input.len());
        }
    }
}
