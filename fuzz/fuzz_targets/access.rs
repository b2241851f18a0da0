//! Feeds arbitrary bytes to the relay's decoders of untrusted access input: tokens (the JWT
//! header, signature and claims), key files, auth-server answers and path patterns.
//!
//! The first input byte selects what to run; the rest is the input:
//! - 0: a token, verified against a single HS256 key file and against a `{kid}.jwk` directory
//!   (header, `kid`, `alg`, signature), and granted at a dialed path when it verifies;
//! - 1: the input as the claims of a token signed with the trusted key, so the claims decoder
//!   (registered and unknown claims, legacy `put`/`get`, patterns, timestamps) and the grant's
//!   rebasing run on every input, not only on the rare forged signature;
//! - 2: a JWK key file (raw JSON or base64url);
//! - 3: an auth server's 2xx answer for a session dialed at `demo/room`;
//! - 4+: path patterns: parse, and match / match-below / root against the other half.
//!
//! No input may panic; every answer is `Ok` or a refusal. Properties checked on the way: a grant
//! only ever holds patterns under the dialed path or its root, and parsing a pattern's own text
//! gives it back.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use moq_lite::pattern::Pattern;
use moq_relay::access::keys::{Key, Keys};
use moq_relay::access::{auth_server, token};

/// A test-only HS256 key (it protects nothing).
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";
const KID: &str = "k1";

fn jwk() -> String {
    format!(r#"{{"kty":"oct","alg":"HS256","k":"{}","kid":"{KID}"}}"#, URL_SAFE_NO_PAD.encode(SECRET))
}

/// The trusted keys: one file, and one directory holding `k1.jwk`.
fn keys() -> &'static (Keys, Keys) {
    static KEYS: OnceLock<(Keys, Keys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("moq-fuzz-access-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        std::fs::write(dir.join("key.jwk"), jwk()).unwrap();
        std::fs::write(dir.join("dir").join(format!("{KID}.jwk")), jwk()).unwrap();
        (Keys::load(&dir.join("key.jwk")).unwrap(), Keys::load(&dir.join("dir")).unwrap())
    })
}

/// `header.payload.signature` with `payload` as the claims, signed with the trusted key.
fn signed(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"HS256","kid":"{KID}"}}"#));
    let signing = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let tag = ring::hmac::sign(&key, signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn verify_and_grant(token: &str, keys: &Keys, now: SystemTime) {
    if let Ok(claims) = token::verify(keys, token, now) {
        for dialed in ["", "demo", "demo/room"] {
            if let Ok(grant) = claims.grant_at(dialed) {
                assert!(grant.reaches(dialed), "a grant that reaches nothing at {dialed:?} was made");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(input);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (file, dir) = keys();
    match selector {
        0 => {
            verify_and_grant(&text, file, now);
            verify_and_grant(&text, dir, now);
        }
        1 => verify_and_grant(&signed(input), dir, now),
        2 => {
            let _ = Key::parse(&text);
        }
        3 => {
            if let Ok(grant) = auth_server::decode_grant(input, "demo/room", now) {
                assert!(grant.reaches("demo/room"), "an auth-server grant must reach its session");
            }
        }
        _ => {
            let (left, right) = input.split_at(input.len() / 2);
            let (left, right) = (String::from_utf8_lossy(left), String::from_utf8_lossy(right));
            let right = right.as_ref();
            if let Ok(pattern) = left.parse::<Pattern>() {
                assert_eq!(pattern.as_str().parse::<Pattern>().as_ref(), Ok(&pattern), "text round trip");
                let _ = pattern.matches(right);
                let _ = pattern.matches_below(right);
                if let Ok(rooted) = pattern.rooted(right) {
                    // Rooting keeps every match: the pattern's own text under the root.
                    let _ = rooted.matches(right);
                }
            }
        }
    }
});
