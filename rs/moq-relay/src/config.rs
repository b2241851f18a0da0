//! Relay configuration.
//!
//! Settings are layered, highest priority first:
//! command-line flags > `MOQ_*` environment variables > TOML file > defaults.
//!
//! Every layer is parsed into the same all-optional [`Settings`] shape so that
//! "unset" can be told apart from "set to the default", then the layers are
//! merged field by field and validated into a [`Config`].

use std::{
    ffi::OsString,
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;
use std::error::Error as _;

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
    /// Broadcast path prefixes anyone may publish under ("" = everything).
    pub publish_allow: Vec<String>,
    /// Broadcast path prefixes anyone may subscribe to ("" = everything).
    pub subscribe_allow: Vec<String>,
    /// How long sessions may take to leave after GOAWAY before they are closed.
    pub drain_timeout: Duration,
    /// Maximum concurrent QUIC streams per direction and type.
    pub max_streams: u64,
    /// Sessions (including handshakes in progress) the relay admits at once; more are refused.
    pub max_sessions: usize,
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
}

/// Where the relay's TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files on disk.
    Files { cert: PathBuf, key: PathBuf },
    /// A fresh self-signed certificate for these hostnames/IPs (development).
    Generate(Vec<String>),
}

/// A string that must not end up in logs: `Debug` shows at most its last 4 characters.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for comparison with what a client presents.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Revealing a suffix of a short token would reveal most of it.
        let chars = self.0.chars().count();
        if chars < 12 {
            return f.write_str("****");
        }
        let tail: String = self.0.chars().skip(chars - 4).collect();
        write!(f, "****{tail}")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// An optional socket address: `off` (or `none`) disables the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MaybeAddr(Option<SocketAddr>);

impl FromStr for MaybeAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Self(None)),
            addr => addr.parse().map(|addr| Self(Some(addr))),
        }
    }
}

impl<'de> Deserialize<'de> for MaybeAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), 4443);
const DEFAULT_OPS_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9101);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
// quinn keeps an entry per stream the peer may open, from the handshake on: 10 000 cost 1.1 MiB
// per idle session. Credit is re-issued as streams finish, so 1 000 concurrent is plenty.
const DEFAULT_MAX_STREAMS: u64 = 1_000;
const DEFAULT_MAX_SESSIONS: usize = 10_000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(3);
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_WORKER_SPILL_AT: f64 = 0.5;
pub const MAX_WORKER_THREADS: usize = 1024;
const DEFAULT_METRICS_MAX_BROADCASTS: usize = 200;
const DEFAULT_METRICS_MAX_NAMESPACES: usize = 50;
const DEFAULT_METRICS_LINGER: Duration = Duration::from_secs(300);

/// Command line. Defaults are documented here but applied in [`Settings::resolve`],
/// because a clap default would hide whether the env or the file set a value.
#[derive(Parser, Debug)]
#[command(name = "moq-relay", version, about = "A moq-lite relay")]
struct Cli {
    /// TOML configuration file (same as --config).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// TOML configuration file; flags and MOQ_* variables override its values.
    #[arg(long, env = "MOQ_CONFIG", value_name = "FILE", conflicts_with = "file")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

/// One configuration layer: every field is optional so layers can be merged.
#[derive(clap::Args, Debug, Default, Clone, PartialEq)]
struct Settings {
    /// UDP address(es) for QUIC and WebTransport; the HTTP listener binds the same TCP
    /// address(es). Repeat the flag or separate with commas. [default: [::]:4443]
    #[arg(long, env = "MOQ_LISTEN", value_name = "ADDR", value_delimiter = ',')]
    listen: Option<Vec<SocketAddr>>,

    /// TLS certificate chain (PEM). Requires --tls-key; excludes --tls-generate.
    #[arg(long, env = "MOQ_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM). Requires --tls-cert.
    #[arg(long, env = "MOQ_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,

    /// Generate a self-signed certificate (valid < 14 days, for development and
    /// browser certificate pinning) for these hostnames/IPs, comma-separated,
    /// e.g. localhost,127.0.0.1,::1. Excludes --tls-cert/--tls-key.
    #[arg(long, env = "MOQ_TLS_GENERATE", value_name = "HOST", value_delimiter = ',')]
    tls_generate: Option<Vec<String>>,

