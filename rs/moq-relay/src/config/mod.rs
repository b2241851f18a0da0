//! Relay configuration.
//!
//! Settings are layered, highest priority first:
//! command-line flags > `MOQ_*` environment variables > TOML file > defaults.
//!
//! Every layer is parsed into the same all-optional [`Settings`] shape so that
//! "unset" can be told apart from "set to the default", then the layers are
//! merged field by field and validated into a [`Config`].
//!
//! - [`cli`]: the flags and `MOQ_*` variables (one clap definition, two layers);
//! - [`file`]: the TOML file;
//! - one module per concern applies its defaults and checks its values: [`listen`]
//!   (addresses, TLS, HTTP, publish/subscribe prefixes), [`quic`] (streams, sessions,
//!   workers, timeouts), [`ops`] (operator listener and metric labels), [`telemetry`]
//!   (logs, traces, peer addresses), [`netplay`] (netplay sessions) and [`cluster`] (peers, hop id). Defaults the library already has are taken from it
//!   ([`moq_lite::transport::QuicOptions`], [`moq_lite::telemetry::LabelLimits`]).

mod auth;
mod cli;
mod cluster;
mod file;
mod listen;
mod netplay;
mod ops;
mod quic;
mod telemetry;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use cli::{Cli, Settings};

pub use auth::Auth;
pub use cluster::{hop_id_of, Cluster, PeerUrl, MAX_PEERS};
pub use listen::TlsSource;
pub use ops::Secret;
pub use quic::MAX_WORKER_THREADS;

/// The fully resolved relay configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The TOML file the settings were read from, if any.
    pub file: Option<PathBuf>,
    /// UDP addresses for QUIC and WebTransport; the HTTP listener binds the same TCP addresses.
    pub listen: Vec<SocketAddr>,
    /// Where the TLS certificate comes from.
    pub tls: TlsSource,
    /// Whether to serve the HTTP endpoints on TCP beside QUIC.
    pub http: bool,
    /// Who may do what: token keys, public patterns, auth server, audit log.
    pub auth: Auth,
    /// What one client may take.
    pub limits: crate::access::limits::Limits,
    /// How long sessions may take to leave after GOAWAY before they are closed.
    pub drain_timeout: Duration,
    /// moq-lite versions offered, most preferred first.
    pub versions: Vec<moq_lite::Version>,
    /// Maximum concurrent QUIC streams per direction and type.
    pub max_streams: u64,
    /// Sessions (including handshakes in progress) the relay admits at once; more are refused.
    pub max_sessions: usize,
    /// Resident memory above which new sessions are refused (`--memory-budget-mib`), in bytes.
    pub memory_budget: Option<u64>,
    /// Worker threads, each a single-threaded runtime: 0 = one per CPU.
    pub worker_threads: usize,
    /// A new connection goes to the first worker busy less than this fraction of its time.
    pub worker_spill_at: f64,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// Default log filter (RUST_LOG, when set, takes precedence in the logger).
    pub log_level: String,
    /// Address of the operator HTTP listener; `None` disables it.
    pub ops_listen: Option<SocketAddr>,
    /// Bearer token required by the operator listener.
    pub ops_token: Option<Secret>,
    /// Broadcasts with their own metric series; the rest share `broadcast="_other"`.
    pub metrics_max_broadcasts: usize,
    /// Namespaces with their own metric series; the rest share `namespace="_other"`.
    pub metrics_max_namespaces: usize,
    /// How long series of ended broadcasts remain before they disappear.
    pub metrics_linger: Duration,
    /// OTLP collector endpoint; `None` falls back to `OTEL_EXPORTER_OTLP_ENDPOINT`, else off.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; `None` falls back to `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<String>,
    /// Head sampling ratio for root traces; `None` falls back to `OTEL_TRACES_SAMPLER_ARG`, else 1.
    pub trace_sample_ratio: Option<f64>,
    /// How peer IP addresses appear in logs and spans: full, truncated or omitted.
    pub peer_ip: moq_telemetry::redact::PeerIp,
    /// `deployment.environment` resource attribute; `None` falls back to `OTEL_RESOURCE_ATTRIBUTES`.
    pub environment: Option<String>,
    /// Netplay sessions (`--netplay*`); served only when `enabled`.
    pub netplay: crate::netplay::Settings,
    /// Clustering (`--cluster-*`): the peers dialed, this relay's name and hop id.
    pub cluster: Cluster,
}

