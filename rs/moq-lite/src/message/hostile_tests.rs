//! Hostile-input tests: malformed, truncated, oversized and random byte strings thrown at every
//! decoder in every version. None of them may panic; each must fail with the documented error.

use bytes::BytesMut;

use super::properties::{canonical, check, Kind, KINDS, VERSIONS};

/// The versions before SETUP, TRACK_INFO and frame timestamps.
const LEGACY: [Version; 2] = [Version::Lite03, Version::Lite04];
/// lite-05 and lite-06.
const MODERN: [Version; 2] = [Version::Lite05, Version::Lite06];
use super::*;
use crate::coding::{decode_partial, varint, Decode, DecodeError, Encode, MAX_MESSAGE_SIZE, MAX_STRING_SIZE};

// Every input below goes through `properties::check`, which runs the decoder several ways and
// panics on any violated decoder property; these tests pin the results on hostile inputs.

#[track_caller]
fn expect_err(kind: Kind, version: Version, input: &[u8], expected: DecodeError) {
    assert_eq!(check(kind, version, input), Err(expected), "{kind:?} {version} on {input:02x?}");
}

fn varint_bytes(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode(&mut out, value);
    out
}

/// `Length | body` with a correct length.
fn sized(body: &[u8]) -> Vec<u8> {
    let mut out = varint_bytes(body.len() as u64);
    out.extend_from_slice(body);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    sized(s)
}

// ---------------------------------------------------------------------------------------------
// Valid samples of every length-prefixed message, with the size of any leading type varint.
// ---------------------------------------------------------------------------------------------

fn encoded<T: Encode>(version: Version, value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out, version);
    out
}

/// `(kind, version, wire, bytes before the length prefix)`.
fn sized_samples() -> Vec<(Kind, Version, Vec<u8>, usize)> {
    let mut samples = Vec::new();
    for version in VERSIONS {
        samples.push((
            Kind::AnnounceRequest,
            version,
            encoded(version, &AnnounceRequest { prefix: "demo".into(), exclude_hop: 300 }),
            0,
        ));
        samples.push((
            Kind::AnnounceRequest,
            version,
            encoded(version, &AnnounceRequest { prefix: String::new(), exclude_hop: 0 }),
            0,
        ));
        samples.push((
            Kind::Announce,
            version,
            encoded(version, &Announce { active: true, suffix: "room/alice".into(), hops: vec![1, 64, 16384] }),
            0,
        ));
        samples.push((
            Kind::Announce,
            version,
            encoded(version, &Announce { active: false, suffix: "x".into(), hops: vec![] }),
            0,
        ));
        samples.push((
            Kind::Subscribe,
            version,
            encoded(
                version,
                &Subscribe {
                    id: 100,
                    broadcast: "demo/bbb".into(),
                    track: "video".into(),
                    priority: 7,
                    ordered: version.has_ordered_byte(),
                    max_latency_ms: 1500,
                    start_group: Some(0),
                    end_group: Some(16383),
                    start_frame: 0,
                    end_frame: None,
                },
            ),
            0,
        ));
        let params =
            SubscribeParams { priority: 1, ordered: false, max_latency_ms: 64, start_group: Some(5), end_group: None };
        let update = SubscribeUpdate {
            priority: 1,
            max_latency_ms: 64,
            start_group: Some(5),
            end_group: Some(9),
            end_frame: version.has_frame_bounds().then_some(3),
            ..Default::default()
        };
        samples.push((Kind::SubscribeUpdate, version, encoded(version, &update), 0));
        if version.has_track_stream() {
            samples.push((
                Kind::SubscribeResponse,
                version,
                encoded(version, &SubscribeResponse::Start { group: 7 }),
                1,
            ));
            samples.push((
                Kind::SubscribeResponse,
                version,
                encoded(version, &SubscribeResponse::End { group: 70 }),
                1,
            ));
            let setup = Setup {
                probe: ProbeLevel::Report,
                path: Some("demo?jwt=abc".into()),
                role: Some(Role::Subscriber),
                cost: Some(3),
                hop: Some(16384),
                trace_context: true,
            };
            samples.push((Kind::Setup, version, encoded(version, &setup), 0));
            samples.push((Kind::AnnounceOk, version, encoded(version, &AnnounceOk { hop: 9, active: 2 }), 0));
            let trace = TraceContext { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into() };
            samples.push((Kind::TraceContext, version, encoded(version, &trace), 0));
            let track = TrackRequest { broadcast: "demo/bbb".into(), track: "video".into() };
            samples.push((Kind::TrackRequest, version, encoded(version, &track), 0));
            let info = TrackInfo { priority: 3, max_age_ms: 5000, timescale: 90_000 };
            samples.push((Kind::TrackInfo, version, encoded(version, &info), 0));
        } else {
            samples.push((Kind::SubscribeResponse, version, encoded(version, &SubscribeResponse::Ok(params)), 1));
        }
        if version.has_announce_ids() {
            let cost = Cost { warm: 2, cold: 300 };
            let start = AnnounceMessage::Start { suffix: "room/a".into(), hops: vec![4, 5], cost };
            samples.push((Kind::AnnounceMessage, version, encoded(version, &start), 1));
            samples.push((Kind::AnnounceMessage, version, encoded(version, &AnnounceMessage::End { id: 64 }), 1));
            let update = AnnounceMessage::Update { id: 1, hops: vec![], cost };
            samples.push((Kind::AnnounceMessage, version, encoded(version, &update), 1));
        }
        samples.push((
            Kind::SubscribeResponse,
            version,
            encoded(version, &SubscribeResponse::Drop { start: 3, end: 70, error_code: 13 }),
            1,
        ));
        samples.push((
            Kind::GroupHeader,
            version,
            encoded(version, &GroupHeader { subscribe_id: 64, sequence: 0, frame_start: 0 }),
            0,
        ));
        samples.push((Kind::Probe, version, encoded(version, &Probe { bitrate: 2_500_000, rtt_ms: 42 }), 0));
        samples.push((Kind::Goaway, version, encoded(version, &Goaway::default()), 0));
        samples.push((Kind::Goaway, version, encoded(version, &Goaway { uri: "https://r2/".into() }), 0));
        // A body of 64+ bytes, so the length prefix itself is a 2-byte varint.
        samples.push((Kind::Goaway, version, encoded(version, &Goaway { uri: "g".repeat(70) }), 0));
    }
    samples
}

