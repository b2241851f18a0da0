//! The keys signed tokens are verified with (`--auth-key FILE_OR_DIR`): one JWK file, whose key
//! verifies every token whatever its `kid` says, or a directory of `{kid}.jwk` files, chosen by
//! the token's `kid` header.
//!
//! A key file is either the JWK's JSON or the base64url of it (what `moq auth generate` writes).
//! Its `alg` is mandatory and is the only algorithm the key verifies; `key_ops`, when present,
//! must allow `verify`. Supported: `HS256/384/512` (`oct`, a secret of at least 32 bytes),
//! `ES256`/`ES384` (`EC` on P-256/P-384), `RS*`/`PS*` (`RSA`, 2048 to 8192 bits) and `EdDSA`
//! (`OKP` Ed25519). A key carrying a `scope` (a ceiling the reference enforces on what its tokens
//! may grant) is refused: this relay does not enforce scopes, and ignoring one would grant more.
//!
//! Keys are re-read without a restart: a file is looked at again (one `stat`) at most once per
//! [`RECHECK`] and re-parsed when it changed, a new `{kid}.jwk` works at once (an unknown kid is
//! never cached), and a deleted or broken file refuses its tokens with
//! [`Denial::UnknownKey`], with one warning per change rather than one per token.
//!
//! Nothing here logs or formats key material: every parse error is written by this module and
//! names a field, never its value.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Denial, Refusal};

/// How often one key file is looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A file modified this recently may change again without its modification time moving (coarse
/// timestamps), so until it is older than this its contents are compared, not just its stamp.
const RACY: Duration = Duration::from_secs(2);

/// The shortest HMAC secret accepted, as the reference requires.
const MIN_SECRET_BYTES: usize = 32;

/// The RSA modulus sizes ring verifies.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The longest key ID, as the reference allows.
const MAX_KID: usize = 128;

/// Key files are a few KiB at most; anything larger is not read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One verification key: its algorithm (the only one it verifies) and its public half.
pub struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

