//! The one error type of the model and session layers, with the wire codes it maps to.

use crate::coding::DecodeError;
use crate::telemetry::Reason;

/// Why a track, group, subscription or session ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cancelled")]
    Cancel,
    #[error("not found")]
    NotFound,
    #[error("group expired: older than the subscriber's max latency")]
    Expired,
    #[error("subscriber too slow: group evicted")]
    TooSlow,
    #[error("duplicate group {0}")]
    Duplicate(u64),
    #[error("too many tracks requested")]
    TooManyTracks,
    #[error("reset by peer with code {0}")]
    RemoteReset(u32),
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("unexpected stream type {0}")]
    UnexpectedStream(u64),
    #[error("unauthorized")]
    Unauthorized,
    #[error("version negotiation failed")]
    Version,
    #[error("going away")]
    GoingAway,
    #[error("session closed: {0}")]
    Closed(String),
    #[error("transport: {0}")]
    Transport(String),
}

/// Stream reset and session close codes, from the flat table the lite-03/04 reference peers
/// (moq-net 0.1.x) use. They are diagnostics; no peer makes control decisions on them.
pub mod code {
    pub const CANCEL: u32 = 0;
    pub const OLD: u32 = 2;
    pub const TIMEOUT: u32 = 3;
    pub const UNAUTHORIZED: u32 = 6;
    pub const VERSION: u32 = 9;
    pub const UNEXPECTED_STREAM: u32 = 10;
    pub const NOT_FOUND: u32 = 13;
    pub const PROTOCOL_VIOLATION: u32 = 15;
    /// The relay closes sessions still open when the GOAWAY drain window ends.
    pub const GOAWAY_TIMEOUT: u32 = 0x10;
    pub const TOO_SLOW: u32 = 0x20;
    pub const INTERNAL: u32 = 0x21;
}

impl Error {
    pub fn code(&self) -> u32 {
        match self {
            Self::Cancel | Self::Closed(_) => code::CANCEL,
            Self::NotFound => code::NOT_FOUND,
            Self::Expired => code::OLD,
            Self::TooSlow => code::TOO_SLOW,
            Self::Duplicate(_) | Self::ProtocolViolation(_) | Self::Decode(_) => code::PROTOCOL_VIOLATION,
            Self::TooManyTracks => code::INTERNAL,
            Self::RemoteReset(c) => *c,
            Self::UnexpectedStream(_) => code::UNEXPECTED_STREAM,
            Self::Unauthorized => code::UNAUTHORIZED,
            Self::Version => code::VERSION,
            Self::GoingAway => code::GOAWAY_TIMEOUT,
            Self::Transport(_) => code::INTERNAL,
        }
    }

    /// Why this ended, from the one bounded reason set (labels, log fields, span attributes).
    pub fn reason(&self) -> Reason {
        match self {
            Self::Cancel => Reason::Cancel,
            Self::NotFound => Reason::NotFound,
            Self::Expired => Reason::Expired,
            Self::TooSlow => Reason::SlowSubscriber,
            Self::Duplicate(_) => Reason::Duplicate,
            Self::TooManyTracks => Reason::TooManyTracks,
            Self::RemoteReset(_) => Reason::Reset,
            Self::ProtocolViolation(_) | Self::Decode(_) => Reason::ProtocolViolation,
            Self::UnexpectedStream(_) => Reason::UnexpectedStream,
            Self::Unauthorized => Reason::AuthFailed,
            Self::Version => Reason::Version,
            Self::GoingAway => Reason::Goaway,
            Self::Closed(_) => Reason::Closed,
            Self::Transport(_) => Reason::Transport,
        }
    }

    /// [`Self::reason`] spelled as a label value.
    pub fn kind(&self) -> &'static str {
        self.reason().as_str()
    }

    /// Whether this error means the peer broke the protocol (close the whole session).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, Self::ProtocolViolation(_) | Self::Decode(_))
    }
}
