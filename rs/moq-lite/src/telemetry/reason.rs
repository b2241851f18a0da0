//! The one bounded set of reasons that label values, log fields and span attributes are spelled
//! from: why a request was refused, a group dropped, a stream reset, a session rejected or
//! closed. Each reason is spelled once, here; the label sets in the catalog are built from it.

/// Why something ended, was refused or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a failure: accepted, served.
    Ok,
    Cancel,
    NotFound,
    /// Older than the subscriber's latency budget (wire code `OLD`).
    Expired,
    SlowSubscriber,
    Duplicate,
    TooManyTracks,
    Reset,
    ProtocolViolation,
    UnexpectedStream,
    AuthFailed,
    Version,
    Goaway,
    Closed,
    Transport,
    Timeout,
    GoawayTimeout,
    Internal,
    /// A wire code this implementation does not name.
    Other,
    /// The peer closed the session.
    ClientClosed,
    IdleTimeout,
    /// QUIC, TLS or the WebTransport CONNECT failed before a session existed.
    HandshakeFailed,
    /// Refused at the door: the relay admits no more sessions.
    Capacity,
    /// Refused at the door: the relay is over its memory budget.
    Memory,
    /// Refused at the door: a per-client limit (the relay has room, this client took its share).
    Limit,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Cancel => "cancel",
            Reason::NotFound => "not_found",
            Reason::Expired => "expired",
            Reason::SlowSubscriber => "slow_subscriber",
            Reason::Duplicate => "duplicate",
            Reason::TooManyTracks => "too_many_tracks",
            Reason::Reset => "reset",
            Reason::ProtocolViolation => "protocol_violation",
            Reason::UnexpectedStream => "unexpected_stream",
            Reason::AuthFailed => "auth_failed",
            Reason::Version => "version",
            Reason::Goaway => "goaway",
            Reason::Closed => "closed",
            Reason::Transport => "transport",
            Reason::Timeout => "timeout",
            Reason::GoawayTimeout => "goaway_timeout",
            Reason::Internal => "internal",
            Reason::Other => "other",
            Reason::ClientClosed => "client_closed",
            Reason::IdleTimeout => "idle_timeout",
            Reason::HandshakeFailed => "handshake_failed",
            Reason::Capacity => "capacity",
            Reason::Memory => "memory",
            Reason::Limit => "limit",
        }
    }

    /// The reason a stream or session code received from a peer stands for.
    pub fn of_code(code: u32) -> Self {
        use crate::code::*;
        match code {
            CANCEL => Reason::Cancel,
            OLD => Reason::Expired,
            TIMEOUT => Reason::Timeout,
            UNAUTHORIZED => Reason::AuthFailed,
            VERSION => Reason::Version,
            UNEXPECTED_STREAM => Reason::UnexpectedStream,
            NOT_FOUND => Reason::NotFound,
            PROTOCOL_VIOLATION => Reason::ProtocolViolation,
            GOAWAY_TIMEOUT => Reason::GoawayTimeout,
            TOO_SLOW => Reason::SlowSubscriber,
            INTERNAL => Reason::Internal,
            _ => Reason::Other,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spells a list of reasons as label values, at compile time.
macro_rules! spelled {
    ($($reason:ident),* $(,)?) => { &[$($crate::telemetry::Reason::$reason.as_str()),*] };
}
pub(crate) use spelled;

/// Every value [`crate::Error::reason`] can take (the `error_type` label).
pub const ERROR_TYPES: &[&str] = spelled![
    Cancel,
    NotFound,
    Expired,
    SlowSubscriber,
    Duplicate,
    TooManyTracks,
    Reset,
    ProtocolViolation,
    UnexpectedStream,
    AuthFailed,
    Version,
    Goaway,
    Closed,
    Transport,
];

/// Every value [`Reason::of_code`] can take (the `code` label of stream resets).
pub const CODE_NAMES: &[&str] = spelled![
    Cancel,
    Expired,
    Timeout,
    AuthFailed,
    Version,
    UnexpectedStream,
    NotFound,
    ProtocolViolation,
    GoawayTimeout,
    SlowSubscriber,
    Internal,
    Other,
];

/// Why a group did not reach a subscriber in full.
pub const DROP_REASONS: &[&str] = spelled![Expired, SlowSubscriber, Cancel, Reset];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{code, Error};

    #[test]
    fn every_error_and_code_maps_into_its_listed_set() {
        let errors = [
            Error::Cancel,
            Error::NotFound,
            Error::Expired,
            Error::TooSlow,
            Error::Duplicate(1),
            Error::TooManyTracks,
            Error::RemoteReset(7),
            Error::ProtocolViolation("x".into()),
            Error::UnexpectedStream(9),
            Error::Unauthorized,
            Error::Version,
            Error::GoingAway,
            Error::Closed("x".into()),
            Error::Transport("x".into()),
        ];
        for e in &errors {
            assert!(ERROR_TYPES.contains(&e.kind()), "{e:?} -> {}", e.kind());
        }
        assert_eq!(errors.len(), ERROR_TYPES.len(), "every listed error type is reachable");
        for c in 0..=0x40 {
            assert!(CODE_NAMES.contains(&Reason::of_code(c).as_str()), "code {c}");
        }
        // The spelling of a code and of the error that sends it agree.
        for e in &errors {
            if !matches!(e, Error::RemoteReset(_) | Error::Closed(_) | Error::Transport(_) | Error::Duplicate(_)) {
                assert_eq!(
                    Reason::of_code(e.code()).as_str(),
                    match e {
                        Error::ProtocolViolation(_) | Error::Duplicate(_) | Error::Decode(_) => "protocol_violation",
                        Error::TooManyTracks => "internal",
                        Error::GoingAway => "goaway_timeout",
                        other => other.kind(),
                    },
                    "{e:?}"
                );
            }
        }
        assert_eq!(Reason::of_code(code::UNAUTHORIZED), Reason::AuthFailed);
    }
}
