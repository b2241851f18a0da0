//! The metric catalogs against everything that names a metric: every metric a dashboard query,
//! alert rule, alert test, runbook or doc names must be defined in a catalog (as the relay and
//! `moq watch` list them with `--list-metrics` / `moq metrics`), and every defined metric must
//! have its row in the docs, with the kind, unit, labels and buckets the catalog gives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moq_interop::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A catalog entry as the binaries list it.
#[derive(Debug, Clone)]
struct Def {
    kind: String,
    unit: String,
    labels: Vec<(String, Option<Vec<String>>)>,
    buckets: Vec<f64>,
}

fn listed(program: &str, args: &[&str]) -> BTreeMap<String, Def> {
    let out = run(program, Command::new(bin(program)).args(args), Duration::from_secs(20));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let labels = m["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let values =
                        l["values"].as_array().map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect());
                    (l["name"].as_str().unwrap().to_string(), values)
                })
                .collect();
            let def = Def {
                kind: m["kind"].as_str().unwrap().to_string(),
                unit: m["unit"].as_str().unwrap().to_string(),
                labels,
                buckets: m["buckets"].as_array().unwrap().iter().map(|b| b.as_f64().unwrap()).collect(),
            };
            (m["name"].as_str().unwrap().to_string(), def)
        })
        .collect()
}

fn relay_catalog() -> BTreeMap<String, Def> {
    listed("moq-relay", &["--list-metrics"])
}

fn client_catalog() -> BTreeMap<String, Def> {
    listed("moq", &["metrics"])
}

/// The namespaces our metrics live in; any identifier starting with one is a metric name.
const NAMESPACES: [&str; 5] = ["moq_relay_", "moq_client_", "moq_telemetry_", "process_", "netplay_"];

/// Metric names written in `text`: identifiers in our namespaces, except prefixes written as
/// wildcards (`moq_relay_*`).
fn metric_names(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word = &text[start..i];
        let wildcard = bytes.get(i) == Some(&b'*');
        if NAMESPACES.iter().any(|ns| word.starts_with(ns)) && !wildcard && !word.ends_with('_') {
            let line = text[..start].matches('\n').count() + 1;
            out.push((line, word.to_string()));
        }
    }
    out
}

/// `name` is defined, directly or as a histogram's `_bucket`/`_sum`/`_count` series.
fn defined(name: &str, defs: &BTreeMap<String, Def>) -> bool {
    if defs.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .any(|suffix| name.strip_suffix(suffix).and_then(|base| defs.get(base)).is_some_and(|d| d.kind == "histogram"))
}

/// Every undefined metric name in `text`, as `file:line name`.
fn undefined(file: &str, text: &str, defs: &BTreeMap<String, Def>) -> Vec<String> {
    metric_names(text)
        .into_iter()
        .filter(|(_, name)| !defined(name, defs))
        .map(|(line, name)| format!("{file}:{line} names {name}, which no catalog defines"))
        .collect()
}

/// Every file that names metrics for operators.
fn consumers() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![
        root.join("observability/prometheus-alerts.yml"),
        root.join("observability/prometheus-alerts.test.yml"),
        root.join("docs/metrics.md"),
        root.join("docs/client-metrics.md"),
        root.join("docs/tracing.md"),
        root.join("docs/ARCHITECTURE.md"),
        root.join("README.md"),
    ];
    for dir in ["observability/grafana/dashboards", "observability/runbooks"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        files.extend(entries);
    }
    files.retain(|f| f.exists());
    files
}

fn all_defs() -> BTreeMap<String, Def> {
    let mut defs = relay_catalog();
    defs.extend(client_catalog());
    defs
}

#[test]
fn every_metric_a_dashboard_alert_runbook_or_doc_names_is_defined() {
    let defs = all_defs();
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for file in consumers() {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(repo()).unwrap().display().to_string();
        problems.extend(undefined(&rel, &text, &defs));
        named.extend(metric_names(&text).into_iter().map(|(_, n)| n));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("{} metric names in {} files, all defined by the catalogs", named.len(), consumers().len());
}

/// The checker itself fails on a dashboard query naming a metric no catalog defines.
#[test]
fn a_dashboard_naming_an_undefined_metric_fails_the_check() {
    let defs = all_defs();
    let dashboard = std::fs::read_to_string(repo().join("observability/grafana/dashboards/moq-pipeline.json")).unwrap();
    assert!(undefined("moq-pipeline.json", &dashboard, &defs).is_empty());
    let broken = dashboard.replacen(
        "\"expr\": \"",
        "\"expr\": \"sum(rate(moq_relay_frames_teleported_total[5m])) + histogram_quantile(0.5, rate(moq_client_latency_seconds_bucket[1m])) + ",
        1,
    );
    assert_ne!(broken, dashboard, "the dashboard has an expr to break");
    let problems = undefined("moq-pipeline.json", &broken, &defs);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("moq_relay_frames_teleported_total"), "{problems:?}");
    // Histogram series are defined through their base; a counter has no _bucket series.
    assert!(defined("moq_relay_forwarding_delay_seconds_count", &defs));
    assert!(!defined("moq_relay_bytes_sent_total_bucket", &defs));
    assert!(metric_names("see `moq_relay_*` and moq_lite::telemetry").is_empty());
}

