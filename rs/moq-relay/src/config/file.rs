//! The TOML file layer. Keys are the flag names, grouped into sections (`[tls]`, `[auth]`,
//! `[limits]`, `[quic]`, `[ops]`, `[metrics]`, `[telemetry]`, `[netplay]`, `[cluster]`); durations are humantime
//! strings.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use serde::Deserialize;

use super::cli::Settings;
use super::ops::{MaybeAddr, Secret};

/// Reads the file at `path` as a configuration layer.
pub(super) fn read(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
    let file: File = toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    let versions = match &file.quic.versions {
        Some(names) => Some(
            names
                .iter()
                .map(|name| name.parse::<moq_lite::Version>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("invalid config file {}: quic.versions: {e}", path.display()))?,
        ),
        None => None,
    };
    let rate = |name: &str, text: &Option<String>| -> anyhow::Result<Option<crate::netplay::Rate>> {
        text.as_deref()
            .map(|t| {
                t.parse().map_err(|e| anyhow::anyhow!("invalid config file {}: netplay.{name}: {e}", path.display()))
            })
            .transpose()
    };
    let netplay_join_rate_per_address = rate("join_rate_per_address", &file.netplay.join_rate_per_address)?;
    let netplay_create_rate_per_address = rate("create_rate_per_address", &file.netplay.create_rate_per_address)?;
    Ok(Settings { versions, netplay_join_rate_per_address, netplay_create_rate_per_address, ..file.into() })
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
    limits: FileLimits,
    #[serde(default)]
    quic: FileQuic,
    #[serde(default)]
    ops: FileOps,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    telemetry: FileTelemetry,
    #[serde(default)]
    netplay: FileNetplay,
    #[serde(default)]
    cluster: FileCluster,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    /// Peer URLs, as `--cluster-connect`.
    connect: Option<Vec<String>>,
    token: Option<PathBuf>,
    node: Option<String>,
    id: Option<u64>,
    connect_api: Option<PathBuf>,
    #[serde(default, with = "duration")]
    connect_api_interval: Option<Duration>,
    max_hops: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileNetplay {
    enabled: Option<bool>,
    min_ttl_minutes: Option<u32>,
    max_ttl_minutes: Option<u32>,
    default_ttl_minutes: Option<u32>,
    max_participants: Option<usize>,
    max_sessions: Option<usize>,
    /// `COUNT/PERIOD[:BURST]`, e.g. "1/s:5".
    join_rate_per_address: Option<String>,
    create_rate_per_address: Option<String>,
    #[serde(default, with = "duration")]
    sweep_interval: Option<Duration>,
    #[serde(default, with = "duration")]
    host_grace: Option<Duration>,
    #[serde(default, with = "duration")]
    idle_timeout: Option<Duration>,
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
    /// The old allow-lists, kept only to refuse them with a migration message.
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    key: Option<PathBuf>,
    public: Option<Vec<String>>,
    public_publish: Option<Vec<String>>,
    public_subscribe: Option<Vec<String>>,
    url: Option<String>,
    #[serde(default, with = "duration")]
    timeout: Option<Duration>,
    audit_log: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    sessions_per_address: Option<usize>,
    sessions_per_subject: Option<usize>,
    session_rate_per_address: Option<f64>,
    announces_per_session: Option<usize>,
    subscriptions_per_session: Option<usize>,
    #[serde(default, with = "duration")]
    handshake_timeout: Option<Duration>,
    websocket_upgrade_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileQuic {
    /// moq-lite versions, e.g. ["moq-lite-05", "moq-lite-04"].
    versions: Option<Vec<String>>,
    max_streams: Option<u64>,
    max_sessions: Option<usize>,
    memory_budget_mib: Option<u64>,
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
            auth_key: file.auth.key,
            auth_public: file.auth.public,
            auth_public_publish: file.auth.public_publish,
            auth_public_subscribe: file.auth.public_subscribe,
            auth_url: file.auth.url,
            auth_timeout: file.auth.timeout,
            audit_log: file.auth.audit_log,
            limit_sessions_per_address: file.limits.sessions_per_address,
            limit_sessions_per_subject: file.limits.sessions_per_subject,
            limit_session_rate_per_address: file.limits.session_rate_per_address,
            limit_announces_per_session: file.limits.announces_per_session,
            limit_subscriptions_per_session: file.limits.subscriptions_per_session,
            handshake_timeout: file.limits.handshake_timeout,
            limit_websocket_upgrade_bytes: file.limits.websocket_upgrade_bytes,
            drain_timeout: file.drain_timeout,
            versions: None, // parsed (fallibly) in `read`
            max_streams: file.quic.max_streams,
            max_sessions: file.quic.max_sessions,
            memory_budget_mib: file.quic.memory_budget_mib,
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
            netplay: file.netplay.enabled,
            netplay_min_ttl_minutes: file.netplay.min_ttl_minutes,
            netplay_max_ttl_minutes: file.netplay.max_ttl_minutes,
            netplay_default_ttl_minutes: file.netplay.default_ttl_minutes,
            netplay_max_participants: file.netplay.max_participants,
            netplay_max_sessions: file.netplay.max_sessions,
            netplay_join_rate_per_address: None, // parsed (fallibly) in `read`
            netplay_create_rate_per_address: None,
            netplay_sweep_interval: file.netplay.sweep_interval,
            netplay_host_grace: file.netplay.host_grace,
            netplay_idle_timeout: file.netplay.idle_timeout,
            cluster_connect: file.cluster.connect,
            cluster_token: file.cluster.token,
            cluster_node: file.cluster.node,
            cluster_id: file.cluster.id,
            cluster_connect_api: file.cluster.connect_api,
            cluster_connect_api_interval: file.cluster.connect_api_interval,
            cluster_max_hops: file.cluster.max_hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{load, TempToml};

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
}
