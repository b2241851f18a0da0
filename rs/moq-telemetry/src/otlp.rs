//! OpenTelemetry providers: a tracer (always, so spans have trace ids for logs and propagation)
//! and, when an endpoint is configured, batch exporters for traces and logs over OTLP.

use std::collections::HashMap;

use metrics::counter;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::catalog::{DROPPED, EXPORTED};
use crate::Config;

/// Builds one signal's OTLP exporter for the configured protocol: gRPC at the base endpoint,
/// HTTP/protobuf at the signal's path under it. (The builders are distinct types per signal.)
macro_rules! exporter {
    ($kind:path, $config:expr, $endpoint:expr, $path:literal) => {
        match $config.otlp_protocol {
            crate::Protocol::Grpc => {
                <$kind>::builder().with_tonic().with_endpoint($endpoint).with_timeout($config.export_timeout).build()?
            }
            crate::Protocol::HttpProtobuf => <$kind>::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(format!("{}{}", $endpoint, $path))
                .with_timeout($config.export_timeout)
                .build()?,
        }
    };
}
pub(crate) use exporter;

/// The resource every signal carries.
pub fn resource(config: &Config) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("service.instance.id", config.instance_id.clone()),
            KeyValue::new("deployment.environment", config.environment.clone()),
        ])
        .build()
}

pub struct Providers {
    tracer: SdkTracerProvider,
    logger: Option<SdkLoggerProvider>,
}

impl Providers {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let resource = resource(config);
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio.clamp(0.0, 1.0))));
        let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone()).with_sampler(sampler);
        let mut logger = None;
        if let Some(endpoint) = &config.otlp_endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            let spans = exporter!(opentelemetry_otlp::SpanExporter, config, endpoint, "/v1/traces");
            let logs = exporter!(opentelemetry_otlp::LogExporter, config, endpoint, "/v1/logs");
            let span_batch =
                opentelemetry_sdk::trace::BatchConfigBuilder::default().with_max_queue_size(config.queue_size).build();
            let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(Counted(spans))
                .with_batch_config(span_batch)
                .build();
            tracer = tracer.with_span_processor(processor);
            let log_batch =
                opentelemetry_sdk::logs::BatchConfigBuilder::default().with_max_queue_size(config.queue_size).build();
            let log_processor =
                opentelemetry_sdk::logs::BatchLogProcessor::builder(Counted(logs)).with_batch_config(log_batch).build();
            logger =
                Some(SdkLoggerProvider::builder().with_resource(resource).with_log_processor(log_processor).build());
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Self { tracer: tracer.build(), logger })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.tracer.tracer("moq")
    }

    pub fn log_layer(&self) -> Option<OpenTelemetryTracingBridge<SdkLoggerProvider, SdkLogger>> {
        self.logger.as_ref().map(OpenTelemetryTracingBridge::new)
    }

    pub fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown() {
            eprintln!("telemetry: flushing traces failed: {e}");
        }
        if let Some(logger) = self.logger {
            if let Err(e) = logger.shutdown() {
                eprintln!("telemetry: flushing logs failed: {e}");
            }
        }
    }
}

/// An exporter that counts what it delivered and what it lost.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        count("traces", n, result.is_ok());
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        let result = self.0.export(batch).await;
        count("logs", n, result.is_ok());
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

fn count(signal: &'static str, n: u64, ok: bool) {
    if ok {
        counter!(EXPORTED.name, "signal" => signal).increment(n);
    } else {
        counter!(DROPPED.name, "signal" => signal, "reason" => "export_failed").increment(n);
    }
}

pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

fn extract(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

pub fn set_parent(span: &tracing::Span, traceparent: &str) -> bool {
    let cx = extract(traceparent);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

pub fn add_link(span: &tracing::Span, traceparent: &str) {
    let cx = extract(traceparent);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The trace and span id of the OpenTelemetry context active on this thread.
pub fn current_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
