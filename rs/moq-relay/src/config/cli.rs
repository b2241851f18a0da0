//! The command-line and `MOQ_*` environment layers: one clap definition, parsed once from the
//! arguments and once from the variables, so each layer can be told apart from the other.

use std::{error::Error as _, ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{CommandFactory, FromArgMatches, Parser};

use super::ops::{MaybeAddr, Secret};

/// Command line. Defaults are documented here but applied by the section modules
/// ([`super::listen`], [`super::quic`], [`super::ops`], [`super::telemetry`]),
/// because a clap default would hide whether the env or the file set a value.
#[derive(Parser, Debug)]
#[command(name = "moq-relay", version, about = "A moq-lite relay")]
pub(super) struct Cli {
    /// TOML configuration file (same as --config).
    #[arg(value_name = "FILE")]
    pub(super) file: Option<PathBuf>,

    /// TOML configuration file; flags and MOQ_* variables override its values.
    #[arg(long, env = "MOQ_CONFIG", value_name = "FILE", conflicts_with = "file")]
    pub(super) config: Option<PathBuf>,

    /// Print every metric the relay exports (name, kind, unit, labels, help, buckets) as JSON
    /// and exit; must come first (main.rs answers it before reading any configuration).
    #[arg(long)]
    pub(super) list_metrics: bool,

    #[command(flatten)]
    pub(super) settings: Settings,
}

/// One configuration layer: every field is optional so layers can be merged.
#[derive(clap::Args, Debug, Default, Clone, PartialEq)]
pub(super) struct Settings {
    /// UDP address(es) for QUIC and WebTransport; the HTTP listener binds the same TCP
    /// address(es). Repeat the flag or separate with commas. [default: [::]:4443]
    #[arg(long, env = "MOQ_LISTEN", value_name = "ADDR", value_delimiter = ',')]
    pub(super) listen: Option<Vec<SocketAddr>>,

    /// TLS certificate chain (PEM). Requires --tls-key; excludes --tls-generate.
    #[arg(long, env = "MOQ_TLS_CERT", value_name = "PEM")]
    pub(super) tls_cert: Option<PathBuf>,

    /// TLS private key (PEM). Requires --tls-cert.
    #[arg(long, env = "MOQ_TLS_KEY", value_name = "PEM")]
    pub(super) tls_key: Option<PathBuf>,

    /// Generate a self-signed certificate (valid < 14 days, for development and
    /// browser certificate pinning) for these hostnames/IPs, comma-separated,
    /// e.g. localhost,127.0.0.1,::1. Excludes --tls-cert/--tls-key.
    #[arg(long, env = "MOQ_TLS_GENERATE", value_name = "HOST", value_delimiter = ',')]
    pub(super) tls_generate: Option<Vec<String>>,

    /// Serve the HTTP endpoints (/certificate.sha256, /announced, ...) on TCP beside
    /// QUIC. [default: true]
    #[arg(long, env = "MOQ_HTTP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(super) http: Option<bool>,

    /// Replaced by --auth-public-publish (patterns, e.g. `live/**`); refused with a migration
    /// message.
    #[arg(long, env = "MOQ_PUBLISH_ALLOW", value_name = "PREFIX", value_delimiter = ',', hide = true)]
    pub(super) publish_allow: Option<Vec<String>>,

    /// Replaced by --auth-public-subscribe; refused with a migration message.
    #[arg(long, env = "MOQ_SUBSCRIBE_ALLOW", value_name = "PREFIX", value_delimiter = ',', hide = true)]
    pub(super) subscribe_allow: Option<Vec<String>>,

    /// Verify the `?jwt=` tokens of sessions (and the token in a raw-QUIC lite-05+ SETUP Path)
    /// with this JWK file, or with `{kid}.jwk` from this directory chosen by the token's `kid`.
    /// Keys are re-read when their files change. [default: none]
    #[arg(long, env = "MOQ_AUTH_KEY", value_name = "FILE_OR_DIR")]
    pub(super) auth_key: Option<PathBuf>,

    /// Path patterns anyone may publish and subscribe to without a token, rooted at `/`:
    /// `live/**` a subtree, `**` everything, `room/*/cam` one segment. Repeatable. [default: none]
    #[arg(long, env = "MOQ_AUTH_PUBLIC", value_name = "PATTERN", value_delimiter = ',')]
    pub(super) auth_public: Option<Vec<String>>,

    /// Path patterns anyone may publish to without a token (added to --auth-public). [default: none]
    #[arg(long, env = "MOQ_AUTH_PUBLIC_PUBLISH", value_name = "PATTERN", value_delimiter = ',')]
    pub(super) auth_public_publish: Option<Vec<String>>,

    /// Path patterns anyone may subscribe to without a token (added to --auth-public). [default: none]
    #[arg(long, env = "MOQ_AUTH_PUBLIC_SUBSCRIBE", value_name = "PATTERN", value_delimiter = ',')]
    pub(super) auth_public_subscribe: Option<Vec<String>>,

    /// Ask this auth server about every session (the reference's JSON contract: connect,
    /// revalidate, end): http:// on loopback only, https://, or unix:///path. Excludes
    /// --auth-key and --auth-public*. [default: none]
    #[arg(long, env = "MOQ_AUTH_URL", value_name = "URL")]
    pub(super) auth_url: Option<String>,

    /// How long the auth server may take to answer before the session is refused. [default: 10s]
    #[arg(long, env = "MOQ_AUTH_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) auth_timeout: Option<Duration>,

    /// Append one JSON line per access decision, revalidation, limit hit and operator action to
    /// this file (also sent as OTLP log records named `moq.auth.*`). [default: none]
    #[arg(long, env = "MOQ_AUDIT_LOG", value_name = "FILE")]
    pub(super) audit_log: Option<PathBuf>,

    /// Live sessions one client address may hold (IPv6: one /64). [default: 100]
    #[arg(long, env = "MOQ_LIMIT_SESSIONS_PER_ADDRESS", value_name = "COUNT")]
    pub(super) limit_sessions_per_address: Option<usize>,

    /// Live sessions presenting tokens of one subject (`sub` claim). [default: 1000]
    #[arg(long, env = "MOQ_LIMIT_SESSIONS_PER_SUBJECT", value_name = "COUNT")]
    pub(super) limit_sessions_per_subject: Option<usize>,

    /// New sessions per second one client address may open, sustained (bursts of twice this
    /// pass). [default: 20]
    #[arg(long, env = "MOQ_LIMIT_SESSION_RATE_PER_ADDRESS", value_name = "PER_SECOND")]
    pub(super) limit_session_rate_per_address: Option<f64>,

    /// Broadcasts one session may have announced at once (at most 4096); more are ignored.
    /// [default: 1024]
    #[arg(long, env = "MOQ_LIMIT_ANNOUNCES_PER_SESSION", value_name = "COUNT")]
    pub(super) limit_announces_per_session: Option<usize>,

    /// Subscriptions one session may run at once; more are refused on their stream. [default: 1024]
    #[arg(long, env = "MOQ_LIMIT_SUBSCRIPTIONS_PER_SESSION", value_name = "COUNT")]
    pub(super) limit_subscriptions_per_session: Option<usize>,

    /// From a client's first packet to its request being known (QUIC, TLS and the WebTransport
    /// CONNECT, or a raw-QUIC client's SETUP); slower clients are refused. [default: 10s]
    #[arg(long, env = "MOQ_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) handshake_timeout: Option<Duration>,

    /// Most bytes of a WebSocket upgrade request's head (at least 8192). [default: 16384]
    #[arg(long, env = "MOQ_LIMIT_WEBSOCKET_UPGRADE_BYTES", value_name = "BYTES")]
    pub(super) limit_websocket_upgrade_bytes: Option<usize>,

    /// Serve netplay sessions (docs/netplay.md): rooms created and joined over the public HTTP
    /// listener (/api/netplay/...), with tokens the relay signs itself. Counts as access control
    /// on its own. [default: false]
    #[arg(long, env = "MOQ_NETPLAY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(super) netplay: Option<bool>,

    /// Shortest TTL a netplay session may ask for, in minutes. [default: 5]
    #[arg(long, env = "MOQ_NETPLAY_MIN_TTL_MINUTES", value_name = "MINUTES")]
    pub(super) netplay_min_ttl_minutes: Option<u32>,

    /// Longest TTL a netplay session may ask for, in minutes (at most 1440). [default: 240]
    #[arg(long, env = "MOQ_NETPLAY_MAX_TTL_MINUTES", value_name = "MINUTES")]
    pub(super) netplay_max_ttl_minutes: Option<u32>,

    /// TTL of a netplay session that asks for none, in minutes. [default: 60]
    #[arg(long, env = "MOQ_NETPLAY_DEFAULT_TTL_MINUTES", value_name = "MINUTES")]
    pub(super) netplay_default_ttl_minutes: Option<u32>,

    /// Participants one netplay session takes, its host not counted. [default: 8]
    #[arg(long, env = "MOQ_NETPLAY_MAX_PARTICIPANTS", value_name = "COUNT")]
    pub(super) netplay_max_participants: Option<usize>,

    /// Netplay sessions live at once; more creates are refused (503 capacity). [default: 10000]
    #[arg(long, env = "MOQ_NETPLAY_MAX_SESSIONS", value_name = "COUNT")]
    pub(super) netplay_max_sessions: Option<usize>,

    /// Join attempts one client address may make (IPv6: one /64), as COUNT/PERIOD[:BURST]:
    /// 1/s:5 is one a second with bursts of 5, which makes guessing a join code hopeless.
    /// [default: 1/s:5]
    #[arg(long, env = "MOQ_NETPLAY_JOIN_RATE_PER_ADDRESS", value_name = "RATE")]
    pub(super) netplay_join_rate_per_address: Option<crate::netplay::Rate>,

    /// Netplay sessions one client address may create, as COUNT/PERIOD[:BURST]. Rooms nobody
    /// connects to end after --netplay-idle-timeout, so at the default one address holds about
    /// 50 such rooms at most. [default: 10/min:5]
    #[arg(long, env = "MOQ_NETPLAY_CREATE_RATE_PER_ADDRESS", value_name = "RATE")]
    pub(super) netplay_create_rate_per_address: Option<crate::netplay::Rate>,

    /// How often the cleanup sweep ends netplay sessions past their TTL. [default: 30s]
    #[arg(long, env = "MOQ_NETPLAY_SWEEP_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) netplay_sweep_interval: Option<Duration>,

    /// How long a netplay host whose last MoQ session closed has to come back before its
    /// session ends (hostLeft). [default: 10s]
    #[arg(long, env = "MOQ_NETPLAY_HOST_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) netplay_host_grace: Option<Duration>,

    /// A netplay session nobody has a MoQ session in for this long ends (timeout), counted from
    /// its creation until the first connection. [default: 5m]
    #[arg(long, env = "MOQ_NETPLAY_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) netplay_idle_timeout: Option<Duration>,

    /// A peer relay to dial (docs/CLUSTER.md): https:// (WebTransport), http:// (WebTransport,
    /// pinning the peer's development certificate from /certificate.sha256) or moqt:// (raw
    /// QUIC). `?cost=N` prices the link (not sent); `?jwt=TOKEN` is sent. Repeat the flag or
    /// separate with commas; at most 64 peers. [default: none]
    #[arg(long, env = "MOQ_CLUSTER_CONNECT", value_name = "URL", value_delimiter = ',')]
    pub(super) cluster_connect: Option<Vec<String>>,

    /// File holding the token presented to peers whose URL has no `?jwt=` (re-read at each
    /// dial). [default: none]
    #[arg(long, env = "MOQ_CLUSTER_TOKEN", value_name = "FILE")]
    pub(super) cluster_token: Option<PathBuf>,

    /// This relay's name in cluster logs, /nodes and metrics; also fixes the hop id when
    /// --cluster-id is not given. Defaults to the HOSTNAME variable (hop id then random).
    #[arg(long, env = "MOQ_CLUSTER_NODE", value_name = "NAME")]
    pub(super) cluster_node: Option<String>,

    /// This relay's hop id in announcement chains (1 <= N < 2^53). Defaults to a hash of
    /// --cluster-node when given, else a random id per process.
    #[arg(long, env = "MOQ_CLUSTER_ID", value_name = "N")]
    pub(super) cluster_id: Option<u64>,

    /// A JSON array of peer URLs (as --cluster-connect), re-read every
    /// --cluster-connect-api-interval: peers added are dialed, peers removed hung up.
    /// [default: none]
    #[arg(long, env = "MOQ_CLUSTER_CONNECT_API", value_name = "FILE")]
    pub(super) cluster_connect_api: Option<PathBuf>,

    /// How often the --cluster-connect-api file is re-read. [default: 10s]
    #[arg(long, env = "MOQ_CLUSTER_CONNECT_API_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) cluster_connect_api_interval: Option<Duration>,

    /// Longest hop chain accepted or forwarded (1-32). [default: 32]
    #[arg(long, env = "MOQ_CLUSTER_MAX_HOPS", value_name = "N")]
    pub(super) cluster_max_hops: Option<usize>,

    /// On shutdown, how long sessions get to leave after GOAWAY before they are
    /// closed, e.g. 5s or 500ms. [default: 5s]
    #[arg(long, env = "MOQ_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) drain_timeout: Option<Duration>,

    /// Maximum concurrent QUIC streams a peer may keep open, for each of bidi and uni. A session
    /// starts with 64 (each credited stream costs memory from the handshake on) and raises the
    /// peer's credit as it keeps more open, up to this. [default: 1000]
    #[arg(long, env = "MOQ_MAX_STREAMS", value_name = "COUNT")]
    pub(super) max_streams: Option<u64>,

    /// moq-lite versions the relay speaks, comma-separated (e.g. moq-lite-05,moq-lite-04); a client
    /// is served in the one its ALPN or `wt-protocol` offer selects, never guessed.
    /// [default: moq-lite-06,moq-lite-05,moq-lite-04,moq-lite-03]
    #[arg(long = "moq-version", env = "MOQ_VERSION", value_name = "VERSION", value_delimiter = ',')]
    pub(super) versions: Option<Vec<moq_lite::Version>>,

    /// Sessions admitted at once, handshakes in progress included; further connection
    /// attempts are refused and counted as sessions_total{reason="capacity"}. [default: 10000]
    #[arg(long, env = "MOQ_MAX_SESSIONS", value_name = "COUNT")]
    pub(super) max_sessions: Option<usize>,

    /// Refuse new sessions while the relay's resident memory is above this many MiB (counted as
    /// sessions_total{reason="memory"}); admitted sessions are never closed to make room.
    /// [default: none]
    #[arg(long, env = "MOQ_MEMORY_BUDGET_MIB", value_name = "MIB")]
    pub(super) memory_budget_mib: Option<u64>,

    /// Worker threads, each running the connections placed on it: 0 = one per CPU. New
    /// connections fill the first worker until it is busy --worker-spill-at of its time, so a
    /// lightly loaded relay runs on one thread. [default: 0]
    #[arg(long, env = "MOQ_WORKER_THREADS", value_name = "COUNT")]
    pub(super) worker_threads: Option<usize>,

    /// Busy fraction (0 < f <= 1) above which a worker takes no new connection while another
    /// is below it. [default: 0.5]
    #[arg(long, env = "MOQ_WORKER_SPILL_AT", value_name = "FRACTION")]
    pub(super) worker_spill_at: Option<f64>,

    /// Close QUIC connections silent for this long. [default: 10s]
    #[arg(long, env = "MOQ_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) idle_timeout: Option<Duration>,

    /// QUIC keep-alive interval; must be shorter than the idle timeout. [default: 3s]
    #[arg(long, env = "MOQ_KEEP_ALIVE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) keep_alive: Option<Duration>,

    /// Log filter, e.g. info or moq_relay=debug (RUST_LOG takes precedence).
    /// [default: info]
    #[arg(long, env = "MOQ_LOG_LEVEL", value_name = "FILTER")]
    pub(super) log_level: Option<String>,

    /// TCP address of the operator HTTP listener, or "off". Keep it private.
    /// [default: 127.0.0.1:9101]
    #[arg(long, env = "MOQ_OPS_LISTEN", value_name = "ADDR")]
    pub(super) ops_listen: Option<MaybeAddr>,

    /// Bearer token required by the operator listener. Prefer the environment
    /// variable: flags are visible to other local users. [default: none]
    #[arg(long, env = "MOQ_OPS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(super) ops_token: Option<Secret>,

    /// Broadcasts that get their own metric series; beyond this they share
    /// broadcast="_other" and moq_relay_metric_cardinality_overflow_total counts. [default: 200]
    #[arg(long, env = "MOQ_METRICS_MAX_BROADCASTS", value_name = "COUNT")]
    pub(super) metrics_max_broadcasts: Option<usize>,

    /// Namespaces (first path segments) that get their own metric series. [default: 50]
    #[arg(long, env = "MOQ_METRICS_MAX_NAMESPACES", value_name = "COUNT")]
    pub(super) metrics_max_namespaces: Option<usize>,

    /// How long the series of an ended broadcast stay before they disappear. [default: 5m]
    #[arg(long, env = "MOQ_METRICS_LINGER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) metrics_linger: Option<Duration>,

    /// OTLP collector endpoint for traces and logs, e.g. http://localhost:4317 (gRPC) or
    /// http://localhost:4318 (HTTP). Falls back to OTEL_EXPORTER_OTLP_ENDPOINT; unset = export off.
    #[arg(long, env = "MOQ_OTLP_ENDPOINT", value_name = "URL")]
    pub(super) otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf. Falls back to OTEL_EXPORTER_OTLP_PROTOCOL, then to
    /// http/protobuf for port 4318 and grpc otherwise.
    #[arg(long, env = "MOQ_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub(super) otlp_protocol: Option<String>,

    /// Fraction of new traces sampled (parent-based: traces started by clients follow the
    /// client's decision). Falls back to OTEL_TRACES_SAMPLER_ARG. [default: 1.0]
    #[arg(long, env = "MOQ_TRACE_SAMPLE_RATIO", value_name = "RATIO")]
    pub(super) trace_sample_ratio: Option<f64>,

    /// Peer IP addresses in logs and spans: full, truncated (/24, /48) or omitted. [default: full]
    #[arg(long, env = "MOQ_PEER_IP", value_name = "MODE")]
    pub(super) peer_ip: Option<moq_telemetry::redact::PeerIp>,

    /// deployment.environment resource attribute. [default: development]
    #[arg(long, env = "MOQ_ENVIRONMENT", value_name = "NAME")]
    pub(super) environment: Option<String>,
}

impl Cli {
    /// The command-line layer: `args`, including the program name.
    ///
    /// clap would read the real process environment itself; the `env` attributes are stripped
    /// so that variables only come in through [`Cli::vars`], as a layer of their own.
    pub(super) fn flags(args: &[OsString]) -> Result<Self, clap::Error> {
        let full = Self::command();
        parse(full.clone(), args).map_err(|err| match err.kind() {
            // Render help/version with the full command so it lists the variables.
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                full.try_get_matches_from(args).unwrap_err()
            }
            _ => err,
        })
    }

    /// The environment layer: each variable `env` has becomes the equivalent `--flag=value`.
    pub(super) fn vars(program: OsString, env: impl Fn(&str) -> Option<OsString>) -> anyhow::Result<Self> {
        let full = Self::command();
        let mut env_args = vec![program.clone()];
        for arg in full.get_arguments() {
            let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let name = name.to_string_lossy();
            // Empty variables count as unset, as clap treats them.
            let Some(value) = env(&name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(&value);

            // Check it alone so the error names the variable rather than the flag.
            if let Err(err) = parse(full.clone(), &[program.clone(), flag.clone()]) {
                let reason = match err.source() {
                    Some(source) => source.to_string(),
                    None => {
                        let values: Vec<_> =
                            arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
                        format!("expected one of: {}", values.join(", "))
                    }
                };
                bail!("invalid {name}={value:?}: {reason}");
            }
            env_args.push(flag);
        }
        parse(full, &env_args).context("invalid MOQ_* environment")
    }
}

/// Parses `args` with `cmd` minus its `env` attributes.
fn parse(cmd: clap::Command, args: &[OsString]) -> Result<Cli, clap::Error> {
    let mut matches = cmd.mut_args(|arg| arg.env(None::<&'static str>)).try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// The `[default: X]` texts are written by hand (clap's own defaults would hide which layer
    /// set a value), while the defaults are applied by the section modules, partly from
    /// moq-lite's types: giving each shown default explicitly must change nothing.
    #[test]
    fn help_defaults_are_the_applied_defaults() {
        let base = load(&["--tls-generate=h", "--auth-public=**"], &[]).unwrap();
        // Left unset by the relay: moq-telemetry applies these after the OTEL_* variables.
        let downstream = ["trace-sample-ratio", "environment"];
        assert_eq!((base.trace_sample_ratio, &base.environment), (None, &None));

        let cmd = Cli::command();
        let mut checked = Vec::new();
        for arg in cmd.get_arguments() {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_long_help().or(arg.get_help())) else {
                continue;
            };
            let help = help.to_string();
            let Some(start) = help.rfind("[default: ") else {
                continue;
            };
            let shown = help[start + "[default: ".len()..]
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("--{long}: [default: ...] must end the help text: {help}"));
            // "none": the setting stays unset.
            if shown == "none" || downstream.contains(&long) {
                continue;
            }
            // `""` is the empty string.
            let value = shown.trim_matches('"');
            let explicit = load(&["--tls-generate=h", "--auth-public=**", &format!("--{long}={value}")], &[])
                .unwrap_or_else(|err| panic!("--{long}={value}: {err:#}"));
            assert_eq!(explicit, base, "--{long}: --help says [default: {shown}], the relay applies another");
            checked.push(long);
        }

        for long in [
            "max-streams",
            "idle-timeout",
            "keep-alive",
            "metrics-max-broadcasts",
            "metrics-max-namespaces",
            "metrics-linger",
            "drain-timeout",
            "max-sessions",
            "worker-spill-at",
            "worker-threads",
            "listen",
            "http",
            "auth-timeout",
            "limit-sessions-per-address",
            "limit-sessions-per-subject",
            "limit-session-rate-per-address",
            "limit-announces-per-session",
            "limit-subscriptions-per-session",
            "handshake-timeout",
            "limit-websocket-upgrade-bytes",
            "log-level",
            "ops-listen",
            "peer-ip",
            "netplay",
            "netplay-min-ttl-minutes",
            "netplay-max-ttl-minutes",
            "netplay-default-ttl-minutes",
            "netplay-max-participants",
            "netplay-max-sessions",
            "netplay-join-rate-per-address",
            "netplay-create-rate-per-address",
            "netplay-sweep-interval",
            "netplay-host-grace",
            "netplay-idle-timeout",
            "cluster-connect-api-interval",
            "cluster-max-hops",
        ] {
            assert!(checked.contains(&long), "--{long}: no [default: ...] in its help was checked");
        }
    }
}
