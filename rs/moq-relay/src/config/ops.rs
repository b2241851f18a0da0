//! The operator side: the private HTTP listener (`/metrics`, `/health`), its bearer token, and
//! the caps on per-broadcast metric labels, which default to moq-lite's own
//! ([`LabelLimits::default`]).

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use moq_lite::telemetry::LabelLimits;
use serde::Deserialize;

use super::cli::Settings;

const DEFAULT_OPS_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9101);

/// The resolved operator settings, for the fields of [`super::Config`] of the same names
/// (`listen` and `token` are `ops_listen` and `ops_token`).
pub(super) struct Ops {
    pub(super) listen: Option<SocketAddr>,
    pub(super) token: Option<Secret>,
    pub(super) metrics_max_broadcasts: usize,
    pub(super) metrics_max_namespaces: usize,
    pub(super) metrics_linger: Duration,
}

impl Ops {
    pub(super) fn resolve(settings: &Settings) -> Self {
        let labels = LabelLimits::default();
        Self {
            listen: settings.ops_listen.map_or(Some(DEFAULT_OPS_LISTEN), |a| a.0),
            // An empty token means none.
            token: settings.ops_token.clone().filter(|t| !t.0.is_empty()),
            metrics_max_broadcasts: settings.metrics_max_broadcasts.unwrap_or(labels.broadcasts),
            metrics_max_namespaces: settings.metrics_max_namespaces.unwrap_or(labels.namespaces),
            metrics_linger: settings.metrics_linger.unwrap_or(labels.linger),
        }
    }
}

/// A string that must not end up in logs: `Debug` shows at most its last 4 characters.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for comparison with what a client presents.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Revealing a suffix of a short token would reveal most of it.
        let chars = self.0.chars().count();
        if chars < 12 {
            return f.write_str("****");
        }
        let tail: String = self.0.chars().skip(chars - 4).collect();
        write!(f, "****{tail}")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// An optional socket address: `off` (or `none`) disables the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MaybeAddr(Option<SocketAddr>);

impl FromStr for MaybeAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Self(None)),
            addr => addr.parse().map(|addr| Self(Some(addr))),
        }
    }
}

impl<'de> Deserialize<'de> for MaybeAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("abcdefgh-1234")), "****1234");
        assert_eq!(format!("{:?}", Secret::new("short")), "****");
        assert_eq!(Secret::new("short").expose(), "short");

        let config = load(&["--tls-generate=h", "--ops-token=super-secret-token-wxyz"], &[]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(debug.contains("****wxyz"), "{debug}");
    }
}
