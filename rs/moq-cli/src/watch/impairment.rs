//! How received frames are handled before they count: impaired on purpose (`--throttle-kbps`,
//! `--delay`) so stalls and down-switches happen for real, checked (`--verify`, `--late-after`),
//! and counted only from the end of `--warmup`.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Verify, WatchArgs};

/// When counting starts (`--warmup` after the process started), the same instant for every viewer
/// so the measured window matches `--duration` whatever each viewer's connect time.
static MEASURE_FROM: OnceLock<Instant> = OnceLock::new();

/// The instant counting starts: `warmup` after `start` for the first caller, the same for all.
pub(super) fn measure_from(start: Instant, warmup: Duration) -> Instant {
    *MEASURE_FROM.get_or_init(|| start + warmup)
}

/// The throttle and delay applied to every frame of a viewer, and how its frames are judged.
pub(super) struct Impairment {
    rate_bps: Option<u64>,
    delay: Option<Duration>,
    next: Mutex<tokio::time::Instant>,
    pub verify: Verify,
    pub late_after: Duration,
    pub measure_from: Instant,
}

impl Impairment {
    pub fn new(args: &WatchArgs) -> Self {
        Self {
            rate_bps: args.throttle_kbps.map(|k| k.max(1) * 1000),
            delay: args.delay,
            next: Mutex::new(tokio::time::Instant::now()),
            verify: args.verify,
            late_after: args.late_after,
            measure_from: measure_from(Instant::now(), args.warmup),
        }
    }

    /// Waits until a frame of `len` bytes received at `received` may reach the player: `--delay`
    /// after it arrived, and after the frames before it at `--throttle-kbps`.
    pub async fn apply(&self, len: usize, received: Instant) {
        if let Some(delay) = self.delay {
            tokio::time::sleep_until(tokio::time::Instant::from_std(received) + delay).await;
        }
        if let Some(rate) = self.rate_bps {
            let release = {
                let mut next = self.next.lock().unwrap();
                let start = (*next).max(tokio::time::Instant::now());
                *next = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                *next
            };
            tokio::time::sleep_until(release).await;
        }
    }
}