    /// Serve the HTTP endpoints (/certificate.sha256, /announced, ...) on TCP beside
    /// QUIC. [default: true]
    #[arg(long, env = "MOQ_HTTP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    http: Option<bool>,

    /// Broadcast path prefixes anyone may publish under, comma-separated;
    /// segment-aware, "" allows everything. [default: ""]
    #[arg(long, env = "MOQ_PUBLISH_ALLOW", value_name = "PREFIX", value_delimiter = ',')]
    publish_allow: Option<Vec<String>>,

    /// Broadcast path prefixes anyone may subscribe to, comma-separated;
    /// segment-aware, "" allows everything. [default: ""]
    #[arg(long, env = "MOQ_SUBSCRIBE_ALLOW", value_name = "PREFIX", value_delimiter = ',')]
    subscribe_allow: Option<Vec<String>>,

    /// On shutdown, how long sessions get to leave after GOAWAY before they are
    /// closed, e.g. 5s or 500ms. [default: 5s]
    #[arg(long, env = "MOQ_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,

    /// Maximum concurrent QUIC streams a peer may keep open, for each of bidi and uni. A session
    /// starts with 64 (each credited stream costs memory from the handshake on) and raises the
    /// peer's credit as it keeps more open, up to this. [default: 1000]
    #[arg(long, env = "MOQ_MAX_STREAMS", value_name = "COUNT")]
    max_streams: Option<u64>,

    /// Sessions admitted at once, handshakes in progress included; further connection
    /// attempts are refused and counted as sessions_total{reason="capacity"}. [default: 10000]
    #[arg(long, env = "MOQ_MAX_SESSIONS", value_name = "COUNT")]
    max_sessions: Option<usize>,

    /// Worker threads, each running the connections placed on it: 0 = one per CPU. New
    /// connections fill the first worker until it is busy --worker-spill-at of its time, so a
    /// lightly loaded relay runs on one thread. [default: 0]
    #[arg(long, env = "MOQ_WORKER_THREADS", value_name = "COUNT")]
    worker_threads: Option<usize>,

    /// Busy fraction (0 < f <= 1) above which a worker takes no new connection while another
    /// is below it. [default: 0.5]
    #[arg(long, env = "MOQ_WORKER_SPILL_AT", value_name = "FRACTION")]
    worker_spill_at: Option<f64>,

    /// Close QUIC connections silent for this long. [default: 10s]
    #[arg(long, env = "MOQ_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,

    /// QUIC keep-alive interval; must be shorter than the idle timeout. [default: 3s]
    #[arg(long, env = "MOQ_KEEP_ALIVE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_alive: Option<Duration>,

    /// Log filter, e.g. info or moq_relay=debug (RUST_LOG takes precedence).
    /// [default: info]
    #[arg(long, env = "MOQ_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,

    /// TCP address of the operator HTTP listener, or "off". Keep it private.
    /// [default: 127.0.0.1:9101]
    #[arg(long, env = "MOQ_OPS_LISTEN", value_name = "ADDR")]
    ops_listen: Option<MaybeAddr>,

    /// Bearer token required by the operator listener. Prefer the environment
    /// variable: flags are visible to other local users. [default: none]
    #[arg(long, env = "MOQ_OPS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    ops_token: Option<Secret>,

    /// Broadcasts that get their own metric series; beyond this they share
    /// broadcast="_other" and moq_relay_metric_cardinality_overflow_total counts. [default: 200]
    #[arg(long, env = "MOQ_METRICS_MAX_BROADCASTS", value_name = "COUNT")]
    metrics_max_broadcasts: Option<usize>,

    /// Namespaces (first path segments) that get their own metric series. [default: 50]
    #[arg(long, env = "MOQ_METRICS_MAX_NAMESPACES", value_name = "COUNT")]
    metrics_max_namespaces: Option<usize>,

    /// How long the series of an ended broadcast stay before they disappear. [default: 5m]
    #[arg(long, env = "MOQ_METRICS_LINGER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    metrics_linger: Option<Duration>,

