//! Feeds arbitrary bytes to every moq-lite decoder.
//!
//! The first input byte selects what to run; the rest is the wire input:
//! - bits 6–7 pick the version (lite-03, 04, 05, 06), an index into
//!   `moq_lite::message::properties::VERSIONS`;
//! - the low five bits pick the decoder, an index into `properties::KINDS` (0 AnnounceRequest,
//!   1 Announce, 2 Subscribe, 3 SubscribeUpdate, 4 SubscribeResponse, 5 GroupHeader,
//!   6 FrameHeader, 7 Probe, 8 Goaway, 9 Setup, 10 AnnounceOk, 11 AnnounceMessage (06),
//!   12 TrackRequest, 13 TrackInfo, 14 BiStream type, 15 UniStream type, 16 TraceContext);
//! - any other value (17–31) runs every decoder, in every version, on the same bytes.
//!
//! Each run is `properties::check`, the same check the hostile-input unit tests use: the decoder
//! runs several ways (slice, `BytesMut`, `decode_partial`, two-chunk buffer) and must agree;
//! `decode_partial` consumes nothing on error; appending bytes never changes a non-`Short` result;
//! a success re-encodes to at most the bytes consumed and decodes back equal; the canonical
//! encoding is a fixed point and each of its strict prefixes is `Short`. A violation panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moq_lite::message::properties::{check, KINDS, VERSIONS};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector >> 6)];
    match KINDS.get(usize::from(selector & 0x1f)) {
        Some(&kind) => {
            let _ = check(kind, version, input);
        }
        None => {
            for version in VERSIONS {
                for kind in KINDS {
                    let _ = check(kind, version, input);
                }
            }
        }
    }
});
