//! A `metrics` recorder that keeps every series in atomics and renders the Prometheus text format.
//!
//! Written for a relay that records per frame and is scraped every few seconds:
//! - a series' name and label text are rendered once, when it is registered; a scrape only reads
//!   atomics and copies text (no per-series clock read, label formatting or HELP escaping);
//! - histograms have fixed buckets per metric ([`Builder::buckets_for`]) and record with two
//!   atomic operations (`histogram.rs`); there is no sample buffer to drain;
//! - series carrying one of the [`Builder::expire_idle`] labels (the capped, per-broadcast ones)
//!   are dropped once no handle to them is held and their value has not changed for the idle
//!   window, checked by [`PrometheusHandle::upkeep`] (the window counts from the last upkeep that
//!   saw it held or changed, so call it every few seconds). A series someone still holds (a live
//!   broadcast's counters) never disappears, however quiet; series without those labels (fixed,
//!   bounded sets) are kept for the life of the process so their counters never reset.
//!
//! Units given to `describe_*` are not appended to names: names already end in their unit.

mod histogram;
mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, SharedString, Unit};

use histogram::AtomicHistogram;

/// Prometheus's default buckets, for histograms without their own.
const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Configures and installs the recorder.
pub struct Builder {
    default_buckets: Arc<Buckets>,
    buckets: HashMap<String, Arc<Buckets>>,
    expiry: Option<Expiry>,
}

struct Expiry {
    labels: Vec<String>,
    after: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Self {
            default_buckets: Arc::new(Buckets::new(DEFAULT_BUCKETS).expect("valid")),
            buckets: HashMap::new(),
            expiry: None,
        }
    }

    /// Buckets of histograms without their own.
    pub fn buckets(mut self, bounds: &[f64]) -> anyhow::Result<Self> {
        self.default_buckets = Arc::new(Buckets::new(bounds)?);
        Ok(self)
    }

    /// Buckets of the histogram named `metric`.
    pub fn buckets_for(mut self, metric: &str, bounds: &[f64]) -> anyhow::Result<Self> {
        self.buckets.insert(metric.to_string(), Arc::new(Buckets::new(bounds)?));
        Ok(self)
    }

    /// Series with any of `labels` are dropped once unreferenced and unchanged for `after`.
    pub fn expire_idle(mut self, labels: &[&str], after: Duration) -> Self {
        self.expiry = Some(Expiry { labels: labels.iter().map(|l| l.to_string()).collect(), after });
        self
    }

    pub fn build(self) -> (PrometheusRecorder, PrometheusHandle) {
        let registry = Arc::new(Registry {
            default_buckets: self.default_buckets,
            buckets: self.buckets,
            expiry: self.expiry,
            help: RwLock::default(),
            counters: Table::default(),
            gauges: Table::default(),
            histograms: Table::default(),
        });
        (PrometheusRecorder(registry.clone()), PrometheusHandle(registry))
    }

    /// Installs the recorder as the process's global one.
    pub fn install(self) -> anyhow::Result<PrometheusHandle> {
        let (recorder, handle) = self.build();
        metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(handle)
    }
}

/// Bucket bounds and their `le` label text.
struct Buckets {
    bounds: Arc<[f64]>,
    le: Vec<String>,
}

impl Buckets {
    fn new(bounds: &[f64]) -> anyhow::Result<Self> {
        anyhow::ensure!(!bounds.is_empty(), "histogram buckets must not be empty");
        anyhow::ensure!(bounds.iter().all(|b| b.is_finite()), "histogram buckets must be finite: {bounds:?}");
        anyhow::ensure!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram buckets must ascend: {bounds:?}");
        let le = bounds
            .iter()
            .map(|b| {
                let mut s = String::new();
                text::float(&mut s, *b);
                s
            })
            .collect();
        Ok(Self { bounds: Arc::from(bounds), le })
    }
}

/// The recorder; install it with [`Builder::install`] or `metrics::set_global_recorder`.
pub struct PrometheusRecorder(Arc<Registry>);

