//! The access decision for one session: a token verified in-process, else the public patterns; or,
//! in auth-server mode, whatever the server answers.

use std::time::SystemTime;

use moq_lite::pattern::{Pattern, Patterns};

use super::auth_server::{AuthRequest, AuthServer};
use super::keys::Keys;
use super::{token, Denial, Grant, Refusal, Source};

/// Anonymous access: patterns rooted at `/`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Public {
    pub publish: Patterns,
    pub subscribe: Patterns,
}

impl Public {
    pub fn parse(publish: &[String], subscribe: &[String]) -> anyhow::Result<Self> {
        let parse = |list: &[String]| -> anyhow::Result<Patterns> {
            list.iter()
                .map(|text| {
                    text.trim_matches('/')
                        .parse::<Pattern>()
                        .map_err(|e| anyhow::anyhow!("public pattern {text:?}: {e}"))
                })
                .collect()
        };
        Ok(Self { publish: parse(publish)?, subscribe: parse(subscribe)? })
    }

    /// What an anonymous session dialed at `dialed` may do.
    pub fn grant_at(&self, dialed: &str) -> Result<Grant, Refusal> {
        let grant = Grant {
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            source: Source::Public,
            ..Default::default()
        };
        match grant.reaches(dialed) {
            true => Ok(grant),
            false => Err(Refusal::new(Denial::NoCredentials, format!("nothing is public at `/{dialed}`"))),
        }
    }
}

/// Who decides.
// One per process: boxing the larger variant saves nothing.
#[allow(clippy::large_enum_variant)]
pub enum Policy {
    /// Tokens verified with local keys (if any), anonymous sessions by the public patterns.
    Local { keys: Option<Keys>, public: Public },
    /// Every decision asked of an auth server (`--auth-url`).
    Server(AuthServer),
}

/// Tokens the relay issues itself (netplay rooms' tokens), told apart by the `kid` of their
/// header: the gatekeeper hands them to their issuer whatever the [`Policy`] (keys, public
/// patterns or auth server), and they are good only while the issuer vouches for them.
pub trait Issuer: Send + Sync {
    /// The `kid` its tokens carry.
    fn kid(&self) -> &'static str;
    /// The grant of a session dialed at `dialed` (normalized) presenting `token`, one of this
    /// issuer's by its `kid`.
    fn grant(&self, token: &str, dialed: &str, now: SystemTime) -> Result<Grant, Refusal>;
}

/// One session's request, as the access layer sees it.
pub struct Access<'a> {
    /// The normalized dialed path (the session's root).
    pub dialed: &'a str,
    /// The `jwt` the client presented (URL query or SETUP Path query), if any.
    pub token: Option<&'a str>,
    /// What the auth server is told (auth-server mode only).
    pub request: &'a AuthRequest,
}

impl Policy {
    pub async fn decide(&self, access: &Access<'_>) -> Result<Grant, Refusal> {
        match self {
            Policy::Local { keys, public } => match access.token {
                // A token that fails never falls back to anonymous access: the client meant it.
                Some(jwt) => {
                    let keys = keys.as_ref().ok_or_else(|| {
                        Refusal::new(Denial::UnknownKey, "a token was presented but no --auth-key is configured")
                    })?;
                    token::verify(keys, jwt, SystemTime::now())?.grant_at(access.dialed)
                }
                None => public.grant_at(access.dialed),
            },
            Policy::Server(server) => server.connect(access.request).await,
        }
    }

    /// What anonymous callers may do (nothing in auth-server mode: the server decides).
    pub fn public(&self) -> Option<&Public> {
        match self {
            Policy::Local { public, .. } => Some(public),
            Policy::Server(_) => None,
        }
    }

    pub fn server(&self) -> Option<&AuthServer> {
        match self {
            Policy::Server(server) => Some(server),
            Policy::Local { .. } => None,
        }
    }
}

/// The token of a query string: the last non-empty `jwt` parameter, as the reference reads it (a
/// client that appends a fresh token is believed).
pub fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| k == "jwt" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_patterns_reach_only_where_they_point() {
        let public = Public::parse(&["live/**".into()], &["**".into()]).unwrap();
        assert!(public.grant_at("live/room").is_ok());
        assert!(public.grant_at("other").is_ok(), "subscribe reaches everywhere");
        let publish_only = Public::parse(&["/anon/**/".into()], &[]).unwrap();
        assert_eq!(publish_only.grant_at("other").unwrap_err().denial, Denial::NoCredentials);
        assert!(publish_only.grant_at("").is_ok(), "the root reaches anon/**");
        assert!(Public::parse(&["a//b".into()], &[]).is_err());
    }

    #[test]
    fn the_last_non_empty_jwt_wins() {
        assert_eq!(query_token("jwt=a&x=1&jwt=b&jwt=").as_deref(), Some("b"));
        assert_eq!(query_token("x=1"), None);
        assert_eq!(query_token("jwt=a%2Bb").as_deref(), Some("a+b"));
    }
}
