//! Netplay sessions (`--netplay`, docs/netplay.md): off by default, since anyone who can reach the
//! public HTTP listener could then create rooms. Defaults come from
//! [`crate::netplay::Settings::default`].

use anyhow::ensure;

use super::cli::Settings;
use crate::netplay;

/// The longest TTL allowed (a day: the top bucket of the TTL histograms).
pub const MAX_TTL_MINUTES: u32 = 1440;
/// The most participants a room may be configured to take.
pub const MAX_PARTICIPANTS: usize = 1024;
/// The most live rooms the relay may be configured to hold.
pub const MAX_SESSIONS: usize = 1_000_000;

pub(super) fn resolve(settings: &Settings) -> anyhow::Result<netplay::Settings> {
    let d = netplay::Settings::default();
    let n = netplay::Settings {
        enabled: settings.netplay.unwrap_or(d.enabled),
        min_ttl_minutes: settings.netplay_min_ttl_minutes.unwrap_or(d.min_ttl_minutes),
        max_ttl_minutes: settings.netplay_max_ttl_minutes.unwrap_or(d.max_ttl_minutes),
        default_ttl_minutes: settings.netplay_default_ttl_minutes.unwrap_or(d.default_ttl_minutes),
        max_participants: settings.netplay_max_participants.unwrap_or(d.max_participants),
        max_sessions: settings.netplay_max_sessions.unwrap_or(d.max_sessions),
        join_rate: settings.netplay_join_rate_per_address.unwrap_or(d.join_rate),
        create_rate: settings.netplay_create_rate_per_address.unwrap_or(d.create_rate),
        sweep_interval: settings.netplay_sweep_interval.unwrap_or(d.sweep_interval),
        host_grace: settings.netplay_host_grace.unwrap_or(d.host_grace),
        idle_timeout: settings.netplay_idle_timeout.unwrap_or(d.idle_timeout),
    };
    ensure!(
        1 <= n.min_ttl_minutes
            && n.min_ttl_minutes <= n.default_ttl_minutes
            && n.default_ttl_minutes <= n.max_ttl_minutes
            && n.max_ttl_minutes <= MAX_TTL_MINUTES,
        "netplay TTLs must satisfy 1 <= --netplay-min-ttl-minutes ({}) <= --netplay-default-ttl-minutes ({}) \
         <= --netplay-max-ttl-minutes ({}) <= {MAX_TTL_MINUTES}",
        n.min_ttl_minutes,
        n.default_ttl_minutes,
        n.max_ttl_minutes
    );
    ensure!(
        (1..=MAX_PARTICIPANTS).contains(&n.max_participants),
        "--netplay-max-participants must be between 1 and {MAX_PARTICIPANTS}"
    );
    ensure!(
        (1..=MAX_SESSIONS).contains(&n.max_sessions),
        "--netplay-max-sessions must be between 1 and {MAX_SESSIONS}"
    );
    ensure!(!n.sweep_interval.is_zero(), "--netplay-sweep-interval must be positive");
    ensure!(!n.idle_timeout.is_zero(), "--netplay-idle-timeout must be positive");
    if n.enabled {
        ensure!(settings.http != Some(false), "--netplay needs the HTTP listener (--http): its API is served there");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{load, load_strict, TempToml};
    use crate::netplay::{Rate, Settings};

    #[test]
    fn off_by_default_with_the_documented_defaults() {
        let config = load(&["--tls-generate=h"], &[]).unwrap();
        assert_eq!(config.netplay, Settings::default());
        assert!(!config.netplay.enabled);
        let d = &config.netplay;
        assert_eq!((d.min_ttl_minutes, d.default_ttl_minutes, d.max_ttl_minutes), (5, 60, 240));
        assert_eq!((d.max_participants, d.max_sessions), (8, 10_000));
        assert_eq!(d.join_rate, Rate { count: 1.0, period: Duration::from_secs(1), burst: 5.0 });
        assert_eq!(d.create_rate, Rate { count: 10.0, period: Duration::from_secs(60), burst: 5.0 });
        assert_eq!(
            (d.sweep_interval, d.host_grace, d.idle_timeout),
            (Duration::from_secs(30), Duration::from_secs(10), Duration::from_secs(300))
        );
    }

    #[test]
    fn flags_variables_and_file() {
        let config = load(
            &[
                "--tls-generate=h",
                "--netplay",
                "--netplay-min-ttl-minutes=1",
                "--netplay-max-ttl-minutes=30",
                "--netplay-default-ttl-minutes=10",
                "--netplay-max-participants=3",
                "--netplay-join-rate-per-address=2/s:4",
                "--netplay-host-grace=1s",
            ],
            &[("MOQ_NETPLAY_IDLE_TIMEOUT", "1m"), ("MOQ_NETPLAY_MAX_SESSIONS", "7")],
        )
        .unwrap();
        let n = &config.netplay;
        assert!(n.enabled);
        assert_eq!((n.min_ttl_minutes, n.default_ttl_minutes, n.max_ttl_minutes, n.max_participants), (1, 10, 30, 3));
        assert_eq!((n.join_rate.per_second(), n.join_rate.burst), (2.0, 4.0));
        assert_eq!(
            (n.host_grace, n.idle_timeout, n.max_sessions),
            (Duration::from_secs(1), Duration::from_secs(60), 7)
        );

        let file = TempToml::new(
            "netplay",
            r#"
                [netplay]
                enabled = true
                max_participants = 2
                create_rate_per_address = "1/10s:2"
                sweep_interval = "5s"
                default_ttl_minutes = 30
            "#,
        );
        let config = load(&[file.path(), "--tls-generate=h"], &[]).unwrap();
        let n = &config.netplay;
        assert!(n.enabled);
        assert_eq!((n.max_participants, n.default_ttl_minutes, n.sweep_interval), (2, 30, Duration::from_secs(5)));
        assert_eq!((n.create_rate.per_second(), n.create_rate.burst), (0.1, 2.0));
    }

    #[test]
    fn values_are_checked() {
        for flag in [
            "--netplay-min-ttl-minutes=0",
            "--netplay-min-ttl-minutes=61",
            "--netplay-default-ttl-minutes=241",
            "--netplay-max-ttl-minutes=2000",
            "--netplay-max-participants=0",
            "--netplay-max-sessions=0",
            "--netplay-join-rate-per-address=0/s",
            "--netplay-create-rate-per-address=lots",
            "--netplay-sweep-interval=0s",
            "--netplay-idle-timeout=0s",
        ] {
            assert!(load(&["--tls-generate=h", flag], &[]).is_err(), "{flag}");
        }
        let err = load(&["--tls-generate=h", "--netplay", "--http=false"], &[]).unwrap_err().to_string();
        assert!(err.contains("--netplay needs the HTTP listener"), "{err}");
    }

    /// A relay serving only netplay rooms needs no key and no public pattern: `--netplay` is an
    /// access mode of its own (its tokens are the relay's).
    #[test]
    fn netplay_alone_counts_as_access_control() {
        let config = load_strict(&["--tls-generate=h", "--netplay"], &[]).unwrap();
        assert!(config.netplay.enabled);
        assert!(config.auth.key.is_none() && config.auth.public_publish.is_empty());
        let err = load_strict(&["--tls-generate=h", "--netplay=false"], &[]).unwrap_err().to_string();
        assert!(err.contains("no access control configured") && err.contains("--netplay"), "{err}");
        // Beside an auth server too: netplay tokens never reach it.
        assert!(load_strict(&["--tls-generate=h", "--netplay", "--auth-url=http://127.0.0.1:1/"], &[]).is_ok());
    }
}
