//! Overload: more load than the relay is configured to carry. New sessions are refused at the
//! door, with a reason and a counter, while the sessions already admitted keep playing every
//! frame: the session cap (`--max-sessions`) at twice the load it admits, and the memory budget
//! (`--memory-budget-mib`) once a heavy broadcast pushes resident memory over it.
//!
//! Latency targets under overload are measured by `just soak` (docs/RELIABILITY.md); these tests
//! check what must hold on any machine: who gets in, what is counted, nothing lost.

use std::time::Duration;

use moq_interop::*;

/// Sessions the relay shows open (every transport and version).
fn open_sessions(relay: &Relay) -> f64 {
    relay.scrape().total("moq_relay_active_connections", &[])
}

fn refused(relay: &Relay, reason: &str) -> f64 {
    relay.scrape().value("moq_relay_sessions_total", &[("result", "rejected"), ("reason", reason)]).unwrap_or(0.0)
}

/// Every admitted viewer played the whole run: nothing corrupt, no group missing, at least
/// `min_frames` video frames each.
fn assert_played_everything(summary: &serde_json::Value, min_frames: u64) {
    assert_eq!(summary["ok"], true, "{summary:#}");
    let video = &summary["tracks"]["video"];
    assert_eq!(video["corrupt"], 0, "{summary:#}");
    assert_eq!(video["gaps"], 0, "{summary:#}");
    assert!(video["frames_min_per_viewer"].as_u64().unwrap_or(0) >= min_frames, "{summary:#}");
}

#[test]
fn at_twice_its_session_cap_the_relay_refuses_the_excess_and_the_admitted_keep_playing() {
    let _serial = serial();
    const ADMITTED: usize = 8;
    // The publisher and ADMITTED viewers fill the cap.
    let relay = Relay::builder().ops().args(["--max-sessions", &(ADMITTED + 1).to_string()]).start();
    let _publisher = Publisher::new(&relay.url(""), "overload/cap").spawn();
    let announced = || http::get(&relay.url("announced")).is_ok_and(|r| r.body.contains("overload/cap"));
    assert!(eventually(Duration::from_secs(10), announced), "publisher never announced");
    let admitted = Viewer::new(&relay.url(""), "overload/cap")
        .summary()
        .viewers(ADMITTED)
        .args(["--duration", "12s", "--no-reconnect"])
        .background();
    assert!(
        eventually(Duration::from_secs(15), || open_sessions(&relay) == (ADMITTED + 1) as f64),
        "the admitted viewers never all connected: {} open",
        open_sessions(&relay)
    );

    // As many again knock while they play: every one is refused, none displaces an admitted one.
    let excess = Viewer::new(&relay.url(""), "overload/cap")
        .summary()
        .viewers(ADMITTED)
        .args(["--duration", "3s", "--no-reconnect"])
        .background()
        .finish(Duration::from_secs(30));
    let excess = watch_summary(&excess);
    assert_eq!(excess["ok"], false, "the excess viewers were let in: {excess:#}");
    assert_eq!(excess["tracks"]["video"]["frames"].as_u64().unwrap_or(0), 0, "{excess:#}");
    let capacity = refused(&relay, "capacity");
    assert!(capacity >= ADMITTED as f64, "refused for capacity: {capacity}");
    assert_eq!(open_sessions(&relay), (ADMITTED + 1) as f64, "an admitted session was dropped");

    let summary = watch_summary(&admitted.finish(Duration::from_secs(40)));
    // 12 s at 30 fps, less startup.
    assert_played_everything(&summary, 300);
    // Viewers stopped by --duration close their sessions: the places are free at once, not
    // after the relay's idle timeout (10 s).
    assert!(
        eventually(Duration::from_secs(3), || open_sessions(&relay) == 1.0),
        "the viewers' sessions stayed open after they exited: {}",
        open_sessions(&relay)
    );
    let video = &summary["tracks"]["video"];
    eprintln!(
        "RELIABILITY case=overload_sessions admitted={ADMITTED} knocked={ADMITTED} refused_capacity={capacity} \
         admitted_frames_min={} lost=0 latency_ms_p50={} latency_ms_p99={}",
        video["frames_min_per_viewer"], video["latency_ms_p50"], video["latency_ms_p99"]
    );
}

