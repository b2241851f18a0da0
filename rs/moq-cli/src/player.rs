//! A playback model for `moq watch`: what a real player would experience, measured honestly.
//!
//! Video frames enter a buffer when they arrive; playback starts `target` after the first frame
//! arrived and then drains the buffer in real time by the frames' capture timestamps. When the
//! next frame is not there in time the clock stops (a stall) until at least [`RESUME`] of media is
//! buffered again; a stall longer than [`STALL_THRESHOLD`] counts as a rebuffer. Latency is the
//! wall-clock time minus the capture time of each frame as it is played.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};

use crate::catalog::{BUFFER, DROPPED, LATENCY, REBUFFERS, REBUFFER_DURATION, STARTUP};
use serde::Serialize;

/// A stall shorter than this is jitter, not a rebuffer.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(200);
/// Media that must be buffered before playback resumes after a stall.
pub const RESUME: Duration = Duration::from_millis(100);
/// The clock may run this far past the last frame before it counts as waiting for the next.
const FRAME_GRACE: Duration = Duration::from_millis(70);

#[derive(Debug, Default, Clone, Serialize)]
pub struct PlayerStats {
    pub startup_ms: Option<f64>,
    pub rebuffers: u64,
    pub rebuffer_ms: f64,
    pub played: u64,
    pub switches_up: u64,
    pub switches_down: u64,
    pub rendition: usize,
    pub dropped: u64,
    #[serde(skip)]
    pub latency_us: Vec<u64>,
}

struct Clock {
    p0_us: u64,
    t0: Instant,
    paused: Duration,
}

impl Clock {
    fn position_us(&self, now: Instant) -> u64 {
        self.p0_us + now.saturating_duration_since(self.t0).saturating_sub(self.paused).as_micros() as u64
    }
}

pub struct Player {
    target: Duration,
    connect_start: Instant,
    first_arrival: Option<Instant>,
    clock: Option<Clock>,
    buffer: VecDeque<u64>,
    last_played: Option<u64>,
    stall_since: Option<Instant>,
    pub stats: PlayerStats,
    /// Per-frame and per-tick histograms, resolved once.
    latency: metrics::Histogram,
    buffer_length: metrics::Histogram,
}

impl Player {
    pub fn new(target: Duration, connect_start: Instant) -> Self {
        Self {
            target,
            connect_start,
            first_arrival: None,
            clock: None,
            buffer: VecDeque::new(),
            last_played: None,
            stall_since: None,
            stats: PlayerStats::default(),
            latency: histogram!(LATENCY.name),
            buffer_length: histogram!(BUFFER.name),
        }
    }

    /// A video frame arrived (after any impairment).
    pub fn push(&mut self, capture_us: u64, now: Instant) {
        self.first_arrival.get_or_insert(now);
        // A frame older than what already played cannot be shown any more.
        if self.last_played.is_some_and(|p| capture_us <= p) {
            counter!(DROPPED.name, "reason" => "late").increment(1);
            self.stats.dropped += 1;
            return;
        }
        let at = self.buffer.iter().rposition(|&c| c < capture_us).map_or(0, |i| i + 1);
        self.buffer.insert(at, capture_us);
    }

    /// Media buffered ahead of the playback position.
    pub fn buffered(&self, now: Instant) -> Duration {
        let Some(&last) = self.buffer.back() else { return Duration::ZERO };
        let from = match (&self.clock, self.stall_since) {
            (Some(_), Some(_)) | (None, _) => *self.buffer.front().unwrap_or(&last),
            (Some(clock), None) => clock.position_us(now),
        };
        Duration::from_micros(last.saturating_sub(from))
    }

