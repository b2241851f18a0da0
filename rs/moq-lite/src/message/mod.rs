//! moq-lite control and data messages, one struct per message, each encoded per [`Version`].
//!
//! The version of a session is fixed by the ALPN (raw QUIC) or the WebTransport sub-protocol and
//! is passed to every encode/decode call; it is never guessed from bytes. Adding a version means
//! adding a variant here and a branch where a layout differs; golden byte tests pin each layout.

mod announce;
mod goaway;
mod group;
mod probe;
mod stream;
mod subscribe;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;

pub use announce::*;
pub use goaway::*;
pub use group::*;
pub use probe::*;
pub use stream::*;
pub use subscribe::*;

/// A moq-lite wire version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Lite03,
    Lite04,
}

impl Version {
    /// Every version this crate speaks, most preferred first.
    pub const ALL: [Version; 2] = [Version::Lite04, Version::Lite03];

    /// The ALPN token (raw QUIC) and WebTransport sub-protocol naming this version.
    pub fn alpn(self) -> &'static str {
        match self {
            Version::Lite03 => "moq-lite-03",
            Version::Lite04 => "moq-lite-04",
        }
    }

    pub fn from_alpn(alpn: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.alpn() == alpn)
    }

    /// Whether ANNOUNCE carries hop ids (04+) rather than only a hop count (03).
    pub fn has_hop_ids(self) -> bool {
        self >= Version::Lite04
    }

    /// Whether the Goaway stream exists (04+).
    pub fn has_goaway(self) -> bool {
        self >= Version::Lite04
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.alpn())
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_alpn(s).ok_or_else(|| format!("unknown moq-lite version {s:?}"))
    }
}