impl Key {
    /// Parses a key file's contents: the JWK's JSON, or the base64url (padded or not) of it.
    /// The error names what is wrong, never the key material.
    pub fn parse(text: &str) -> Result<Key, String> {
        let text = text.trim();
        let json = if text.starts_with(['{', '[']) {
            text.as_bytes().to_vec()
        } else {
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| "neither a JSON JWK nor base64url-encoded JSON".to_string())?
        };
        let jwk: Map<String, Value> =
            serde_json::from_slice(&json).map_err(|_| "the JWK is not a JSON object".to_string())?;
        Self::from_jwk(&jwk)
    }

    /// The algorithm this key verifies; a token naming any other is refused.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    fn from_jwk(jwk: &Map<String, Value>) -> Result<Key, String> {
        let alg = text_field(jwk, "alg")?.ok_or("the JWK has no alg (it is required: it fixes the algorithm)")?;
        let algorithm: Algorithm = alg.parse().map_err(|_| format!("unsupported alg {}", quote(alg)))?;
        let kty = text_field(jwk, "kty")?.ok_or("the JWK has no kty")?;

        match jwk.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) => {
                if !ops.iter().all(Value::is_string) {
                    return Err("key_ops is not a list of strings".into());
                }
                if !ops.iter().any(|op| op == "verify") {
                    return Err("key_ops does not allow verify".into());
                }
            }
            Some(_) => return Err("key_ops is not a list".into()),
        }
        if let Some(usage) = text_field(jwk, "use")? {
            if usage != "sig" {
                return Err(format!("use is {}, not sig", quote(usage)));
            }
        }
        if jwk.get("scope").is_some_and(|scope| !scope.is_null()) {
            return Err("the key carries a scope, which this relay does not enforce".into());
        }

        use Algorithm::*;
        let decoding = match (kty, algorithm) {
            ("oct", HS256 | HS384 | HS512) => {
                let secret = bytes_field(jwk, "k")?;
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!("the secret is shorter than {MIN_SECRET_BYTES} bytes"));
                }
                DecodingKey::from_secret(&secret)
            }
            ("EC", ES256 | ES384) => {
                let (curve, size) = if algorithm == ES256 { ("P-256", 32) } else { ("P-384", 48) };
                let crv = text_field(jwk, "crv")?.ok_or("the EC key has no crv")?;
                if crv != curve {
                    return Err(format!("{alg} needs crv {curve}, not {}", quote(crv)));
                }
                let (x, y) = (bytes_field(jwk, "x")?, bytes_field(jwk, "y")?);
                if x.len() != size || y.len() != size {
                    return Err(format!("the {curve} coordinates are not {size} bytes each"));
                }
                DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
                    .map_err(|_| "the EC coordinates do not decode".to_string())?
            }
            ("OKP", EdDSA) => {
                let crv = text_field(jwk, "crv")?.ok_or("the OKP key has no crv")?;
                if crv != "Ed25519" {
                    return Err(format!("EdDSA needs crv Ed25519, not {}", quote(crv)));
                }
                let x = bytes_field(jwk, "x")?;
                if x.len() != 32 {
                    return Err("the Ed25519 public key is not 32 bytes".into());
                }
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x))
                    .map_err(|_| "the Ed25519 public key does not decode".to_string())?
            }
            ("RSA", RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                let (n, e) = (bytes_field(jwk, "n")?, bytes_field(jwk, "e")?);
                let n = strip_zeros(&n);
                let bits = n.first().map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
                if !RSA_BITS.contains(&bits) {
                    return Err(format!(
                        "the RSA modulus is {bits} bits, not {} to {}",
                        RSA_BITS.start(),
                        RSA_BITS.end()
                    ));
                }
                let e = strip_zeros(&e);
                if e.is_empty() || e.len() > 4 {
                    return Err("the RSA exponent is out of range".into());
                }
                DecodingKey::from_rsa_raw_components(n, e)
            }
            _ => return Err(format!("kty {} cannot be used with alg {alg}", quote(kty))),
        };
        Ok(Key { algorithm, decoding })
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// A string member of the JWK, `None` when absent.
fn text_field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// A required base64url member of the JWK (unpadded, or padded as older writers did).
fn bytes_field(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = text_field(jwk, name)?.ok_or_else(|| format!("the JWK has no {name}"))?;
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| format!("{name} is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(bytes)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Untrusted text for an error or log line: quoted, escaped and cut short.
pub(crate) fn quote(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Whether `kid` may name a file in the key directory: 1 to 128 of `[A-Za-z0-9_-]`, as the
/// reference's key IDs are, so no `/`, `.`, `..` or anything else a path could be made of.
pub fn safe_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The keys tokens are verified with, re-read as their files change.
pub struct Keys {
    source: Source,
    recheck: Duration,
}

enum Source {
    File { path: PathBuf, slot: Mutex<Option<Entry>> },
    Dir { dir: PathBuf, entries: Mutex<HashMap<String, Entry>> },
}

/// What is known about one key file.
struct Entry {
    /// When the file was last looked at.
    checked: Instant,
    /// Its stamp then; `None` when it was missing (single-file mode only: a missing file in a
    /// directory is not cached, so that a new one works at once).
    stamp: Option<Stamp>,
    /// The digest of its contents while it is recent enough that its stamp may lie ([`RACY`]).
    racy: Option<[u8; 32]>,
    /// Its key, `None` when it could not be read or parsed (already warned about).
    key: Option<Arc<Key>>,
}

/// What changes when a file is written or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file may still change without its stamp changing.
    fn racy(&self) -> bool {
        // A modification time in the future counts as recent too.
        self.modified.is_none_or(|modified| SystemTime::now().duration_since(modified).map_or(true, |age| age < RACY))
    }
}

impl Keys {
    /// Loads `path`: one JWK file, or a directory of `{kid}.jwk` files. A file that does not parse,
    /// here at startup, is an error (in a directory too); later it only refuses its tokens.
    pub fn load(path: &Path) -> anyhow::Result<Keys> {
        let meta = std::fs::metadata(path).with_context(|| format!("token keys {}", path.display()))?;
        let now = Instant::now();
        let source = if meta.is_dir() {
            let mut entries = HashMap::new();
            let listing = std::fs::read_dir(path).with_context(|| format!("token key directory {}", path.display()))?;
            for item in listing {
                let item = item.with_context(|| format!("token key directory {}", path.display()))?;
                let file = item.path();
                let Some(kid) = file.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jwk")) else {
                    continue;
                };
                if !safe_kid(kid) {
                    tracing::warn!(path = %file.display(), "ignoring a key file whose name is not a valid kid ([A-Za-z0-9_-], at most 128)");
                    continue;
                }
                let (stamp, contents) = read(&file).with_context(|| format!("token key {}", file.display()))?;
                let key =
                    Key::parse(&contents).map_err(|error| anyhow::anyhow!("token key {}: {error}", file.display()))?;
                entries.insert(kid.to_string(), Entry::new(now, stamp, &contents, key));
            }
            tracing::info!(dir = %path.display(), keys = entries.len(), "token keys loaded");
            if entries.is_empty() {
                tracing::warn!(dir = %path.display(), "no {{kid}}.jwk files in the token key directory yet: every token is refused until one appears");
            }
            Source::Dir { dir: path.to_path_buf(), entries: Mutex::new(entries) }
        } else {
            let (stamp, contents) = read(path).with_context(|| format!("token key {}", path.display()))?;
            let key =
                Key::parse(&contents).map_err(|error| anyhow::anyhow!("token key {}: {error}", path.display()))?;
            tracing::info!(path = %path.display(), algorithm = ?key.algorithm(), "token key loaded");
            Source::File { path: path.to_path_buf(), slot: Mutex::new(Some(Entry::new(now, stamp, &contents, key))) }
        };
        Ok(Keys { source, recheck: RECHECK })
    }

    /// How often a file is looked at again; tests shorten it.
    #[cfg(test)]
    pub(crate) fn with_recheck(mut self, recheck: Duration) -> Keys {
        self.recheck = recheck;
        self
    }

    /// The key for a token whose header names `kid`: the one file's key whatever the kid, or the
    /// directory's `{kid}.jwk`.
    pub fn find(&self, kid: Option<&str>) -> Result<Arc<Key>, Refusal> {
        let now = Instant::now();
        match &self.source {
            Source::File { path, slot } => {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                refresh(path, &mut slot, self.recheck, now, true)
                    .ok_or_else(|| Refusal::new(Denial::UnknownKey, "the token key file is missing or unusable"))
            }
            Source::Dir { dir, entries } => {
                let kid = kid.ok_or_else(|| Refusal::new(Denial::UnknownKey, "the token has no kid"))?;
                if !safe_kid(kid) {
                    return Err(Refusal::new(Denial::UnknownKey, "the token's kid is not a valid key ID"));
                }
                let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
                let mut slot = entries.remove(kid);
                let key = refresh(&dir.join(format!("{kid}.jwk")), &mut slot, self.recheck, now, false);
                if let Some(entry) = slot {
                    entries.insert(kid.to_string(), entry);
                }
                key.ok_or_else(|| Refusal::new(Denial::UnknownKey, format!("no usable key for kid {kid}")))
            }
        }
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::File { path, .. } => f.debug_struct("Keys").field("file", path).finish_non_exhaustive(),
            Source::Dir { dir, .. } => f.debug_struct("Keys").field("dir", dir).finish_non_exhaustive(),
        }
    }
}