    /// OTLP collector endpoint for traces and logs, e.g. http://localhost:4317 (gRPC) or
    /// http://localhost:4318 (HTTP). Falls back to OTEL_EXPORTER_OTLP_ENDPOINT; unset = export off.
    #[arg(long, env = "MOQ_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf. Falls back to OTEL_EXPORTER_OTLP_PROTOCOL, then to
    /// http/protobuf for port 4318 and grpc otherwise.
    #[arg(long, env = "MOQ_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,

    /// Fraction of new traces sampled (parent-based: traces started by clients follow the
    /// client's decision). Falls back to OTEL_TRACES_SAMPLER_ARG. [default: 1.0]
    #[arg(long, env = "MOQ_TRACE_SAMPLE_RATIO", value_name = "RATIO")]
    trace_sample_ratio: Option<f64>,

    /// Peer IP addresses in logs and spans: full, truncated (/24, /48) or omitted. [default: full]
    #[arg(long, env = "MOQ_PEER_IP", value_name = "MODE")]
    peer_ip: Option<moq_telemetry::redact::PeerIp>,

    /// deployment.environment resource attribute. [default: development]
    #[arg(long, env = "MOQ_ENVIRONMENT", value_name = "NAME")]
    environment: Option<String>,
}

/// The TOML file layout. Unknown keys are rejected so typos don't go unnoticed.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Vec<SocketAddr>>,
    http: Option<bool>,
    log_level: Option<String>,
    #[serde(default, with = "duration")]
    drain_timeout: Option<Duration>,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    quic: FileQuic,
    #[serde(default)]
    ops: FileOps,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    telemetry: FileTelemetry,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileTelemetry {
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    sample_ratio: Option<f64>,
    peer_ip: Option<String>,
    environment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    max_broadcasts: Option<usize>,
    max_namespaces: Option<usize>,
    #[serde(default, with = "duration")]
    linger: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    generate: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileQuic {
    max_streams: Option<u64>,
    max_sessions: Option<usize>,
    worker_threads: Option<usize>,
    worker_spill_at: Option<f64>,
    #[serde(default, with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "duration")]
    keep_alive: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileOps {
    listen: Option<MaybeAddr>,
    token: Option<Secret>,
}

/// Durations in TOML are humantime strings such as "5s" or "500ms".
mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
    }
}

impl From<File> for Settings {
    fn from(file: File) -> Self {
        Self {
            listen: file.listen,
            tls_cert: file.tls.cert,
            tls_key: file.tls.key,
            tls_generate: file.tls.generate,
            http: file.http,
            publish_allow: file.auth.publish,
            subscribe_allow: file.auth.subscribe,
            drain_timeout: file.drain_timeout,
            max_streams: file.quic.max_streams,
            max_sessions: file.quic.max_sessions,
            worker_threads: file.quic.worker_threads,
            worker_spill_at: file.quic.worker_spill_at,
            idle_timeout: file.quic.idle_timeout,
            keep_alive: file.quic.keep_alive,
            log_level: file.log_level,
            ops_listen: file.ops.listen,
            ops_token: file.ops.token,
            metrics_max_broadcasts: file.metrics.max_broadcasts,
            metrics_max_namespaces: file.metrics.max_namespaces,
            metrics_linger: file.metrics.linger,
            otlp_endpoint: file.telemetry.otlp_endpoint,
            otlp_protocol: file.telemetry.otlp_protocol,
            trace_sample_ratio: file.telemetry.sample_ratio,
            peer_ip: file.telemetry.peer_ip.and_then(|p| p.parse().ok()),
            environment: file.telemetry.environment,
        }
    }
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
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            max_streams: self.max_streams.or(lower.max_streams),
            max_sessions: self.max_sessions.or(lower.max_sessions),
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
        }
    }

    /// Apply defaults and check the result.
    fn resolve(self, file: Option<PathBuf>) -> anyhow::Result<Config> {
        let tls = match (self.tls_cert, self.tls_key, self.tls_generate) {
            (Some(cert), Some(key), None) => TlsSource::Files { cert, key },
            (None, None, Some(hosts)) => {
                ensure!(hosts.iter().any(|h| !h.is_empty()), "tls generate needs at least one hostname");
                TlsSource::Generate(hosts.into_iter().filter(|h| !h.is_empty()).collect())
            }
            (Some(_), None, None) => bail!("--tls-cert is set but --tls-key is missing"),
            (None, Some(_), None) => bail!("--tls-key is set but --tls-cert is missing"),
            (None, None, None) => bail!(
                "no TLS certificate configured: set --tls-cert and --tls-key, \
                 or --tls-generate <hosts> for a self-signed development certificate"
            ),
            (_, _, Some(_)) => bail!(
                "configure either --tls-cert/--tls-key or --tls-generate, not both \
                 (check the flags, MOQ_TLS_* variables and the [tls] section of the config file)"
            ),
        };

        let listen = self.listen.unwrap_or_else(|| vec![DEFAULT_LISTEN]);
        ensure!(!listen.is_empty(), "at least one listen address is required");

        let max_streams = self.max_streams.unwrap_or(DEFAULT_MAX_STREAMS);
        ensure!(max_streams > 0, "max streams must be at least 1");
        let max_sessions = self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        ensure!(max_sessions > 0, "max sessions must be at least 1");

        let worker_threads = self.worker_threads.unwrap_or(0);
        // Also bounds the `worker` label of the relay's per-worker metrics.
        ensure!(worker_threads <= MAX_WORKER_THREADS, "worker threads must be at most {MAX_WORKER_THREADS}");
        let worker_spill_at = self.worker_spill_at.unwrap_or(DEFAULT_WORKER_SPILL_AT);
        ensure!(
            worker_spill_at > 0.0 && worker_spill_at <= 1.0,
            "worker spill threshold must be above 0 and at most 1, got {worker_spill_at}"
        );

        let idle_timeout = self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        let keep_alive = self.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
        // Otherwise healthy but quiet sessions would be dropped as idle.
        ensure!(
            keep_alive < idle_timeout,
            "keep alive ({}) must be shorter than idle timeout ({})",
            humantime::format_duration(keep_alive),
            humantime::format_duration(idle_timeout)
        );

        Ok(Config {
            file,
            listen,
            tls,
            http: self.http.unwrap_or(true),
            publish_allow: prefixes(self.publish_allow),
            subscribe_allow: prefixes(self.subscribe_allow),
            drain_timeout: self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            max_streams,
            max_sessions,
            worker_threads,
            worker_spill_at,
            idle_timeout,
            keep_alive,
            log_level: self.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
            ops_listen: self.ops_listen.map_or(Some(DEFAULT_OPS_LISTEN), |a| a.0),
            ops_token: self.ops_token.filter(|t| !t.0.is_empty()),
            metrics_max_broadcasts: self.metrics_max_broadcasts.unwrap_or(DEFAULT_METRICS_MAX_BROADCASTS),
            metrics_max_namespaces: self.metrics_max_namespaces.unwrap_or(DEFAULT_METRICS_MAX_NAMESPACES),
            metrics_linger: self.metrics_linger.unwrap_or(DEFAULT_METRICS_LINGER),
            otlp_endpoint: self.otlp_endpoint.filter(|e| !e.is_empty()),
            otlp_protocol: self.otlp_protocol,
            trace_sample_ratio: self.trace_sample_ratio,
            peer_ip: self.peer_ip.unwrap_or_default(),
            environment: self.environment,
        })
    }
}

