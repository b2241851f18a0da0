//! The long run (`just soak`, ignored by `just test`): a relay at moderate load for
//! `SOAK_MINUTES` (default 30). Long-lived viewers watch two broadcasts the whole time while
//! short-lived viewers come and go; a probe of viewers measures what a viewer sees in each
//! window of `SOAK_WINDOW_MINUTES` (default 5), and the relay's resident memory is read every
//! 10 s. Prints one `RELIABILITY case=soak_window` line per window and a `case=soak` summary
//! (RSS and p99 drift), and fails if anything was lost or corrupt, if memory kept growing after
//! the first window, or if the last window's p99 drifted far from the first's.

use std::time::{Duration, Instant};

use moq_interop::*;

fn env_minutes(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one window's probe saw.
struct Window {
    p50_ms: f64,
    p99_ms: f64,
    frames_min: u64,
    rss_mib: f64,
}

#[test]
#[ignore = "soak: just soak"]
fn soak_moderate_load_rss_and_p99_drift() {
    let _serial = serial();
    let minutes = env_minutes("SOAK_MINUTES", 30).max(1);
    let window_minutes = env_minutes("SOAK_WINDOW_MINUTES", 5).clamp(1, minutes);
    let windows = (minutes / window_minutes).max(1);
    let long_viewers: usize = std::env::var("SOAK_VIEWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let total = Duration::from_secs(windows * window_minutes * 60);
    let window = Duration::from_secs(window_minutes * 60);

    let relay = Relay::builder().ops().start();
    let url = relay.url("");
    let _main = Publisher::new(&url, "soak/main").spawn();
    let _second = Publisher::new(&url, "soak/second").args(["--video-bitrate", "500000"]).spawn();
    let announced = || {
        http::get(&relay.url("announced")).is_ok_and(|r| r.body.contains("soak/main") && r.body.contains("soak/second"))
    };
    assert!(eventually(Duration::from_secs(15), announced), "publishers never announced");
    let run_for = format!("{}s", total.as_secs() + 30);
    let _long_main = Viewer::new(&url, "soak/main")
        .viewers(long_viewers * 3 / 4)
        .stats_interval("0s")
        .args(["--duration", &run_for])
        .spawn();
    let _long_second = Viewer::new(&url, "soak/second")
        .viewers(long_viewers.div_ceil(4))
        .stats_interval("0s")
        .args(["--duration", &run_for])
        .spawn();
    std::thread::sleep(Duration::from_secs(5));

    let resident_mib = || relay.scrape().value("process_resident_memory_bytes", &[]).unwrap_or(0.0) / (1 << 20) as f64;
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut rss_max: f64 = 0.0;
    let mut churned = 0u64;
    for n in 0..windows {
        let probe = Viewer::new(&url, "soak/main")
            .summary()
            .viewers(4)
            .args(["--duration", &format!("{}s", window.as_secs())])
            .background();
        // Short viewers come and go through the window (one every 10 s, 5 s each) while the
        // relay's memory is read.
        let ends = Instant::now() + window;
        let mut churn: Option<Background> = None;
        while Instant::now() < ends {
            if let Some(done) = churn.take() {
                let out = watch_summary(&done.finish(Duration::from_secs(30)));
                assert_eq!(out["ok"], true, "a short viewer failed: {out:#}");
                churned += 1;
            }
            churn = Some(
                Viewer::new(&url, "soak/second").summary().args(["--duration", "5s", "--no-reconnect"]).background(),
            );
            rss_max = rss_max.max(resident_mib());
            std::thread::sleep(Duration::from_secs(10).min(ends.saturating_duration_since(Instant::now())));
        }
        if let Some(done) = churn.take() {
            let _ = done.finish(Duration::from_secs(30));
        }
        let summary = watch_summary(&probe.finish(window + Duration::from_secs(60)));
        let video = &summary["tracks"]["video"];
        assert_eq!(summary["ok"], true, "window {n}: {summary:#}");
        assert_eq!(video["corrupt"], 0, "window {n}: {summary:#}");
        assert_eq!(video["gaps"], 0, "window {n}: {summary:#}");
        let w = Window {
            p50_ms: video["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
            p99_ms: video["latency_ms_p99"].as_f64().unwrap_or(f64::NAN),
            frames_min: video["frames_min_per_viewer"].as_u64().unwrap_or(0),
            rss_mib: resident_mib(),
        };
        println!(
            "RELIABILITY case=soak_window window={n} minute={:.0} probe_frames_min={} latency_ms_p50={:.2} \
             latency_ms_p99={:.2} rss_mib={:.1} short_viewers_so_far={churned}",
            started.elapsed().as_secs_f64() / 60.0,
            w.frames_min,
            w.p50_ms,
            w.p99_ms,
            w.rss_mib
        );
        seen.push(w);
    }

    let (first, last) = (&seen[0], &seen[seen.len() - 1]);
    let drift = last.p99_ms / first.p99_ms;
    let growth = last.rss_mib - first.rss_mib;
    println!(
        "RELIABILITY case=soak minutes={} long_viewers={long_viewers} short_viewers={churned} rss_mib_after_first_window={:.1} \
         rss_mib_end={:.1} rss_mib_max={rss_max:.1} rss_growth_mib={growth:.1} p99_ms_first={:.2} p99_ms_last={:.2} \
         p99_drift={drift:.2} lost=0 corrupt=0",
        windows * window_minutes,
        first.rss_mib,
        last.rss_mib,
        first.p99_ms,
        last.p99_ms
    );
    // After the first window the caches and pools are warm: what grows past that is a leak.
    assert!(growth < 32.0, "resident memory grew {growth:.1} MiB after the first window");
    // Latency must not creep: the last window within 1.5× (+5 ms of scheduling noise) of the first.
    assert!(last.p99_ms <= first.p99_ms * 1.5 + 5.0, "p99 drifted from {} to {} ms", first.p99_ms, last.p99_ms);
}
