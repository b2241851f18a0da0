//! Access: token keys, public patterns, the auth server, the audit log and the per-client limits.
//! The secure default: with no way to decide access configured, the relay refuses to start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};

use super::cli::Settings;
use crate::access::limits::Limits;

const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Hyper will not read request heads in less.
const MIN_UPGRADE_BYTES: usize = 8192;

/// The resolved access settings ([`super::Config::auth`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// JWK file or `{kid}.jwk` directory for in-process token verification.
    pub key: Option<PathBuf>,
    /// Public patterns (validated), rooted at `/`.
    pub public_publish: Vec<String>,
    pub public_subscribe: Vec<String>,
    /// External auth server; excludes the three above.
    pub url: Option<String>,
    pub timeout: Duration,
    pub audit_log: Option<PathBuf>,
}

pub(super) fn resolve(settings: &Settings) -> anyhow::Result<(Auth, Limits)> {
    if settings.publish_allow.is_some() || settings.subscribe_allow.is_some() {
        bail!(
            "--publish-allow/--subscribe-allow (MOQ_PUBLISH_ALLOW/MOQ_SUBSCRIBE_ALLOW, [auth] publish/subscribe) \
             were replaced: anonymous access is now --auth-public-publish / --auth-public-subscribe with path \
             patterns (a prefix `live` becomes `live/**`, \"\" becomes `**`), and tokens are verified with \
             --auth-key; see README \"Access control\""
        );
    }
    let mut public_publish = settings.auth_public.clone().unwrap_or_default();
    let mut public_subscribe = public_publish.clone();
    public_publish.extend(settings.auth_public_publish.clone().unwrap_or_default());
    public_subscribe.extend(settings.auth_public_subscribe.clone().unwrap_or_default());
    // Validate now so a typo stops the start, not the first session.
    crate::access::policy::Public::parse(&public_publish, &public_subscribe)?;

    let url = settings.auth_url.clone().filter(|u| !u.is_empty());
    let public = !public_publish.is_empty() || !public_subscribe.is_empty();
    // A relay serving only netplay rooms needs nothing else: their tokens are its own.
    let netplay = settings.netplay == Some(true);
    match (&url, settings.auth_key.is_some(), public) {
        (Some(_), true, _) | (Some(_), _, true) => bail!(
            "--auth-url excludes --auth-key and --auth-public*: the auth server decides every session \
             (give it the keys and public rules instead)"
        ),
        (None, false, false) if !netplay => bail!(
            "no access control configured: set --auth-key FILE_OR_DIR to verify tokens, and/or \
             --auth-public-subscribe / --auth-public-publish / --auth-public PATTERN for anonymous access \
             (`--auth-public '**'` opens everything, for development), --auth-url URL for an auth server, \
             or --netplay to serve only netplay sessions (docs/netplay.md)"
        ),
        _ => {}
    }

    let defaults = Limits::default();
    let limits = Limits {
        sessions_per_address: settings.limit_sessions_per_address.unwrap_or(defaults.sessions_per_address),
        sessions_per_subject: settings.limit_sessions_per_subject.unwrap_or(defaults.sessions_per_subject),
        session_rate_per_address: settings.limit_session_rate_per_address.unwrap_or(defaults.session_rate_per_address),
        announces_per_session: settings.limit_announces_per_session.unwrap_or(defaults.announces_per_session),
        subscriptions_per_session: settings
            .limit_subscriptions_per_session
            .unwrap_or(defaults.subscriptions_per_session),
        handshake_timeout: settings.handshake_timeout.unwrap_or(defaults.handshake_timeout),
        websocket_upgrade_bytes: settings.limit_websocket_upgrade_bytes.unwrap_or(defaults.websocket_upgrade_bytes),
    };
    ensure!(limits.sessions_per_address >= 1, "--limit-sessions-per-address must be at least 1");
    ensure!(limits.sessions_per_subject >= 1, "--limit-sessions-per-subject must be at least 1");
    ensure!(
        limits.session_rate_per_address.is_finite() && limits.session_rate_per_address > 0.0,
        "--limit-session-rate-per-address must be a positive number"
    );
    ensure!(
        (1..=moq_lite::session::MAX_ANNOUNCED).contains(&limits.announces_per_session),
        "--limit-announces-per-session must be between 1 and {}",
        moq_lite::session::MAX_ANNOUNCED
    );
    ensure!(limits.subscriptions_per_session >= 1, "--limit-subscriptions-per-session must be at least 1");
    ensure!(!limits.handshake_timeout.is_zero(), "--handshake-timeout must be positive");
    ensure!(
        limits.websocket_upgrade_bytes >= MIN_UPGRADE_BYTES,
        "--limit-websocket-upgrade-bytes must be at least {MIN_UPGRADE_BYTES}"
    );

    let auth = Auth {
        key: settings.auth_key.clone(),
        public_publish,
        public_subscribe,
        url,
        timeout: settings.auth_timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT),
        audit_log: settings.audit_log.clone(),
    };
    ensure!(!auth.timeout.is_zero(), "--auth-timeout must be positive");
    Ok((auth, limits))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load_strict;

    #[test]
    fn without_access_control_the_relay_refuses_to_start() {
        let err = load_strict(&["--tls-generate=h"], &[]).unwrap_err().to_string();
        assert!(err.contains("no access control configured") && err.contains("--auth-key"), "{err}");
        assert!(load_strict(&["--tls-generate=h", "--auth-key=/k.jwk"], &[]).is_ok());
        assert!(load_strict(&["--tls-generate=h"], &[("MOQ_AUTH_PUBLIC_SUBSCRIBE", "live/**")]).is_ok());
    }

    #[test]
    fn public_patterns_combine_and_are_checked() {
        let config =
            load_strict(&["--tls-generate=h", "--auth-public=open/**", "--auth-public-subscribe=live/**,vod/*"], &[])
                .unwrap();
        assert_eq!(config.auth.public_publish, vec!["open/**"]);
        assert_eq!(config.auth.public_subscribe, vec!["open/**", "live/**", "vod/*"]);
        let err = load_strict(&["--tls-generate=h", "--auth-public=a/**/b/**"], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("a/**/b/**"), "{err:#}");
    }

    #[test]
    fn the_old_allow_lists_get_a_migration_message() {
        let err = load_strict(&["--tls-generate=h", "--publish-allow=live"], &[]).unwrap_err().to_string();
        assert!(err.contains("--auth-public-publish") && err.contains("live/**"), "{err}");
        let err = load_strict(&["--tls-generate=h", "--auth-public=**"], &[("MOQ_SUBSCRIBE_ALLOW", "")]);
        // An empty variable counts as unset.
        assert!(err.is_ok());
    }

    #[test]
    fn the_auth_server_decides_alone() {
        let err = load_strict(&["--tls-generate=h", "--auth-url=http://127.0.0.1:1/", "--auth-public=**"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--auth-url excludes"), "{err}");
        let config = load_strict(&["--tls-generate=h", "--auth-url=http://127.0.0.1:1/"], &[]).unwrap();
        assert_eq!(config.auth.timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn limits_are_checked() {
        for flag in [
            "--limit-sessions-per-address=0",
            "--limit-session-rate-per-address=0",
            "--limit-announces-per-session=5000",
            "--limit-websocket-upgrade-bytes=100",
            "--handshake-timeout=0s",
        ] {
            assert!(load_strict(&["--tls-generate=h", "--auth-public=**", flag], &[]).is_err(), "{flag}");
        }
    }
}