/// Path prefixes without leading/trailing slashes; unset means "everything".
fn prefixes(list: Option<Vec<String>>) -> Vec<String> {
    list.map_or_else(|| vec![String::new()], |list| list.iter().map(|p| p.trim_matches('/').to_string()).collect())
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
    let full = Cli::command();

    // clap would read the real process environment itself; strip the `env`
    // attributes so `env` is the only source, and parse variables as a separate layer.
    let flags = parse(full.clone(), &args).map_err(|err| match err.kind() {
        // Render help/version with the full command so it lists the variables.
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            full.clone().try_get_matches_from(&args).unwrap_err()
        }
        _ => err,
    })?;

    // Each variable becomes the equivalent `--flag=value`, parsed as its own layer.
    let program = args.first().cloned().unwrap_or_else(|| "moq-relay".into());
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
                    let values: Vec<_> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
                    format!("expected one of: {}", values.join(", "))
                }
            };
            bail!("invalid {name}={value:?}: {reason}");
        }
        env_args.push(flag);
    }
    let vars = parse(full, &env_args).context("invalid MOQ_* environment")?;

    let path = flags.file.or(flags.config).or(vars.config);
    let file = match &path {
        Some(path) => read_file(path)?,
        None => Settings::default(),
    };

    flags.settings.or(vars.settings).or(file).resolve(path)
}

