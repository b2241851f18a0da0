//! Signed tokens for the access-control tests: keys made and tokens signed by the reference
//! `moq auth` tools (moq-cli 0.14.10), the tokens those tools refuse to make crafted by hand,
//! and the reference auth server and relay that check them.
//!
//! - [`TokenLab`]: a scratch directory of keys ([`TokenLab::key_dir`] holds `k1.jwk`, HS256, and
//!   `e1.jwk`, the public half of an ES256 pair; the other keys stay outside it), with
//!   [`TokenLab::sign`] (reference `moq auth sign`), [`TokenLab::craft`] / [`TokenLab::craft_with`]
//!   (HS256 over any header and payload with k1's secret), [`TokenLab::unsigned`] (`alg: none`),
//!   [`tamper`] (same claims, other bytes, old signature) and [`TokenLab::verify`] (reference
//!   `moq auth verify`);
//! - [`Grant`]: what a signed token grants (`root`, `publish`/`subscribe` patterns, `exp`);
//! - [`AuthServer`]: the reference `moq auth serve` on a free loopback port;
//! - [`reference_relay_with_auth`]: the reference relay consulting an [`AuthServer`].
//!
//! JWTs are `base64url(header).base64url(payload).base64url(signature)`; [`payload`] and
//! [`signature`] take one apart.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{eventually, free_port, reference, run, Proc};

/// The reference CLI whose `moq auth` subcommands make keys and tokens.
pub const REFERENCE_CLI: (&str, &str) = ("moq-cli", "0.14.10");

/// The reference `moq` binary (its crate is `moq-cli`; this repo's CLI is also called `moq`).
pub fn reference_moq() -> PathBuf {
    reference(REFERENCE_CLI.0, REFERENCE_CLI.1).with_file_name("moq")
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// What a token signed by [`TokenLab::sign`] grants: `moq auth sign --root ROOT --publish P..
/// --subscribe S.. [--expires EXP]`. The reference tool writes all-subtree grants as the legacy
/// `put`/`get` prefix lists and anything else as `publish`/`subscribe` patterns.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub root: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// `exp`, a Unix time.
    pub expires: Option<u64>,
}

impl Grant {
    pub fn new(root: &str) -> Self {
        Self { root: root.to_string(), ..Default::default() }
    }

    pub fn publish<S: AsRef<str>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.publish.extend(patterns.into_iter().map(|p| p.as_ref().to_string()));
        self
    }

    pub fn subscribe<S: AsRef<str>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.subscribe.extend(patterns.into_iter().map(|p| p.as_ref().to_string()));
        self
    }

    pub fn expires(mut self, at: u64) -> Self {
        self.expires = Some(at);
        self
    }
}

