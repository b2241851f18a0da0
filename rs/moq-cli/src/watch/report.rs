//! What `moq watch` reports: the live line on stderr ([`print_live`]) and the final [`Summary`]
//! aggregated over all viewers ([`summarize`], [`summarize_players`]). Latency percentiles are
//! nearest-rank ([`moq_telemetry::stats::percentile`]), as the benchmarks report them.

use std::collections::BTreeMap;
use std::time::Instant;

use moq_telemetry::stats::percentile;
use serde::Serialize;

use super::verify::Stats;
use super::{exit, Viewer, WatchArgs};
use crate::backoff::Outages;

#[derive(Serialize, Debug, Default)]
pub struct TrackSummary {
    pub frames: u64,
    pub frames_min_per_viewer: u64,
    pub bytes: u64,
    pub groups_complete_min_per_viewer: u64,
    pub first_group_max: Option<u64>,
    pub corrupt: u64,
    /// Groups missing between two groups the relay delivered in sequence (never the outage's).
    pub gaps: u64,
    /// Groups skipped while a session was down: the viewer resumed at the live edge after
    /// reconnecting. Counted apart from `gaps`; neither counts as corruption.
    pub outage_gaps: u64,
    pub stalls: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    /// Frames delivered more than `--late-after` after capture.
    pub late: u64,
    pub errors: Vec<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct PlayerSummary {
    pub startup_ms_max: f64,
    pub rebuffers: u64,
    pub rebuffer_ms: f64,
    pub played: u64,
    pub switches_up: u64,
    pub switches_down: u64,
    pub dropped: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub renditions: Vec<usize>,
}

#[derive(Serialize, Debug, Default)]
pub struct Summary {
    pub viewers: usize,
    pub ok: bool,
    pub exit_code: u8,
    pub tracks: BTreeMap<String, TrackSummary>,
    pub player: PlayerSummary,
    /// Sessions lost and re-established, over all viewers: `reconnects`, `reconnect_attempts`,
    /// `outage_ms` (total, from the last frame before a loss to the first after it) and
    /// `longest_outage_ms`.
    #[serde(flatten)]
    pub outages: Outages,
    pub errors: Vec<String>,
}

/// The `p` percentile (in percent) of ascending microsecond samples, in milliseconds; 0 when
/// there are none.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    percentile(sorted_us, p).map_or(0.0, |us| us as f64 / 1000.0)
}

/// The players of all viewers: startup, rebuffering, switches and playback latency.
pub(super) fn summarize_players(all: &[Viewer]) -> PlayerSummary {
    let mut summary = PlayerSummary::default();
    let mut latency = Vec::new();
    for v in all {
        let p = v.player.lock().unwrap();
        let s = &p.stats;
        summary.startup_ms_max = summary.startup_ms_max.max(s.startup_ms.unwrap_or(0.0));
        summary.rebuffers += s.rebuffers;
        summary.rebuffer_ms += s.rebuffer_ms;
        summary.played += s.played;
        summary.switches_up += s.switches_up;
        summary.switches_down += s.switches_down;
        summary.dropped += s.dropped;
        summary.renditions.push(s.rendition);
        latency.extend(&s.latency_us);
    }
    latency.sort_unstable();
    summary.latency_ms_p50 = percentile_ms(&latency, 50.0);
    summary.latency_ms_p99 = percentile_ms(&latency, 99.0);
    summary.latency_ms_max = latency.last().map_or(0.0, |&l| l as f64 / 1000.0);
    summary
}

/// The outages of all viewers, one still going on counted until now.
pub(super) fn outages(all: &[Viewer]) -> Outages {
    let now = Instant::now();
    let mut total = Outages::default();
    for v in all {
        total.add(&v.outages.lock().unwrap().at(now));
    }
    total
}