/// Splits a sample into `(type prefix, body)`.
fn parts(wire: &[u8], type_len: usize) -> (&[u8], Vec<u8>) {
    let (prefix, rest) = wire.split_at(type_len);
    let mut rest = rest;
    let declared = varint::decode(&mut rest).unwrap() as usize;
    assert_eq!(declared, rest.len(), "sample is not exactly one message");
    (prefix, rest.to_vec())
}

fn with_length(prefix: &[u8], declared: usize, body: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend(varint_bytes(declared as u64));
    out.extend_from_slice(body);
    out
}

#[test]
fn samples_are_valid() {
    for (kind, version, wire, _) in sized_samples() {
        assert_eq!(check(kind, version, &wire), Ok(wire.len()), "{kind:?} {version}");
    }
}

// ---------------------------------------------------------------------------------------------
// Length prefix mismatches
// ---------------------------------------------------------------------------------------------

#[test]
fn body_longer_than_fields() {
    // Declared length covers one more byte than the fields use: LengthMismatch.
    for (kind, version, wire, type_len) in sized_samples() {
        let (prefix, mut body) = parts(&wire, type_len);
        let n = body.len();
        for extra in [0x00u8, 0xff] {
            body.push(extra);
            let input = with_length(prefix, n + 1, &body);
            expect_err(kind, version, &input, DecodeError::LengthMismatch { declared: n + 1, used: n });
            body.pop();
        }
        // Many trailing bytes.
        let mut long = body.clone();
        long.extend([0u8; 100]);
        let input = with_length(prefix, n + 100, &long);
        expect_err(kind, version, &input, DecodeError::LengthMismatch { declared: n + 100, used: n });
    }
}

#[test]
fn body_shorter_than_fields() {
    // Declared length one byte short of what the fields need: LengthMismatch, never Short, and
    // never reading into the next message.
    for (kind, version, wire, type_len) in sized_samples() {
        let (prefix, body) = parts(&wire, type_len);
        let n = body.len();
        // The remaining bytes are present after the (too short) message.
        let input = with_length(prefix, n - 1, &body);
        expect_err(kind, version, &input, DecodeError::LengthMismatch { declared: n - 1, used: n });
        // The missing byte is absent altogether.
        let input = with_length(prefix, n - 1, &body[..n - 1]);
        expect_err(kind, version, &input, DecodeError::LengthMismatch { declared: n - 1, used: n });
        // A zero-length body.
        let input = with_length(prefix, 0, &[]);
        expect_err(kind, version, &input, DecodeError::LengthMismatch { declared: 0, used: 1 });
    }
}

