//! Golden byte tests for lite-05 and lite-06 (moq-lite-protocol.md §2.2, §3.5, §3.6): every
//! expected byte string was written by hand from the notes, not produced by the encoder. The
//! checks per case are those of `golden_tests::golden`.

use super::golden_tests::golden;
use super::*;
use crate::coding::{Decode, Encode};

const V05: Version = Version::Lite05;
const V06: Version = Version::Lite06;

#[test]
fn setup_empty_and_cost_example() {
    for v in [V05, V06] {
        // An endpoint with nothing to say: count 0.
        golden(v, &Setup::default(), &[0x01, 0x00]);
        // §2.2's example: Cost=100 → `05 01 04 02 40 64`.
        golden(v, &Setup { cost: Some(100), ..Default::default() }, &[0x05, 0x01, 0x04, 0x02, 0x40, 0x64]);
    }
}

#[test]
fn setup_every_parameter_in_id_order() {
    let setup = Setup {
        probe: ProbeLevel::Report,
        path: Some("demo?jwt=t".into()),
        role: Some(Role::Subscriber),
        cost: Some(1),
        hop: Some(300),
        trace_context: false,
    };
    #[rustfmt::skip]
    let wire = [
        0x1a, 0x05,                    // len 26, 5 params
        0x01, 0x01, 0x01,              // probe = report
        0x02, 0x0a, b'd', b'e', b'm', b'o', b'?', b'j', b'w', b't', b'=', b't', // path
        0x03, 0x01, 0x02,              // role = subscriber
        0x04, 0x01, 0x01,              // cost = 1
        0x05, 0x02, 0x41, 0x2c,        // hop = 300
    ];
    golden(V05, &setup, &wire);
    golden(V06, &setup, &wire);
}

#[test]
fn announce_request_exclude_hop_on_05_not_06() {
    let request = AnnounceRequest { prefix: "ab".into(), exclude_hop: 7 };
    golden(V05, &request, &[0x04, 0x02, b'a', b'b', 0x07]);
    let request = AnnounceRequest { prefix: "ab".into(), exclude_hop: 0 };
    golden(V06, &request, &[0x03, 0x02, b'a', b'b']);
}

#[test]
fn announce_ok() {
    for v in [V05, V06] {
        golden(v, &AnnounceOk { hop: 9, active: 2 }, &[0x02, 0x09, 0x02]);
        golden(v, &AnnounceOk { hop: 16384, active: 0 }, &[0x05, 0x80, 0x00, 0x40, 0x00, 0x00]);
    }
}

#[test]
fn lite05_announce_keeps_the_04_layout() {
    let active = Announce { active: true, suffix: "a".into(), hops: vec![5] };
    golden(V05, &active, &[0x05, 0x01, 0x01, b'a', 0x01, 0x05]);
    let ended = Announce { active: false, suffix: "a".into(), hops: vec![] };
    golden(V05, &ended, &[0x04, 0x00, 0x01, b'a', 0x00]);
}

#[test]
fn lite06_typed_announcements() {
    let start = AnnounceMessage::Start { suffix: "a".into(), hops: vec![5, 6], cost: Cost { warm: 1, cold: 64 } };
    // type 0 | len 8 | "a" | 2 hops 5 6 | warm 1 | cold 64 (40 40)
    golden(V06, &start, &[0x00, 0x08, 0x01, b'a', 0x02, 0x05, 0x06, 0x01, 0x40, 0x40]);
    golden(V06, &AnnounceMessage::End { id: 3 }, &[0x01, 0x01, 0x03]);
    let update = AnnounceMessage::Update { id: 0, hops: vec![], cost: Cost::default() };
    golden(V06, &update, &[0x02, 0x04, 0x00, 0x00, 0x00, 0x00]);
}

#[test]
fn lite05_subscribe_keeps_the_ordered_byte_and_plus_one_groups() {
    let subscribe = Subscribe {
        id: 1,
        broadcast: "b".into(),
        track: "t".into(),
        priority: 2,
        ordered: false,
        max_latency_ms: 100,
        start_group: Some(0),
        end_group: None,
        ..Default::default()
    };
    // len 11 | id 1 | "b" | "t" | prio 2 | ordered 0 | 100 (40 64) | start 0+1 | end 0
    golden(V05, &subscribe, &[0x0b, 0x01, 0x01, b'b', 0x01, b't', 0x02, 0x00, 0x40, 0x64, 0x01, 0x00]);
}