/// The cells of a docs table row that starts with a metric name in backticks.
fn rows(doc: &str) -> BTreeMap<String, Vec<String>> {
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect();
            // Metric tables have the kind in their second column (the buckets table does not).
            if !["counter", "gauge", "histogram"].contains(&cells.get(1)?.as_str()) {
                return None;
            }
            let name = cells.first()?.trim_matches('`').to_string();
            Some((name, cells))
        })
        .collect()
}

/// Checks each definition against its docs row: kind, unit (when the table has a unit column),
/// every label name and every known label value mentioned.
fn check_rows(doc_file: &Path, defs: &BTreeMap<String, Def>, unit_column: bool) -> Vec<String> {
    let doc = std::fs::read_to_string(doc_file).unwrap();
    let rows = rows(&doc);
    let file = doc_file.file_name().unwrap().to_string_lossy();
    let mut problems = Vec::new();
    for (name, def) in defs {
        let Some(cells) = rows.get(name) else {
            problems.push(format!("{file}: no row for {name}"));
            continue;
        };
        if cells.get(1) != Some(&def.kind) {
            problems.push(format!("{file}: {name} is a {}, the row says {:?}", def.kind, cells.get(1)));
        }
        let labels = cells.get(2).cloned().unwrap_or_default();
        for (label, values) in &def.labels {
            if !labels.contains(label.as_str()) {
                problems.push(format!("{file}: {name}'s row does not name its label {label}"));
            }
            for v in values.iter().flatten() {
                if !labels.contains(&format!("`{v}`")) {
                    problems.push(format!("{file}: {name}'s row does not list {label}=`{v}`"));
                }
            }
        }
        if def.labels.is_empty() && labels != "—" {
            problems.push(format!("{file}: {name} has no labels, the row says {labels:?}"));
        }
        if unit_column && cells.get(3) != Some(&def.unit) {
            problems.push(format!("{file}: {name}'s unit is {:?}, the row says {:?}", def.unit, cells.get(3)));
        }
    }
    problems
}

/// The buckets table: each histogram's bounds, as written in the docs.
fn check_buckets(doc_file: &Path, defs: &BTreeMap<String, Def>) -> Vec<String> {
    let doc = std::fs::read_to_string(doc_file).unwrap();
    let file = doc_file.file_name().unwrap().to_string_lossy();
    let mut problems = Vec::new();
    for (name, def) in defs.iter().filter(|(_, d)| d.kind == "histogram") {
        let bounds: Vec<String> = def.buckets.iter().map(|b| b.to_string()).collect();
        // The bucket table's row for this histogram: its last cell lists the bounds. (The same
        // name also heads a row of the metric tables, whose last cell is "Used by".)
        let last_cell = |l: &str| l.rsplit('|').nth(1).unwrap_or_default().trim().to_string();
        let rows: Vec<String> = doc
            .lines()
            .filter(|l| l.contains(&format!("`{name}`")) && l.contains(&bounds[0]) && l.starts_with('|'))
            .map(last_cell)
            .collect();
        let expected = bounds.join(", ");
        let written = rows.iter().find(|w| **w == expected).or(rows.last()).cloned();
        let ok =
            written.as_deref() == Some(expected.as_str()) || doc.contains(&format!("buckets (seconds): {expected}."));
        if !ok {
            problems.push(format!("{file}: {name} buckets are {expected}, the docs say {written:?}"));
        }
    }
    problems
}

#[test]
fn every_defined_metric_is_documented_as_defined() {
    let root = repo();
    let relay = relay_catalog();
    let client = client_catalog();
    let mut problems = check_rows(&root.join("docs/metrics.md"), &relay, true);
    problems.extend(check_buckets(&root.join("docs/metrics.md"), &relay));
    problems.extend(check_rows(&root.join("docs/client-metrics.md"), &client, false));
    problems.extend(check_buckets(&root.join("docs/client-metrics.md"), &client));
    // Documented rows with no definition behind them.
    for (doc, defs) in [("docs/metrics.md", &relay), ("docs/client-metrics.md", &client)] {
        for name in rows(&std::fs::read_to_string(root.join(doc)).unwrap()).keys() {
            if !defs.contains_key(name) {
                problems.push(format!("{doc}: a row for {name}, which this catalog does not define"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("{} relay and {} client metrics documented as defined", relay.len(), client.len());
}