#[test]
fn over_its_memory_budget_the_relay_refuses_new_sessions_and_the_admitted_keep_playing() {
    let _serial = serial();
    // A debug relay with a few viewers stays far below this; a 80 Mbit/s broadcast, whose last
    // 10 s the relay keeps for late joiners, takes it well above.
    const BUDGET_MIB: f64 = 64.0;
    let relay = Relay::builder().ops().args(["--memory-budget-mib", "64"]).start();
    let resident = || relay.scrape().value("process_resident_memory_bytes", &[]).unwrap_or(0.0) / (1 << 20) as f64;
    let _light = Publisher::new(&relay.url(""), "overload/light").spawn();
    let announced = || http::get(&relay.url("announced")).is_ok_and(|r| r.body.contains("overload/light"));
    assert!(eventually(Duration::from_secs(10), announced), "publisher never announced");
    let admitted = Viewer::new(&relay.url(""), "overload/light")
        .summary()
        .viewers(4)
        .args(["--duration", "20s", "--no-reconnect"])
        .background();
    assert!(eventually(Duration::from_secs(15), || open_sessions(&relay) == 5.0), "the viewers never connected");
    let light_mib = resident();
    assert!(light_mib < BUDGET_MIB, "the premise: light load ({light_mib:.0} MiB) fits the budget");
    assert_eq!(
        relay.scrape().value("moq_relay_memory_budget_bytes", &[]),
        Some(BUDGET_MIB * (1 << 20) as f64),
        "the budget is exported"
    );

    // The heavy broadcast, pulled through the relay by one viewer.
    let _heavy = Publisher::new(&relay.url(""), "overload/heavy").args(["--video-bitrate", "80000000"]).spawn();
    let _puller =
        Viewer::new(&relay.url(""), "overload/heavy").stats_interval("0s").args(["--duration", "30s"]).spawn();
    // Well over, so the relay's reading (at most 100 ms old) is over too.
    let over = eventually(Duration::from_secs(20), || resident() > BUDGET_MIB + 8.0);
    let heavy_mib = resident();
    assert!(over, "the premise: the heavy broadcast takes the relay over budget ({heavy_mib:.0} MiB)");

    let late = Viewer::new(&relay.url(""), "overload/light")
        .summary()
        .viewers(4)
        .args(["--duration", "3s", "--no-reconnect"])
        .background()
        .finish(Duration::from_secs(30));
    let late = watch_summary(&late);
    assert_eq!(late["ok"], false, "new viewers were let in over budget: {late:#}");
    let memory = refused(&relay, "memory");
    assert!(memory >= 4.0, "refused for memory: {memory}");
    assert_eq!(refused(&relay, "capacity"), 0.0, "refused for the wrong reason");

    let summary = watch_summary(&admitted.finish(Duration::from_secs(40)));
    assert_played_everything(&summary, 500);
    let video = &summary["tracks"]["video"];
    eprintln!(
        "RELIABILITY case=overload_memory budget_mib={BUDGET_MIB} light_mib={light_mib:.0} heavy_mib={heavy_mib:.0} \
         refused_memory={memory} admitted_frames_min={} lost=0 latency_ms_p50={} latency_ms_p99={}",
        video["frames_min_per_viewer"], video["latency_ms_p50"], video["latency_ms_p99"]
    );
}

/// `just soak`: the admitted viewers' latency alone, then while as many again knock without
/// pause (twice the load the cap admits); prints both p99s and fails past +10 %.
#[test]
#[ignore = "soak: just soak"]
fn soak_overload_admitted_viewers_keep_their_latency() {
    let _serial = serial();
    const ADMITTED: usize = 20;
    const RUN: &str = "30s";
    let relay = Relay::builder().ops().args(["--max-sessions", &(ADMITTED + 1).to_string()]).start();
    let _publisher = Publisher::new(&relay.url(""), "overload/soak").spawn();
    let announced = || http::get(&relay.url("announced")).is_ok_and(|r| r.body.contains("overload/soak"));
    assert!(eventually(Duration::from_secs(10), announced), "publisher never announced");
    let admitted = || {
        Viewer::new(&relay.url(""), "overload/soak").summary().viewers(ADMITTED).args(["--duration", RUN]).background()
    };
    let p99 = |summary: &serde_json::Value| summary["tracks"]["video"]["latency_ms_p99"].as_f64().unwrap_or(f64::NAN);

    let alone = watch_summary(&admitted().finish(Duration::from_secs(60)));
    assert_played_everything(&alone, 800);

    // The first run's sessions leave before the second run takes their places.
    let left = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(20), || open_sessions(&relay) == 1.0), "the first run's sessions stayed");
    let left = left.elapsed();
    let crowded = admitted();
    assert!(eventually(Duration::from_secs(15), || open_sessions(&relay) == (ADMITTED + 1) as f64));
    let knocking_until = std::time::Instant::now() + Duration::from_secs(28);
    let mut knocks = 0;
    // As many again knock once a second (each refused viewer exits; the next batch comes).
    while std::time::Instant::now() < knocking_until {
        let batch = std::time::Instant::now();
        let out = Viewer::new(&relay.url(""), "overload/soak")
            .summary()
            .viewers(ADMITTED)
            .args(["--duration", "2s", "--no-reconnect"])
            .background()
            .finish(Duration::from_secs(30));
        assert_eq!(watch_summary(&out)["ok"], false, "the excess was let in");
        knocks += ADMITTED;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(batch.elapsed()));
    }
    let crowded = watch_summary(&crowded.finish(Duration::from_secs(60)));
    assert_played_everything(&crowded, 800);
    let (p99_alone, p99_crowded) = (p99(&alone), p99(&crowded));
    println!(
        "RELIABILITY case=overload_soak admitted={ADMITTED} refused_attempts={knocks} refused_capacity={} \
         p99_ms_alone={p99_alone:.2} p99_ms_knocked={p99_crowded:.2} ratio={:.3} first_run_left_in_s={:.1}",
        refused(&relay, "capacity"),
        p99_crowded / p99_alone,
        left.as_secs_f64()
    );
    assert!(
        p99_crowded <= p99_alone * 1.10 + 1.0,
        "the admitted viewers' p99 rose from {p99_alone} to {p99_crowded} ms"
    );
}