impl Entry {
    fn new(now: Instant, stamp: Stamp, contents: &str, key: Key) -> Entry {
        Entry { checked: now, stamp: Some(stamp), racy: digest_if_racy(&stamp, contents), key: Some(Arc::new(key)) }
    }
}

fn digest_if_racy(stamp: &Stamp, contents: &str) -> Option<[u8; 32]> {
    stamp.racy().then(|| Sha256::digest(contents.as_bytes()).into())
}

/// Brings `slot`, what is known about the key file at `path`, up to date if it is due, and returns
/// its key. A missing file empties the slot (a directory's unknown kid) or is remembered and
/// warned about once (`single`, the one key file).
fn refresh(path: &Path, slot: &mut Option<Entry>, recheck: Duration, now: Instant, single: bool) -> Option<Arc<Key>> {
    if let Some(entry) = slot {
        if now.saturating_duration_since(entry.checked) < recheck {
            return entry.key.clone();
        }
    }

    let stamp = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Stamp::of(&meta),
        _ => {
            let Some(entry) = slot.as_mut().filter(|_| single) else {
                if slot.take().is_some() {
                    tracing::warn!(path = %path.display(), "token key file removed; its tokens are refused");
                }
                return None;
            };
            if entry.stamp.is_some() {
                tracing::warn!(path = %path.display(), "token key file missing; every token is refused until it is back");
            }
            *entry = Entry { checked: now, stamp: None, racy: None, key: None };
            return None;
        }
    };

    // Unchanged: keep the parsed key (comparing contents while the stamp may lie).
    let mut contents = None;
    if let Some(entry) = slot.as_mut().filter(|entry| entry.stamp == Some(stamp)) {
        match entry.racy {
            None => {
                entry.checked = now;
                return entry.key.clone();
            }
            Some(digest) => {
                if let Ok((_, text)) = read(path) {
                    if <[u8; 32]>::from(Sha256::digest(text.as_bytes())) == digest {
                        entry.checked = now;
                        entry.racy = digest_if_racy(&stamp, &text);
                        return entry.key.clone();
                    }
                    contents = Some(text);
                }
            }
        }
    }

    // New or changed: read and parse it again.
    let (key, racy) = match contents.map_or_else(|| read(path).map(|(_, text)| text), Ok) {
        Ok(text) => (Key::parse(&text), digest_if_racy(&stamp, &text)),
        Err(error) => (Err(format!("{error:#}")), None),
    };
    let key = match key {
        Ok(key) => {
            tracing::info!(path = %path.display(), algorithm = ?key.algorithm(), "token key loaded");
            Some(Arc::new(key))
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "token key file unusable; its tokens are refused until it is fixed");
            None
        }
    };
    *slot = Some(Entry { checked: now, stamp: Some(stamp), racy, key: key.clone() });
    key
}