/// Load the configuration from the process arguments and environment.
///
/// `--help`, `--version` and usage errors print and exit, like any CLI.
pub fn load() -> anyhow::Result<Config> {
    load_from(std::env::args_os(), |name| std::env::var_os(name)).map_err(|err| match err.downcast::<clap::Error>() {
        Ok(err) => err.exit(),
        Err(err) => err,
    })
}

/// Load the configuration from `args` (including the program name) and the
/// environment variables visible through `env`.
///
/// Usage errors and `--help` are returned as a [`clap::Error`] inside the `anyhow::Error`.
pub fn load_from<I, T, E>(args: I, env: E) -> anyhow::Result<Config>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    E: Fn(&str) -> Option<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let flags = Cli::flags(&args)?;
    let program = args.first().cloned().unwrap_or_else(|| "moq-relay".into());
    let vars = Cli::vars(program, env)?;

    let path = flags.file.or(flags.config).or(vars.config);
    let file = match &path {
        Some(path) => file::read(path)?,
        None => Settings::default(),
    };

    flags.settings.or(vars.settings).or(file).resolve(path)
}

impl Settings {
    /// Fill every unset field of `self` from `lower`.
    fn or(self, lower: Self) -> Self {
        Self {
            listen: self.listen.or(lower.listen),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_generate: self.tls_generate.or(lower.tls_generate),
            http: self.http.or(lower.http),
            publish_allow: self.publish_allow.or(lower.publish_allow),
            subscribe_allow: self.subscribe_allow.or(lower.subscribe_allow),
            auth_key: self.auth_key.or(lower.auth_key),
            auth_public: self.auth_public.or(lower.auth_public),
            auth_public_publish: self.auth_public_publish.or(lower.auth_public_publish),
            auth_public_subscribe: self.auth_public_subscribe.or(lower.auth_public_subscribe),
            auth_url: self.auth_url.or(lower.auth_url),
            auth_timeout: self.auth_timeout.or(lower.auth_timeout),
            audit_log: self.audit_log.or(lower.audit_log),
            limit_sessions_per_address: self.limit_sessions_per_address.or(lower.limit_sessions_per_address),
            limit_sessions_per_subject: self.limit_sessions_per_subject.or(lower.limit_sessions_per_subject),
            limit_session_rate_per_address: self
                .limit_session_rate_per_address
                .or(lower.limit_session_rate_per_address),
            limit_announces_per_session: self.limit_announces_per_session.or(lower.limit_announces_per_session),
            limit_subscriptions_per_session: self
                .limit_subscriptions_per_session
                .or(lower.limit_subscriptions_per_session),
            handshake_timeout: self.handshake_timeout.or(lower.handshake_timeout),
            limit_websocket_upgrade_bytes: self.limit_websocket_upgrade_bytes.or(lower.limit_websocket_upgrade_bytes),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            versions: self.versions.or(lower.versions),
            max_streams: self.max_streams.or(lower.max_streams),
            max_sessions: self.max_sessions.or(lower.max_sessions),
            memory_budget_mib: self.memory_budget_mib.or(lower.memory_budget_mib),
            worker_threads: self.worker_threads.or(lower.worker_threads),
            worker_spill_at: self.worker_spill_at.or(lower.worker_spill_at),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            keep_alive: self.keep_alive.or(lower.keep_alive),
            log_level: self.log_level.or(lower.log_level),
            ops_listen: self.ops_listen.or(lower.ops_listen),
            ops_token: self.ops_token.or(lower.ops_token),
            metrics_max_broadcasts: self.metrics_max_broadcasts.or(lower.metrics_max_broadcasts),
            metrics_max_namespaces: self.metrics_max_namespaces.or(lower.metrics_max_namespaces),
            metrics_linger: self.metrics_linger.or(lower.metrics_linger),
            otlp_endpoint: self.otlp_endpoint.or(lower.otlp_endpoint),
            otlp_protocol: self.otlp_protocol.or(lower.otlp_protocol),
            trace_sample_ratio: self.trace_sample_ratio.or(lower.trace_sample_ratio),
            peer_ip: self.peer_ip.or(lower.peer_ip),
            environment: self.environment.or(lower.environment),
            netplay: self.netplay.or(lower.netplay),
            netplay_min_ttl_minutes: self.netplay_min_ttl_minutes.or(lower.netplay_min_ttl_minutes),
            netplay_max_ttl_minutes: self.netplay_max_ttl_minutes.or(lower.netplay_max_ttl_minutes),
            netplay_default_ttl_minutes: self.netplay_default_ttl_minutes.or(lower.netplay_default_ttl_minutes),
            netplay_max_participants: self.netplay_max_participants.or(lower.netplay_max_participants),
            netplay_max_sessions: self.netplay_max_sessions.or(lower.netplay_max_sessions),
            netplay_join_rate_per_address: self.netplay_join_rate_per_address.or(lower.netplay_join_rate_per_address),
            netplay_create_rate_per_address: self
                .netplay_create_rate_per_address
                .or(lower.netplay_create_rate_per_address),
            netplay_sweep_interval: self.netplay_sweep_interval.or(lower.netplay_sweep_interval),
            netplay_host_grace: self.netplay_host_grace.or(lower.netplay_host_grace),
            netplay_idle_timeout: self.netplay_idle_timeout.or(lower.netplay_idle_timeout),
            cluster_connect: self.cluster_connect.or(lower.cluster_connect),
            cluster_token: self.cluster_token.or(lower.cluster_token),
            cluster_node: self.cluster_node.or(lower.cluster_node),
            cluster_id: self.cluster_id.or(lower.cluster_id),
            cluster_connect_api: self.cluster_connect_api.or(lower.cluster_connect_api),
            cluster_connect_api_interval: self.cluster_connect_api_interval.or(lower.cluster_connect_api_interval),
            cluster_max_hops: self.cluster_max_hops.or(lower.cluster_max_hops),
        }
    }

