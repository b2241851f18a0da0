//! TLS certificates for QUIC: loading PEM files, generating short-lived
//! self-signed development certificates, and building the rustls server config.

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{ensure, Context};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// A certificate chain with its private key.
pub struct Tls {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex SHA-256 of the leaf certificate's DER, as browsers pin it
    /// with WebTransport `serverCertificateHashes`.
    pub fingerprint: String,
    /// When the leaf certificate expires, if its validity could be read.
    pub not_after: Option<SystemTime>,
}

impl Clone for Tls {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint.clone(),
            not_after: self.not_after,
        }
    }
}

impl fmt::Debug for Tls {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("chain_len", &self.chain.len())
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Tls {
    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> anyhow::Result<Self> {
        let leaf = chain.first().context("certificate chain is empty")?;
        Ok(Self { fingerprint: hex::encode(Sha256::digest(leaf)), not_after: der::not_after(leaf), chain, key })
    }
}

/// Load a PEM certificate chain (leaf first) and a PEM private key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("failed to read certificates from {}", cert.display()))?;
    ensure!(!chain.is_empty(), "no certificate found in {}", cert.display());

    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("failed to read private key from {}", key.display()))?;

    Tls::new(chain, key)
}

/// Validity of generated certificates. Chrome only accepts `serverCertificateHashes`
/// for certificates valid at most 14 days in total, so stay strictly below it.
const GENERATED_BACKDATE: Duration = Duration::from_secs(60 * 60);
const GENERATED_LIFETIME: Duration = Duration::from_secs(13 * 24 * 60 * 60);

/// Generate a self-signed ECDSA P-256 certificate for `hosts` (DNS names or IP addresses).
pub fn generate(hosts: &[String]) -> anyhow::Result<Tls> {
    ensure!(!hosts.is_empty(), "at least one hostname is required");

    // IP literals become IP SANs, everything else DNS SANs.
    let mut params =
        rcgen::CertificateParams::new(hosts.to_vec()).context("invalid hostname for a generated certificate")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hosts[0].clone());

    // Backdate a little to tolerate client clock skew.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - GENERATED_BACKDATE;
    params.not_after = now + GENERATED_LIFETIME;

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let key = PrivatePkcs8KeyDer::from(key.serialize_der()).into();

    Tls::new(vec![cert.der().clone()], key)
}

/// A TLS 1.3-only rustls server config (as QUIC requires); the QUIC server sets the ALPNs.
pub fn server_config(tls: &Tls) -> anyhow::Result<rustls::ServerConfig> {
    // Explicit provider: don't depend on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .context("certificate and private key do not match")?;
    Ok(config)
}

/// Just enough DER to read an X.509 certificate's notAfter, which saves a full
/// X.509 parser dependency.
mod der {
    use std::time::SystemTime;

    const SEQUENCE: u8 = 0x30;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT, optional