#[test]
fn announce_with_fewer_hop_ids_than_count() {
    // lite-04: count=3 but only two ids inside the declared body.
    let body = [&[0x01][..], &string(b"a"), &[0x03, 0x01, 0x02]].concat();
    expect_err(Kind::Announce, Version::Lite04, &sized(&body), DecodeError::LengthMismatch { declared: 6, used: 7 });
    // The same bytes are a valid lite-03 ANNOUNCE with a hop count of 3 followed by two extra bytes.
    expect_err(Kind::Announce, Version::Lite03, &sized(&body), DecodeError::LengthMismatch { declared: 6, used: 4 });
}

// ---------------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_input_is_short() {
    let mut samples = sized_samples();
    for version in VERSIONS {
        samples.push((Kind::FrameHeader, version, varint_bytes(16 * 1024 * 1024), 0));
        samples.push((Kind::FrameHeader, version, varint_bytes(1500), 0));
        samples.push((Kind::BiStream, version, varint_bytes(0x2), 0));
        samples.push((Kind::BiStream, version, varint_bytes(1 << 40), 0));
        samples.push((Kind::UniStream, version, varint_bytes(16384), 0));
    }
    for (kind, version, wire, _) in samples {
        for cut in 0..wire.len() {
            expect_err(kind, version, &wire[..cut], DecodeError::Short);
            // Decoding straight out of a BytesMut (itself a Buf) behaves the same.
            if !matches!(kind, Kind::BiStream | Kind::UniStream) {
                let mut buf = BytesMut::from(&wire[..cut]);
                let result = canonical(kind, version, &mut buf).map(drop);
                assert_eq!(result, Err(DecodeError::Short), "{kind:?} {version} cut at {cut}");
            }
        }
    }
}

#[test]
fn decode_partial_keeps_input_until_complete() {
    // Feed a SUBSCRIBE_OK one byte at a time: Short (nothing consumed) until the last byte.
    let wire = [0x00, 0x0a, 0x01, 0x01, 0x80, 0x00, 0x40, 0x00, 0x40, 0x64, 0x40, 0xc9];
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let result = decode_partial::<SubscribeResponse>(&mut buf, Version::Lite04);
        if i + 1 < wire.len() {
            assert_eq!(result, Err(DecodeError::Short));
            assert_eq!(&buf[..], &wire[..=i]);
        } else {
            assert!(matches!(result, Ok(SubscribeResponse::Ok(_))));
            assert!(buf.is_empty());
        }
    }
    // The next response's type alone is still Short and stays buffered.
    buf.extend_from_slice(&[0x01]);
    assert_eq!(decode_partial::<SubscribeResponse>(&mut buf, Version::Lite04), Err(DecodeError::Short));
    assert_eq!(&buf[..], [0x01]);
}

// ---------------------------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------------------------

#[test]
fn declared_length_too_large_fails_without_the_body() {
    let too_large = MAX_MESSAGE_SIZE as u64 + 1;
    let sized_kinds = [
        Kind::AnnounceRequest,
        Kind::Announce,
        Kind::Subscribe,
        Kind::SubscribeUpdate,
        Kind::GroupHeader,
        Kind::Probe,
        Kind::Goaway,
    ];
    for version in VERSIONS {
        for declared in [too_large, 1 << 30, varint::MAX] {
            let expected = DecodeError::TooLarge { what: "message", size: declared, limit: MAX_MESSAGE_SIZE as u64 };
            let length = varint_bytes(declared);
            for kind in sized_kinds {
                expect_err(kind, version, &length, expected.clone());
            }
            for response_type in [0u8, 1] {
                let input = [&[response_type][..], &length].concat();
                expect_err(Kind::SubscribeResponse, version, &input, expected.clone());
            }
        }
        // Exactly the limit is allowed: it is merely Short until the body arrives.
        let at_limit = varint_bytes(MAX_MESSAGE_SIZE as u64);
        for kind in sized_kinds {
            expect_err(kind, version, &at_limit, DecodeError::Short);
        }
    }
}