    /// Apply defaults and check the result, section by section (in this order, so the first
    /// error reported is the same whatever else is wrong).
    fn resolve(self, file: Option<PathBuf>) -> anyhow::Result<Config> {
        let listen = listen::Listen::resolve(&self)?;
        let quic = quic::Quic::resolve(&self)?;
        let ops = ops::Ops::resolve(&self);
        let telemetry = telemetry::Telemetry::resolve(&self);
        let (auth, limits) = auth::resolve(&self)?;
        let netplay = netplay::resolve(&self)?;
        let cluster = cluster::resolve(&self)?;

        Ok(Config {
            file,
            listen: listen.addrs,
            tls: listen.tls,
            http: listen.http,
            auth,
            limits,
            drain_timeout: quic.drain_timeout,
            versions: quic.versions,
            max_streams: quic.max_streams,
            max_sessions: quic.max_sessions,
            memory_budget: quic.memory_budget,
            worker_threads: quic.worker_threads,
            worker_spill_at: quic.worker_spill_at,
            idle_timeout: quic.idle_timeout,
            keep_alive: quic.keep_alive,
            log_level: telemetry.log_level,
            ops_listen: ops.listen,
            ops_token: ops.token,
            metrics_max_broadcasts: ops.metrics_max_broadcasts,
            metrics_max_namespaces: ops.metrics_max_namespaces,
            metrics_linger: ops.metrics_linger,
            otlp_endpoint: telemetry.otlp_endpoint,
            otlp_protocol: telemetry.otlp_protocol,
            trace_sample_ratio: telemetry.trace_sample_ratio,
            peer_ip: telemetry.peer_ip,
            environment: telemetry.environment,
            netplay,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Loads with `args` after the program name and only the variables in `env`.
    /// Tests of other sections don't care about access control: unless they configure it,
    /// everything is public (`MOQ_AUTH_PUBLIC=**`), which the relay itself never assumes.
    pub(super) fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let configured =
            args.iter().any(|a| a.starts_with("--auth")) || env.iter().any(|(k, _)| k.starts_with("MOQ_AUTH"));
        let mut env = env.to_vec();
        if !configured {
            env.push(("MOQ_AUTH_PUBLIC", "**"));
        }
        load_strict(args, &env)
    }

    /// Loads with `args` after the program name and only the variables in `env`.
    pub(super) fn load_strict(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env: HashMap<String, OsString> = env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        let args = std::iter::once("moq-relay").chain(args.iter().copied());
        load_from(args, |name| env.get(name).cloned())
    }

    /// A TOML file in the temp dir, removed on drop.
    pub(super) struct TempToml(pub(super) PathBuf);

    impl TempToml {
        pub(super) fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("moq-relay-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        pub(super) fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn defaults() {
        let config = load(&["--tls-generate", "localhost,127.0.0.1,::1"], &[]).unwrap();
        assert_eq!(config.listen, vec!["[::]:4443".parse().unwrap()]);
        assert_eq!(config.tls, TlsSource::Generate(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]));
        assert!(config.http);
        assert_eq!(config.limits, crate::access::limits::Limits::default());
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.versions, moq_lite::Version::ALL.to_vec());
        assert_eq!(config.max_streams, 1_000);
        assert_eq!(config.max_sessions, 10_000);
        assert_eq!(config.worker_threads, 0);
        assert_eq!(config.worker_spill_at, 0.5);
        assert_eq!(config.idle_timeout, Duration::from_secs(10));
        assert_eq!(config.keep_alive, Duration::from_secs(3));
        assert_eq!(config.log_level, "info");
        assert_eq!(config.ops_listen, Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(config.ops_token, None);
        assert_eq!(config.file, None);
    }

    #[test]
    fn layering() {
        let file = TempToml::new(
            "layering",
            r#"
                listen = ["127.0.0.1:1001"]
                log_level = "debug"
                drain_timeout = "1s"

                [tls]
                generate = ["file.example"]

                [quic]
                versions = ["moq-lite-04"]
                max_streams = 11
                max_sessions = 33
                idle_timeout = "20s"

                [ops]
                listen = "off"
                token = "from-file-token"
            "#,
        );
        let env = [
            ("MOQ_CONFIG", file.path()),
            ("MOQ_LISTEN", "127.0.0.1:2001,127.0.0.1:2002"),
            ("MOQ_DRAIN_TIMEOUT", "2s"),
            ("MOQ_MAX_STREAMS", "22"),
            ("MOQ_VERSION", "moq-lite-06,moq-lite-05"),
            ("MOQ_MAX_SESSIONS", "44"),
            ("MOQ_OPS_TOKEN", "from-env-token"),
        ];

        // File over defaults, env over file, flags over env.
        let config = load(&["--drain-timeout", "500ms", "--listen=127.0.0.1:3001"], &env).unwrap();
        use moq_lite::Version::{Lite04, Lite05, Lite06};
        assert_eq!(config.versions, vec![Lite06, Lite05]);
        assert_eq!(config.file.as_deref(), Some(file.0.as_path()));
        assert_eq!(config.listen, vec!["127.0.0.1:3001".parse().unwrap()]);
        assert_eq!(config.drain_timeout, Duration::from_millis(500));
        assert_eq!(config.max_streams, 22);
        assert_eq!(config.max_sessions, 44);
        assert_eq!(config.ops_token, Some(Secret::new("from-env-token")));
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.idle_timeout, Duration::from_secs(20));
        assert_eq!(config.ops_listen, None);
        assert_eq!(config.tls, TlsSource::Generate(vec!["file.example".into()]));
        assert_eq!(config.keep_alive, Duration::from_secs(3));

        // Env over file only.
        let config = load(&[], &env).unwrap();
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.drain_timeout, Duration::from_secs(2));

        // File over defaults only, named by the positional argument.
        let config = load(&[file.path()], &[]).unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:1001".parse().unwrap()]);
        assert_eq!(config.drain_timeout, Duration::from_secs(1));
        assert_eq!(config.max_streams, 11);
        assert_eq!(config.versions, vec![Lite04]);
        assert_eq!(config.max_sessions, 33);
        assert_eq!(config.ops_token, Some(Secret::new("from-file-token")));
    }