/// Renders and maintains what the recorder holds.
#[derive(Clone)]
pub struct PrometheusHandle(Arc<Registry>);

impl PrometheusHandle {
    /// The text exposition of every series, families in name order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    pub fn render_into(&self, out: &mut String) {
        self.0.render(out);
    }

    /// Drops series that have been idle past the expiry window; returns how many.
    pub fn upkeep(&self) -> usize {
        self.0.upkeep(Instant::now())
    }

    /// Drops the series of `name` with exactly `labels` now, whatever kind it is (a gauge that
    /// would otherwise read a stale value until idle expiry: a peer removed from the
    /// configuration). A handle still held on it writes into a detached cell; registering the
    /// same key again starts a new series. Returns how many series went.
    pub fn forget(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        let matches = |key: &Key| {
            key.name() == name
                && key.labels().count() == labels.len()
                && key.labels().all(|l| labels.iter().any(|(k, v)| l.key() == *k && l.value() == *v))
        };
        let mut gone = 0;
        gone += forget_in(&self.0.counters, &matches);
        gone += forget_in(&self.0.gauges, &matches);
        gone += forget_in(&self.0.histograms, &matches);
        gone
    }

    /// Series currently held.
    pub fn series(&self) -> usize {
        self.0.counters.read().len() + self.0.gauges.read().len() + self.0.histograms.read().len()
    }
}

fn forget_in<T>(table: &Table<T>, matches: &impl Fn(&Key) -> bool) -> usize {
    let mut series = table.write();
    let before = series.len();
    series.retain(|key, _| !matches(key));
    before - series.len()
}

struct Registry {
    default_buckets: Arc<Buckets>,
    buckets: HashMap<String, Arc<Buckets>>,
    expiry: Option<Expiry>,
    /// HELP text by metric name, escaped.
    help: RwLock<HashMap<String, String>>,
    counters: Table<CounterCell>,
    gauges: Table<GaugeCell>,
    histograms: Table<AtomicHistogram>,
}

