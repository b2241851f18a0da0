//! Logs and traces: the log filter, OTLP export, sampling, peer address redaction and the
//! environment attribute. Most are left unset when not given, so that moq-telemetry can fall
//! back to the standard `OTEL_*` variables and then to its own defaults.

use moq_telemetry::redact::PeerIp;

use super::cli::Settings;

const DEFAULT_LOG_LEVEL: &str = "info";

/// The resolved telemetry settings, for the fields of [`super::Config`] of the same names.
pub(super) struct Telemetry {
    pub(super) log_level: String,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_protocol: Option<String>,
    pub(super) trace_sample_ratio: Option<f64>,
    pub(super) peer_ip: PeerIp,
    pub(super) environment: Option<String>,
}

impl Telemetry {
    pub(super) fn resolve(settings: &Settings) -> Self {
        Self {
            log_level: settings.log_level.clone().unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
            // An empty endpoint means export off, like an unset one.
            otlp_endpoint: settings.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            otlp_protocol: settings.otlp_protocol.clone(),
            trace_sample_ratio: settings.trace_sample_ratio,
            peer_ip: settings.peer_ip.unwrap_or_default(),
            environment: settings.environment.clone(),
        }
    }
}