    /// Advances playback to `now`.
    pub fn tick(&mut self, now: Instant) {
        let wall_us = crate::media::now_us();
        if self.clock.is_none() {
            let (Some(first), Some(&p0)) = (self.first_arrival, self.buffer.front()) else { return };
            if now < first + self.target {
                return;
            }
            self.clock = Some(Clock { p0_us: p0, t0: now, paused: Duration::ZERO });
            let startup = now.duration_since(self.connect_start);
            self.stats.startup_ms = Some(startup.as_secs_f64() * 1000.0);
            histogram!(STARTUP.name).record(startup.as_secs_f64());
        }
        if let Some(since) = self.stall_since {
            if self.buffered(now) < RESUME {
                return;
            }
            let stalled = now.duration_since(since);
            if let Some(clock) = self.clock.as_mut() {
                clock.paused += stalled;
            }
            self.stall_since = None;
            if stalled >= STALL_THRESHOLD {
                self.stats.rebuffers += 1;
                self.stats.rebuffer_ms += stalled.as_secs_f64() * 1000.0;
                counter!(REBUFFERS.name).increment(1);
                histogram!(REBUFFER_DURATION.name).record(stalled.as_secs_f64());
            }
        }
        let clock = self.clock.as_ref().expect("started above");
        let position = clock.position_us(now);
        while let Some(&capture) = self.buffer.front() {
            if capture > position {
                break;
            }
            self.buffer.pop_front();
            self.last_played = Some(capture);
            self.stats.played += 1;
            let latency = wall_us.saturating_sub(capture);
            self.stats.latency_us.push(latency);
            self.latency.record(latency as f64 / 1e6);
        }
        // Nothing left to play and the clock has run past the last frame: stall.
        if self.buffer.is_empty() && self.last_played.is_some_and(|p| position > p + FRAME_GRACE.as_micros() as u64) {
            self.stall_since = Some(now);
            // Freeze the clock where the last frame played.
            if let (Some(clock), Some(p)) = (self.clock.as_mut(), self.last_played) {
                clock.paused += Duration::from_micros(position - p);
            }
        }
    }

    pub fn sample_buffer(&self, now: Instant) {
        if self.clock.is_some() {
            self.buffer_length.record(self.buffered(now).as_secs_f64());
        }
    }
}

/// The documented adaptation rule, evaluated at each group edge:
/// - down one rendition when the buffer is under half the target, or when the last group
///   arrived at under 80 % of the current rendition's bitrate;
/// - up one rendition after 5 consecutive groups that arrived at 1.5× the next rendition's
///   bitrate with at least the target buffered.
#[derive(Debug, Default)]
pub struct Abr {
    healthy: u32,
}

impl Abr {
    /// `ladder` is bitrates, highest first; returns the rendition to use for the next group.
    pub fn decide(
        &mut self,
        ladder: &[u64],
        current: usize,
        throughput_bps: f64,
        buffered: Duration,
        target: Duration,
    ) -> usize {
        let bitrate = ladder[current] as f64;
        if current + 1 < ladder.len() && (buffered < target / 2 || throughput_bps < 0.8 * bitrate) {
            self.healthy = 0;
            return current + 1;
        }
        if current > 0 && buffered >= target && throughput_bps >= 1.5 * ladder[current - 1] as f64 {
            self.healthy += 1;
            if self.healthy >= 5 {
                self.healthy = 0;
                return current - 1;
            }
        } else {
            self.healthy = 0;
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_frames_play_without_stalls_and_a_gap_counts_once() {
        let start = Instant::now();
        let mut player = Player::new(Duration::from_millis(100), start);
        let frame = Duration::from_millis(33);
        let mut now = start;
        for i in 0..30u64 {
            player.push(1_000_000 + i * 33_000, now);
            player.tick(now);
            now += frame;
        }
        // A 600 ms gap in arrivals stalls playback once.
        for _ in 0..20 {
            player.tick(now);
            now += Duration::from_millis(30);
        }
        for i in 30..60u64 {
            player.push(1_000_000 + i * 33_000, now);
            player.tick(now);
            now += frame;
        }
        assert_eq!(player.stats.rebuffers, 1, "{:?}", player.stats);
        assert!(player.stats.played > 40);
        assert!(player.stats.startup_ms.unwrap() >= 100.0);
    }

    #[test]
    fn abr_steps_down_on_starvation_and_stays_when_healthy() {
        let ladder = [1_600_000, 800_000, 400_000];
        let target = Duration::from_millis(500);
        let mut abr = Abr::default();
        assert_eq!(abr.decide(&ladder, 0, 1_650_000.0, target, target), 0);
        assert_eq!(abr.decide(&ladder, 0, 500_000.0, target, target), 1);
        assert_eq!(abr.decide(&ladder, 1, 850_000.0, Duration::from_millis(100), target), 2);
        assert_eq!(abr.decide(&ladder, 2, 420_000.0, target, target), 2);
    }

    #[test]
    fn abr_steps_up_only_after_five_healthy_groups_in_a_row() {
        let ladder = [1_600_000, 800_000, 400_000];
        let target = Duration::from_millis(500);
        let mut abr = Abr::default();
        for _ in 0..4 {
            assert_eq!(abr.decide(&ladder, 2, 1_300_000.0, target, target), 2);
        }
        // One weak group resets the count.
        assert_eq!(abr.decide(&ladder, 2, 500_000.0, target, target), 2);
        for _ in 0..4 {
            assert_eq!(abr.decide(&ladder, 2, 1_300_000.0, target, target), 2);
        }
        assert_eq!(abr.decide(&ladder, 2, 1_300_000.0, target, target), 1);
    }
}
