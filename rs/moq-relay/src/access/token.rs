//! Signed tokens (JWT) verified in-process, in the format `moq auth sign` writes.
//!
//! The header names the algorithm and usually a `kid`; the claims are a `root` and what may be
//! published and subscribed beneath it, either as patterns (`publish`, `subscribe`) or in the
//! legacy form (`put`, `get`: each prefix `p` is the subtree `p/**`, and `""` is `**`; a single
//! string stands for a list of one). One token never mixes the two forms. The other claims read are
//! `exp`, `nbf` and `iat` (integer seconds), `sub` (kept as the subject when it is a string),
//! `peer` (a boolean: `true` marks a cluster peer relay, docs/CLUSTER.md; it widens nothing), and
//! `iss` and `jti` (ignored); any other claim refuses the token, since it might narrow the grant,
//! and a misspelt `root` would otherwise widen it.
//!
//! [`verify`] checks the signature and the times; [`Claims::grant_at`] turns the claims into the
//! [`Grant`] of a session dialed at some path. Refusal details never contain the token.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moq_lite::path::{has_prefix, normalize};
use moq_lite::pattern::{Pattern, Patterns};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::keys::{quote, Key, Keys};
use super::{Denial, Grant, Refusal, Source};

/// How far the relay's clock and the issuer's may disagree: `exp`, `nbf` and `iat` are each
/// given this much slack.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Every claim a token may carry.
const KNOWN_CLAIMS: &[&str] =
    &["root", "put", "get", "publish", "subscribe", "exp", "iat", "nbf", "iss", "sub", "jti", "peer"];

/// What a verified token says. The patterns are relative to `root`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims {
    /// The path the patterns are beneath, normalized (no leading, trailing or doubled `/`).
    pub root: String,
    pub publish: Patterns,
    pub subscribe: Patterns,
    /// `exp`: the token is refused from then on (give or take [`CLOCK_SKEW`]).
    pub expires: Option<SystemTime>,
    /// `nbf`: the token is refused until then (give or take [`CLOCK_SKEW`]).
    pub not_before: Option<SystemTime>,
    /// `iat`: a token issued in the future (beyond [`CLOCK_SKEW`]) is refused.
    pub issued: Option<SystemTime>,
    /// `sub`, when it is a string.
    pub subject: Option<String>,
    /// `peer: true`: the bearer is a peer relay.
    pub peer: bool,
}

/// Verifies `token` with `keys` at `now`: the signature with the key's own algorithm, then the
/// claims, then the times.
pub fn verify(keys: &Keys, token: &str, now: SystemTime) -> Result<Claims, Refusal> {
    let (header, signature) = split(token)?;
    let key = keys.find(header.kid.as_deref())?;
    verify_signed(&key, header, signature, token, now)
}

/// Verifies `token` with one `key`, whatever its `kid` says, as [`verify`] does.
pub fn verify_with(key: &Key, token: &str, now: SystemTime) -> Result<Claims, Refusal> {
    let (header, signature) = split(token)?;
    verify_signed(key, header, signature, token, now)
}

/// The `kid` of a token's header, if it has a readable one (nothing is verified).
pub fn kid(token: &str) -> Option<String> {
    split(token).ok()?.0.kid
}

/// The decoded header and the signature part of a JWT.
fn split(token: &str) -> Result<(Header, &str), Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not a JWT: it needs three dot-separated parts"));
    };
    Ok((Header::decode(header)?, signature))
}

fn verify_signed(key: &Key, header: Header, signature: &str, token: &str, now: SystemTime) -> Result<Claims, Refusal> {
    if header.alg != key.algorithm() {
        return Err(Refusal::new(
            Denial::BadAlgorithm,
            format!("the token is signed with {:?}, its key verifies {:?} only", header.alg, key.algorithm()),
        ));
    }
    // jsonwebtoken decodes the signature only for some algorithms; undecodable is never valid.
    if URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(Refusal::new(Denial::BadSignature, "the signature is not base64url"));
    }

    // Only the signature: the times are checked below, with the skew, and every other claim is
    // read by `Claims::from_members`.
    let mut validation = Validation::new(key.algorithm());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let members = jsonwebtoken::decode::<Members>(token, key.decoding(), &validation).map_err(|e| refusal(&e))?;

    let claims = Claims::from_members(members.claims.0)?;
    claims.check_times(now)?;
    Ok(claims)
}

impl Claims {
    /// The grant of a session dialed at `dialed` (a normalized path, `""` for the root), as the
    /// reference authorizes it: `dialed` and the root must overlap, segment by segment, in either
    /// direction (root `demo` with `demo/room`, or `""` with root `demo`); the patterns are made
    /// absolute under the root; and they must reach something at or under `dialed`.
    pub fn grant_at(&self, dialed: &str) -> Result<Grant, Refusal> {
        let dialed = normalize(dialed);
        let root = normalize(&self.root);
        if !has_prefix(&dialed, &root) && !has_prefix(&root, &dialed) {
            return Err(Refusal::new(
                Denial::RootMismatch,
                format!("the token's root {} does not overlap the dialed path {}", quote(&root), quote(&dialed)),
            ));
        }

        let rooted = |patterns: &Patterns| {
            patterns
                .rooted(&root)
                .map_err(|e| malformed(format!("the patterns cannot be placed under the root {}: {e}", quote(&root))))
        };
        let grant = Grant {
            publish: rooted(&self.publish)?,
            subscribe: rooted(&self.subscribe)?,
            expires: self.expires,
            revalidate: None,
            subject: self.subject.clone(),
            source: Source::Token,
            peer: self.peer,
        };
        if !grant.reaches(&dialed) {
            return Err(Refusal::new(
                Denial::PathDenied,
                format!("the token grants nothing at or under {}", quote(&dialed)),
            ));
        }
        Ok(grant)
    }

