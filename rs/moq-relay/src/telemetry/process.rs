//! Process CPU, memory, descriptors and start time in the conventional `process_*` names,
//! rendered as text after the recorder's families: CPU seconds are fractional and the metrics
//! facade's counters are integers.

use std::fmt::Write;
use std::time::SystemTime;

use moq_metrics::Metric;

use super::catalog::{PROCESS_CPU, PROCESS_FDS, PROCESS_MEMORY, PROCESS_START};

/// Appends the process families to `out`; on platforms without /proc only the start time.
pub(super) fn render(out: &mut String, started: SystemTime) {
    let mut family = |metric: &Metric, value: f64| {
        let (name, kind, help) = (metric.name, metric.kind.as_str(), metric.help);
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
    };
    family(&PROCESS_START, super::unix(started));
    if let Some(stats) = read() {
        family(&PROCESS_CPU, stats.cpu_seconds);
        family(&PROCESS_MEMORY, stats.resident_bytes as f64);
        if let Some(fds) = stats.open_fds {
            family(&PROCESS_FDS, fds as f64);
        }
    }
}

struct Stats {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: Option<u64>,
}

// Fields 14 and 15 (utime, stime) are in clock ticks; USER_HZ is 100 on Linux. Resident pages
// are 4 KiB on the platforms the relay targets.
fn read() -> Option<Stats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = statm.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    Some(Stats { cpu_seconds: ticks as f64 / 100.0, resident_bytes: pages * 4096, open_fds })
}
