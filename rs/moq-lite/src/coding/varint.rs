//! QUIC variable-length integers (RFC 9000 §16): the top two bits of the first byte give the
//! length (1, 2, 4 or 8 bytes), the rest is the big-endian value, so values stay below 2^62.

use bytes::{Buf, BufMut};

use super::DecodeError;

/// The largest value a QUIC varint can carry.
pub const MAX: u64 = (1 << 62) - 1;

/// Decodes one varint, or reports how it failed without consuming partial input on `Short`.
pub fn decode<B: Buf>(buf: &mut B) -> Result<u64, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Short);
    }
    let first = buf.chunk()[0];
    let len = 1usize << (first >> 6);
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    let mut value = u64::from(buf.get_u8() & 0x3f);
    for _ in 1..len {
        value = (value << 8) | u64::from(buf.get_u8());
    }
    Ok(value)
}

/// The number of bytes `value` takes on the wire.
pub fn size(value: u64) -> usize {
    match value {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// Encodes `value` in its shortest form.
///
/// # Panics
/// When `value` exceeds [`MAX`]; every caller encodes lengths, counts or ids that are bounded
/// far below that, so this is a programming error, not an input error.
pub fn encode<B: BufMut>(buf: &mut B, value: u64) {
    assert!(value <= MAX, "varint out of range: {value}");
    match size(value) {
        1 => buf.put_u8(value as u8),
        2 => buf.put_u16(0x4000 | value as u16),
        4 => buf.put_u32(0x8000_0000 | value as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | value),
    }
}

/// Maps a signed value to an unsigned one with small magnitudes staying small:
/// `(n << 1) ^ (n >> 63)`. Values whose mapping would not fit a varint saturate.
pub fn zigzag_encode(n: i64) -> u64 {
    let n = n.clamp(-(1i64 << 61), (1i64 << 61) - 1);
    ((n << 1) ^ (n >> 63)) as u64
}

/// The inverse of [`zigzag_encode`]: `(u >> 1) ^ -(u & 1)`.
pub fn zigzag_decode(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Examples from RFC 9000 Appendix A.1.
    #[test]
    fn rfc9000_examples() {
        let cases: &[(&[u8], u64)] = &[
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            let mut buf = *bytes;
            assert_eq!(decode(&mut buf).unwrap(), *value);
            assert!(buf.is_empty());
            let mut out = Vec::new();
            encode(&mut out, *value);
            assert_eq!(&out[..], *bytes);
        }
        // A non-minimal encoding is still a valid decode.
        let mut two_byte_37: &[u8] = &[0x40, 0x25];
        assert_eq!(decode(&mut two_byte_37).unwrap(), 37);
    }

    #[test]
    fn short_input_consumes_nothing() {
        let mut buf: &[u8] = &[0x9d, 0x7f];
        assert!(matches!(decode(&mut buf), Err(DecodeError::Short)));
        assert_eq!(buf.len(), 2);
        let mut empty: &[u8] = &[];
        assert!(matches!(decode(&mut empty), Err(DecodeError::Short)));
    }

    #[test]
    fn boundaries_round_trip() {
        for v in [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut out = Vec::new();
            encode(&mut out, v);
            assert_eq!(out.len(), size(v));
            assert_eq!(decode(&mut &out[..]).unwrap(), v);
        }
    }
}
