//! The Prometheus text exposition format, as the relay's and the viewer's /metrics serve it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One sample: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Whether the sample is of `name` and carries every one of `labels` (and maybe others).
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

impl fmt::Display for Sample {
    /// The sample as the exposition format writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

/// A parsed scrape: every sample, in order, and the text it was parsed from.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Scrape {
    /// Parses the text format; comments and blank lines are skipped, a malformed line fails the
    /// test.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("malformed sample line: {l:?}")))
            .collect();
        Scrape { samples, text: text.to_string() }
    }

    /// GETs `url` (a /metrics endpoint), which must answer 200, and parses the body.
    pub fn fetch(url: &str) -> Scrape {
        let reply = crate::http::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(reply.status, 200, "GET {url}: {reply}");
        Scrape::parse(&reply.body)
    }

    /// The value of the first sample of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find(|s| s.matches(name, labels)).map(|s| s.value)
    }

    /// The sum of every sample of `name` whose labels include `labels` (0 when there is none).
    pub fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples.iter().filter(|s| s.matches(name, labels)).map(|s| s.value).sum()
    }

    /// The value of the sample of `name` whose labels are exactly `labels`.
    pub fn exact(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find(|s| s.matches(name, labels) && s.labels.len() == labels.len()).map(|s| s.value)
    }

    /// The same samples with the label `name` taken off every one (e.g. the `broadcast` label
    /// every client series carries).
    pub fn without_label(&self, name: &str) -> Scrape {
        let mut scrape = self.clone();
        for sample in &mut scrape.samples {
            sample.labels.remove(name);
        }
        scrape
    }

    /// The distinct values of the label `name` across all samples.
    pub fn label_values(&self, name: &str) -> BTreeSet<&str> {
        self.samples.iter().filter_map(|s| s.label(name)).collect()
    }
}

/// `name{label="value",...} value [timestamp]`, label values with `\\`, `\"` and `\n` escapes.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let (value, after) = quoted(after.trim_start().strip_prefix('"')?)?;
            labels.insert(key.trim().to_string(), value);
            rest = after.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    (!name.is_empty()).then(|| Sample { name: name.to_string(), labels, value })
}

/// An escaped label value up to its closing quote, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP moq_relay_sessions_total Sessions by result.
# TYPE moq_relay_sessions_total counter
moq_relay_sessions_total{result="accepted"} 3
moq_relay_sessions_total{result="rejected",reason="capacity"} 2

moq_relay_max_sessions 2
moq_relay_bytes_sent_total{broadcast="a \"quoted\" name",track_type="video"} 1200
moq_relay_bytes_sent_total{broadcast="x,y=z",track_type="audio"} 34.5
moq_relay_bytes_sent_total{broadcast="back\\slash\nline",track_type="video"} 0.5
moq_client_latency_seconds_bucket{broadcast="b",le="0.5"} 7
moq_client_latency_seconds_bucket{broadcast="b",le="1"} 9
moq_client_latency_seconds_bucket{broadcast="b",le="+Inf"} 12
moq_client_latency_seconds_count{broadcast="b"} 12
moq_client_quality_switches_total{broadcast="b",direction="down"} 4
moq_relay_ratio{ worker = "0" , } NaN 1700000000000
moq_relay_low -Inf
"#;

    #[test]
    fn series_without_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("moq_relay_max_sessions", &[]), Some(2.0));
        assert_eq!(s.exact("moq_relay_max_sessions", &[]), Some(2.0));
        assert_eq!(s.value("moq_relay_low", &[]), Some(f64::NEG_INFINITY));
        assert_eq!(s.value("moq_relay_missing", &[]), None);
        assert_eq!(s.total("moq_relay_missing", &[]), 0.0);
    }

    #[test]
    fn label_subsets_pick_the_first_and_total_sums() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("moq_relay_sessions_total", &[]), Some(3.0));
        assert_eq!(s.value("moq_relay_sessions_total", &[("reason", "capacity")]), Some(2.0));
        assert_eq!(s.value("moq_relay_sessions_total", &[("result", "rejected"), ("reason", "capacity")]), Some(2.0));
        assert_eq!(s.value("moq_relay_sessions_total", &[("result", "accepted"), ("reason", "capacity")]), None);
        assert_eq!(s.total("moq_relay_sessions_total", &[]), 5.0);
        assert_eq!(s.total("moq_relay_bytes_sent_total", &[("track_type", "video")]), 1200.5);
    }

    #[test]
    fn escaped_quotes_backslashes_and_newlines() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("moq_relay_bytes_sent_total", &[("broadcast", "a \"quoted\" name")]), Some(1200.0));
        assert_eq!(s.value("moq_relay_bytes_sent_total", &[("broadcast", "back\\slash\nline")]), Some(0.5));
        let printed = s.samples.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(printed
            .contains(&r#"moq_relay_bytes_sent_total{broadcast="a \"quoted\" name",track_type="video"} 1200"#.into()));
        // Printing and parsing again gives the same samples (NaN aside: it equals nothing).
        let again = Scrape::parse(&printed.join("\n"));
        let numbers = |s: &Scrape| s.samples.iter().filter(|x| !x.value.is_nan()).cloned().collect::<Vec<_>>();
        assert_eq!(numbers(&again), numbers(&s));
    }

    #[test]
    fn commas_and_equals_inside_values() {
        let s = Scrape::parse(TEXT);
        let sample = s.samples.iter().find(|x| x.label("broadcast") == Some("x,y=z")).unwrap();
        assert_eq!(sample.label("track_type"), Some("audio"));
        assert_eq!(sample.labels.len(), 2);
        assert_eq!(sample.value, 34.5);
    }

    #[test]
    fn histogram_buckets_by_le() {
        let s = Scrape::parse(TEXT);
        let bucket = |le| s.value("moq_client_latency_seconds_bucket", &[("le", le)]);
        assert_eq!((bucket("0.5"), bucket("1"), bucket("+Inf")), (Some(7.0), Some(9.0), Some(12.0)));
        assert_eq!(s.value("moq_client_latency_seconds_count", &[]), Some(12.0));
    }

    #[test]
    fn exact_matches_after_dropping_a_label() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.exact("moq_client_latency_seconds_count", &[]), None, "it carries broadcast");
        let c = s.without_label("broadcast");
        assert_eq!(c.exact("moq_client_latency_seconds_count", &[]), Some(12.0));
        assert_eq!(c.exact("moq_client_quality_switches_total", &[("direction", "down")]), Some(4.0));
        assert_eq!(c.exact("moq_client_latency_seconds_bucket", &[]), None, "every bucket has le");
        assert_eq!(s.label_values("broadcast").len(), 4);
    }

    #[test]
    fn spaces_trailing_commas_timestamps_and_nan() {
        let s = Scrape::parse(TEXT);
        let ratio = s.samples.iter().find(|x| x.name == "moq_relay_ratio").unwrap();
        assert_eq!(ratio.label("worker"), Some("0"));
        assert!(ratio.value.is_nan());
    }

    #[test]
    #[should_panic(expected = "malformed sample line")]
    fn malformed_lines_fail() {
        Scrape::parse("moq_relay_x{broadcast=\"unterminated} 1\n");
    }
}