#[test]
fn string_too_large() {
    let len = MAX_STRING_SIZE as u64 + 1;
    let too_large = |what| DecodeError::TooLarge { what, size: len, limit: MAX_STRING_SIZE as u64 };
    let long = vec![b'a'; MAX_STRING_SIZE + 1];
    for version in VERSIONS {
        // The whole string present.
        expect_err(Kind::Goaway, version, &sized(&string(&long)), too_large("goaway uri"));
        expect_err(Kind::AnnounceRequest, version, &sized(&string(&long)), too_large("prefix"));
        let announce = [&[0x01][..], &string(&long), &[0x00]].concat();
        expect_err(Kind::Announce, version, &sized(&announce), too_large("path suffix"));
        let subscribe = [&[0x01][..], &string(&long), &string(b"t"), &[0, 0, 0, 0, 0]].concat();
        expect_err(Kind::Subscribe, version, &sized(&subscribe), too_large("broadcast path"));
        let subscribe = [&[0x01][..], &string(b"b"), &string(&long), &[0, 0, 0, 0, 0]].concat();
        expect_err(Kind::Subscribe, version, &sized(&subscribe), too_large("track name"));

        // Only the string's length present: rejected before waiting for the bytes.
        expect_err(Kind::Goaway, version, &sized(&varint_bytes(len)), too_large("goaway uri"));
        expect_err(Kind::Goaway, version, &sized(&varint_bytes(varint::MAX)), {
            DecodeError::TooLarge { what: "goaway uri", size: varint::MAX, limit: MAX_STRING_SIZE as u64 }
        });
    }
}

#[test]
fn frame_too_large() {
    let max = MAX_FRAME_SIZE;
    for version in VERSIONS {
        // 05+ frames start with the timestamp delta (here 0).
        let delta: &[u8] = if version.has_timestamps() { &[0x00] } else { &[] };
        let input = [delta, &varint_bytes(max)].concat();
        assert_eq!(check(Kind::FrameHeader, version, &input), Ok(input.len()));
        for size in [max + 1, 1 << 40, varint::MAX] {
            let expected = DecodeError::TooLarge { what: "frame", size, limit: max };
            expect_err(Kind::FrameHeader, version, &[delta, &varint_bytes(size)].concat(), expected);
        }
    }
}

#[test]
fn frame_timestamp_deltas_round_trip_signed() {
    for version in MODERN {
        for delta in [0i64, 1, -1, 33, -33, 1 << 40, -(1 << 40), (1 << 61) - 1, -(1 << 61)] {
            let wire = encoded(version, &FrameHeader { timestamp_delta: delta, size: 9 });
            let mut buf = &wire[..];
            assert_eq!(FrameHeader::decode(&mut buf, version), Ok(FrameHeader { timestamp_delta: delta, size: 9 }));
            assert_eq!(check(Kind::FrameHeader, version, &wire), Ok(wire.len()));
        }
    }
}

#[test]
fn setup_rejects_duplicates_and_too_many_parameters_and_ignores_unknown_ones() {
    for version in MODERN {
        // Probe twice.
        let dup = [0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02];
        let expected = DecodeError::InvalidValue { what: "duplicate setup parameter", value: 1 };
        expect_err(Kind::Setup, version, &sized(&dup), expected);
        // 65 parameters.
        let many = varint_bytes(MAX_SETUP_PARAMS + 1);
        let limit = MAX_SETUP_PARAMS;
        let expected = DecodeError::TooLarge { what: "setup parameters", size: limit + 1, limit };
        expect_err(Kind::Setup, version, &sized(&many), expected);
        // An unknown id (0x3f) with a 3-byte value, then Probe = 1: the unknown one is skipped.
        let unknown = [0x02, 0x3f, 0x03, 0xaa, 0xbb, 0xcc, 0x01, 0x01, 0x01];
        let mut buf = &sized(&unknown)[..];
        assert_eq!(Setup::decode(&mut buf, version), Ok(Setup { probe: ProbeLevel::Report, ..Default::default() }));
        // An integer parameter with a byte after its varint.
        let long = [0x01, 0x04, 0x02, 0x01, 0x00];
        expect_err(Kind::Setup, version, &sized(&long), DecodeError::LengthMismatch { declared: 2, used: 1 });
        // A path longer than any string may be, and one that is not UTF-8.
        let mut path = vec![0x01, 0x02];
        path.extend(varint_bytes(MAX_STRING_SIZE as u64 + 1));
        path.extend(vec![b'a'; MAX_STRING_SIZE + 1]);
        let limit = MAX_STRING_SIZE as u64;
        let expected = DecodeError::TooLarge { what: "setup path", size: limit + 1, limit };
        expect_err(Kind::Setup, version, &sized(&path), expected);
        expect_err(Kind::Setup, version, &sized(&[0x01, 0x02, 0x01, 0xff]), DecodeError::InvalidUtf8);
    }
}

