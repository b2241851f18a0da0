//! Feeds arbitrary bytes to the qmux frame decoder every WebSocket session runs on (the `qmux`
//! crate, pinned to the workspace's version): what a hostile WebSocket peer can send.
//!
//! The first input byte selects the wire format (bits 0–1: qmux draft-00, -01, -02, or the
//! WebTransport-style framing) and whether the rest is one frame or a draft-01+ record of several
//! (bit 2). Decoding must return, never panic; a decoded frame must re-encode, decode again and
//! re-encode to the same bytes (a frame the relay accepted is one it can represent).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qmux::proto::{Frame, Version};

const VERSIONS: [Version; 4] = [Version::QMux00, Version::QMux01, Version::QMux02, Version::WebTransport];

fn round_trip(frame: &Frame, version: Version) {
    // Record-layer frames (PING, DATAGRAM) have no encoding in the formats without records.
    let Ok(wire) = frame.encode(version) else { return };
    let again = match Frame::decode(wire.clone(), version) {
        Ok(Some(frame)) => frame,
        other => panic!("{frame:?} encoded as {wire:?} decodes as {other:?}"),
    };
    assert_eq!(again.encode(version).ok(), Some(wire), "{frame:?} does not re-encode to itself");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector & 0x3)];
    let input = Bytes::copy_from_slice(input);
    if selector & 0x4 != 0 {
        if let Ok(frames) = Frame::decode_record(input) {
            for frame in &frames {
                round_trip(frame, version);
            }
        }
    } else if let Ok(Some(frame)) = Frame::decode(input, version) {
        round_trip(&frame, version);
    }
});
