//! Metric catalogs, in the manner of Vector's `internal_events`: every metric a crate exports is
//! defined once, as a [`Metric`] constant (name, kind, unit, labels, help, buckets), and listed in
//! that crate's catalog. Everything else is derived from the definitions:
//! - HELP text and units ([`Catalog::describe`]),
//! - histogram bucket layouts for exporters ([`Catalog::buckets`]),
//! - counters exported at 0 from start-up for every label set known up front
//!   ([`Catalog::zero_counters`]), so `rate()` and `increase()` see the first event,
//! - a machine-readable listing ([`Catalog::to_json`]) that tests hold the docs, dashboards, alert
//!   rules and runbooks to.
//!
//! A catalog has a prefix: a library whose metrics are named by its embedder (moq-lite's transport
//! metrics are `moq_relay_*` inside the relay) defines name stems, and the embedder supplies the
//! prefix. Crates that name their own metrics use an empty prefix and full names.

use std::collections::BTreeMap;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The base unit of a metric's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    /// Unix time in seconds.
    Timestamp,
    /// A dimensionless fraction (0..1).
    Ratio,
    /// A count of things, named (e.g. `"frames"`).
    Count(&'static str),
    /// An info metric whose value is always 1.
    Info,
}

impl Unit {
    /// How the docs name the unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Timestamp => "Unix seconds",
            Unit::Ratio => "ratio",
            Unit::Count(things) => things,
            Unit::Info => "—",
        }
    }

    fn facade(self) -> Option<metrics::Unit> {
        match self {
            Unit::Seconds => Some(metrics::Unit::Seconds),
            Unit::Bytes => Some(metrics::Unit::Bytes),
            _ => None,
        }
    }
}

/// The values a label can take, and where that set is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// A fixed set written in code.
    Known(&'static [&'static str]),
    /// Values handed out at run time by a capped pool; the text says where the cap is enforced.
    Bounded(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub name: &'static str,
    pub values: Values,
}

impl Label {
    pub const fn known(name: &'static str, values: &'static [&'static str]) -> Self {
        Self { name, values: Values::Known(values) }
    }

    pub const fn bounded(name: &'static str, by: &'static str) -> Self {
        Self { name, values: Values::Bounded(by) }
    }
}

/// Which label sets a counter exports at 0 from start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// Every combination of its labels' known values (none if a label is [`Values::Bounded`]).
    Product,
    /// Exactly these value tuples, in the order of the metric's labels (for labels whose values
    /// only occur in some combinations, like `result="accepted", reason="ok"`).
    Listed(&'static [&'static [&'static str]]),
}

/// One metric's definition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The full name, or the stem a [`Catalog`] prefix is put in front of.
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub labels: &'static [Label],
    pub help: &'static str,
    /// Histogram bucket upper bounds (`+Inf` implicit); empty for other kinds.
    pub buckets: &'static [f64],
    pub initial: Initial,
}

impl Metric {
    /// A definition with no labels and no buckets; fill the rest with the `with_*` methods.
    pub const fn new(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Self {
        Self { name, kind, unit, labels: &[], help, buckets: &[], initial: Initial::Product }
    }

    pub const fn counter(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self::new(name, Kind::Counter, unit, help)
    }

    pub const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self::new(name, Kind::Gauge, unit, help)
    }

    pub const fn histogram(name: &'static str, unit: Unit, buckets: &'static [f64], help: &'static str) -> Self {
        Self { buckets, ..Self::new(name, Kind::Histogram, unit, help) }
    }

    pub const fn labels(self, labels: &'static [Label]) -> Self {
        Self { labels, ..self }
    }

    pub const fn initial(self, sets: &'static [&'static [&'static str]]) -> Self {
        Self { initial: Initial::Listed(sets), ..self }
    }

    /// Label value tuples exported at 0 from start-up (counters only).
    pub fn initial_sets(&self) -> Vec<Vec<&'static str>> {
        if self.kind != Kind::Counter {
            return Vec::new();
        }
        match self.initial {
            Initial::Listed(sets) => sets.iter().map(|s| s.to_vec()).collect(),
            Initial::Product => {
                let mut sets = vec![Vec::new()];
                for label in self.labels {
                    let Values::Known(values) = label.values else { return Vec::new() };
                    sets = sets
                        .into_iter()
                        .flat_map(|set| {
                            values.iter().map(move |v| {
                                let mut next = set.clone();
                                next.push(*v);
                                next
                            })
                        })
                        .collect();
                }
                sets
            }
        }
    }
}

/// A crate's metrics under one prefix.
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    /// Put in front of every stem with an underscore; empty when the names are full.
    pub prefix: &'a str,
    pub metrics: &'static [Metric],
}