#[test]
fn lite06_announce_unknown_types_are_skipped_and_timescale_zero_is_refused() {
    let v = Version::Lite06;
    let unknown = [varint_bytes(9), sized(&[1, 2, 3])].concat();
    assert_eq!(check(Kind::AnnounceMessage, v, &unknown), Ok(unknown.len()));
    let mut buf = &unknown[..];
    assert_eq!(AnnounceMessage::decode(&mut buf, v), Ok(AnnounceMessage::Unknown(9)));
    for version in MODERN {
        let zero = sized(&[0x01, 0x00, 0x00, 0x00][usize::from(!version.has_ordered_byte())..]);
        expect_err(Kind::TrackInfo, version, &zero, DecodeError::InvalidValue { what: "timescale", value: 0 });
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid values
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_utf8() {
    let bad: [&[u8]; 5] = [
        &[0xff],
        &[0xc3, 0x28],             // bad continuation
        &[0xc0, 0x80],             // overlong NUL
        &[0xed, 0xa0, 0x80],       // UTF-16 surrogate
        &[b'o', b'k', 0xe2, 0x82], // truncated sequence at the end
    ];
    for version in VERSIONS {
        for bytes in bad {
            expect_err(Kind::Goaway, version, &sized(&string(bytes)), DecodeError::InvalidUtf8);
            let request = [string(bytes), vec![0x00]].concat();
            let request = if version == Version::Lite03 { string(bytes) } else { request };
            expect_err(Kind::AnnounceRequest, version, &sized(&request), DecodeError::InvalidUtf8);
            let announce = [&[0x01][..], &string(bytes), &[0x00]].concat();
            expect_err(Kind::Announce, version, &sized(&announce), DecodeError::InvalidUtf8);
            let subscribe = [&[0x01][..], &string(b"b"), &string(bytes), &[0, 0, 0, 0, 0]].concat();
            expect_err(Kind::Subscribe, version, &sized(&subscribe), DecodeError::InvalidUtf8);
        }
    }
}

#[test]
fn hop_chain_too_long() {
    let too_long = |count: u64| DecodeError::TooLarge { what: "hop chain", size: count, limit: MAX_HOPS as u64 };
    // lite-04: 33 distinct ids.
    let mut body = [&[0x01][..], &string(b"a")].concat();
    body.extend(varint_bytes(33));
    for id in 1..=33 {
        body.extend(varint_bytes(id));
    }
    expect_err(Kind::Announce, Version::Lite04, &sized(&body), too_long(33));

    // 32 is the limit and is accepted.
    let mut body = [&[0x01][..], &string(b"a")].concat();
    body.extend(varint_bytes(32));
    for id in 1..=32 {
        body.extend(varint_bytes(id * 1000));
    }
    assert!(check(Kind::Announce, Version::Lite04, &sized(&body)).is_ok());

    // A huge count is rejected before anything is allocated or read.
    for version in VERSIONS {
        let body = [&[0x01][..], &string(b"a"), &varint_bytes(varint::MAX)].concat();
        expect_err(Kind::Announce, version, &sized(&body), too_long(varint::MAX));
    }
    // lite-03 carries only the count: 33 is too long, 32 is fine.
    let body = [&[0x00][..], &string(b"a"), &[33]].concat();
    expect_err(Kind::Announce, Version::Lite03, &sized(&body), too_long(33));
    let body = [&[0x00][..], &string(b"a"), &[32]].concat();
    assert!(check(Kind::Announce, Version::Lite03, &sized(&body)).is_ok());
}

#[test]
fn repeated_hop_is_a_loop() {
    let chains: [(&[u64], u64); 4] =
        [(&[1, 2, 1], 1), (&[64, 5, 64], 64), (&[7, 7], 7), (&[0, 0, 16384, 3, 16384], 16384)];
    for (hops, repeated) in chains {
        let mut body = [&[0x01][..], &string(b"a")].concat();
        body.extend(varint_bytes(hops.len() as u64));
        for hop in hops {
            body.extend(varint_bytes(*hop));
        }
        expect_err(Kind::Announce, Version::Lite04, &sized(&body), DecodeError::HopLoop(repeated));
    }
    // The same message encoded for lite-03 carries no ids, so it cannot loop.
    let mut out = Vec::new();
    Announce { active: true, suffix: "a".into(), hops: vec![1, 2, 1] }.encode(&mut out, Version::Lite03);
    assert!(check(Kind::Announce, Version::Lite03, &out).is_ok());
}

#[test]
fn invalid_status_and_bool_bytes() {
    for version in LEGACY {
        for status in [2u8, 3, 0x80, 0xff] {
            let announce = [&[status][..], &string(b"a"), &[0x00]].concat();
            let expected = DecodeError::InvalidValue { what: "announce status", value: status.into() };
            expect_err(Kind::Announce, version, &sized(&announce), expected);

            let expected = DecodeError::InvalidValue { what: "ordered", value: status.into() };
            let subscribe = [&[0x01][..], &string(b"b"), &string(b"t"), &[0x00, status, 0, 0, 0]].concat();
            expect_err(Kind::Subscribe, version, &sized(&subscribe), expected.clone());
            let params = [0x00, status, 0, 0, 0];
            expect_err(Kind::SubscribeUpdate, version, &sized(&params), expected.clone());
            let ok = [&[0x00][..], &sized(&params)].concat();
            expect_err(Kind::SubscribeResponse, version, &ok, expected);
        }
    }
}

#[test]
fn unknown_subscribe_response_type() {
    for version in VERSIONS {
        // 05+ add SUBSCRIBE_END (1) and move SUBSCRIBE_DROP to 2.
        let first = if version.has_track_stream() { 3u64 } else { 2 };
        for response_type in [first, 3, 63, 64, 16384, varint::MAX] {
            let expected = DecodeError::InvalidValue { what: "subscribe response type", value: response_type };
            // Rejected from the type alone, whatever follows.
            expect_err(Kind::SubscribeResponse, version, &varint_bytes(response_type), expected.clone());
            let input = [varint_bytes(response_type), sized(&[0, 0, 0])].concat();
            expect_err(Kind::SubscribeResponse, version, &input, expected);
        }
    }
}

#[test]
fn unknown_stream_types_are_per_stream_errors() {
    // Unknown codes decode to Err(code): the caller resets that stream, the session survives.
    for code in [0x0u64, 0x7, 0x3f, 0x40, 16384, varint::MAX] {
        let wire = varint_bytes(code);
        let mut buf = &wire[..];
        assert_eq!(BiStreamType::decode(&mut buf), Ok(Err(code)));
        assert!(buf.is_empty());
    }
    for code in [0x2u64, 0x3, 0x3f, 0x40, 16384, varint::MAX] {
        let wire = varint_bytes(code);
        let mut buf = &wire[..];
        assert_eq!(UniStreamType::decode(&mut buf), Ok(Err(code)));
        assert!(buf.is_empty());
    }
    assert_eq!(BiStreamType::decode(&mut &[][..]), Err(DecodeError::Short));
    assert_eq!(UniStreamType::decode(&mut &[0x80, 0x00][..]), Err(DecodeError::Short));
}

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random inputs
// ---------------------------------------------------------------------------------------------

/// xorshift64* — tiny, deterministic, good enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn byte(&mut self) -> u8 {
        // Bias toward small values and varint-prefix bytes, which reach deeper into decoders.
        match self.below(4) {
            0 => self.below(4) as u8,
            1 => [0x40, 0x80, 0xc0, 0x3f, 0x7f, 0xff][self.below(6) as usize],
            _ => self.next() as u8,
        }
    }

    /// A varint value, spread over the four encoded sizes.
    fn varint(&mut self) -> u64 {
        match self.below(8) {
            0..=3 => self.below(64),
            4 | 5 => self.below(16384),
            6 => self.below(1 << 30),
            _ => self.below(varint::MAX + 1),
        }
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 8] = ["a", "room", "/", "é", "日本", "-", "0", "track.mp4"];
        let mut s = String::new();
        let count = if self.chance(50) { 60 } else { self.below(6) };
        for _ in 0..count {
            s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
        }
        s
    }

    fn optional(&mut self) -> Option<u64> {
        // `value + 1` must stay a varint.
        (!self.chance(3)).then(|| self.varint().min(varint::MAX - 1))
    }

    fn hops(&mut self, version: Version) -> Vec<u64> {
        let count = self.below(MAX_HOPS as u64 + 1) as usize;
        if version == Version::Lite03 {
            return vec![0; count];
        }
        let mut hops = Vec::with_capacity(count);
        while hops.len() < count {
            let hop = if self.chance(10) { 0 } else { self.varint() };
            if hop == 0 || !hops.contains(&hop) {
                hops.push(hop);
            }
        }
        hops
    }

    fn params(&mut self) -> SubscribeParams {
        SubscribeParams {
            priority: self.next() as u8,
            ordered: self.chance(2),
            max_latency_ms: self.varint(),
            start_group: self.optional(),
            end_group: self.optional(),
        }
    }

    /// A random valid message of any kind, in its canonical encoding.
    fn valid_message(&mut self, version: Version) -> (Kind, Vec<u8>) {
        let mut out = Vec::new();
        let kind = KINDS[self.below(KINDS.len() as u64) as usize];
        match kind {
            Kind::AnnounceRequest => {
                let exclude_hop = if version.has_exclude_hop() { self.varint() } else { 0 };
                AnnounceRequest { prefix: self.string(), exclude_hop }.encode(&mut out, version)
            }
            Kind::Announce => Announce { active: self.chance(2), suffix: self.string(), hops: self.hops(version) }
                .encode(&mut out, version),
            Kind::Subscribe => {
                let mut params = self.params();
                params.ordered &= version.has_ordered_byte();
                Subscribe {
                    id: self.varint(),
                    broadcast: self.string(),
                    track: self.string(),
                    priority: params.priority,
                    ordered: params.ordered,
                    max_latency_ms: params.max_latency_ms,
                    start_group: params.start_group,
                    end_group: params.end_group,
                    start_frame: 0,
                    end_frame: None,
                }
                .encode(&mut out, version)
            }
            Kind::SubscribeUpdate => {
                let p = self.params();
                let (start_frame, end_frame) = match version.has_frame_bounds() {
                    true => (
                        if p.start_group.is_some() { self.varint() } else { 0 },
                        p.end_group.and_then(|_| self.optional()),
                    ),
                    false => (0, None),
                };
                SubscribeUpdate {
                    priority: p.priority,
                    ordered: p.ordered && version.has_ordered_byte(),
                    max_latency_ms: p.max_latency_ms,
                    // On 06 a start of 0 at frame 0 reads back as "resolve".
                    start_group: p.start_group.filter(|g| *g != 0 || start_frame != 0 || !version.has_frame_bounds()),
                    end_group: p.end_group,
                    start_frame,
                    end_frame,
                }
                .encode(&mut out, version)
            }
            Kind::SubscribeResponse => {
                if self.chance(2) {
                    match version.has_track_stream() {
                        false => SubscribeResponse::Ok(self.params()).encode(&mut out, version),
                        true if self.chance(2) => {
                            SubscribeResponse::Start { group: self.varint() }.encode(&mut out, version)
                        }
                        true => SubscribeResponse::End { group: self.varint() }.encode(&mut out, version),
                    }
                } else {
                    SubscribeResponse::Drop { start: self.varint(), end: self.varint(), error_code: self.varint() }
                        .encode(&mut out, version)
                }
            }
            Kind::GroupHeader => {
                let frame_start = if version.has_frame_bounds() { self.varint() } else { 0 };
                GroupHeader { subscribe_id: self.varint(), sequence: self.varint(), frame_start }
                    .encode(&mut out, version)
            }
            Kind::FrameHeader => {
                let timestamp_delta = match version.has_timestamps() {
                    true => varint::zigzag_decode(self.varint()),
                    false => 0,
                };
                FrameHeader { size: self.below(MAX_FRAME_SIZE + 1), timestamp_delta }.encode(&mut out, version)
            }
            Kind::Probe => {
                let rtt_ms = if version == Version::Lite03 { 0 } else { self.varint() };
                Probe { bitrate: self.varint(), rtt_ms }.encode(&mut out, version)
            }
            Kind::Goaway => Goaway { uri: self.string() }.encode(&mut out, version),
            Kind::Setup => Setup {
                probe: [ProbeLevel::None, ProbeLevel::Report, ProbeLevel::Increase][self.below(3) as usize],
                path: self.chance(2).then(|| self.string()),
                role: [None, Some(Role::Publisher), Some(Role::Subscriber)][self.below(3) as usize],
                cost: self.chance(2).then(|| self.varint()),
                hop: self.chance(2).then(|| self.varint().max(1)),
                trace_context: self.chance(2),
            }
            .encode(&mut out, version),
            Kind::AnnounceOk => AnnounceOk { hop: self.varint(), active: self.varint() }.encode(&mut out, version),
            Kind::AnnounceMessage => {
                let cost = Cost { warm: self.varint(), cold: self.varint() };
                match self.below(4) {
                    0 => AnnounceMessage::Start { suffix: self.string(), hops: self.hops(version), cost },
                    1 => AnnounceMessage::End { id: self.varint() },
                    2 => AnnounceMessage::Update { id: self.varint(), hops: self.hops(version), cost },
                    _ => AnnounceMessage::Unknown(self.varint().max(3)),
                }
                .encode(&mut out, version)
            }
            Kind::TrackRequest => {
                TrackRequest { broadcast: self.string(), track: self.string() }.encode(&mut out, version)
            }
            Kind::TrackInfo => {
                TrackInfo { priority: self.next() as u8, max_age_ms: self.varint(), timescale: self.varint().max(1) }
                    .encode(&mut out, version)
            }
            Kind::BiStream => varint::encode(&mut out, self.below(8)),
            Kind::UniStream => varint::encode(&mut out, self.below(3)),
            Kind::TraceContext => TraceContext { traceparent: self.string() }.encode(&mut out, version),
        }
        (kind, out)
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        for _ in 0..=self.below(4) {
            let len = input.len() as u64;
            match self.below(8) {
                0 if len > 0 => {
                    let i = self.below(len) as usize;
                    input[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len) as usize;
                    input[i] = self.byte();
                }
                2 => {
                    let i = self.below(len + 1) as usize;
                    let byte = self.byte();
                    input.insert(i, byte);
                }
                3 if len > 0 => {
                    input.remove(self.below(len) as usize);
                }
                4 => input.truncate(self.below(len + 1) as usize),
                5 => {
                    for _ in 0..self.below(8) {
                        let byte = self.byte();
                        input.push(byte);
                    }
                }
                6 if len > 1 => {
                    let i = self.below(len) as usize;
                    let j = self.below(len) as usize;
                    input.swap(i, j);
                }
                _ => {
                    // Rewrite the leading length/type varint with a random one.
                    let mut head = varint_bytes(self.varint() % 256);
                    if !input.is_empty() {
                        input.remove(0);
                    }
                    head.append(input);
                    *input = head;
                }
            }
        }
    }
}