/// One kind's series, by the key they were registered with.
struct Table<T>(RwLock<HashMap<Key, Entry<T>>>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<T> Table<T> {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Key, Entry<T>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Key, Entry<T>>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The series of `key`, created with `make` on first use.
    fn get_or_insert(&self, key: &Key, make: impl FnOnce() -> Entry<T>) -> Arc<T> {
        if let Some(entry) = self.read().get(key) {
            return entry.cell.clone();
        }
        self.write().entry(key.clone()).or_insert_with(make).cell.clone()
    }
}

struct Entry<T> {
    cell: Arc<T>,
    /// Sanitised metric name.
    name: Box<str>,
    /// Rendered label pairs, without braces.
    labels: Box<str>,
    /// Histograms only: their buckets' `le` texts.
    buckets: Option<Arc<Buckets>>,
    /// Subject to idle expiry (carries one of the expiring labels).
    expires: bool,
    /// The value last seen by upkeep and since when it has not changed.
    idle: (u64, Instant),
}

impl Registry {
    fn entry<T>(&self, key: &Key, cell: T, buckets: Option<Arc<Buckets>>) -> Entry<T> {
        let expires = self.expiry.as_ref().is_some_and(|e| key.labels().any(|l| e.labels.iter().any(|n| n == l.key())));
        Entry {
            cell: Arc::new(cell),
            name: text::name(key.name(), true).into(),
            labels: text::label_pairs(key.labels().map(|l| (l.key(), l.value()))).into(),
            buckets,
            expires,
            idle: (0, Instant::now()),
        }
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        let name = text::name(key.as_str(), true);
        self.help.write().unwrap_or_else(|e| e.into_inner()).insert(name, text::help(&description));
    }

    fn upkeep(&self, now: Instant) -> usize {
        let Some(expiry) = &self.expiry else { return 0 };
        fn sweep<T>(table: &Table<T>, now: Instant, after: Duration, value: impl Fn(&T) -> u64) -> usize {
            let mut map = table.write();
            let before = map.len();
            map.retain(|_, e| {
                if !e.expires {
                    return true;
                }
                let v = value(&e.cell);
                // A handle held elsewhere means the series is in use; the map holds one reference.
                if Arc::strong_count(&e.cell) > 1 || v != e.idle.0 {
                    e.idle = (v, now);
                    return true;
                }
                now.duration_since(e.idle.1) < after
            });
            before - map.len()
        }
        sweep(&self.counters, now, expiry.after, |c| c.0.load(Ordering::Relaxed))
            + sweep(&self.gauges, now, expiry.after, |g| g.0.load(Ordering::Relaxed))
            + sweep(&self.histograms, now, expiry.after, |h| h.count())
    }

    fn render(&self, out: &mut String) {
        enum Value<'a> {
            Counter(u64),
            Gauge(f64),
            Histogram(&'a AtomicHistogram, &'a Buckets),
        }
        impl Value<'_> {
            fn kind(&self) -> &'static str {
                match self {
                    Value::Counter(_) => "counter",
                    Value::Gauge(_) => "gauge",
                    Value::Histogram(..) => "histogram",
                }
            }
        }
        let help = self.help.read().unwrap_or_else(|e| e.into_inner());
        let (counters, gauges, histograms) = (self.counters.read(), self.gauges.read(), self.histograms.read());
        let mut rows: Vec<(&str, &str, Value)> = Vec::with_capacity(counters.len() + gauges.len() + histograms.len());
        rows.extend(
            counters.values().map(|e| (&*e.name, &*e.labels, Value::Counter(e.cell.0.load(Ordering::Relaxed)))),
        );
        rows.extend(
            gauges
                .values()
                .map(|e| (&*e.name, &*e.labels, Value::Gauge(f64::from_bits(e.cell.0.load(Ordering::Relaxed))))),
        );
        rows.extend(histograms.values().map(|e| {
            let buckets = e.buckets.as_deref().expect("histograms have buckets");
            (&*e.name, &*e.labels, Value::Histogram(&e.cell, buckets))
        }));
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out.reserve(rows.len() * 96);

        let mut family: Option<(&str, &str)> = None;
        for (name, labels, value) in &rows {
            match family {
                Some((current, _)) if current == *name => {}
                _ => {
                    if let Some(h) = help.get(*name) {
                        push_all(out, &["# HELP ", name, " ", h, "\n"]);
                    }
                    push_all(out, &["# TYPE ", name, " ", value.kind(), "\n"]);
                    family = Some((name, value.kind()));
                }
            }
            // One name registered as two kinds cannot be exposed as both; the first kind wins.
            if family.is_some_and(|(_, kind)| kind != value.kind()) {
                continue;
            }
            match value {
                Value::Counter(v) => {
                    series(out, name, "", labels);
                    text::integer(out, *v);
                    out.push('\n');
                }
                Value::Gauge(v) => {
                    series(out, name, "", labels);
                    text::float(out, *v);
                    out.push('\n');
                }
                Value::Histogram(h, buckets) => {
                    let reading = h.read();
                    let les = buckets.le.iter().map(String::as_str).chain(["+Inf"]);
                    for (le, n) in les.zip(&reading.cumulative) {
                        let sep = if labels.is_empty() { "" } else { "," };
                        push_all(out, &[name, "_bucket{", labels, sep, "le=\"", le, "\"} "]);
                        text::integer(out, *n);
                        out.push('\n');
                    }
                    series(out, name, "_sum", labels);
                    text::float(out, reading.sum);
                    out.push('\n');
                    series(out, name, "_count", labels);
                    text::integer(out, reading.cumulative.last().copied().unwrap_or(0));
                    out.push('\n');
                }
            }
        }
    }
}

fn push_all(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
}

/// `name{labels} ` (braces only when there are labels).
fn series(out: &mut String, name: &str, suffix: &str, labels: &str) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        push_all(out, &["{", labels, "}"]);
    }
    out.push(' ');
}