impl<'a> Catalog<'a> {
    pub const fn new(prefix: &'a str, metrics: &'static [Metric]) -> Self {
        Self { prefix, metrics }
    }

    /// The exported name of `metric`.
    pub fn name(&self, metric: &Metric) -> String {
        full_name(self.prefix, metric)
    }

    /// Registers HELP text (with the labels' meaning) and units with the installed recorder.
    pub fn describe(&self) {
        for m in self.metrics {
            let name = self.name(m);
            let help = m.help;
            match (m.kind, m.unit.facade()) {
                (Kind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
                (Kind::Counter, None) => metrics::describe_counter!(name, help),
                (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
                (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
                (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
                (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
            }
        }
    }

    /// Registers every counter label set known up front at 0 with the installed recorder.
    pub fn zero_counters(&self) {
        for m in self.metrics {
            for set in m.initial_sets() {
                let labels: Vec<metrics::Label> =
                    m.labels.iter().zip(set).map(|(l, v)| metrics::Label::new(l.name, v)).collect();
                metrics::counter!(self.name(m), labels).increment(0);
            }
        }
    }

    /// Bucket layouts of the histograms, by exported name.
    pub fn buckets(&self) -> Vec<(String, &'static [f64])> {
        self.metrics.iter().filter(|m| m.kind == Kind::Histogram).map(|m| (self.name(m), m.buckets)).collect()
    }

    /// Every definition with its exported name, as JSON: what `--list-metrics` prints and what
    /// the documentation tests read.
    pub fn to_json(&self) -> serde_json::Value {
        let metrics = self.metrics.iter().map(|m| {
            let labels: Vec<serde_json::Value> = m
                .labels
                .iter()
                .map(|l| match l.values {
                    Values::Known(values) => serde_json::json!({ "name": l.name, "values": values }),
                    Values::Bounded(by) => serde_json::json!({ "name": l.name, "bounded_by": by }),
                })
                .collect();
            serde_json::json!({
                "name": self.name(m),
                "kind": m.kind.as_str(),
                "unit": m.unit.as_str(),
                "labels": labels,
                "help": m.help,
                "buckets": m.buckets,
                "initial": m.initial_sets(),
            })
        });
        serde_json::Value::Array(metrics.collect())
    }
}

/// `prefix_stem`, or `stem` with an empty prefix.
pub fn full_name(prefix: &str, metric: &Metric) -> String {
    if prefix.is_empty() {
        metric.name.to_string()
    } else {
        format!("{prefix}_{}", metric.name)
    }
}

/// Several catalogs as one JSON array (a process exports more than one).
pub fn to_json(catalogs: &[Catalog<'_>]) -> serde_json::Value {
    serde_json::Value::Array(
        catalogs.iter().flat_map(|c| c.to_json().as_array().cloned().unwrap_or_default()).collect(),
    )
}

/// Problems in a catalog that no test of its users would notice: duplicate names, histograms
/// without buckets or with unsorted ones, listed initial sets of the wrong arity or with values
/// their label does not know, HELP text missing.
pub fn lint(catalogs: &[Catalog<'_>]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for c in catalogs {
        for m in c.metrics {
            let name = c.name(m);
            if seen.insert(name.clone(), ()).is_some() {
                problems.push(format!("{name}: defined twice"));
            }
            if m.help.trim().is_empty() {
                problems.push(format!("{name}: no help text"));
            }
            match m.kind {
                Kind::Histogram if m.buckets.is_empty() => problems.push(format!("{name}: histogram without buckets")),
                Kind::Histogram if m.buckets.windows(2).any(|w| w[0] >= w[1]) => {
                    problems.push(format!("{name}: buckets not strictly increasing"))
                }
                Kind::Counter | Kind::Gauge if !m.buckets.is_empty() => {
                    problems.push(format!("{name}: buckets on a {}", m.kind.as_str()))
                }
                _ => {}
            }
            if m.kind == Kind::Counter && !name.ends_with("_total") {
                problems.push(format!("{name}: a counter's name ends in _total"));
            }
            if let Initial::Listed(sets) = m.initial {
                for set in sets {
                    if set.len() != m.labels.len() {
                        problems.push(format!("{name}: initial set {set:?} does not match its labels"));
                        continue;
                    }
                    for (label, value) in m.labels.iter().zip(set.iter()) {
                        if let Values::Known(values) = label.values {
                            if !values.contains(value) {
                                problems.push(format!("{name}: {}={value:?} is not a known value", label.name));
                            }
                        }
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    const SWITCHES: Metric = Metric::counter("switches_total", Unit::Count("switches"), "Switches.")
        .labels(&[Label::known("direction", &["up", "down"]), Label::known("kind", &["a", "b"])]);
    const REQUESTS: Metric = Metric::counter("requests_total", Unit::Count("requests"), "Requests.")
        .labels(&[Label::known("result", &["accepted", "rejected"]), Label::known("reason", &["ok", "nope"])])
        .initial(&[&["accepted", "ok"], &["rejected", "nope"]]);
    const PER_BROADCAST: Metric = Metric::counter("bytes_total", Unit::Bytes, "Bytes.")
        .labels(&[Label::bounded("broadcast", "a pool"), Label::known("dir", &["in"])]);
    const DELAY: Metric = Metric::histogram("delay_seconds", Unit::Seconds, &[0.1, 1.0], "Delay.");
    const ALL: &[Metric] = &[SWITCHES, REQUESTS, PER_BROADCAST, DELAY];

    #[test]
    fn initial_sets_are_the_product_or_the_list_and_never_bounded_labels() {
        assert_eq!(
            SWITCHES.initial_sets(),
            vec![vec!["up", "a"], vec!["up", "b"], vec!["down", "a"], vec!["down", "b"]]
        );
        assert_eq!(REQUESTS.initial_sets(), vec![vec!["accepted", "ok"], vec!["rejected", "nope"]]);
        assert!(PER_BROADCAST.initial_sets().is_empty());
        assert!(DELAY.initial_sets().is_empty());
        let plain = Metric::counter("x_total", Unit::Count("x"), "X.");
        assert_eq!(plain.initial_sets(), vec![Vec::<&str>::new()]);
    }

    #[test]
    fn zero_counters_registers_each_known_set_at_zero_under_the_prefix() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || Catalog::new("moq_test", ALL).zero_counters());
        let mut series: Vec<(String, Vec<String>, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let DebugValue::Counter(v) = value else { panic!("only counters are zeroed") };
                let labels = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                (key.key().name().to_string(), labels, v)
            })
            .collect();
        series.sort();
        assert_eq!(series.len(), 6, "{series:?}");
        assert!(series.iter().all(|(name, _, v)| name.starts_with("moq_test_") && *v == 0));
        assert!(series.contains(&(
            "moq_test_requests_total".into(),
            vec!["result=accepted".into(), "reason=ok".into()],
            0
        )));
        assert!(!series.iter().any(|(name, _, _)| name == "moq_test_bytes_total"));
    }

    #[test]
    fn names_buckets_and_json_follow_the_prefix() {
        let c = Catalog::new("p", ALL);
        assert_eq!(c.name(&DELAY), "p_delay_seconds");
        assert_eq!(Catalog::new("", ALL).name(&DELAY), "delay_seconds");
        assert_eq!(c.buckets(), vec![("p_delay_seconds".to_string(), &[0.1, 1.0][..])]);
        let json = c.to_json();
        assert_eq!(json[2]["labels"][0]["bounded_by"], "a pool");
        assert_eq!(json[0]["labels"][0]["values"][1], "down");
        assert_eq!(json[3]["kind"], "histogram");
    }

    #[test]
    fn lint_finds_what_tests_of_users_would_not() {
        assert!(lint(&[Catalog::new("p", ALL)]).is_empty(), "{:?}", lint(&[Catalog::new("p", ALL)]));
        const BAD: &[Metric] = &[
            Metric::counter("dup_total", Unit::Count("x"), "X."),
            Metric::counter("dup_total", Unit::Count("x"), "X."),
            Metric::counter("no_suffix", Unit::Count("x"), ""),
            Metric::histogram("h_seconds", Unit::Seconds, &[1.0, 0.5], "H."),
            Metric::counter("r_total", Unit::Count("x"), "R.")
                .labels(&[Label::known("reason", &["a"])])
                .initial(&[&["b"]]),
        ];
        let problems = lint(&[Catalog::new("", BAD)]);
        for needle in ["defined twice", "no help", "ends in _total", "strictly increasing", "not a known value"] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle}: {problems:?}");
        }
    }
}