    fn from_members(members: Vec<(String, Value)>) -> Result<Claims, Refusal> {
        // Unknown names first, whatever else is wrong, so the reason is stable.
        if let Some((name, _)) = members.iter().find(|(name, _)| !KNOWN_CLAIMS.contains(&name.as_str())) {
            return Err(Refusal::new(Denial::UnknownClaim, claim_name(name)));
        }

        let mut seen = HashSet::new();
        let mut claims = Claims::default();
        let (mut put, mut get, mut publish, mut subscribe) = (None, None, None, None);
        for (name, value) in members {
            if !seen.insert(name.clone()) {
                return Err(malformed(format!("the claim {name} appears twice")));
            }
            match name.as_str() {
                "root" => match value {
                    Value::String(root) => claims.root = normalize(&root),
                    _ => return Err(malformed("root is not a string")),
                },
                "put" => put = Some(prefixes(&name, value)?),
                "get" => get = Some(prefixes(&name, value)?),
                "publish" => publish = Some(patterns(&name, value)?),
                "subscribe" => subscribe = Some(patterns(&name, value)?),
                "exp" => claims.expires = timestamp(&name, &value)?,
                "nbf" => claims.not_before = timestamp(&name, &value)?,
                "iat" => claims.issued = timestamp(&name, &value)?,
                "sub" => claims.subject = value.as_str().map(str::to_string),
                "peer" => match value {
                    Value::Bool(peer) => claims.peer = peer,
                    _ => return Err(malformed("peer is not a boolean")),
                },
                _ => {} // iss, jti: an issuer's bookkeeping.
            }
        }

        if put.is_some() || get.is_some() {
            if publish.is_some() || subscribe.is_some() {
                return Err(malformed("the token mixes the legacy put/get claims with publish/subscribe"));
            }
            claims.publish = subtrees("put", put.unwrap_or_default())?;
            claims.subscribe = subtrees("get", get.unwrap_or_default())?;
        } else {
            claims.publish = publish.unwrap_or_default();
            claims.subscribe = subscribe.unwrap_or_default();
        }

        // As the reference refuses it: a token that grants nothing is a mistake.
        if claims.publish.is_empty() && claims.subscribe.is_empty() {
            return Err(malformed("the token grants neither publish nor subscribe"));
        }
        Ok(claims)
    }

    fn check_times(&self, now: SystemTime) -> Result<(), Refusal> {
        if let Some(expires) = self.expires {
            // `exp <= now - skew`, without underflowing near the epoch.
            if expires.checked_add(CLOCK_SKEW).is_some_and(|limit| limit <= now) {
                let ago = now.duration_since(expires).unwrap_or_default().as_secs();
                return Err(Refusal::new(Denial::Expired, format!("the token expired {ago} s ago")));
            }
        }
        if let Some(not_before) = self.not_before {
            if not_before.checked_sub(CLOCK_SKEW).is_some_and(|limit| limit > now) {
                let ahead = not_before.duration_since(now).unwrap_or_default().as_secs();
                return Err(Refusal::new(Denial::NotYetValid, format!("the token is valid only in {ahead} s")));
            }
        }
        if let Some(issued) = self.issued {
            if issued.checked_sub(CLOCK_SKEW).is_some_and(|limit| limit > now) {
                let ahead = issued.duration_since(now).unwrap_or_default().as_secs();
                return Err(Refusal::new(Denial::NotYetValid, format!("the token is issued {ahead} s in the future")));
            }
        }
        Ok(())
    }
}

/// The refusal for a jsonwebtoken error. `verify` has already read the header, matched the
/// algorithm and decoded the signature itself, so in practice only `InvalidToken`,
/// `InvalidSignature` and the payload's `Base64`/`Utf8`/`Json` errors reach here; the rest are
/// mapped for completeness.
pub(crate) fn refusal(error: &jsonwebtoken::errors::Error) -> Refusal {
    let (denial, detail) = match error.kind() {
        ErrorKind::InvalidToken => (Denial::Malformed, "not a JWT"),
        ErrorKind::InvalidSignature => (Denial::BadSignature, "the signature does not verify"),
        ErrorKind::Crypto(_) | ErrorKind::RsaFailedSigning => (Denial::BadSignature, "the signature does not verify"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            (Denial::BadAlgorithm, "the token's algorithm is not its key's")
        }
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            (Denial::UnknownKey, "the key cannot verify this token")
        }
        ErrorKind::ExpiredSignature => (Denial::Expired, "the token expired"),
        ErrorKind::ImmatureSignature => (Denial::NotYetValid, "the token is not valid yet"),
        ErrorKind::InvalidAudience => return Refusal::new(Denial::UnknownClaim, "aud"),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject | ErrorKind::MissingRequiredClaim(_) => {
            (Denial::Malformed, "a registered claim is not as required")
        }
        ErrorKind::Base64(_) => (Denial::Malformed, "the claims are not base64url"),
        ErrorKind::Utf8(_) => (Denial::Malformed, "the claims are not UTF-8"),
        ErrorKind::Json(_) => (Denial::Malformed, "the claims are not a JSON object"),
        _ => (Denial::Malformed, "the token does not decode"),
    };
    Refusal::new(denial, detail)
}

fn malformed(detail: impl Into<String>) -> Refusal {
    Refusal::new(Denial::Malformed, detail)
}

