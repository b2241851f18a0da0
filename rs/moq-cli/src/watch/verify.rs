//! Frame verification and per-track bookkeeping: every frame of a group is checked (in full or
//! by header, per `--verify`), counted in the client metrics, handed to the player (video), and
//! accounted in its track's [`TrackStats`]: frames, bytes, gaps, corruption, stalls, lateness and
//! latency samples.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::impairment::Impairment;
use super::Verify;
use crate::catalog;
use crate::media;
use crate::player::Player;

/// An inter-frame gap on a track longer than this counts as a stall.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(500);
/// Latency samples kept per track per viewer.
const MAX_SAMPLES: usize = 100_000;

/// What one viewer saw on one track (or on the adaptively played `video`).
#[derive(Debug, Default, Clone)]
pub(super) struct TrackStats {
    pub frames: u64,
    pub bytes: u64,
    pub groups_complete: u64,
    pub first_group: Option<u64>,
    pub last_group: Option<u64>,
    pub corrupt: u64,
    pub gaps: u64,
    /// Groups skipped while the session was down: the viewer resumed at the live edge.
    pub outage_gaps: u64,
    /// The session was re-established since the last group: the next group's distance from the
    /// last one is the outage's, not a gap the relay made.
    pub resumed: bool,
    pub stalls: u64,
    pub late: u64,
    pub latency_us: Vec<u64>,
    pub last_frame: Option<Instant>,
    pub ended: bool,
    pub error: Option<String>,
}

/// One viewer's statistics, by track name.
pub(super) type Stats = Arc<Mutex<BTreeMap<String, TrackStats>>>;

/// Where one stream of groups goes: statistics under `name`, metrics under the rendition label
/// of `counters`, the impairment, and (for video) the player.
pub(super) struct Feed {
    pub stats: Stats,
    pub name: String,
    pub counters: RenditionCounters,
    pub impair: Arc<Impairment>,
    pub player: Option<Arc<Mutex<Player>>>,
    pub want_groups: Option<u64>,
}

/// Frame and byte counters of one rendition label, resolved once rather than per frame.
pub(super) struct RenditionCounters {
    frames: metrics::Counter,
    bytes: metrics::Counter,
}

impl RenditionCounters {
    pub fn new(label: &str) -> Self {
        Self {
            frames: metrics::counter!(catalog::FRAMES.name, "rendition" => label.to_string()),
            bytes: metrics::counter!(catalog::BYTES.name, "rendition" => label.to_string()),
        }
    }
}

impl Feed {
    fn update(&self, f: &mut dyn FnMut(&mut TrackStats)) {
        if let Some(s) = self.stats.lock().unwrap().get_mut(&self.name) {
            f(s)
        }
    }

    /// Reads, verifies and accounts one group; returns (complete, payload bytes, time taken), and
    /// whether enough groups are complete.
    pub async fn read_group(&self, group: &mut moq_lite::model::GroupConsumer) -> (bool, u64, Duration, bool) {
        let sequence = group.sequence();
        self.update(&mut |s| {
            if let Some(last) = s.last_group {
                let skipped = sequence.saturating_sub(last + 1);
                if s.resumed {
                    s.outage_gaps += skipped;
                } else {
                    s.gaps += skipped;
                }
            }
            s.resumed = false;
            s.first_group.get_or_insert(sequence);
            s.last_group = Some(s.last_group.map_or(sequence, |l| l.max(sequence)));
        });
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut expected_index = 0u32;
        let late_after_us = self.impair.late_after.as_micros() as u64;
        let complete = loop {
            match group.read_frame().await {
                Ok(Some(frame)) => {
                    let len = frame.payload.len();
                    self.impair.apply(len, frame.received).await;
                    let now = Instant::now();
                    bytes += len as u64;
                    let info = match self.impair.verify {
                        Verify::Full => media::verify_frame(&frame.payload),
                        Verify::Header => media::read_header(&frame.payload),
                    };
                    self.counters.frames.increment(1);
                    self.counters.bytes.increment(len as u64);
                    if let (Some(player), Some(info)) = (&self.player, info) {
                        player.lock().unwrap().push(info.capture_us, now);
                    }
                    let latency = info.map(|i| media::now_us().saturating_sub(i.capture_us));
                    let measured = now >= self.impair.measure_from;
                    self.update(&mut |s| {
                        if measured {
                            s.frames += 1;
                            s.bytes += len as u64;
                        }
                        match info {
                            Some(i) if i.group == sequence => {
                                s.gaps += u64::from(i.index.saturating_sub(expected_index));
                            }
                            _ => s.corrupt += 1,
                        }
                        if let Some(l) = latency.filter(|_| measured) {
                            if l > late_after_us {
                                s.late += 1;
                            }
                            if s.latency_us.len() < MAX_SAMPLES {
                                s.latency_us.push(l);
                            }
                        }
                        if s.last_frame.is_some_and(|t| now.duration_since(t) > STALL_THRESHOLD) {
                            s.stalls += 1;
                        }
                        s.last_frame = Some(now);
                    });
                    expected_index = info.map_or(expected_index, |i| i.index + 1);
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        let mut done = false;
        self.update(&mut |s| {
            if complete {
                s.groups_complete += 1;
            }
            done = self.want_groups.is_some_and(|w| s.groups_complete >= w);
        });
        (complete, bytes, started.elapsed(), done)
    }

    /// Records how the track ended: cleanly, or with the error that ended it.
    pub fn ended(&self, result: Result<(), moq_lite::Error>) {
        match result {
            Ok(()) => self.update(&mut |s| s.ended = true),
            Err(e) => self.update(&mut |s| s.error = Some(e.to_string())),
        }
    }
}