#[test]
fn random_inputs_never_panic_and_round_trip() {
    const ITERATIONS: usize = 200_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0usize;
    let mut exact = 0usize;

    for i in 0..ITERATIONS {
        let version = VERSIONS[i % 2];
        let input = match i % 4 {
            // Pure noise.
            0 => {
                let len = rng.below(48) as usize;
                (0..len).map(|_| rng.byte()).collect()
            }
            // A valid message: must decode as its own kind to exactly the same bytes.
            1 => {
                let (kind, wire) = rng.valid_message(version);
                assert_eq!(check(kind, version, &wire), Ok(wire.len()), "{kind:?} {version} on {wire:02x?}");
                let re = canonical(kind, version, &mut &wire[..]).unwrap();
                assert_eq!(re, wire, "{kind:?} {version}: canonical bytes must re-encode identically");
                exact += 1;
                wire
            }
            // A mutated valid message (possibly several concatenated).
            _ => {
                let (_, mut wire) = rng.valid_message(version);
                if rng.chance(4) {
                    wire.extend(rng.valid_message(version).1);
                }
                rng.mutate(&mut wire);
                wire
            }
        };

        for kind in KINDS {
            if check(kind, version, &input).is_ok() {
                decoded += 1;
            }
        }
    }

    // Sanity: the generator really reaches the success paths.
    assert_eq!(exact, ITERATIONS / 4);
    assert!(decoded > ITERATIONS, "only {decoded} successful decodes");
}