    /// Split one tag-length-value off `input`: (tag, value, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, mut input) = input.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || input.len() < n {
                return None;
            }
            let (bytes, rest) = input.split_at(n);
            input = rest;
            bytes.iter().fold(0usize, |len, &b| len << 8 | b as usize)
        };
        (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
    }

    /// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serialNumber,
    /// signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    pub fn not_after(cert: &[u8]) -> Option<SystemTime> {
        let (SEQUENCE, cert, _) = tlv(cert)? else {
            return None;
        };
        let (SEQUENCE, mut tbs, _) = tlv(cert)? else {
            return None;
        };
        if tbs.first() == Some(&VERSION) {
            tbs = tlv(tbs)?.2;
        }
        for _ in 0..3 {
            tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
        }
        let (SEQUENCE, validity, _) = tlv(tbs)? else {
            return None;
        };
        let (_, _, validity) = tlv(validity)?; // notBefore
        let (tag, time, _) = tlv(validity)?;
        parse_time(tag, std::str::from_utf8(time).ok()?)
    }

    /// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (DER forms).
    fn parse_time(tag: u8, s: &str) -> Option<SystemTime> {
        let digits = s.strip_suffix('Z')?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (tag, digits.len()) {
            (UTC_TIME, 12) => {
                let yy: i32 = digits[..2].parse().ok()?;
                // RFC 5280: UTCTime years 50-99 are 19xx.
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
            }
            (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
            _ => return None,
        };
        let field = |i: usize| rest[i..i + 2].parse::<u8>().ok();
        let month = time::Month::try_from(field(0)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
        let time = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
        Some(time::PrimitiveDateTime::new(date, time).assume_utc().into())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn times() {
            let at = |secs| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(parse_time(UTC_TIME, "700101000000Z"), at(0));
            assert_eq!(parse_time(UTC_TIME, "491231235959Z"), at(2_524_607_999));
            assert_eq!(parse_time(GENERALIZED_TIME, "20500101000000Z"), at(2_524_608_000));
            assert_eq!(parse_time(UTC_TIME, "700101000000"), None);
            assert_eq!(parse_time(UTC_TIME, "20500101000000Z"), None);
            assert_eq!(parse_time(UTC_TIME, "701301000000Z"), None);
        }

        #[test]
        fn truncated() {
            assert_eq!(not_after(&[]), None);
            assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
            assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
    }

    #[test]
    fn generated_certificate() {
        let before = SystemTime::now();
        let tls = generate(&hosts()).unwrap();

        assert_eq!(tls.chain.len(), 1);
        assert_eq!(tls.fingerprint.len(), 64);
        assert_eq!(tls.fingerprint, hex::encode(Sha256::digest(&tls.chain[0])));
        assert!(tls.fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));

        // Expires in 13 days (DER times have second precision), so the whole
        // validity, including the one-hour backdate, stays under 14 days.
        let not_after = tls.not_after.expect("generated certificate has a readable expiry");
        let lifetime = not_after.duration_since(before).unwrap();
        assert!(lifetime <= GENERATED_LIFETIME, "{lifetime:?}");
        assert!(lifetime > GENERATED_LIFETIME - Duration::from_secs(60), "{lifetime:?}");
        assert!(GENERATED_LIFETIME + GENERATED_BACKDATE < Duration::from_secs(14 * 24 * 3600));

        // A new key and certificate every time.
        assert_ne!(generate(&hosts()).unwrap().fingerprint, tls.fingerprint);
    }

    #[test]
    fn rejects_bad_hosts() {
        assert!(generate(&[]).is_err());
    }

    #[test]
    fn server_config_is_quic_ready() {
        let tls = generate(&hosts()).unwrap();
        let config = server_config(&tls).unwrap();
        // quinn insists on TLS 1.3 with its initial cipher suite available.
        quinn::crypto::rustls::QuicServerConfig::try_from(config).unwrap();
    }

    #[test]
    fn load_pem_files() {
        // Round-trip a generated certificate through PEM files.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["example.test".to_string()]).unwrap().self_signed(&key).unwrap();

        let dir = std::env::temp_dir().join(format!("moq-relay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();

        let tls = load(&cert_path, &key_path);
        let missing = load(&dir.join("missing.pem"), &key_path);
        let no_key = load(&cert_path, &cert_path);
        std::fs::remove_dir_all(&dir).unwrap();

        let tls = tls.unwrap();
        assert_eq!(tls.chain, vec![cert.der().clone()]);
        assert_eq!(tls.fingerprint, hex::encode(Sha256::digest(cert.der())));
        // rcgen's default validity ends 4096-01-01.
        let expected = time::Date::from_calendar_date(4096, time::Month::January, 1).unwrap().midnight().assume_utc();
        assert_eq!(tls.not_after, Some(expected.into()));
        server_config(&tls).unwrap();

        assert!(missing.is_err());
        assert!(no_key.is_err());
    }
}
