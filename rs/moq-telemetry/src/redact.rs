//! What may appear in logs and spans: secrets never, peer addresses as configured.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

/// A short, irreversible name for a secret (token, JWT), for correlating log lines.
pub fn secret(value: &str) -> String {
    format!("sha256:{}", hex::encode(&Sha256::digest(value.as_bytes())[..6]))
}

/// How peer addresses are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerIp {
    #[default]
    Full,
    /// IPv4 /24, IPv6 /48: enough to spot a network, not a person.
    Truncated,
    Omitted,
}

impl std::str::FromStr for PeerIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Self::Full),
            "truncated" => Ok(Self::Truncated),
            "omitted" | "off" => Ok(Self::Omitted),
            other => Err(format!("unknown peer IP mode {other:?} (full, truncated, omitted)")),
        }
    }
}

impl PeerIp {
    /// The address as it may be logged, or `None` when omitted.
    pub fn show(self, addr: SocketAddr) -> Option<String> {
        match self {
            Self::Full => Some(addr.ip().to_string()),
            Self::Omitted => None,
            Self::Truncated => Some(match addr.ip() {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_addresses() {
        let name = secret("eyJhbGciOi.secret.token");
        assert!(name.starts_with("sha256:") && name.len() == 19 && !name.contains("secret"));
        let v4: SocketAddr = "203.0.113.77:4443".parse().unwrap();
        assert_eq!(PeerIp::Truncated.show(v4).unwrap(), "203.0.113.0/24");
        assert_eq!(PeerIp::Full.show(v4).unwrap(), "203.0.113.77");
        assert_eq!(PeerIp::Omitted.show(v4), None);
        let v6: SocketAddr = "[2001:db8:1:2::5]:1".parse().unwrap();
        assert_eq!(PeerIp::Truncated.show(v6).unwrap(), "2001:db8:1::/48");
    }
}
