//! Who may do what. Every session's rights come from here: a signed token verified in-process
//! ([`token`], [`keys`]), an external auth server ([`auth_server`]), or the public patterns
//! ([`policy::Public`]), decided in [`policy`]; [`limits`] caps what one client may take; [`audit`] writes down every decision.
//!
//! Patterns are held *absolute* (rooted at the relay's origin root, never relative to the dialed
//! path): a grant is checked against a broadcast's full path, which gives the same answers as the
//! reference's rebasing onto the dialed path without any pattern algebra.

pub mod audit;
pub mod auth_server;
pub mod gate;
pub mod keys;
pub mod limits;
pub mod policy;
pub mod token;

use std::time::{Duration, SystemTime};

use moq_lite::pattern::Patterns;

/// Why access was refused: the bounded `reason` label of `moq_relay_auth_decisions_total`, the
/// `moq.auth.reason` span attribute and the audit log's `reason` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    /// The token's `exp` has passed (beyond the allowed clock skew).
    Expired,
    /// The token's `nbf` is still in the future (beyond the allowed clock skew).
    NotYetValid,
    /// The signature does not verify with the chosen key.
    BadSignature,
    /// No key for the token: an unknown `kid` in a key directory, or no `kid` where one is needed.
    UnknownKey,
    /// The token carries a claim this relay does not know (it might narrow the grant).
    UnknownClaim,
    /// Not a JWT at all, or claims of the wrong type, or an invalid pattern.
    Malformed,
    /// `alg: none`, or an algorithm that does not match the key's.
    BadAlgorithm,
    /// The token's `root` and the dialed path do not overlap.
    RootMismatch,
    /// The grant allows nothing at or under the dialed path, or a request outside it.
    PathDenied,
    /// No token, and nothing is public at this path.
    NoCredentials,
    /// A limit refused the client (which one is in the limit-hit event).
    Limit,
    /// The auth server could not be reached, timed out, or answered nonsense.
    AuthServerUnavailable,
    /// The auth server refused (HTTP 401/403); its reason text is in the detail.
    AuthServerDenied,
    /// A revalidation narrowed or withdrew the grant of a running session.
    Revoked,
}

impl Denial {
    #[cfg_attr(not(test), allow(dead_code))] // the catalog test holds the label set to it
    pub const ALL: &'static [Denial] = &[
        Denial::Expired,
        Denial::NotYetValid,
        Denial::BadSignature,
        Denial::UnknownKey,
        Denial::UnknownClaim,
        Denial::Malformed,
        Denial::BadAlgorithm,
        Denial::RootMismatch,
        Denial::PathDenied,
        Denial::NoCredentials,
        Denial::Limit,
        Denial::AuthServerUnavailable,
        Denial::AuthServerDenied,
        Denial::Revoked,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Denial::Expired => "expired",
            Denial::NotYetValid => "not_yet_valid",
            Denial::BadSignature => "bad_signature",
            Denial::UnknownKey => "unknown_key",
            Denial::UnknownClaim => "unknown_claim",
            Denial::Malformed => "malformed",
            Denial::BadAlgorithm => "bad_algorithm",
            Denial::RootMismatch => "root_mismatch",
            Denial::PathDenied => "path_denied",
            Denial::NoCredentials => "no_credentials",
            Denial::Limit => "limit",
            Denial::AuthServerUnavailable => "auth_server_unavailable",
            Denial::AuthServerDenied => "auth_server_denied",
            Denial::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the bounded reason, and a human detail for the log line and the audit record
/// (never containing the token or key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub denial: Denial,
    pub detail: String,
}

impl Refusal {
    pub fn new(denial: Denial, detail: impl Into<String>) -> Self {
        Self { denial, detail: detail.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.denial, self.detail)
    }
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Self { denial, detail: String::new() }
    }
}

/// Where a grant came from: the `reason` of an accepted decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Source {
    /// A JWT verified in-process.
    Token,
    /// The public patterns (anonymous access).
    #[default]
    Public,
    /// The external auth server.
    AuthServer,
}

impl Source {
    #[cfg_attr(not(test), allow(dead_code))] // the catalog test holds the label set to it
    pub const ALL: &'static [Source] = &[Source::Token, Source::Public, Source::AuthServer];

    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Token => "token",
            Source::Public => "public",
            Source::AuthServer => "auth_server",
        }
    }
}

/// What a session may do. Every pattern is absolute (rooted at the origin root).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub publish: Patterns,
    pub subscribe: Patterns,
    /// When the right ends: the session is closed then.
    pub expires: Option<SystemTime>,
    /// How often to ask the auth server again (auth-server grants only).
    pub revalidate: Option<Duration>,
    /// Who: the token's `sub` claim, for per-subject limits and the audit log.
    pub subject: Option<String>,
    pub source: Source,
    /// A peer relay's grant (the token's `"peer": true`, or the auth server's `peer: true`): it
    /// only marks the session as a cluster peer (labels, logs, `/nodes`), it widens nothing.
    pub peer: bool,
}

impl Grant {
    /// Whether this grant gives anything at or under `dialed` (an absolute, normalized path).
    pub fn reaches(&self, dialed: &str) -> bool {
        self.publish.matches_below(dialed) || self.subscribe.matches_below(dialed)
    }
}