fn parse(cmd: clap::Command, args: &[OsString]) -> Result<Cli, clap::Error> {
    let mut matches = cmd.mut_args(|arg| arg.env(None::<&'static str>)).try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
    let file: File = toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env: HashMap<String, OsString> = env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        let args = std::iter::once("moq-relay").chain(args.iter().copied());
        load_from(args, |name| env.get(name).cloned())
    }

    /// A TOML file in the temp dir, removed on drop.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("moq-relay-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
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
        assert_eq!(config.publish_allow, vec![String::new()]);
        assert_eq!(config.subscribe_allow, vec![String::new()]);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
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
            ("MOQ_MAX_SESSIONS", "44"),
            ("MOQ_OPS_TOKEN", "from-env-token"),
        ];

        // File over defaults, env over file, flags over env.
        let config = load(&["--drain-timeout", "500ms", "--listen=127.0.0.1:3001"], &env).unwrap();
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
        assert_eq!(config.max_sessions, 33);
        assert_eq!(config.ops_token, Some(Secret::new("from-file-token")));
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
                "--publish-allow=/live/,demo",
                "--subscribe-allow=",
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
        assert_eq!(config.publish_allow, vec!["live", "demo"]);
        assert_eq!(config.subscribe_allow, vec![""]);
        assert_eq!(config.ops_listen, Some("[::1]:9".parse().unwrap()));

        let config = load(&["--tls-generate=localhost", "--http"], &[]).unwrap();
        assert!(config.http);
    }

    #[test]
    fn tls_errors() {
        let err = load(&[], &[]).unwrap_err().to_string();
        assert!(err.contains("no TLS certificate configured"), "{err}");

        let err = load(&["--tls-cert=c.pem"], &[]).unwrap_err().to_string();
        assert!(err.contains("--tls-key is missing"), "{err}");

        // Conflicting sources across layers are reported, not silently resolved.
        let err = load(&["--tls-generate=localhost"], &[("MOQ_TLS_CERT", "c.pem"), ("MOQ_TLS_KEY", "k.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn file_errors() {
        let file = TempToml::new("unknown", "listen = [\"[::]:1\"]\nlisten_typo = 1\n");
        let err = load(&[file.path(), "--tls-generate=localhost"], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");

        let file = TempToml::new("nested", "[quic]\nmax_stream = 1\n");
        assert!(load(&[file.path(), "--tls-generate=localhost"], &[]).is_err());

        let file = TempToml::new("duration", "drain_timeout = \"soon\"\n");
        assert!(load(&[file.path(), "--tls-generate=localhost"], &[]).is_err());

        let err = load(&["--config=/nonexistent/moq.toml"], &[]).unwrap_err();
        assert!(err.to_string().contains("failed to read"), "{err}");
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

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("abcdefgh-1234")), "****1234");
        assert_eq!(format!("{:?}", Secret::new("short")), "****");
        assert_eq!(Secret::new("short").expose(), "short");

        let config = load(&["--tls-generate=h", "--ops-token=super-secret-token-wxyz"], &[]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(debug.contains("****wxyz"), "{debug}");
    }

    #[test]
    fn worker_settings_are_checked() {
        let config = load(&["--tls-generate=h", "--worker-threads=3"], &[("MOQ_WORKER_SPILL_AT", "0.8")]).unwrap();
        assert_eq!((config.worker_threads, config.worker_spill_at), (3, 0.8));
        for (flag, needle) in [
            ("--worker-spill-at=0", "spill threshold"),
            ("--worker-spill-at=1.5", "spill threshold"),
            ("--worker-spill-at=NaN", "spill threshold"),
            ("--worker-threads=5000", "worker threads"),
        ] {
            let err = load(&["--tls-generate=h", flag], &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
