//! The synthetic media format shared by `moq publish` and `moq watch`.
//!
//! Every frame starts with a 24-byte header — capture time (µs since the Unix epoch), group
//! sequence, frame index within the group, payload length — followed by filler bytes derived
//! from (group, index). A receiver regenerates the filler, so it checks every byte of every frame
//! without any checksum travelling on the wire, and measures latency from the capture time.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const HEADER_SIZE: usize = 24;

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// Builds one frame of exactly `size` bytes (at least the header).
pub fn make_frame(group: u64, index: u32, size: usize, capture_us: u64) -> Bytes {
    let size = size.max(HEADER_SIZE);
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u64(capture_us);
    buf.put_u64(group);
    buf.put_u32(index);
    buf.put_u32(size as u32);
    fill(&mut buf, group, index, size - HEADER_SIZE);
    buf.freeze()
}

fn fill(buf: &mut BytesMut, group: u64, index: u32, len: usize) {
    let mut state = group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(index) << 1) ^ 1;
    let mut remaining = len;
    while remaining > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let n = remaining.min(8);
        buf.put_slice(&bytes[..n]);
        remaining -= n;
    }
}

/// What a receiver learns from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub capture_us: u64,
    pub group: u64,
    pub index: u32,
}

/// Parses the header and checks the frame's length against it, without reading the filler: what a
/// load generator can afford per frame.
pub fn read_header(payload: &[u8]) -> Option<FrameInfo> {
    if payload.len() < HEADER_SIZE {
        return None;
    }
    let capture_us = u64::from_be_bytes(payload[0..8].try_into().ok()?);
    let group = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    let index = u32::from_be_bytes(payload[16..20].try_into().ok()?);
    let size = u32::from_be_bytes(payload[20..24].try_into().ok()?) as usize;
    (size == payload.len()).then_some(FrameInfo { capture_us, group, index })
}

/// Parses and verifies a frame byte for byte; `None` if anything differs.
pub fn verify_frame(payload: &[u8]) -> Option<FrameInfo> {
    let FrameInfo { capture_us, group, index } = read_header(payload)?;
    let size = payload.len();
    let mut expected = BytesMut::with_capacity(size - HEADER_SIZE);
    fill(&mut expected, group, index, size - HEADER_SIZE);
    (expected[..] == payload[HEADER_SIZE..]).then_some(FrameInfo { capture_us, group, index })
}

/// The catalog track's single frame: which tracks exist and their shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub tracks: Vec<CatalogTrack>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogTrack {
    pub name: String,
    pub kind: String,
    pub bitrate: u64,
    pub fps: f64,
    /// Frames per group.
    pub gop: u32,
}

pub const CATALOG_TRACK: &str = "catalog";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_and_detect_corruption() {
        let frame = make_frame(3, 7, 1000, 42);
        assert_eq!(verify_frame(&frame), Some(FrameInfo { capture_us: 42, group: 3, index: 7 }));
        let mut bad = frame.to_vec();
        bad[500] ^= 1;
        assert_eq!(verify_frame(&bad), None);
        assert_eq!(verify_frame(&frame[..999]), None);
        // The header check alone sees a truncation but not a flipped filler byte.
        assert_eq!(read_header(&frame[..999]), None);
        assert_eq!(read_header(&bad), Some(FrameInfo { capture_us: 42, group: 3, index: 7 }));
    }
}
