//! moq-lite control and data messages, one struct per message, each encoded per [`Version`].
//!
//! The version of a session is fixed by the ALPN (raw QUIC) or the WebTransport sub-protocol and
//! is passed to every encode/decode call; it is never guessed from bytes. Adding a version means
//! adding a variant here and a branch where a layout differs; golden byte tests pin each layout.

mod announce;
mod goaway;
mod group;
mod probe;
mod setup;
mod stream;
mod subscribe;
mod trace;
mod track;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod golden_tests_05_06;
#[cfg(test)]
mod hostile_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;

pub use announce::*;
pub use goaway::*;
pub use group::*;
pub use probe::*;
pub use setup::*;
pub use stream::*;
pub use subscribe::*;
pub use trace::*;
pub use track::*;

/// A moq-lite wire version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Lite03,
    Lite04,
    Lite05,
    Lite06,
}

impl Version {
    /// Every version this crate speaks, most preferred first.
    pub const ALL: [Version; 4] = [Version::Lite06, Version::Lite05, Version::Lite04, Version::Lite03];

    /// The ALPN token (raw QUIC) and WebTransport sub-protocol naming this version.
    pub fn alpn(self) -> &'static str {
        match self {
            Version::Lite03 => "moq-lite-03",
            Version::Lite04 => "moq-lite-04",
            Version::Lite05 => "moq-lite-05",
            Version::Lite06 => "moq-lite-06",
        }
    }

    pub fn from_alpn(alpn: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.alpn() == alpn)
    }

    /// Whether ANNOUNCE carries hop ids (04+) rather than only a hop count (03).
    pub fn has_hop_ids(self) -> bool {
        self >= Version::Lite04
    }

    /// Whether the sender of an ANNOUNCE appends its own hop id to the chain (04 only; from 05
    /// the receiver appends the hop id the sender declared in ANNOUNCE_OK).
    pub fn sender_appends_hop(self) -> bool {
        self == Version::Lite04
    }

    /// Whether ANNOUNCE_REQUEST carries the requester's hop id to exclude (04 and 05; 06 moved
    /// it to the SETUP Hop parameter).
    pub fn has_exclude_hop(self) -> bool {
        matches!(self, Version::Lite04 | Version::Lite05)
    }

    /// Whether the Goaway stream exists (04+).
    pub fn has_goaway(self) -> bool {
        self >= Version::Lite04
    }

    /// Whether PROBE carries an RTT after the bitrate (04+).
    pub fn has_probe_rtt(self) -> bool {
        self >= Version::Lite04
    }

    /// Whether each side sends one SETUP uni stream (05+).
    pub fn has_setup(self) -> bool {
        self >= Version::Lite05
    }

    /// Whether the publisher answers an announce request with ANNOUNCE_OK first (05+).
    pub fn has_announce_ok(self) -> bool {
        self >= Version::Lite05
    }

    /// Whether announcements are typed START/END/UPDATE messages with implicit ids (06).
    pub fn has_announce_ids(self) -> bool {
        self >= Version::Lite06
    }

    /// Whether the Track stream / TRACK_INFO exists and subscriptions are answered with
    /// SUBSCRIBE_START/END instead of SUBSCRIBE_OK (05+).
    pub fn has_track_stream(self) -> bool {
        self >= Version::Lite05
    }

    /// Whether every FRAME starts with a zigzag timestamp delta (05+).
    pub fn has_timestamps(self) -> bool {
        self >= Version::Lite05
    }

    /// Whether the (ignored) Ordered byte is still on the wire (up to 05).
    pub fn has_ordered_byte(self) -> bool {
        self <= Version::Lite05
    }

    /// Whether SUBSCRIBE carries frame bounds, GROUP a frame start and the start group is a
    /// plain number (0 = resolve) instead of `+1` encoded (06).
    pub fn has_frame_bounds(self) -> bool {
        self >= Version::Lite06
    }

    /// Whether announcements carry a route cost (06).
    pub fn has_route_cost(self) -> bool {
        self >= Version::Lite06
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
