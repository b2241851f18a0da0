//! Logs and traces for the relay and the CLI, set up in one place.
//!
//! - stdout logs: pretty for development, JSON lines for production (`LOG_FORMAT=json|pretty`),
//!   level from `RUST_LOG`, else `LOG_LEVEL`, else the caller's default; JSON lines carry
//!   `trace_id` and `span_id` of the span they were logged in;
//! - OpenTelemetry traces and logs exported over OTLP (gRPC or HTTP/protobuf) when an endpoint is
//!   configured, batched with bounded queues, failures counted in
//!   `moq_telemetry_dropped_total{signal,reason}`, flushed by [`Guard::shutdown`];
//! - W3C trace context helpers ([`traceparent`], [`set_parent`]) for client → relay propagation.
//!
//! Without the `otlp` feature only stdout logs remain, and spans carry no trace ids.

pub mod catalog;
mod json;
#[cfg(feature = "otlp")]
mod otlp;
#[cfg(feature = "otlp")]
mod otlp_metrics;
pub mod process;
pub mod prometheus;
pub mod redact;
pub mod stats;

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" | "http" => Ok(Self::HttpProtobuf),
            other => Err(format!("unsupported OTLP protocol {other:?} (grpc or http/protobuf)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything [`init`] needs. [`Config::from_env`] fills it from the standard variables; callers
/// override fields from their own flags or files.
#[derive(Debug, Clone)]
pub struct Config {
    pub service_name: String,
    pub service_version: String,
    pub instance_id: String,
    pub environment: String,
    /// Base endpoint, e.g. `http://localhost:4317` (gRPC) or `http://localhost:4318` (HTTP).
    /// `None` keeps exporters off.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Protocol,
    /// Head sampling ratio for root spans; children follow their parent's decision.
    pub sample_ratio: f64,
    /// Spans or log records waiting for export, per signal; beyond this they are dropped.
    pub queue_size: usize,
    /// How long one export may take before it counts as failed.
    pub export_timeout: Duration,
    pub log_format: LogFormat,
    /// Log filter directives (`RUST_LOG` syntax).
    pub log_filter: String,
    /// Write logs to stderr instead of stdout (CLIs whose stdout carries results).
    pub log_to_stderr: bool,
}

impl Config {
    /// Reads `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES` (`deployment.environment`,
    /// `service.instance.id`), `LOG_FORMAT`, `RUST_LOG` / `LOG_LEVEL`.
    pub fn from_env(service_name: &str, service_version: &str, default_level: &str) -> Self {
        Self::from_lookup(service_name, service_version, default_level, |k| std::env::var(k).ok())
    }

    pub fn from_lookup(
        service_name: &str,
        service_version: &str,
        default_level: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let attrs: Vec<(String, String)> = env("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let attr = |key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty());
        let protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
            .and_then(|p| p.parse().ok())
            // The conventional ports tell the protocol when it is not given.
            .unwrap_or(if endpoint.as_deref().is_some_and(|e| e.contains(":4318")) {
                Protocol::HttpProtobuf
            } else {
                Protocol::Grpc
            });
        Self {
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.to_string()),
            service_version: service_version.to_string(),
            instance_id: attr("service.instance.id").unwrap_or_else(default_instance_id),
            environment: attr("deployment.environment").unwrap_or_else(|| "development".to_string()),
            otlp_endpoint: endpoint,
            otlp_protocol: protocol,
            sample_ratio: env("OTEL_TRACES_SAMPLER_ARG").and_then(|r| r.parse().ok()).unwrap_or(1.0),
            queue_size: 2048,
            export_timeout: Duration::from_secs(5),
            log_format: match env("LOG_FORMAT").as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Pretty,
            },
            log_filter: env("RUST_LOG").or_else(|| env("LOG_LEVEL")).unwrap_or_else(|| default_level.to_string()),
            log_to_stderr: false,
        }
    }
}

/// `<hostname>-<pid>`: unique per process, stable for its lifetime.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!("{host}-{}", std::process::id())
}