/// An unknown claim's name as the refusal's detail: the name alone, escaped and cut short if it
/// is not a plain identifier.
fn claim_name(name: &str) -> String {
    let plain = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if plain {
        name.to_string()
    } else {
        quote(name)
    }
}

/// The header members `verify` needs.
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

impl Header {
    fn decode(encoded: &str) -> Result<Header, Refusal> {
        let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed("the header is not base64url"))?;
        let Members(members) =
            serde_json::from_slice(&json).map_err(|_| malformed("the header is not a JSON object"))?;

        let mut seen = HashSet::new();
        let (mut alg, mut kid) = (None, None);
        for (name, value) in members {
            if !seen.insert(name.clone()) {
                return Err(malformed(format!("the header repeats {}", quote(&name))));
            }
            match name.as_str() {
                "alg" => alg = Some(value),
                "kid" => kid = Some(value),
                // RFC 7515 4.1.11: extensions a verifier does not understand must refuse the token.
                "crit" => return Err(malformed("the header lists critical extensions (crit)")),
                _ => {}
            }
        }

        let alg = match alg {
            None => return Err(malformed("the header has no alg")),
            Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
                return Err(Refusal::new(Denial::BadAlgorithm, "alg none (an unsigned token) is refused"));
            }
            Some(Value::String(alg)) => alg
                .parse()
                .map_err(|_| Refusal::new(Denial::BadAlgorithm, format!("unsupported alg {}", quote(&alg))))?,
            Some(_) => return Err(malformed("the header's alg is not a string")),
        };
        let kid = match kid {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(malformed("the header's kid is not a string")),
        };
        Ok(Header { alg, kid })
    }
}

/// A JSON object's members in order, repeats kept: a map would silently keep only the last of a
/// repeated claim, where the reference refuses the token (and another verifier might read the
/// first, so the two would grant different things).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;

        impl<'de> Visitor<'de> for Object {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(Object)
    }
}

/// A legacy `put`/`get`: one prefix, or a list of them.
fn prefixes(name: &str, value: Value) -> Result<Vec<String>, Refusal> {
    let invalid = || malformed(format!("{name} is not a string or a list of strings"));
    match value {
        Value::String(prefix) => Ok(vec![prefix]),
        Value::Array(items) => {
            items.into_iter().map(|item| if let Value::String(s) = item { Ok(s) } else { Err(invalid()) }).collect()
        }
        _ => Err(invalid()),
    }
}

/// Each legacy prefix `p` as the subtree `p/**` (`""` is `**`).
fn subtrees(name: &str, prefixes: Vec<String>) -> Result<Patterns, Refusal> {
    prefixes
        .iter()
        .map(|prefix| {
            // Prefixes never had wildcards; reading one as a pattern would widen the grant.
            if prefix.contains('*') {
                return Err(malformed(format!("{name} holds a wildcard, which a legacy prefix cannot")));
            }
            Pattern::subtree(prefix)
                .map_err(|e| malformed(format!("{name} holds an invalid prefix {}: {e}", quote(prefix))))
        })
        .collect()
}

/// A `publish`/`subscribe`: a list of patterns.
fn patterns(name: &str, value: Value) -> Result<Patterns, Refusal> {
    let Value::Array(items) = value else {
        return Err(malformed(format!("{name} is not a list of patterns")));
    };
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| malformed(format!("{name} holds something not a string")))?;
            text.parse::<Pattern>()
                .map_err(|e| malformed(format!("{name} holds an invalid pattern {}: {e}", quote(text))))
        })
        .collect()
}

