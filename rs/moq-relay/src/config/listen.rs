//! What the relay serves and to whom: listen addresses, the TLS certificate, the HTTP endpoints
//! beside QUIC, and the broadcast prefixes anyone may publish under or subscribe to.

use std::{
    net::{Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::{bail, ensure};

use super::cli::Settings;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), 4443);
const DEFAULT_HTTP: bool = true;

/// Where the relay's TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files on disk.
    Files { cert: PathBuf, key: PathBuf },
    /// A fresh self-signed certificate for these hostnames/IPs (development).
    Generate(Vec<String>),
}

/// The resolved listen settings, for the fields of [`super::Config`] of the same names
/// (`addrs` is `listen`).
pub(super) struct Listen {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) tls: TlsSource,
    pub(super) http: bool,
}

impl Listen {
    pub(super) fn resolve(settings: &Settings) -> anyhow::Result<Self> {
        let tls = tls_source(settings)?;

        let addrs = settings.listen.clone().unwrap_or_else(|| vec![DEFAULT_LISTEN]);
        ensure!(!addrs.is_empty(), "at least one listen address is required");

        Ok(Self { addrs, tls, http: settings.http.unwrap_or(DEFAULT_HTTP) })
    }
}

/// Exactly one of a certificate with its key, or hostnames to generate one for.
fn tls_source(settings: &Settings) -> anyhow::Result<TlsSource> {
    Ok(match (&settings.tls_cert, &settings.tls_key, settings.tls_generate.as_deref()) {
        (Some(cert), Some(key), None) => TlsSource::Files { cert: cert.clone(), key: key.clone() },
        (None, None, Some(hosts)) => {
            ensure!(hosts.iter().any(|h| !h.is_empty()), "tls generate needs at least one hostname");
            TlsSource::Generate(hosts.iter().filter(|h| !h.is_empty()).cloned().collect())
        }
        (Some(_), None, None) => bail!("--tls-cert is set but --tls-key is missing"),
        (None, Some(_), None) => bail!("--tls-key is set but --tls-cert is missing"),
        (None, None, None) => bail!(
            "no TLS certificate configured: set --tls-cert and --tls-key, \
             or --tls-generate <hosts> for a self-signed development certificate"
        ),
        (_, _, Some(_)) => bail!(
            "configure either --tls-cert/--tls-key or --tls-generate, not both \
             (check the flags, MOQ_TLS_* variables and the [tls] section of the config file)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn tls_errors() {
        let err = load(&[], &[]).unwrap_err().to_string();
        assert!(err.contains("no TLS certificate configured"), "{err}");

        let err = load(&["--tls-cert=c.pem"], &[]).unwrap_err().to_string();
        assert!(err.contains("--tls-key is missing"), "{err}");

        // Conflicting sources across layers are reported, not silently resolved.
        let err = load(&["--tls-generate=localhost"], &[("MOQ_TLS_CERT", "c.pem"), ("MOQ_TLS_KEY", "k.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }
}