/// Keeps exporters alive; [`Guard::shutdown`] flushes what is still queued.
#[must_use = "dropping the guard without shutdown loses queued spans and logs"]
pub struct Guard {
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::Providers>,
    config: Config,
    #[cfg(feature = "otlp")]
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Guard {
    /// Installs the global `metrics` recorder for the metrics of `catalogs` (and this crate's
    /// own, when it exports over OTLP): OTLP metrics when an endpoint is configured, a Prometheus endpoint on `prometheus`
    /// when given, both when both are. Histograms get the buckets their definitions give;
    /// `labels` are added to every series on both paths; HELP text is registered and counters
    /// with known label sets start at 0. Without an exporter, metrics stay no-ops.
    pub fn install_metrics(
        &mut self,
        prometheus: Option<std::net::SocketAddr>,
        catalogs: &[moq_metrics::Catalog<'_>],
        labels: &[(String, String)],
    ) -> anyhow::Result<()> {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let mut all = catalogs.to_vec();
        // The exporter's own counters mean something only when it exports.
        if self.config.otlp_endpoint.is_some() {
            all.push(catalog::catalog());
        }
        let buckets: Vec<(String, &'static [f64])> = all.iter().flat_map(|c| c.buckets()).collect();
        let local = match prometheus {
            Some(addr) => {
                let mut builder = PrometheusBuilder::new().with_http_listener(addr);
                for (name, bounds) in &buckets {
                    builder = builder.set_buckets_for_metric(Matcher::Full(name.clone()), bounds)?;
                }
                for (k, v) in labels {
                    builder = builder.add_global_label(k, v);
                }
                let (recorder, exporter) = builder.build()?;
                tokio::spawn(async move {
                    if let Err(e) = exporter.await {
                        tracing::warn!(error = ?e, "metrics endpoint failed");
                    }
                });
                Some(recorder)
            }
            None => None,
        };
        #[cfg(feature = "otlp")]
        let remote = otlp_metrics::recorder(&self.config, &buckets, labels)?.map(|(recorder, provider)| {
            self.meters = Some(provider);
            recorder
        });
        #[cfg(not(feature = "otlp"))]
        let remote: Option<metrics_util::layers::Fanout> = None;
        let mut fanout = metrics_util::layers::FanoutBuilder::default();
        let mut any = false;
        if let Some(r) = local {
            fanout = fanout.add_recorder(r);
            any = true;
        }
        if let Some(r) = remote {
            fanout = fanout.add_recorder(r);
            any = true;
        }
        if any {
            metrics::set_global_recorder(fanout.build()).map_err(|e| anyhow::anyhow!("{e}"))?;
            for c in &all {
                c.describe();
                c.zero_counters();
            }
        }
        Ok(())
    }

    /// Flushes and stops the exporters (bounded by their export timeout).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        {
            if let Some(meters) = self.meters {
                if let Err(e) = meters.shutdown() {
                    eprintln!("telemetry: flushing metrics failed: {e}");
                }
            }
            if let Some(p) = self.otlp {
                p.shutdown();
            }
        }
    }
}

/// Targets whose own spans and logs must never be exported: the exporter's transport would
/// otherwise trace itself in an endless loop.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
const EXPORT_NOISE: &str = "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Targets whose debug output carries request URLs (and so tokens); capped at info everywhere.
const SECRET_BEARING: &str = "web_transport_quinn=info,web_transport_proto=info";

/// Installs the global subscriber: stdout logs plus, with the `otlp` feature, the trace layer
/// and (when an endpoint is configured) OTLP export of traces and logs. Call once, inside a
/// Tokio runtime (the gRPC exporter needs one).
pub fn init(config: &Config) -> anyhow::Result<Guard> {
    // The WebTransport library logs the CONNECT request (URL with `?jwt=`) at debug: never print it.
    let directives = format!("{},{SECRET_BEARING}", config.log_filter);
    let stdout_filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(format!("info,{SECRET_BEARING}")));
    let stdout = match (config.log_format, config.log_to_stderr) {
        (LogFormat::Json, to_stderr) => json::layer(config, to_stderr).boxed(),
        // Colours only on a terminal, so piped logs stay greppable.
        (LogFormat::Pretty, false) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stdout).boxed()
        }
        (LogFormat::Pretty, true) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
    }
    .with_filter(stdout_filter);

    #[cfg(feature = "otlp")]
    {
        let providers = otlp::Providers::new(config)?;
        // Spans at info and above: sessions, subscriptions, never per frame.
        let trace_filter = EnvFilter::new(format!("info,{EXPORT_NOISE},{SECRET_BEARING}"));
        let traces = tracing_opentelemetry::layer()
            .with_tracer(providers.tracer())
            .with_location(false)
            .with_threads(false)
            // No busy/idle time per span: it reads the clock and locks the span's extensions
            // on every poll of every instrumented task (5 % of a 1000-viewer client's CPU).
            .with_tracked_inactivity(false)
            .with_filter(trace_filter);
        let logs = providers
            .log_layer()
            .map(|l| l.with_filter(EnvFilter::new(format!("info,{EXPORT_NOISE},{SECRET_BEARING}"))));
        tracing_subscriber::registry().with(traces).with(logs).with(stdout).try_init()?;
        Ok(Guard { otlp: Some(providers), config: config.clone(), meters: None })
    }
    #[cfg(not(feature = "otlp"))]
    {
        tracing_subscriber::registry().with(stdout).try_init()?;
        Ok(Guard { config: config.clone() })
    }
}

/// The W3C `traceparent` of `span`, to send to a peer.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    #[cfg(feature = "otlp")]
    {
        otlp::traceparent(span)
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = span;
        None
    }
}

/// Makes `span` a child of the remote span named by `traceparent`; false if it does not parse.
pub fn set_parent(span: &tracing::Span, traceparent: &str) -> bool {
    #[cfg(feature = "otlp")]
    {
        otlp::set_parent(span, traceparent)
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = (span, traceparent);
        false
    }
}

/// Links `span` to the span named by `traceparent` (another trace that caused it).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    #[cfg(feature = "otlp")]
    otlp::add_link(span, traceparent);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, traceparent);
}

/// The trace id of `span` as 32 hex digits, if it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    traceparent(span).and_then(|tp| tp.split('-').nth(1).map(str::to_string))
}
