//! Process CPU, memory, descriptors and start time in the conventional `process_*` names,
//! rendered as text after the recorder's families: CPU seconds are fractional and the metrics
//! facade's counters are integers.

use std::fmt::Write;
use std::time::SystemTime;

use moq_metrics::Metric;
use moq_telemetry::process::ProcessStats;

use super::catalog::{PROCESS_CPU, PROCESS_FDS, PROCESS_MEMORY, PROCESS_START};

/// Appends the process families to `out`: the start time always, the rest where they can be
/// read (Linux's /proc, through `moq_telemetry::process`).
pub(super) fn render(out: &mut String, started: SystemTime) {
    let mut family = |metric: &Metric, value: f64| {
        let (name, kind, help) = (metric.name, metric.kind.as_str(), metric.help);
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
    };
    family(&PROCESS_START, super::unix(started));
    if let Ok(stats) = ProcessStats::of_self() {
        family(&PROCESS_CPU, stats.cpu_seconds);
        family(&PROCESS_MEMORY, stats.resident_bytes as f64);
        if let Some(fds) = stats.open_fds {
            family(&PROCESS_FDS, fds as f64);
        }
    }
}