#[test]
fn lite06_subscribe_drops_ordered_and_adds_frame_bounds() {
    let latest = Subscribe { id: 1, broadcast: "b".into(), track: "t".into(), priority: 2, ..Default::default() };
    // len 11 | id | "b" | "t" | prio | max age 0 | start 0 (resolve) | end 0 | start frame 0 | end frame 0
    golden(V06, &latest, &[0x0b, 0x01, 0x01, b'b', 0x01, b't', 0x02, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let ranged = Subscribe {
        id: 1,
        broadcast: "b".into(),
        track: "t".into(),
        priority: 2,
        max_latency_ms: 0,
        start_group: Some(5),
        end_group: Some(6),
        start_frame: 3,
        end_frame: Some(4),
        ..Default::default()
    };
    // start 5 plain | end 6+1 | start frame 3 | end frame 4+1
    golden(V06, &ranged, &[0x0b, 0x01, 0x01, b'b', 0x01, b't', 0x02, 0x00, 0x05, 0x07, 0x03, 0x05]);
}

#[test]
fn subscribe_update_per_version() {
    let update = SubscribeUpdate { priority: 9, max_latency_ms: 1, start_group: Some(2), ..Default::default() };
    golden(V05, &update, &[0x05, 0x09, 0x00, 0x01, 0x03, 0x00]);
    golden(V06, &update, &[0x06, 0x09, 0x01, 0x02, 0x00, 0x00, 0x00]);
}

#[test]
fn subscribe_start_end_drop() {
    for v in [V05, V06] {
        golden(v, &SubscribeResponse::Start { group: 42 }, &[0x00, 0x01, 0x2a]);
        // The reference's own example: SUBSCRIBE_END for group 7 is `01 01 07`.
        golden(v, &SubscribeResponse::End { group: 7 }, &[0x01, 0x01, 0x07]);
        golden(v, &SubscribeResponse::Drop { start: 1, end: 2, error_code: 3 }, &[0x02, 0x03, 0x01, 0x02, 0x03]);
    }
}

#[test]
fn track_request_and_info() {
    for v in [V05, V06] {
        let request = TrackRequest { broadcast: "b".into(), track: "video".into() };
        golden(v, &request, &[0x08, 0x01, b'b', 0x05, b'v', b'i', b'd', b'e', b'o']);
    }
    let info = TrackInfo { priority: 127, max_age_ms: 5000, timescale: 90_000 };
    // prio 0x7f | ordered 0 (05 only) | 5000 (53 88) | 90000 (80 01 5f 90)
    golden(V05, &info, &[0x08, 0x7f, 0x00, 0x53, 0x88, 0x80, 0x01, 0x5f, 0x90]);
    golden(V06, &info, &[0x07, 0x7f, 0x53, 0x88, 0x80, 0x01, 0x5f, 0x90]);
}

#[test]
fn group_header_frame_start_on_06_only() {
    golden(V05, &GroupHeader { subscribe_id: 1, sequence: 2, frame_start: 0 }, &[0x02, 0x01, 0x02]);
    golden(V06, &GroupHeader { subscribe_id: 1, sequence: 2, frame_start: 4 }, &[0x03, 0x01, 0x02, 0x04]);
}

#[test]
fn frame_header_zigzag_timestamp_delta() {
    for v in [V05, V06] {
        // zigzag: 0 → 0, -1 → 1, 1 → 2, 33 → 66 (40 42), -33 → 65 (40 41).
        golden(v, &FrameHeader { timestamp_delta: 0, size: 5 }, &[0x00, 0x05]);
        golden(v, &FrameHeader { timestamp_delta: -1, size: 5 }, &[0x01, 0x05]);
        golden(v, &FrameHeader { timestamp_delta: 1, size: 5 }, &[0x02, 0x05]);
        golden(v, &FrameHeader { timestamp_delta: 33, size: 1500 }, &[0x40, 0x42, 0x45, 0xdc]);
        golden(v, &FrameHeader { timestamp_delta: -33, size: 0 }, &[0x40, 0x41, 0x00]);
    }
}

#[test]
fn probe_and_stream_types() {
    for v in [V05, V06] {
        golden(v, &Probe { bitrate: 1_000_000, rtt_ms: 40 }, &[0x05, 0x80, 0x0f, 0x42, 0x40, 0x28]);
    }
    let mut out = Vec::new();
    BiStreamType::Track.encode(&mut out);
    UniStreamType::Setup.encode(&mut out);
    assert_eq!(out, [0x06, 0x01]);
}

/// The private trace-context extension (message/trace.rs): a SETUP parameter, a stream type and
/// one message, the same on 05 and 06.
#[test]
fn trace_context_extension() {
    for v in [V05, V06] {
        // Parameter 0x7f00 (a four-byte varint) = 1.
        golden(
            v,
            &Setup { trace_context: true, ..Default::default() },
            &[0x07, 0x01, 0x80, 0x00, 0x7f, 0x00, 0x01, 0x01],
        );
        golden(v, &TraceContext { traceparent: "00-ab".into() }, &[0x06, 0x05, b'0', b'0', b'-', b'a', b'b']);
    }
    let mut out = Vec::new();
    BiStreamType::Traced.encode(&mut out);
    assert_eq!(out, [0x80, 0x00, 0x7f, 0x00]);
    assert_eq!(BiStreamType::decode(&mut &out[..]).unwrap(), Ok(BiStreamType::Traced));
    // A parameter value other than 1 is "not advertised"; a traceparent past the cap is refused.
    let two = [0x07, 0x01, 0x80, 0x00, 0x7f, 0x00, 0x01, 0x02];
    assert!(!Setup::decode(&mut &two[..], V06).unwrap().trace_context);
    let long = TraceContext { traceparent: "x".repeat(MAX_TRACEPARENT + 1) };
    let mut wire = Vec::new();
    long.encode(&mut wire, V06);
    assert!(matches!(TraceContext::decode(&mut &wire[..], V06), Err(crate::coding::DecodeError::TooLarge { .. })));
}