    #[test]
    fn versions_are_restricted_by_name_and_unknown_names_refused() {
        let config =
            load(&["--tls-generate=localhost", "--moq-version", "moq-lite-05,moq-lite-05,moq-lite-03"], &[]).unwrap();
        assert_eq!(config.versions, vec![moq_lite::Version::Lite05, moq_lite::Version::Lite03]);
        let err = load(&["--tls-generate=localhost", "--moq-version", "moq-lite-09"], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("moq-lite-09"), "{err:#}");
    }

    #[test]
    fn flags() {
        let config = load(
            &[
                "--tls-cert=cert.pem",
                "--tls-key=key.pem",
                "--listen=127.0.0.1:1",
                "--listen=[::1]:2",
                "--http=false",
                "--auth-public-publish=live/**,demo/**",
                "--auth-key=keys/",
                "--limit-sessions-per-address=7",
                "--ops-listen=[::1]:9",
                "--keep-alive=1s",
                "--idle-timeout=2s",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(config.tls, TlsSource::Files { cert: "cert.pem".into(), key: "key.pem".into() });
        assert_eq!(config.listen.len(), 2);
        assert!(!config.http);
        assert_eq!(config.auth.public_publish, vec!["live/**", "demo/**"]);
        assert!(config.auth.public_subscribe.is_empty());
        assert_eq!(config.auth.key, Some("keys/".into()));
        assert_eq!(config.limits.sessions_per_address, 7);
        assert_eq!(config.ops_listen, Some("[::1]:9".parse().unwrap()));

        let config = load(&["--tls-generate=localhost", "--http"], &[]).unwrap();
        assert!(config.http);
    }

    #[test]
    fn other_errors() {
        let err = load(&["--tls-generate=h"], &[("MOQ_MAX_STREAMS", "lots")]).unwrap_err();
        assert!(err.to_string().contains("MOQ_MAX_STREAMS=\"lots\""), "{err}");
        // Not a usage error of the command line.
        assert!(err.downcast_ref::<clap::Error>().is_none());

        let err = load(&["--tls-generate=h", "--keep-alive=10s"], &[]).unwrap_err();
        assert!(err.to_string().contains("keep alive"), "{err}");

        let err = load(&["--tls-generate=h", "--bogus"], &[]).unwrap_err();
        assert!(err.downcast_ref::<clap::Error>().is_some());
    }

    #[test]
    fn help_lists_env_and_defaults() {
        let err = load(&["--help"], &[]).unwrap_err();
        let err = err.downcast::<clap::Error>().unwrap();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = err.to_string();
        for needle in ["MOQ_LISTEN", "MOQ_OPS_TOKEN", "MOQ_CONFIG", "[default: [::]:4443]", "[default: 5s]"] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
    }
}
