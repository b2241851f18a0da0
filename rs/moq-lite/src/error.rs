//! The one error type of the model and session layers, with the wire codes it maps to.

use crate::coding::DecodeError;

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

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::NotFound => "not_found",
            Self::Expired => "expired",
            Self::TooSlow => "slow_subscriber",
            Self::Duplicate(_) => "duplicate",
            Self::TooManyTracks => "too_many_tracks",
            Self::RemoteReset(_) => "reset",
            Self::ProtocolViolation(_) | Self::Decode(_) => "protocol_violation",
            Self::UnexpectedStream(_) => "unexpected_stream",
            Self::Unauthorized => "auth_failed",
            Self::Version => "version",
            Self::GoingAway => "goaway",
            Self::Closed(_) => "closed",
            Self::Transport(_) => "transport",
        }
    }

    /// Whether this error means the peer broke the protocol (close the whole session).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, Self::ProtocolViolation(_) | Self::Decode(_))
    }
}
