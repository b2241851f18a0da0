//! A `metrics` recorder that forwards to OpenTelemetry instruments exported over OTLP, so code
//! instrumented once with the `metrics` facade reaches a collector as well as Prometheus.
//!
//! Every `counter!`/`histogram!` call registers again: instruments are cached by name, and each
//! handle carries its label set as attributes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::Config;

pub struct OtlpRecorder {
    meter: Meter,
    /// Bucket boundaries by metric name, from the catalogs.
    buckets: HashMap<String, Vec<f64>>,
    descriptions: Mutex<HashMap<String, String>>,
    counters: Mutex<HashMap<String, opentelemetry::metrics::Counter<u64>>>,
    gauges: Mutex<HashMap<String, opentelemetry::metrics::Gauge<f64>>>,
    histograms: Mutex<HashMap<String, opentelemetry::metrics::Histogram<f64>>>,
    /// Added to every data point, after the series' own labels.
    global: Vec<KeyValue>,
}

/// Builds the recorder and its meter provider when an OTLP endpoint is configured. The export
/// interval comes from `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s).
pub fn recorder(
    config: &Config,
    buckets: &[(String, &[f64])],
    labels: &[(String, String)],
) -> anyhow::Result<Option<(OtlpRecorder, SdkMeterProvider)>> {
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    let endpoint = endpoint.trim_end_matches('/');
    let exporter = crate::otlp::exporter!(opentelemetry_otlp::MetricExporter, config, endpoint, "/v1/metrics");
    let provider = SdkMeterProvider::builder()
        .with_resource(crate::otlp::resource(config))
        .with_reader(PeriodicReader::builder(exporter).build())
        .build();
    let recorder = OtlpRecorder {
        meter: provider.meter("moq"),
        buckets: buckets.iter().map(|(name, b)| (name.clone(), b.to_vec())).collect(),
        descriptions: Default::default(),
        counters: Default::default(),
        gauges: Default::default(),
        histograms: Default::default(),
        global: labels.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect(),
    };
    Ok(Some((recorder, provider)))
}

impl OtlpRecorder {
    fn describe(&self, key: KeyName, description: SharedString) {
        self.descriptions.lock().unwrap().insert(key.as_str().to_string(), description.to_string());
    }

    fn attributes(&self, key: &Key) -> Vec<KeyValue> {
        key.labels()
            .map(|l| KeyValue::new(l.key().to_string(), l.value().to_string()))
            .chain(self.global.iter().cloned())
            .collect()
    }

    fn description(&self, name: &str) -> String {
        self.descriptions.lock().unwrap().get(name).cloned().unwrap_or_default()
    }
}

impl Recorder for OtlpRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }
    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }
    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let name = key.name().to_string();
        let description = self.description(&name);
        let instrument = self
            .counters
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(|| self.meter.u64_counter(name).with_description(description).build())
            .clone();
        Counter::from_arc(Arc::new(OtelCounter {
            instrument,
            attributes: self.attributes(key),
            last: AtomicU64::new(0),
        }))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let name = key.name().to_string();
        let description = self.description(&name);
        let instrument = self
            .gauges
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(|| self.meter.f64_gauge(name).with_description(description).build())
            .clone();
        Gauge::from_arc(Arc::new(OtelGauge { instrument, attributes: self.attributes(key), value: Mutex::new(0.0) }))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let name = key.name().to_string();
        let description = self.description(&name);
        // A histogram outside the catalogs keeps the SDK's default boundaries.
        let buckets = self.buckets.get(&name).cloned();
        let instrument = self
            .histograms
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(|| {
                let builder = self.meter.f64_histogram(name).with_description(description);
                match buckets {
                    Some(b) => builder.with_boundaries(b).build(),
                    None => builder.build(),
                }
            })
            .clone();
        Histogram::from_arc(Arc::new(OtelHistogram { instrument, attributes: self.attributes(key) }))
    }
}

struct OtelCounter {
    instrument: opentelemetry::metrics::Counter<u64>,
    attributes: Vec<KeyValue>,
    last: AtomicU64,
}

impl CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.instrument.add(value, &self.attributes);
    }
    fn absolute(&self, value: u64) {
        let previous = self.last.swap(value, Ordering::Relaxed);
        if value > previous {
            self.instrument.add(value - previous, &self.attributes);
        }
    }
}

struct OtelGauge {
    instrument: opentelemetry::metrics::Gauge<f64>,
    attributes: Vec<KeyValue>,
    value: Mutex<f64>,
}

impl GaugeFn for OtelGauge {
    fn increment(&self, value: f64) {
        let mut v = self.value.lock().unwrap();
        *v += value;
        self.instrument.record(*v, &self.attributes);
    }
    fn decrement(&self, value: f64) {
        self.increment(-value)
    }
    fn set(&self, value: f64) {
        *self.value.lock().unwrap() = value;
        self.instrument.record(value, &self.attributes);
    }
}

struct OtelHistogram {
    instrument: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.instrument.record(value, &self.attributes);
    }
}