impl metrics::Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.counters.get_or_insert(key, || self.0.entry(key, CounterCell::default(), None)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.gauges.get_or_insert(key, || self.0.entry(key, GaugeCell::default(), None)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.histograms.get_or_insert(key, || {
            let buckets = self.0.buckets.get(key.name()).unwrap_or(&self.0.default_buckets).clone();
            self.0.entry(key, AtomicHistogram::new(buckets.bounds.clone()), Some(buckets))
        }))
    }
}

#[derive(Default)]
struct CounterCell(AtomicU64);

impl CounterFn for CounterCell {
    #[inline]
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// An `f64` gauge stored as its bits.
struct GaugeCell(AtomicU64);

impl Default for GaugeCell {
    fn default() -> Self {
        Self(AtomicU64::new(0f64.to_bits()))
    }
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(f(f64::from_bits(b)).to_bits()));
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{counter, describe_counter, describe_histogram, gauge, histogram, with_local_recorder};

    fn recorder(builder: Builder) -> (PrometheusRecorder, PrometheusHandle) {
        builder.buckets_for("delay_seconds", &[0.01, 0.1]).unwrap().build()
    }

    #[test]
    fn forget_drops_exactly_the_named_series() {
        let (rec, handle) = recorder(Builder::new());
        with_local_recorder(&rec, || {
            gauge!("peer_up", "peer" => "a", "direction" => "outbound").set(0.0);
            gauge!("peer_up", "peer" => "a", "direction" => "inbound").set(1.0);
            gauge!("peer_up", "peer" => "b", "direction" => "outbound").set(1.0);
            counter!("dials_total", "peer" => "a", "result" => "failed").increment(3);
        });
        assert_eq!(handle.forget("peer_up", &[("peer", "a"), ("direction", "outbound")]), 1);
        assert_eq!(handle.forget("peer_up", &[("peer", "a")]), 0, "a subset of the labels matches nothing");
        assert_eq!(handle.forget("dials_total", &[("result", "failed"), ("peer", "a")]), 1, "in any order");
        let text = handle.render();
        assert!(!text.contains(r#"peer_up{peer="a",direction="outbound"}"#), "{text}");
        assert!(text.contains(r#"peer_up{peer="a",direction="inbound"} 1"#), "{text}");
        assert!(text.contains(r#"peer_up{peer="b",direction="outbound"} 1"#), "{text}");
        assert!(!text.contains("dials_total{"), "{text}");
        // Registering the key again starts a new series.
        with_local_recorder(&rec, || gauge!("peer_up", "peer" => "a", "direction" => "outbound").set(1.0));
        assert!(handle.render().contains(r#"peer_up{peer="a",direction="outbound"} 1"#));
    }

    #[test]
    fn renders_families_in_name_order_with_help_type_and_escaped_labels() {
        // other_seconds has no buckets of its own: it gets these defaults.
        let (rec, handle) = recorder(Builder::new().buckets(&[0.1, 1.0]).unwrap());
        with_local_recorder(&rec, || {
            describe_counter!("bytes_total", Unit::Bytes, "Bytes sent.\nPer \\ path.");
            counter!("bytes_total", "path" => "b\"x").increment(5);
            counter!("bytes_total", "path" => "a").increment(7);
            gauge!("active").set(2.5);
            describe_histogram!("delay_seconds", "Delay.");
            histogram!("delay_seconds", "side" => "down").record(0.05);
            histogram!("delay_seconds", "side" => "down").record(0.01);
            histogram!("delay_seconds", "side" => "down").record(3.0);
            histogram!("other_seconds").record(0.2);
        });
        let expected = r#"# TYPE active gauge
active 2.5
# HELP bytes_total Bytes sent.\nPer \\ path.
# TYPE bytes_total counter
bytes_total{path="a"} 7
bytes_total{path="b\"x"} 5
# HELP delay_seconds Delay.
# TYPE delay_seconds histogram
delay_seconds_bucket{side="down",le="0.01"} 1
delay_seconds_bucket{side="down",le="0.1"} 2
delay_seconds_bucket{side="down",le="+Inf"} 3
delay_seconds_sum{side="down"} 3.06
delay_seconds_count{side="down"} 3
# TYPE other_seconds histogram
other_seconds_bucket{le="0.1"} 0
other_seconds_bucket{le="1"} 1
other_seconds_bucket{le="+Inf"} 1
other_seconds_sum 0.2
other_seconds_count 1
"#;
        assert_eq!(handle.render(), expected);
    }

    #[test]
    fn a_handle_and_the_macro_reach_the_same_series() {
        let (rec, handle) = recorder(Builder::new());
        let held = with_local_recorder(&rec, || counter!("frames_total", "broadcast" => "x"));
        held.increment(2);
        with_local_recorder(&rec, || counter!("frames_total", "broadcast" => "x").increment(3));
        assert!(handle.render().contains("frames_total{broadcast=\"x\"} 5\n"), "{}", handle.render());
        assert_eq!(handle.series(), 1);
    }

    #[test]
    fn idle_series_with_expiring_labels_go_and_held_or_fixed_ones_stay() {
        let after = Duration::from_secs(60);
        let (rec, handle) = recorder(Builder::new().expire_idle(&["broadcast"], after));
        let held = with_local_recorder(&rec, || {
            counter!("frames_total", "broadcast" => "gone").increment(1);
            counter!("frames_total", "broadcast" => "changing").increment(1);
            gauge!("viewers", "broadcast" => "gone").set(0.0);
            histogram!("delay_seconds", "broadcast" => "gone").record(0.5);
            counter!("sessions_total", "result" => "ok").increment(1);
            counter!("frames_total", "broadcast" => "held")
        });
        let start = Instant::now();
        let registry = &handle.0;
        assert_eq!(registry.upkeep(start), 0);
        assert_eq!(registry.upkeep(start + after / 2), 0, "within the idle window");
        with_local_recorder(&rec, || counter!("frames_total", "broadcast" => "changing").increment(1));
        // Past the window: the three untouched broadcast series go; the one that changed at
        // after/2, the held one and the series without an expiring label stay.
        assert_eq!(registry.upkeep(start + after + Duration::from_secs(1)), 3);
        let text = handle.render();
        assert!(!text.contains("\"gone\""), "{text}");
        for kept in [
            "frames_total{broadcast=\"changing\"} 2",
            "frames_total{broadcast=\"held\"} 0",
            "sessions_total{result=\"ok\"} 1",
        ] {
            assert!(text.contains(kept), "{kept} missing: {text}");
        }
        // Once its handle is dropped the held series lingers a full window from the last upkeep
        // that saw it held, like the one that changed (seen changed by that same upkeep).
        drop(held);
        let seen = start + after + Duration::from_secs(1);
        assert_eq!(registry.upkeep(seen + after / 2), 0);
        assert_eq!(registry.upkeep(seen + after + Duration::from_secs(1)), 2);
        assert_eq!(handle.render(), "# TYPE sessions_total counter\nsessions_total{result=\"ok\"} 1\n");
    }

    #[test]
    fn without_expiry_upkeep_keeps_everything() {
        let (rec, handle) = recorder(Builder::new());
        with_local_recorder(&rec, || counter!("frames_total", "broadcast" => "x").increment(1));
        assert_eq!(handle.0.upkeep(Instant::now() + Duration::from_secs(86_400)), 0);
        assert_eq!(handle.series(), 1);
    }

    #[test]
    fn bad_buckets_are_refused() {
        assert!(Builder::new().buckets(&[]).is_err());
        assert!(Builder::new().buckets_for("x", &[1.0, 0.5]).is_err());
        assert!(Builder::new().buckets_for("x", &[1.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn one_name_as_two_kinds_exposes_the_first_kind_only() {
        let (rec, handle) = recorder(Builder::new());
        with_local_recorder(&rec, || {
            counter!("dual").increment(1);
            gauge!("dual").set(5.0);
        });
        assert_eq!(handle.render(), "# TYPE dual counter\ndual 1\n");
    }
}
