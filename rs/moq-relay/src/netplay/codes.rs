//! Join codes and session ids, drawn from the OS random source.
//!
//! A join code is 8 characters of a 31-letter alphabet without look-alikes (no `0 O 1 I L`),
//! shown as `ABCD-EFGH` (31^8 ≈ 8.5·10^11 codes); it is read case-insensitively, with or without
//! the `-`. Logs and spans show a code only as [`JoinCode::hash`].

use std::fmt;

/// The letters of a join code.
pub const ALPHABET: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters in a join code.
pub const LEN: usize = 8;

/// Where random bytes come from: the OS ([`SystemEntropy`]), or a fixed sequence in tests (ring's
/// own trait is sealed).
pub trait Entropy: Send + Sync {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), EntropyFailed>;
}

/// The OS random source could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyFailed;

/// The OS random source (`getrandom`), through ring.
pub struct SystemEntropy(ring::rand::SystemRandom);

impl Default for SystemEntropy {
    fn default() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl Entropy for SystemEntropy {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), EntropyFailed> {
        ring::rand::SecureRandom::fill(&self.0, bytes).map_err(|_| EntropyFailed)
    }
}

/// A join code: [`LEN`] letters of [`ALPHABET`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct JoinCode([u8; LEN]);

impl JoinCode {
    /// A uniformly random code: each letter from one random byte below 248 (8 × 31), so every
    /// letter is equally likely.
    pub fn generate(entropy: &dyn Entropy) -> Result<JoinCode, EntropyFailed> {
        const UNBIASED: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
        let mut code = [0u8; LEN];
        let mut filled = 0;
        // Each round rejects a byte with probability 8/256; 64 rounds failing is a broken source.
        for _ in 0..64 {
            let mut bytes = [0u8; 2 * LEN];
            entropy.fill(&mut bytes)?;
            for b in bytes.into_iter().filter(|b| *b < UNBIASED) {
                if filled == LEN {
                    return Ok(JoinCode(code));
                }
                code[filled] = ALPHABET[(b % ALPHABET.len() as u8) as usize];
                filled += 1;
            }
            if filled == LEN {
                return Ok(JoinCode(code));
            }
        }
        Err(EntropyFailed)
    }

    /// A code as a person typed it: case-insensitive, `ABCD-EFGH` or `ABCDEFGH`, surrounding
    /// spaces ignored.
    pub fn parse(text: &str) -> Option<JoinCode> {
        let text = text.trim();
        let bytes = text.as_bytes();
        let letters: Vec<u8> = match bytes.len() {
            LEN => bytes.to_vec(),
            9 if bytes[4] == b'-' => bytes[..4].iter().chain(&bytes[5..]).copied().collect(),
            _ => return None,
        };
        let mut code = [0u8; LEN];
        for (slot, b) in code.iter_mut().zip(letters) {
            let b = b.to_ascii_uppercase();
            if !ALPHABET.contains(&b) {
                return None;
            }
            *slot = b;
        }
        Some(JoinCode(code))
    }

    /// What logs, spans and metrics may show of a code: `sha256:` and the first 12 hex digits of
    /// the digest of its display form (`ABCD-EFGH`).
    pub fn hash(&self) -> String {
        moq_telemetry::redact::secret(&self.to_string())
    }
}

impl fmt::Display for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ALPHABET bytes are ever stored.
        let text = std::str::from_utf8(&self.0).map_err(|_| fmt::Error)?;
        write!(f, "{}-{}", &text[..4], &text[4..])
    }
}

impl fmt::Debug for JoinCode {
    /// Never the code itself: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinCode({})", self.hash())
    }
}