/// One line on stderr: per track, frames, bitrate per viewer, recent latency and problems so far;
/// then reconnections and outage time, once there were any.
pub(super) fn print_live(all: &[Stats], outages: &Outages, started: Instant) {
    let mut line = format!("[{:>5.1}s]", started.elapsed().as_secs_f64());
    let mut per_track: BTreeMap<String, (u64, u64, u64, Vec<u64>)> = BTreeMap::new();
    for stats in all {
        for (name, s) in stats.lock().unwrap().iter() {
            let e = per_track.entry(name.clone()).or_default();
            e.0 += s.frames;
            e.1 += s.bytes;
            e.2 += s.gaps + s.stalls;
            e.3.extend(s.latency_us.iter().rev().take(64));
        }
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    for (name, (frames, bytes, problems, mut lat)) in per_track {
        lat.sort_unstable();
        line += &format!(
            " {name}: {frames} frames {:.2} Mbit/s latency p50 {:.1} ms, gaps+stalls {problems} |",
            bytes as f64 * 8.0 / secs / 1e6 / all.len() as f64,
            percentile_ms(&lat, 50.0)
        );
    }
    if outages.reconnect_attempts > 0 || outages.outage_ms > 0.0 {
        line += &format!(
            " reconnects {} (attempts {}), outage {:.1} s (longest {:.1} s)",
            outages.reconnects,
            outages.reconnect_attempts,
            outages.outage_ms / 1000.0,
            outages.longest_outage_ms / 1000.0
        );
    }
    eprintln!("{line}");
}

/// The tracks of all viewers, and the exit code they call for (`code` and `errors` from the
/// viewers that failed).
pub(super) fn summarize(all: &[Stats], args: &WatchArgs, code: u8, errors: Vec<String>) -> Summary {
    let mut summary = Summary { viewers: all.len(), exit_code: code, errors, ..Default::default() };
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for stats in all {
        for (name, s) in stats.lock().unwrap().iter() {
            let t = summary.tracks.entry(name.clone()).or_insert_with(|| TrackSummary {
                frames_min_per_viewer: u64::MAX,
                groups_complete_min_per_viewer: u64::MAX,
                ..Default::default()
            });
            t.frames += s.frames;
            t.frames_min_per_viewer = t.frames_min_per_viewer.min(s.frames);
            t.bytes += s.bytes;
            t.groups_complete_min_per_viewer = t.groups_complete_min_per_viewer.min(s.groups_complete);
            t.first_group_max = t.first_group_max.max(s.first_group);
            t.corrupt += s.corrupt;
            t.gaps += s.gaps;
            t.outage_gaps += s.outage_gaps;
            t.stalls += s.stalls;
            t.late += s.late;
            if let Some(e) = &s.error {
                t.errors.push(e.clone());
            }
            latencies.entry(name.clone()).or_default().extend(&s.latency_us);
        }
    }
    for (name, mut lat) in latencies {
        lat.sort_unstable();
        if let Some(t) = summary.tracks.get_mut(&name) {
            t.latency_ms_p50 = percentile_ms(&lat, 50.0);
            t.latency_ms_p99 = percentile_ms(&lat, 99.0);
            t.latency_ms_p999 = percentile_ms(&lat, 99.9);
            t.latency_ms_max = lat.last().map_or(0.0, |&l| l as f64 / 1000.0);
        }
    }
    // Viewers that never saw a track still count against completeness.
    let viewers_with_tracks = all.iter().filter(|s| !s.lock().unwrap().is_empty()).count();
    if viewers_with_tracks < all.len() {
        for t in summary.tracks.values_mut() {
            t.frames_min_per_viewer = 0;
            t.groups_complete_min_per_viewer = 0;
        }
    }
    if summary.exit_code == 0 && summary.tracks.values().any(|t| t.corrupt > 0) {
        summary.exit_code = exit::CORRUPT;
    }
    if summary.exit_code == 0 {
        if let Some(want) = args.groups {
            if summary.tracks.is_empty() || summary.tracks.values().any(|t| t.groups_complete_min_per_viewer < want) {
                summary.exit_code = exit::INCOMPLETE;
            }
        }
    }
    summary.ok = summary.exit_code == 0;
    summary
}