/// An `exp`/`nbf`/`iat`: integer seconds since the epoch, as the reference reads them (`null` is
/// absent, as there).
fn timestamp(name: &str, value: &Value) -> Result<Option<SystemTime>, Refusal> {
    if value.is_null() {
        return Ok(None);
    }
    let seconds = value.as_i64().ok_or_else(|| malformed(format!("{name} is not an integer timestamp")))?;
    let at = if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
    };
    at.map(Some).ok_or_else(|| malformed(format!("{name} is out of range")))
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::Arc;

    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::super::keys::testing::*;
    use super::super::keys::RECHECK;
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const SECRET: [u8; 32] = [0x42; 32];

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// `NOW` shifted by `offset` seconds, as a claim.
    fn at(offset: i64) -> i64 {
        NOW as i64 + offset
    }

    fn patterns(texts: &[&str]) -> Patterns {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn hs() -> String {
        hs_jwk(&SECRET, "k1")
    }

    /// The claims of the reference tool's usual token: root `demo`, publishing under `bbb/`,
    /// watching everything.
    fn demo_claims(expires: Option<SystemTime>) -> Claims {
        Claims {
            root: "demo".into(),
            publish: patterns(&["bbb/**"]),
            subscribe: patterns(&["**"]),
            expires,
            ..Default::default()
        }
    }

    /// Keys from one file holding `jwk` (the directory lives as long as the keys are used).
    fn keys_for(jwk: &str) -> (TempDir, Keys) {
        let dir = TempDir::new("token");
        let path = dir.write("key.jwk", jwk);
        let keys = Keys::load(&path).unwrap().with_recheck(Duration::ZERO);
        (dir, keys)
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A token from already-encoded header and payload segments, signed as they are.
    fn sign_parts(jwk: &str, header: &str, payload: &str) -> String {
        let (alg, key) = signer(jwk);
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
        format!("{message}.{signature}")
    }

    /// A token with this exact header and payload text, signed with `jwk`'s algorithm.
    fn sign_text(jwk: &str, payload: &str) -> String {
        let (alg, _) = signer(jwk);
        sign_parts(jwk, &b64(&format!(r#"{{"typ":"JWT","alg":"{alg:?}"}}"#)), &b64(payload))
    }

    /// The refusal of `token`, checking its detail shows nothing of the token.
    fn refused(keys: &Keys, token: &str) -> Refusal {
        let refusal = verify(keys, token, now()).expect_err("the token was accepted");
        for part in token.split('.').filter(|part| part.len() >= 8) {
            assert!(!refusal.detail.contains(part), "{refusal:?} shows the token");
        }
        refusal
    }

    fn denial(keys: &Keys, token: &str) -> Denial {
        refused(keys, token).denial
    }

    /// Flips one character of the signature at `index` (from its end when negative).
    fn tamper(token: &str, index: isize) -> String {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut signature = signature.as_bytes().to_vec();
        let index = if index < 0 { signature.len() - index.unsigned_abs() } else { index as usize };
        signature[index] = if signature[index] == b'A' { b'B' } else { b'A' };
        format!("{message}.{}", String::from_utf8(signature).unwrap())
    }

    #[test]
    fn a_reference_shaped_token_grants_its_subtrees() {
        let (_dir, keys) = keys_for(&hs());
        let token = sign(&hs(), Some("k1"), &json!({"root": "demo", "put": ["bbb"], "get": [""], "exp": at(3600)}));
        let claims = verify(&keys, &token, now()).unwrap();
        let expires = Some(now() + Duration::from_secs(3600));
        assert_eq!(claims, demo_claims(expires));
        assert_eq!(
            claims.grant_at("demo").unwrap(),
            Grant {
                publish: patterns(&["demo/bbb/**"]),
                subscribe: patterns(&["demo/**"]),
                expires,
                revalidate: None,
                subject: None,
                source: Source::Token,
                peer: false,
            }
        );
    }

    #[test]
    fn es256_and_eddsa_tokens_verify() {
        for (jwk, kid) in [(ES1, "es1"), (ED1, "ed1")] {
            let (_dir, keys) = keys_for(&public(jwk));
            let claims = json!({"root": "r", "subscribe": ["a/*/b"], "sub": "alice", "iat": at(0)});
            let claims = verify(&keys, &sign(jwk, Some(kid), &claims), now()).unwrap();
            assert_eq!(claims.subscribe, patterns(&["a/*/b"]), "{kid}");
            assert_eq!(claims.subject.as_deref(), Some("alice"));
            assert_eq!(claims.issued, Some(now()));

            let grant = claims.grant_at("r").unwrap();
            assert_eq!(grant.subscribe, patterns(&["r/a/*/b"]));
            assert!(grant.publish.is_empty());
            assert_eq!(grant.subject.as_deref(), Some("alice"));
            assert!(claims.grant_at("r/a").is_ok());
            assert_eq!(claims.grant_at("r/x").unwrap_err().denial, Denial::PathDenied);
        }
    }

    #[test]
    fn legacy_prefixes_are_subtrees() {
        let (_dir, keys) = keys_for(&hs());
        let subtree =
            |prefixes: &[&str]| -> Patterns { prefixes.iter().map(|p| Pattern::subtree(p).unwrap()).collect() };
        let cases = [
            (json!({"put": "bbb", "get": ""}), subtree(&["bbb"]), subtree(&[""])),
            (json!({"put": ["bbb"], "get": [""]}), subtree(&["bbb"]), subtree(&[""])),
            (json!({"put": ["a", "/b//c/"]}), patterns(&["a/**", "b/c/**"]), Patterns::default()),
            (json!({"get": ["x"]}), Patterns::default(), patterns(&["x/**"])),
        ];
        for (claims, publish, subscribe) in cases {
            let verified = verify(&keys, &sign(&hs(), None, &claims), now()).unwrap();
            assert_eq!((verified.publish, verified.subscribe), (publish, subscribe), "{claims}");
        }
        assert_eq!(subtree(&["bbb"]), patterns(&["bbb/**"]));
        assert_eq!(subtree(&[""]), patterns(&["**"]));

        // Prefixes never had wildcards.
        assert_eq!(denial(&keys, &sign(&hs(), None, &json!({"put": ["a/*"]}))), Denial::Malformed);
    }

    #[test]
    fn mixed_forms_are_malformed() {
        let (_dir, keys) = keys_for(&hs());
        for claims in [
            json!({"put": ["a"], "subscribe": ["b"]}),
            json!({"publish": ["a"], "get": [""]}),
            json!({"put": [], "subscribe": ["b"]}),
            json!({"get": "", "publish": ["a"]}),
        ] {
            assert_eq!(denial(&keys, &sign(&hs(), None, &claims)), Denial::Malformed, "{claims}");
        }
    }

    #[test]
    fn unknown_claims_are_refused_by_name() {
        let (_dir, keys) = keys_for(&hs());
        for name in ["user_id", "rooot", "aud", "cluster"] {
            let mut claims = json!({"root": "room", "publish": ["**"]});
            claims[name] = json!("x");
            let refusal = refused(&keys, &sign(&hs(), None, &claims));
            assert_eq!(refusal, Refusal::new(Denial::UnknownClaim, name));
        }

        // Whatever else is wrong, and with a name that is not plain text.
        let refusal = refused(&keys, &sign(&hs(), None, &json!({"root": 5, "zz": 1})));
        assert_eq!(refusal, Refusal::new(Denial::UnknownClaim, "zz"));
        let refusal = refused(&keys, &sign(&hs(), None, &json!({"publish": ["**"], "a\nb\"": 1})));
        assert_eq!(refusal.denial, Denial::UnknownClaim);
        assert!(!refusal.detail.contains('\n'), "{refusal:?}");
    }

    /// `peer` is known (a boolean marking a cluster peer); `cluster` and the like still refuse.
    #[test]
    fn a_peer_claim_marks_the_grant_and_must_be_a_boolean() {
        let (_dir, keys) = keys_for(&hs());
        let claims = json!({"publish": ["**"], "subscribe": ["**"], "sub": "relay-b", "peer": true});
        let verified = verify(&keys, &sign(&hs(), None, &claims), now()).unwrap();
        assert!(verified.peer);
        let grant = verified.grant_at("").unwrap();
        assert!(grant.peer);
        assert_eq!(grant.subject.as_deref(), Some("relay-b"));
        // It widens nothing: the same patterns as without it.
        let plain = verify(&keys, &sign(&hs(), None, &json!({"publish": ["**"], "subscribe": ["**"]})), now()).unwrap();
        assert_eq!(
            (&grant.publish, &grant.subscribe),
            (&plain.grant_at("").unwrap().publish, &plain.grant_at("").unwrap().subscribe)
        );
        assert!(!plain.peer);

        let claims = json!({"publish": ["**"], "peer": false});
        assert!(!verify(&keys, &sign(&hs(), None, &claims), now()).unwrap().peer);
        for value in [json!("true"), json!(1), json!(null)] {
            let claims = json!({"publish": ["**"], "peer": value});
            assert_eq!(denial(&keys, &sign(&hs(), None, &claims)), Denial::Malformed, "{value}");
        }
    }

    #[test]
    fn registered_claims_are_read_or_ignored() {
        let (_dir, keys) = keys_for(&hs());
        let claims = json!({"publish": ["**"], "iss": "api", "jti": "1", "sub": "alice"});
        assert_eq!(verify(&keys, &sign(&hs(), None, &claims), now()).unwrap().subject.as_deref(), Some("alice"));
        let claims = json!({"publish": ["**"], "iss": {"any": 1}, "jti": 7, "sub": 42});
        assert_eq!(verify(&keys, &sign(&hs(), None, &claims), now()).unwrap().subject, None);
    }

    #[test]
    fn wrong_types_and_bad_patterns_are_malformed() {
        let (_dir, keys) = keys_for(&hs());
        for claims in [
            json!({"root": 5, "publish": ["**"]}),
            json!({"root": null, "publish": ["**"]}),
            json!({"put": [1]}),
            json!({"put": null}),
            json!({"get": {"a": 1}}),
            json!({"publish": "a"}),
            json!({"publish": null, "subscribe": ["a"]}),
            json!({"publish": [1]}),
            json!({"publish": ["a/**/b/**"]}),
            json!({"publish": ["**"], "exp": "soon"}),
            json!({"publish": ["**"], "exp": 1.7e9}),
            json!({"publish": ["**"], "nbf": true}),
            json!({"publish": ["**"], "iat": u64::MAX}),
            json!([1, 2]),
            json!("claims"),
        ] {
            assert_eq!(denial(&keys, &sign(&hs(), None, &claims)), Denial::Malformed, "{claims}");
        }

        // A repeated claim: a map would keep the last, another verifier might take the first.
        let token = sign_text(&hs(), r#"{"root":"a","publish":["**"],"root":""}"#);
        assert_eq!(denial(&keys, &token), Denial::Malformed);
    }

    #[test]
    fn a_token_granting_nothing_is_malformed() {
        let (_dir, keys) = keys_for(&hs());
        for claims in [json!({}), json!({"root": "demo"}), json!({"publish": [], "subscribe": []}), json!({"put": []})]
        {
            let refusal = refused(&keys, &sign(&hs(), None, &claims));
            assert_eq!(refusal.denial, Denial::Malformed, "{claims}");
            assert!(refusal.detail.contains("neither publish nor subscribe"), "{refusal:?}");
        }
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_bad_algorithms() {
        let (_dir, keys) = keys_for(&hs());
        let payload = b64(r#"{"root":"demo","publish":["**"]}"#);
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"NONE"}"#, r#"{"alg":"none","kid":"k1"}"#] {
            let token = format!("{}.{payload}.", b64(header));
            assert_eq!(denial(&keys, &token), Denial::BadAlgorithm, "{header}");
        }
        for alg in ["ES512", "HS1", "RSA-OAEP", ""] {
            let token = format!("{}.{payload}.c2ln", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert_eq!(denial(&keys, &token), Denial::BadAlgorithm, "{alg}");
        }
        // No alg at all, or not a string: not a JWT header.
        for header in [r#"{"typ":"JWT"}"#, r#"{"alg":5}"#, r#"{"alg":null}"#] {
            let token = format!("{}.{payload}.c2ln", b64(header));
            assert_eq!(denial(&keys, &token), Denial::Malformed, "{header}");
        }
    }

    #[test]
    fn the_algorithm_must_be_the_keys() {
        let claims = json!({"root": "demo", "publish": ["**"]});

        // The same secret under another HMAC.
        let (_dir, keys) = keys_for(&hs());
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let header = jsonwebtoken::Header::new(alg);
            let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&SECRET)).unwrap();
            assert_eq!(denial(&keys, &token), Denial::BadAlgorithm, "{alg:?}");
        }

        // The classic confusion: an HMAC keyed with the public key's text.
        let es_public = public(ES1);
        let (_dir, keys) = keys_for(&es_public);
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(es_public.as_bytes())).unwrap();
        assert_eq!(denial(&keys, &token), Denial::BadAlgorithm);

        // Another family's key.
        let (_dir, keys) = keys_for(&public(ED1));
        assert_eq!(denial(&keys, &sign(ES1, Some("ed1"), &claims)), Denial::BadAlgorithm);
    }

    #[test]
    fn tampered_and_foreign_signatures_are_bad_signatures() {
        let claims = json!({"root": "demo", "publish": ["**"]});
        let other_hs = hs_jwk(&[0x24; 32], "k1");
        for (jwk, kid, stranger) in [(hs(), "k1", other_hs.as_str()), (ES1.into(), "es1", ES2)] {
            let (_dir, keys) = keys_for(&public(&jwk));
            let token = sign(&jwk, Some(kid), &claims);
            assert!(verify(&keys, &token, now()).is_ok());

            let (message, signature) = token.rsplit_once('.').unwrap();
            let forged = sign(&jwk, Some(kid), &json!({"root": "", "publish": ["**"]}));
            let spliced = format!("{}.{signature}", forged.rsplit_once('.').unwrap().0);
            for bad in [
                tamper(&token, 5),
                tamper(&token, -1),
                format!("{message}."),
                format!("{message}.!!!"),
                format!("{message}.{}", &signature[..signature.len() - 4]),
                spliced,
                sign(stranger, Some(kid), &claims),
            ] {
                assert_eq!(denial(&keys, &bad), Denial::BadSignature, "{kid}");
            }
        }

        // Ed25519, and a verify-only key file written as base64url.
        let (_dir, keys) = keys_for(&URL_SAFE_NO_PAD.encode(public(ED1)));
        let token = sign(ED1, Some("ed1"), &claims);
        assert!(verify(&keys, &token, now()).is_ok());
        assert_eq!(denial(&keys, &tamper(&token, 10)), Denial::BadSignature);
        assert_eq!(denial(&keys, &tamper(&token, -1)), Denial::BadSignature);
    }

    #[test]
    fn what_is_not_a_jwt_is_malformed() {
        let (_dir, keys) = keys_for(&hs());
        let payload = b64(r#"{"publish":["**"]}"#);
        let alg = b64(r#"{"alg":"HS256"}"#);
        let tokens = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{alg}.{payload}.sig.extra"),
            format!("!!!.{payload}.c2ln"),
            format!("{}.{payload}.c2ln", b64("not json")),
            format!("{}.{payload}.c2ln", b64("[]")),
            format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#)),
            format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","kid":7}"#)),
            format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","alg":"HS256"}"#)),
            // Signed, but the payload does not decode.
            sign_parts(&hs(), &alg, "!!!"),
            sign_parts(&hs(), &alg, &b64("not json")),
            sign_parts(&hs(), &alg, &URL_SAFE_NO_PAD.encode([0xff, 0xfe])),
        ];
        for token in tokens {
            assert_eq!(denial(&keys, &token), Denial::Malformed, "{token}");
        }
    }

    #[test]
    fn a_key_directory_chooses_by_kid() {
        let outer = TempDir::new("kids");
        outer.write("stray.jwk", &hs());
        std::fs::create_dir(outer.path().join("keys")).unwrap();
        std::fs::write(outer.path().join("keys/es1.jwk"), public(ES1)).unwrap();
        std::fs::write(outer.path().join("keys/ed1.jwk"), public(ED1)).unwrap();
        let keys = Keys::load(&outer.path().join("keys")).unwrap();
        let claims = json!({"root": "demo", "publish": ["**"]});

        assert!(verify(&keys, &sign(ES1, Some("es1"), &claims), now()).is_ok());
        assert!(verify(&keys, &sign(ED1, Some("ed1"), &claims), now()).is_ok());
        assert_eq!(denial(&keys, &sign(ES2, Some("es2"), &claims)), Denial::UnknownKey);
        assert_eq!(denial(&keys, &sign(ES1, None, &claims)), Denial::UnknownKey);
        assert_eq!(denial(&keys, &sign(&hs(), Some("../stray"), &claims)), Denial::UnknownKey);
        assert_eq!(denial(&keys, &sign(&hs(), Some("../keys/es1"), &claims)), Denial::UnknownKey);
        // The kid picks the key, and the key its algorithm.
        assert_eq!(denial(&keys, &sign(ED1, Some("es1"), &claims)), Denial::BadAlgorithm);
        assert_eq!(denial(&keys, &sign(ES2, Some("es1"), &claims)), Denial::BadSignature);
    }

    #[test]
    fn clock_skew_edges() {
        let (_dir, keys) = keys_for(&hs());
        let check = |time: serde_json::Value, at_time: SystemTime| {
            let mut claims = json!({"publish": ["**"]});
            claims.as_object_mut().unwrap().extend(time.as_object().unwrap().clone());
            verify(&keys, &sign(&hs(), None, &claims), at_time).map(|_| ()).map_err(|refusal| refusal.denial)
        };
        let half = now() + Duration::from_millis(500);
        let cases = [
            (json!({"exp": at(-31)}), now(), Err(Denial::Expired)),
            (json!({"exp": at(-30)}), now(), Err(Denial::Expired)),
            (json!({"exp": at(-29)}), now(), Ok(())),
            (json!({"exp": at(-30)}), half, Err(Denial::Expired)),
            (json!({"exp": at(-29)}), half, Ok(())),
            (json!({"exp": -5}), now(), Err(Denial::Expired)),
            (json!({"exp": i64::MAX}), now(), Ok(())),
            (json!({"exp": null}), now(), Ok(())),
            (json!({"nbf": at(30)}), now(), Ok(())),
            (json!({"nbf": at(31)}), now(), Err(Denial::NotYetValid)),
            (json!({"nbf": at(31)}), half, Err(Denial::NotYetValid)),
            (json!({"nbf": at(31)}), now() + Duration::from_secs(1), Ok(())),
            (json!({"nbf": i64::MIN}), now(), Ok(())),
            (json!({"iat": at(30)}), now(), Ok(())),
            (json!({"iat": at(31)}), now(), Err(Denial::NotYetValid)),
            (json!({"iat": at(-86400 * 365)}), now(), Ok(())),
            // Expiry is checked first.
            (json!({"exp": at(-60), "nbf": at(60)}), now(), Err(Denial::Expired)),
        ];
        for (time, at_time, expected) in cases {
            assert_eq!(check(time.clone(), at_time), expected, "{time} at {at_time:?}");
        }
        assert_eq!(CLOCK_SKEW, Duration::from_secs(30));
    }

    #[test]
    fn root_and_dialed_path_overlap_either_way() {
        let claims = Claims {
            root: "demo".into(),
            publish: patterns(&["bbb/**"]),
            subscribe: patterns(&["**"]),
            subject: Some("alice".into()),
            expires: Some(now()),
            ..Default::default()
        };
        for dialed in ["demo", "demo/room", "demo/bbb/x", "", "/demo/"] {
            let grant = claims.grant_at(dialed).unwrap_or_else(|r| panic!("{dialed}: {r}"));
            assert_eq!(grant.publish, patterns(&["demo/bbb/**"]));
            assert_eq!(grant.subscribe, patterns(&["demo/**"]));
            assert_eq!(
                (grant.expires, grant.subject.as_deref(), grant.source),
                (Some(now()), Some("alice"), Source::Token)
            );
        }
        for dialed in ["other", "demolition", "dem", "x/demo"] {
            assert_eq!(claims.grant_at(dialed).unwrap_err().denial, Denial::RootMismatch, "{dialed}");
        }

        // A deeper root, dialed above it.
        let deep = Claims { root: "a/b".into(), subscribe: patterns(&["c"]), ..Default::default() };
        assert_eq!(deep.grant_at("a").unwrap().subscribe, patterns(&["a/b/c"]));
        assert_eq!(deep.grant_at("a/b/c").unwrap().subscribe, patterns(&["a/b/c"]));
        assert_eq!(deep.grant_at("a/b/d").unwrap_err().denial, Denial::PathDenied);
        assert_eq!(deep.grant_at("a/x").unwrap_err().denial, Denial::RootMismatch);

        // An empty root overlaps everything; what it reaches decides.
        let anywhere = Claims { publish: patterns(&["demo/**"]), ..Default::default() };
        assert_eq!(anywhere.grant_at("demo/room").unwrap().publish, patterns(&["demo/**"]));
        assert!(anywhere.grant_at("").is_ok());
        assert_eq!(anywhere.grant_at("other").unwrap_err().denial, Denial::PathDenied);

        // A publish-only grant reaches its path; a subscribe-only one too.
        let narrow = Claims { root: "demo".into(), publish: patterns(&["bbb/**"]), ..Default::default() };
        assert_eq!(narrow.grant_at("demo/ccc").unwrap_err().denial, Denial::PathDenied);

        // Patterns too deep to place under the root.
        let root = vec!["r"; 32].join("/");
        let too_deep = Claims { root: root.clone(), publish: patterns(&["a/b"]), ..Default::default() };
        assert_eq!(too_deep.grant_at(&root).unwrap_err().denial, Denial::Malformed);
    }

    #[test]
    fn the_root_is_normalized() {
        let (_dir, keys) = keys_for(&hs());
        let token = sign(&hs(), None, &json!({"root": "/demo//x/", "publish": ["**"]}));
        let claims = verify(&keys, &token, now()).unwrap();
        assert_eq!(claims.root, "demo/x");
        assert_eq!(claims.grant_at("demo/x/y").unwrap().publish, patterns(&["demo/x/**"]));
    }

    #[test]
    fn a_rewritten_key_file_is_picked_up() {
        let dir = TempDir::new("reread");
        let path = dir.write("key.jwk", &hs_jwk(&[1; 32], "a"));
        let (key_a, key_b) = (hs_jwk(&[1; 32], "a"), hs_jwk(&[2; 32], "a"));
        let claims = json!({"root": "demo", "publish": ["**"]});
        let (token_a, token_b) = (sign(&key_a, Some("a"), &claims), sign(&key_b, Some("a"), &claims));

        // Looked at once a second: the rewrite is seen after that.
        let keys = Keys::load(&path).unwrap();
        assert!(verify(&keys, &token_a, now()).is_ok());
        std::fs::write(&path, &key_b).unwrap();
        assert!(verify(&keys, &token_a, now()).is_ok(), "looked at again within the second");
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert!(verify(&keys, &token_b, now()).is_ok());
        assert_eq!(denial(&keys, &token_a), Denial::BadSignature);

        // Every change from here on, looked at on every token.
        let keys = keys.with_recheck(Duration::ZERO);
        std::fs::write(&path, &key_a).unwrap();
        assert!(verify(&keys, &token_a, now()).is_ok());
        assert_eq!(denial(&keys, &token_b), Denial::BadSignature);

        // Replaced by rename, with a key of another algorithm.
        let staged = dir.write("staged", &URL_SAFE_NO_PAD.encode(public(ES1)));
        std::fs::rename(&staged, &path).unwrap();
        assert!(verify(&keys, &sign(ES1, None, &claims), now()).is_ok());
        assert_eq!(denial(&keys, &token_a), Denial::BadAlgorithm);

        // Broken: refused as an unknown key until fixed.
        std::fs::write(&path, "{ half a key").unwrap();
        assert_eq!(denial(&keys, &sign(ES1, None, &claims)), Denial::UnknownKey);
        std::fs::write(&path, &key_b).unwrap();
        assert!(verify(&keys, &token_b, now()).is_ok());
    }

    #[test]
    fn jsonwebtoken_errors_map_to_denials() {
        use jsonwebtoken::errors::Error;
        let json = serde_json::from_str::<Value>("{").unwrap_err();
        let utf8 = String::from_utf8(vec![0xff]).unwrap_err();
        // `Crypto` holds a ring error this crate cannot name; it maps to BadSignature.
        let cases = [
            (ErrorKind::InvalidToken, Denial::Malformed),
            (ErrorKind::InvalidSignature, Denial::BadSignature),
            (ErrorKind::InvalidEcdsaKey, Denial::UnknownKey),
            (ErrorKind::InvalidRsaKey("bad".into()), Denial::UnknownKey),
            (ErrorKind::RsaFailedSigning, Denial::BadSignature),
            (ErrorKind::InvalidAlgorithmName, Denial::BadAlgorithm),
            (ErrorKind::InvalidKeyFormat, Denial::UnknownKey),
            (ErrorKind::MissingRequiredClaim("exp".into()), Denial::Malformed),
            (ErrorKind::ExpiredSignature, Denial::Expired),
            (ErrorKind::InvalidIssuer, Denial::Malformed),
            (ErrorKind::InvalidAudience, Denial::UnknownClaim),
            (ErrorKind::InvalidSubject, Denial::Malformed),
            (ErrorKind::ImmatureSignature, Denial::NotYetValid),
            (ErrorKind::InvalidAlgorithm, Denial::BadAlgorithm),
            (ErrorKind::MissingAlgorithm, Denial::BadAlgorithm),
            (ErrorKind::Base64(base64::DecodeError::InvalidLength(1)), Denial::Malformed),
            (ErrorKind::Json(Arc::new(json)), Denial::Malformed),
            (ErrorKind::Utf8(utf8), Denial::Malformed),
        ];
        for (kind, expected) in cases {
            let name = format!("{kind:?}");
            assert_eq!(refusal(&Error::from(kind)).denial, expected, "{name}");
        }
        assert_eq!(refusal(&ErrorKind::InvalidAudience.into()).detail, "aud");
    }

    /// Tokens from the reference `moq auth sign` (moq-cli 0.14.10), for every algorithm family,
    /// verify here and grant what they say. A missing binary fails the test.
    #[test]
    fn reference_tokens_verify() {
        let moq = moq_interop::reference("moq-cli", "0.14.10").with_file_name("moq");
        let run = |args: &[&std::ffi::OsStr]| -> String {
            let output = Command::new(&moq).args(args).output().unwrap();
            assert!(output.status.success(), "moq {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        };
        let os = |text: &str| std::ffi::OsString::from(text);
        let dir = TempDir::new("reference");
        let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;

        for alg in ["HS256", "ES256", "RS256", "PS256", "EdDSA"] {
            let kid = format!("k{alg}");
            let private = dir.path().join(format!("{kid}.private"));
            let public = dir.path().join(alg);
            std::fs::create_dir(&public).unwrap();
            let mut generate = vec![os("auth"), os("generate"), os("--algorithm"), os(alg), os("--id"), os(&kid)];
            generate.extend([os("--out"), private.clone().into()]);
            if alg != "HS256" {
                generate.extend([os("--public-dir"), public.clone().into()]);
            }
            run(&generate.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>());
            let verifying = public.join(format!("{kid}.jwk"));
            if alg == "HS256" {
                std::fs::copy(&private, &verifying).unwrap();
            }

            let sign = |extra: &[&str]| {
                let mut args = vec![os("auth"), os("sign"), os("--key"), private.clone().into()];
                args.extend(extra.iter().map(|arg| os(arg)));
                run(&args.iter().map(|arg| arg.as_os_str()).collect::<Vec<_>>())
            };
            let expires_text = expires.to_string();
            let token =
                sign(&["--root", "demo", "--publish", "bbb/**", "--subscribe", "**", "--expires", &expires_text]);

            // One file (its kid is not looked at), and the directory (chosen by kid).
            for keys in [Keys::load(&verifying).unwrap(), Keys::load(&public).unwrap()] {
                let claims = verify(&keys, &token, SystemTime::now()).unwrap_or_else(|r| panic!("{alg}: {r}"));
                let expires = Some(UNIX_EPOCH + Duration::from_secs(expires));
                assert_eq!(claims, demo_claims(expires), "{alg}");
                let grant = claims.grant_at("demo/room").unwrap();
                assert_eq!(
                    (grant.publish, grant.subscribe, grant.expires, grant.source),
                    (patterns(&["demo/bbb/**"]), patterns(&["demo/**"]), expires, Source::Token)
                );
                assert_eq!(claims.grant_at("other").unwrap_err().denial, Denial::RootMismatch);
                assert_eq!(denial_now(&keys, &tamper(&token, 7)), Denial::BadSignature, "{alg}");
            }

            // The pattern form.
            let token = sign(&["--root", "r", "--subscribe", "a/*/b", "--issued", &(expires - 3600).to_string()]);
            let claims = verify(&Keys::load(&public).unwrap(), &token, SystemTime::now()).unwrap();
            assert_eq!((claims.subscribe.clone(), claims.publish.clone()), (patterns(&["a/*/b"]), Patterns::default()));
            assert!(claims.issued.is_some());
            assert_eq!(claims.grant_at("").unwrap().subscribe, patterns(&["r/a/*/b"]));
        }
    }

    fn denial_now(keys: &Keys, token: &str) -> Denial {
        verify(keys, token, SystemTime::now()).unwrap_err().denial
    }
}