/// A scratch directory of keys and the tokens made with them; removed on drop.
///
/// Keys, all made by the reference `moq auth generate`:
/// - [`TokenLab::k1`]: HS256, kid `k1`, in [`TokenLab::key_dir`] (what relays trust);
/// - [`TokenLab::es256`]: ES256 private key, kid `e1`; its public half is `key_dir/e1.jwk`;
/// - [`TokenLab::k2`]: HS256, kid `k2`, not in the key dir;
/// - [`TokenLab::impostor`]: HS256 with kid `k1` but another secret (a wrong key whose kid
///   resolves);
/// - [`TokenLab::k9`]: HS256, kid `k9`, not in the key dir (an unknown kid).
pub struct TokenLab {
    pub dir: PathBuf,
    pub key_dir: PathBuf,
    pub k1: PathBuf,
    pub k2: PathBuf,
    pub impostor: PathBuf,
    pub k9: PathBuf,
    pub es256: PathBuf,
    /// k1's HMAC secret, decoded from its JWK.
    secret: Vec<u8>,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl TokenLab {
    /// Makes the keys (a handful of reference `moq auth generate` runs, well under a second).
    pub fn new() -> Self {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("moq-auth-lab-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key_dir = dir.join("keys");
        let outside = dir.join("outside");
        let impostor_dir = dir.join("impostor");
        for d in [&key_dir, &outside, &impostor_dir] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        let k1 = key_dir.join("k1.jwk");
        generate(&["--algorithm", "HS256", "--id", "k1"], &k1, None);
        let k2 = outside.join("k2.jwk");
        generate(&["--algorithm", "HS256", "--id", "k2"], &k2, None);
        let impostor = impostor_dir.join("k1.jwk");
        generate(&["--algorithm", "HS256", "--id", "k1"], &impostor, None);
        let k9 = outside.join("k9.jwk");
        generate(&["--algorithm", "HS256", "--id", "k9"], &k9, None);
        let es256 = outside.join("e1.jwk");
        generate(&["--algorithm", "ES256", "--id", "e1"], &es256, Some(&key_dir.join("e1.jwk")));

        let jwk = read_jwk(&k1);
        assert_eq!(jwk["kty"], "oct", "k1 is not a symmetric key: {jwk}");
        let secret = URL_SAFE_NO_PAD
            .decode(jwk["k"].as_str().unwrap().trim_end_matches('='))
            .unwrap_or_else(|e| panic!("k1's secret is not base64url: {e}"));
        assert_ne!(read_jwk(&impostor)["k"], jwk["k"], "the impostor key must differ from k1");
        Self { dir, key_dir, k1, k2, impostor, k9, es256, secret }
    }

    /// `moq auth sign --key KEY ...`: the token the reference tool makes for `grant`.
    pub fn sign(&self, key: &Path, grant: &Grant) -> String {
        let mut cmd = Command::new(reference_moq());
        cmd.args(["auth", "sign", "--key"]).arg(key).args(["--root", &grant.root]);
        for p in &grant.publish {
            cmd.args(["--publish", p]);
        }
        for s in &grant.subscribe {
            cmd.args(["--subscribe", s]);
        }
        if let Some(exp) = grant.expires {
            cmd.args(["--expires", &exp.to_string()]);
        }
        let out = run("moq auth sign", &mut cmd, Duration::from_secs(10));
        assert!(out.status.success(), "moq auth sign {grant:?}: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
        token
    }

    /// An HS256 token signed with k1's secret over exactly these header and payload JSON texts,
    /// the way the reference tool never would (unknown claims, `nbf`, mixed encodings, ...).
    pub fn craft_with(&self, header: &str, payload: &str) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mac = hmac_sha256(&self.secret, signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac))
    }

    /// [`TokenLab::craft_with`] under the header the reference tool writes for k1.
    pub fn craft(&self, payload: &Value) -> String {
        self.craft_with(&k1_header("HS256"), &payload.to_string())
    }

    /// `alg: none`, kid `k1`, and an empty signature.
    pub fn unsigned(&self, payload: &Value) -> String {
        format!("{}.{}.", b64(k1_header("none").as_bytes()), b64(payload.to_string().as_bytes()))
    }

    /// `moq auth verify --key KEY`: the claims the reference verifier reads (as it prints them,
    /// Rust debug syntax), or its refusal.
    pub fn verify(&self, key: &Path, token: &str) -> Result<String, String> {
        let file = self.dir.join(format!("verify-{}.jwt", LABS.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&file, token).unwrap();
        let out = run(
            "moq auth verify",
            Command::new(reference_moq()).args(["auth", "verify", "--key"]).arg(key).arg("--in").arg(&file),
            Duration::from_secs(10),
        );
        let _ = std::fs::remove_file(&file);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Default for TokenLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TokenLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `moq auth generate ARGS --out OUT [--public PUBLIC]`.
fn generate(args: &[&str], out: &Path, public: Option<&Path>) {
    let mut cmd = Command::new(reference_moq());
    cmd.args(["auth", "generate"]).args(args).arg("--out").arg(out);
    if let Some(public) = public {
        cmd.arg("--public").arg(public);
    }
    let done = run("moq auth generate", &mut cmd, Duration::from_secs(10));
    assert!(done.status.success(), "moq auth generate {args:?}: {}", String::from_utf8_lossy(&done.stderr));
    assert!(out.exists(), "moq auth generate wrote no {}", out.display());
}

/// A key file's JWK (the file holds base64url of the JWK's JSON).
pub fn read_jwk(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json = URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .unwrap_or_else(|e| panic!("{} is not base64url: {e}", path.display()));
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{} is not a JWK: {e}", path.display()))
}

/// The header the reference tool writes for kid `k1`, with `alg` swapped in.
fn k1_header(alg: &str) -> String {
    json!({ "typ": "JWT", "alg": alg, "kid": "k1" }).to_string()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 (RFC 2104) over SHA-256's 64-byte blocks.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// A token's claims, decoded without any check.
pub fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap_or_else(|e| panic!("payload of {token} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("payload of {token} is not JSON: {e}"))
}

/// A token's signature part (empty for `alg: none`).
pub fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or_default()
}

/// `token` with its payload re-encoded as different bytes holding the same claims (one space
/// added after the opening brace), keeping the old signature: only the signature check can
/// refuse it.
pub fn tamper(token: &str) -> String {
    let mut parts = token.split('.');
    let (header, body, sig) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    let changed = json.replacen('{', "{ ", 1);
    assert_ne!(changed, json);
    assert_eq!(serde_json::from_str::<Value>(&changed).unwrap(), serde_json::from_str::<Value>(&json).unwrap());
    format!("{header}.{}.{sig}", b64(changed.as_bytes()))
}

/// The reference auth server, `moq auth serve --listen 127.0.0.1:PORT --key-dir DIR
/// [--public-publish P].. [--public-subscribe S]..`, ready once its port accepts connections.
/// Killed on drop.
pub struct AuthServer {
    pub proc: Proc,
    pub port: u16,
}

impl AuthServer {
    pub fn start(key_dir: &Path, public_publish: &[&str], public_subscribe: &[&str]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(reference_moq());
        cmd.args(["auth", "serve", "--listen", &format!("127.0.0.1:{port}"), "--key-dir"]).arg(key_dir);
        for p in public_publish {
            cmd.args(["--public-publish", p]);
        }
        for s in public_subscribe {
            cmd.args(["--public-subscribe", s]);
        }
        let mut proc = Proc::spawn("reference moq auth serve", &mut cmd);
        let up = eventually(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "moq auth serve never listened on {port}: {:?}", proc.drain());
        Self { proc, port }
    }

    /// `http://127.0.0.1:PORT`, for the reference relay's `--auth-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The reference `moq-relay` (as [`crate::relay::reference_relay_with`] starts it) asking
/// `auth_url` about every session instead of granting anonymous access; with its
/// `http://127.0.0.1:PORT/` URL and port. Killed on drop.
pub fn reference_relay_with_auth(auth_url: &str) -> (Proc, String, u16) {
    crate::relay::reference_relay_with(&["--auth-url", auth_url])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 and a key longer than a block (test case 6).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn tampering_keeps_the_claims_and_the_signature() {
        let token = format!("{}.{}.sig", b64(b"{}"), b64(br#"{"root":"demo"}"#));
        let tampered = tamper(&token);
        assert_ne!(tampered, token);
        assert_eq!(payload(&tampered), payload(&token));
        assert_eq!(signature(&tampered), "sig");
    }
}