/// A fresh session id: a random (version 4) UUID in its lowercase text form.
pub fn session_id(entropy: &dyn Entropy) -> Result<String, EntropyFailed> {
    let mut b = [0u8; 16];
    entropy.fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// A client's pre-generated session id, if it is a version 4 UUID in text form
/// (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`, either case): lowercased, since it becomes a
/// broadcast path.
pub fn parse_session_id(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c.to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(text.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Bytes from a fixed list, then repeating its last one; counts what was read.
    pub struct Fixed {
        bytes: Vec<u8>,
        at: Mutex<usize>,
    }

    impl Fixed {
        pub fn new(bytes: &[u8]) -> Fixed {
            Fixed { bytes: bytes.to_vec(), at: Mutex::new(0) }
        }
        pub fn read(&self) -> usize {
            *self.at.lock().unwrap()
        }
    }

    impl Entropy for Fixed {
        fn fill(&self, out: &mut [u8]) -> Result<(), EntropyFailed> {
            let mut at = self.at.lock().unwrap();
            for b in out {
                *b = *self.bytes.get(*at).or(self.bytes.last()).ok_or(EntropyFailed)?;
                *at += 1;
            }
            Ok(())
        }
    }

    /// A broken source.
    pub struct Broken;

    impl Entropy for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), EntropyFailed> {
            Err(EntropyFailed)
        }
    }

    #[test]
    fn the_alphabet_has_no_look_alikes() {
        assert_eq!(ALPHABET.len(), 31);
        for c in b"0O1IL" {
            assert!(!ALPHABET.contains(c), "{}", *c as char);
        }
        assert_eq!(ALPHABET.iter().collect::<HashSet<_>>().len(), 31, "no letter twice");
    }

    #[test]
    fn codes_come_from_the_entropy_source_without_bias() {
        // 0 → A, 30 → 9, 31 → A again; 248..=255 are rejected (they would favour the first 8).
        let source = Fixed::new(&[0, 30, 31, 248, 255, 1, 2, 3, 4, 5, 6]);
        let code = JoinCode::generate(&source).unwrap();
        assert_eq!(code.to_string(), "A9AB-CDEF");
        assert_eq!(source.read(), 16, "one read of 16 bytes");
        // All rejected: refused rather than looping forever.
        assert_eq!(JoinCode::generate(&Fixed::new(&[250])), Err(EntropyFailed));
        assert_eq!(JoinCode::generate(&Broken), Err(EntropyFailed));
    }

    #[test]
    fn system_codes_have_the_right_shape_and_differ() {
        let entropy = SystemEntropy::default();
        let codes: HashSet<String> = (0..200).map(|_| JoinCode::generate(&entropy).unwrap().to_string()).collect();
        assert_eq!(codes.len(), 200);
        for code in &codes {
            assert_eq!(code.len(), LEN + 1);
            assert_eq!(&code[4..5], "-");
            assert!(code.bytes().filter(|b| *b != b'-').all(|b| ALPHABET.contains(&b)), "{code}");
        }
        // Over 1600 letters every one of the 31 shows up.
        let letters: HashSet<u8> = codes.iter().flat_map(|c| c.bytes().filter(|b| *b != b'-')).collect();
        assert_eq!(letters.len(), 31);
    }

    #[test]
    fn parse_accepts_the_forms_people_type() {
        let code = JoinCode::parse("ABCD-EFGH").unwrap();
        for text in ["ABCDEFGH", "abcd-efgh", "AbCdEfGh", " abcd-EFGH\n"] {
            assert_eq!(JoinCode::parse(text), Some(code), "{text:?}");
        }
        for text in
            ["", "ABCD-EFG", "ABCDEFGHJ", "ABC-DEFGH", "ABCD_EFGH", "ABCD-EFG0", "OBCDEFGH", "ABCD--EFGH", "ÄBCDEFGH"]
        {
            assert_eq!(JoinCode::parse(text), None, "{text:?}");
        }
        assert_eq!(code.to_string(), "ABCD-EFGH");
    }

    #[test]
    fn the_hash_is_the_redacted_digest_and_debug_shows_only_it() {
        let code = JoinCode::parse("abcd-efgh").unwrap();
        assert_eq!(code.hash(), moq_telemetry::redact::secret("ABCD-EFGH"));
        assert!(code.hash().starts_with("sha256:") && code.hash().len() == "sha256:".len() + 12);
        let debug = format!("{code:?}");
        assert!(!debug.contains("ABCD") && debug.contains(&code.hash()), "{debug}");
    }

    #[test]
    fn session_ids_are_v4_uuids() {
        let id = session_id(&Fixed::new(&[0xff])).unwrap();
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(parse_session_id(&id).as_deref(), Some(id.as_str()));
        let id = session_id(&SystemEntropy::default()).unwrap();
        assert_eq!(parse_session_id(&id).as_deref(), Some(id.as_str()));
        assert_eq!(
            parse_session_id("0E4A1C2B-9F3D-4A5B-8C6D-7E8F9A0B1C2D").as_deref(),
            Some("0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2d")
        );
        for bad in [
            "",
            "0e4a1c2b9f3d4a5b8c6d7e8f9a0b1c2d",
            "0e4a1c2b-9f3d-1a5b-8c6d-7e8f9a0b1c2d", // version 1
            "0e4a1c2b-9f3d-4a5b-cc6d-7e8f9a0b1c2d", // variant
            "0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2g",
            "{0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2}",
            "../../../../../../../../../../etc/x",
        ] {
            assert_eq!(parse_session_id(bad), None, "{bad}");
        }
    }
}