/// A key file's stamp and contents, refusing anything that is not a small regular file.
fn read(path: &Path) -> anyhow::Result<(Stamp, String)> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    anyhow::ensure!(meta.is_file(), "not a regular file");
    anyhow::ensure!(meta.len() <= MAX_FILE_BYTES, "larger than {MAX_FILE_BYTES} bytes");
    let mut contents = String::new();
    file.by_ref().take(MAX_FILE_BYTES + 1).read_to_string(&mut contents)?;
    anyhow::ensure!(contents.len() as u64 <= MAX_FILE_BYTES, "larger than {MAX_FILE_BYTES} bytes");
    Ok((Stamp::of(&meta), contents))
}

/// Test keys and helpers shared with the token tests. The keys were made once with `moq auth
/// generate` (moq-cli 0.14.10); they protect nothing.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    /// `moq auth generate --algorithm HS256 --id kHS256 --out kHS256.jwk`, as written: base64url.
    pub const HS_FILE: &str = "eyJhbGciOiJIUzI1NiIsImtleV9vcHMiOlsidmVyaWZ5Iiwic2lnbiJdLCJrdHkiOiJvY3QiLCJrIjoiRjE0THFuZVBuTFJDMW9INVhvRkFLNXMxNnB0TTM2SWswTkpRcENmQWR5NCIsImtpZCI6ImtIUzI1NiJ9";
    pub const HS_SECRET_B64: &str = "F14LqnePnLRC1oH5XoFAK5s16ptM36Ik0NJQpCfAdy4";
    pub const ES1: &str = r#"{"alg":"ES256","key_ops":["sign","verify"],"kty":"EC","crv":"P-256","x":"-CdS_2mxkI9G7DshK4xdDEdUrehD9mt_jLM9ETakQs4","y":"5XQY1Js48RcSaDwsOCBW1MUDZzCa7lOV3A8c5FeAFH0","d":"dVWTOl5OtegA-VczWPoKBMtiWGIE1wtNbY7nI4bw7_o","kid":"es1"}"#;
    pub const ES2: &str = r#"{"alg":"ES256","key_ops":["sign","verify"],"kty":"EC","crv":"P-256","x":"C4Xp01IdrHVgyckTpFusSosUryrgY0jMBnne5nOWzHo","y":"mKEgfQgIzghdoBAOTy2usYibljBaVPM2ZLUPnWsDSHE","d":"1eJwDtUq2s2oGZT5qNksLwCw6DpUA4AV4SOT6ZChwtE","kid":"es2"}"#;
    pub const ED1: &str = r#"{"alg":"EdDSA","key_ops":["sign","verify"],"kty":"OKP","crv":"Ed25519","x":"GEaNJrO5bTRB3NHN96T_fjQwHEThPP8TKju0Bvg0svQ","d":"E-YjycZKAFaamlfmSeEjItwXqoa04WDf2TynOuP7VAw","kid":"ed1"}"#;

    /// An HS256 JWK with this secret (at least 32 bytes for a usable one).
    pub fn hs_jwk(secret: &[u8], kid: &str) -> String {
        json!({"alg": "HS256", "key_ops": ["verify", "sign"], "kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret), "kid": kid})
            .to_string()
    }

    /// The verify-only half of a private JWK, as `moq auth generate --public` writes it.
    pub fn public(jwk: &str) -> String {
        let mut jwk: serde_json::Map<String, Value> = serde_json::from_str(jwk).unwrap();
        jwk.remove("d");
        jwk.insert("key_ops".into(), json!(["verify"]));
        Value::Object(jwk).to_string()
    }

    fn bytes(jwk: &Value, name: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()
    }

    /// The signing key of a private JWK (oct, EC P-256 or Ed25519), as a PKCS#8 document for ring.
    pub fn signer(jwk: &str) -> (Algorithm, EncodingKey) {
        let jwk: Value = serde_json::from_str(jwk).unwrap();
        let alg: Algorithm = jwk["alg"].as_str().unwrap().parse().unwrap();
        let key = match jwk["kty"].as_str().unwrap() {
            "oct" => EncodingKey::from_secret(&bytes(&jwk, "k")),
            "EC" => {
                // PKCS#8 wrapping the SEC1 private key, with its public point.
                let mut der = hex("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420");
                der.extend(bytes(&jwk, "d"));
                der.extend(hex("a144034200 04"));
                der.extend(bytes(&jwk, "x"));
                der.extend(bytes(&jwk, "y"));
                EncodingKey::from_ec_der(&der)
            }
            "OKP" => {
                let mut der = hex("302e020100300506032b657004220420");
                der.extend(bytes(&jwk, "d"));
                EncodingKey::from_ed_der(&der)
            }
            kty => panic!("no test signer for {kty}"),
        };
        (alg, key)
    }

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// A token with these claims, signed by the private JWK, naming `kid` in its header.
    pub fn sign(jwk: &str, kid: Option<&str>, claims: &Value) -> String {
        let (alg, key) = signer(jwk);
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// A directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("moq-relay-access-{}-{n}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn parse_err(text: &str) -> String {
        Key::parse(text).expect_err(text)
    }

    #[test]
    fn parses_reference_key_files() {
        // As written (base64url), as JSON, and base64url with padding.
        let key = Key::parse(HS_FILE).unwrap();
        assert_eq!(key.algorithm(), Algorithm::HS256);
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(HS_FILE).unwrap()).unwrap();
        assert_eq!(Key::parse(&json).unwrap().algorithm(), Algorithm::HS256);
        assert_eq!(Key::parse(&format!("{HS_FILE}=\n")).unwrap().algorithm(), Algorithm::HS256);

        for (jwk, alg) in [(ES1, Algorithm::ES256), (ED1, Algorithm::EdDSA)] {
            assert_eq!(Key::parse(jwk).unwrap().algorithm(), alg);
            assert_eq!(Key::parse(&public(jwk)).unwrap().algorithm(), alg);
            assert_eq!(Key::parse(&URL_SAFE_NO_PAD.encode(public(jwk))).unwrap().algorithm(), alg);
        }
        // key_ops is optional.
        assert!(Key::parse(r#"{"alg":"HS256","kty":"oct","k":"F14LqnePnLRC1oH5XoFAK5s16ptM36Ik0NJQpCfAdy4"}"#).is_ok());
    }

    #[test]
    fn refuses_unusable_keys_without_showing_them() {
        let secret = HS_SECRET_B64;
        let x = "-CdS_2mxkI9G7DshK4xdDEdUrehD9mt_jLM9ETakQs4";
        let y = "5XQY1Js48RcSaDwsOCBW1MUDZzCa7lOV3A8c5FeAFH0";
        let cases = [
            (format!(r#"{{"kty":"oct","k":"{secret}"}}"#), "no alg"),
            (format!(r#"{{"alg":"none","kty":"oct","k":"{secret}"}}"#), "unsupported alg"),
            (format!(r#"{{"alg":"ES512","kty":"EC","crv":"P-521","x":"{x}","y":"{y}"}}"#), "unsupported alg"),
            (format!(r#"{{"alg":"HS256","k":"{secret}"}}"#), "no kty"),
            (format!(r#"{{"alg":"ES256","kty":"oct","k":"{secret}"}}"#), "cannot be used with"),
            (format!(r#"{{"alg":"HS256","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#), "cannot be used with"),
            (r#"{"alg":"HS256","kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAA"}"#.to_string(), "shorter than 32"),
            (r#"{"alg":"HS256","kty":"oct"}"#.to_string(), "no k"),
            (r#"{"alg":"HS256","kty":"oct","k":""}"#.to_string(), "k is empty"),
            (r#"{"alg":"HS256","kty":"oct","k":"not base64!"}"#.to_string(), "not base64url"),
            (format!(r#"{{"alg":"HS256","kty":"oct","k":"{secret}","key_ops":["sign"]}}"#), "does not allow verify"),
            (format!(r#"{{"alg":"HS256","kty":"oct","k":"{secret}","key_ops":"verify"}}"#), "not a list"),
            (format!(r#"{{"alg":"HS256","kty":"oct","k":"{secret}","use":"enc"}}"#), "not sig"),
            (format!(r#"{{"alg":"HS256","kty":"oct","k":"{secret}","scope":{{"put":["a"]}}}}"#), "scope"),
            (format!(r#"{{"alg":"ES256","kty":"EC","crv":"P-384","x":"{x}","y":"{y}"}}"#), "needs crv P-256"),
            (format!(r#"{{"alg":"ES384","kty":"EC","crv":"P-384","x":"{x}","y":"{y}"}}"#), "not 48 bytes"),
            (format!(r#"{{"alg":"ES256","kty":"EC","crv":"P-256","x":"{x}"}}"#), "no y"),
            (format!(r#"{{"alg":"EdDSA","kty":"OKP","crv":"X25519","x":"{x}"}}"#), "needs crv Ed25519"),
            (r#"{"alg":"EdDSA","kty":"OKP","crv":"Ed25519","x":"AAAA"}"#.to_string(), "not 32 bytes"),
            (r#"{"alg":"RS256","kty":"RSA","n":"AQAB","e":"AQAB"}"#.to_string(), "17 bits"),
            (format!(r#"{{"alg":5,"kty":"oct","k":"{secret}"}}"#), "alg is not a string"),
            ("[]".to_string(), "not a JSON object"),
            ("{".to_string(), "not a JSON object"),
            ("%%%".to_string(), "neither a JSON JWK"),
        ];
        for (jwk, expected) in cases {
            let error = parse_err(&jwk);
            assert!(error.contains(expected), "{jwk}: {error}");
            for material in [secret, x, y] {
                assert!(!error.contains(material), "{error}");
            }
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = Key::parse(HS_FILE).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "Key { algorithm: HS256, .. }");

        let dir = TempDir::new("debug");
        let path = dir.write("k.jwk", HS_FILE);
        let keys = Keys::load(&path).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("k.jwk") && !debug.contains(HS_SECRET_B64) && !debug.contains(HS_FILE), "{debug}");
    }

    #[test]
    fn kids_must_be_safe_file_names() {
        for kid in ["k1", "kHS256", "a-b_C", &"a".repeat(128)] {
            assert!(safe_kid(kid), "{kid}");
        }
        for kid in ["", ".", "..", "../k1", "a/b", "a\\b", "k1.jwk", "a b", "k\0", "é", &"a".repeat(129)] {
            assert!(!safe_kid(kid), "{kid}");
        }
    }

    #[test]
    fn directory_keys_follow_the_files() {
        let dir = TempDir::new("dir");
        dir.write("es1.jwk", &public(ES1));
        dir.write("README", "not a key");
        let keys = Keys::load(dir.path()).unwrap().with_recheck(Duration::ZERO);

        assert_eq!(keys.find(Some("es1")).unwrap().algorithm(), Algorithm::ES256);
        let unknown = |kid: Option<&str>| keys.find(kid).unwrap_err().denial;
        assert_eq!(unknown(Some("ed1")), Denial::UnknownKey);
        assert_eq!(unknown(None), Denial::UnknownKey);
        assert_eq!(unknown(Some("README")), Denial::UnknownKey);

        // A new file works at once; a deleted one stops working.
        dir.write("ed1.jwk", &URL_SAFE_NO_PAD.encode(public(ED1)));
        assert_eq!(keys.find(Some("ed1")).unwrap().algorithm(), Algorithm::EdDSA);
        std::fs::remove_file(dir.path().join("es1.jwk")).unwrap();
        assert_eq!(unknown(Some("es1")), Denial::UnknownKey);

        // A broken file refuses its kid until it is fixed.
        dir.write("ed1.jwk", "{ broken");
        assert_eq!(unknown(Some("ed1")), Denial::UnknownKey);
        assert_eq!(unknown(Some("ed1")), Denial::UnknownKey);
        dir.write("ed1.jwk", &public(ED1));
        assert!(keys.find(Some("ed1")).is_ok());
    }

    #[test]
    fn directory_kid_cannot_leave_the_directory() {
        let outer = TempDir::new("outer");
        outer.write("k1.jwk", HS_FILE);
        std::fs::create_dir(outer.path().join("keys")).unwrap();
        let keys = Keys::load(&outer.path().join("keys")).unwrap();
        for kid in ["../k1", "..", ".", "keys/../k1", "/k1", ""] {
            let refusal = keys.find(Some(kid)).unwrap_err();
            assert_eq!(refusal.denial, Denial::UnknownKey, "{kid}");
        }
    }

    #[test]
    fn a_single_file_ignores_the_kid() {
        let dir = TempDir::new("single");
        let path = dir.write("key.jwk", HS_FILE);
        let keys = Keys::load(&path).unwrap().with_recheck(Duration::ZERO);
        for kid in [None, Some("kHS256"), Some("other"), Some("../etc/passwd")] {
            assert!(keys.find(kid).is_ok(), "{kid:?}");
        }

        // Gone, then broken, then back: refused while it is not usable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(keys.find(None).unwrap_err().denial, Denial::UnknownKey);
        dir.write("key.jwk", "garbage");
        assert_eq!(keys.find(None).unwrap_err().denial, Denial::UnknownKey);
        dir.write("key.jwk", HS_FILE);
        assert!(keys.find(None).is_ok());
    }

    #[test]
    fn files_are_looked_at_once_per_recheck() {
        let dir = TempDir::new("recheck");
        let path = dir.write("key.jwk", HS_FILE);
        let keys = Keys::load(&path).unwrap().with_recheck(Duration::from_secs(3600));
        std::fs::remove_file(&path).unwrap();
        // Not looked at again yet: still the cached key.
        assert!(keys.find(None).is_ok());
    }

    #[test]
    fn a_rewrite_the_stamp_misses_is_still_seen() {
        // A coarse clock can leave a rewritten file's stamp unchanged; while it is recent, its
        // contents are compared too.
        let dir = TempDir::new("racy");
        let path = dir.write("key.jwk", HS_FILE);
        let old = Key::parse(HS_FILE).unwrap();
        let new = hs_jwk(&[7; 32], "k");
        std::fs::write(&path, &new).unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&path).unwrap());
        let mut slot = Some(Entry {
            checked: Instant::now() - Duration::from_secs(10),
            stamp: Some(stamp),
            racy: Some(Sha256::digest(HS_FILE.as_bytes()).into()),
            key: Some(Arc::new(old)),
        });
        let before = slot.as_ref().unwrap().key.clone().unwrap();
        let after = refresh(&path, &mut slot, RECHECK, Instant::now(), true).unwrap();
        assert!(!Arc::ptr_eq(&before, &after), "the new contents were not read");

        // Unchanged contents keep the parsed key.
        let again = refresh(&path, &mut slot, Duration::ZERO, Instant::now(), true).unwrap();
        assert!(Arc::ptr_eq(&after, &again));
    }

    #[test]
    fn load_refuses_what_cannot_work() {
        let dir = TempDir::new("load");
        assert!(Keys::load(&dir.path().join("missing.jwk")).is_err());

        let broken = dir
            .write("broken.jwk", &format!(r#"{{"alg":"HS256","kty":"oct","k":"{HS_SECRET_B64}","key_ops":["sign"]}}"#));
        let error = format!("{:#}", Keys::load(&broken).unwrap_err());
        assert!(error.contains("does not allow verify") && !error.contains(HS_SECRET_B64), "{error}");

        // A broken key in the directory fails startup too; an empty directory is fine.
        let keys = TempDir::new("keys");
        assert!(Keys::load(keys.path()).is_ok());
        keys.write("bad.jwk", "{}");
        assert!(Keys::load(keys.path()).is_err());
    }
}
