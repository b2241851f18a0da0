//! Clients recover: a relay killed (SIGKILL) and restarted on the same port under a live
//! broadcast, with a publisher and viewers that reconnect by themselves; and a broadcast that ends
//! normally, which is no outage.

use std::time::{Duration, Instant};

use moq_interop::cluster::frames_in;
use moq_interop::*;

/// How long the relay stays down.
const DOWN: Duration = Duration::from_secs(1);
/// Every viewer receives again within this long of the relay's restart.
const BACK_WITHIN: Duration = Duration::from_secs(10);

/// The clients' QUIC idle timeout: a killed relay is noticed this long after it last spoke.
const IDLE: &str = "2s";

/// The highest video frame count in the live lines a viewer printed so far.
fn video_frames(w: &mut Watch) -> u64 {
    w.proc.drain().iter().filter_map(|l| frames_in(l, "video")).max().unwrap_or(0)
}

#[test]
fn viewers_reconnect_after_a_relay_restart_and_report_the_outage() {
    let _serial = serial();
    let port = free_port();
    let builder = Relay::builder().port(port);
    let mut relay = builder.clone().start();
    let url = format!("http://127.0.0.1:{port}/");
    let _publisher =
        Publisher::new(&url, "reliability/live").args(["--max-retries", "10", "--idle-timeout", IDLE]).spawn();
    let mut viewers: Vec<Watch> = (0..3)
        .map(|_| {
            Watch::start(Viewer::new(&url, "reliability/live").args(["--duration", "40s", "--idle-timeout", IDLE]))
        })
        .collect();
    for w in &mut viewers {
        w.first_frame(Duration::from_secs(15));
    }
    std::thread::sleep(Duration::from_secs(1));

    // Kill the relay outright (no GOAWAY, no close), then restart it on the same port.
    let killed = Instant::now();
    relay.signal("KILL");
    assert!(relay.wait_exit(Duration::from_secs(5)).is_some(), "the relay survived SIGKILL");
    drop(relay);
    let before: Vec<u64> = viewers.iter_mut().map(video_frames).collect();
    std::thread::sleep(DOWN.saturating_sub(killed.elapsed()));
    let downtime = killed.elapsed();
    let _relay = builder.start();
    let restarted = Instant::now();

    // Every viewer receives video again (well past what it had) within the bound.
    let mut back = Vec::new();
    for (w, before) in viewers.iter_mut().zip(&before) {
        let left = BACK_WITHIN.saturating_sub(restarted.elapsed());
        w.proc.wait_line(left, |l| frames_in(l, "video").is_some_and(|n| n >= before + 15));
        back.push(killed.elapsed());
    }
    // Let them play a little on the new relay, then stop them (SIGINT: the summary so far).
    std::thread::sleep(Duration::from_secs(1));
    for w in &viewers {
        w.proc.signal("INT");
    }
    let summaries: Vec<serde_json::Value> = viewers.into_iter().map(|w| w.summary(Duration::from_secs(10))).collect();

    for (i, s) in summaries.iter().enumerate() {
        let outage = Duration::from_secs_f64(s["outage_ms"].as_f64().unwrap() / 1000.0);
        let (video, audio) = (&s["tracks"]["video"], &s["tracks"]["audio"]);
        eprintln!(
            "RELIABILITY relay restart: viewer {i}: relay down {:.2} s, receiving again {:.2} s after the kill, \
             reconnects {}, attempts {}, outage {:.2} s (longest {:.2} s), video frames {} gaps {} outage_gaps {} \
             corrupt {}, audio frames {} corrupt {}, rebuffers {}",
            downtime.as_secs_f64(),
            back[i].as_secs_f64(),
            s["reconnects"],
            s["reconnect_attempts"],
            outage.as_secs_f64(),
            s["longest_outage_ms"].as_f64().unwrap() / 1000.0,
            video["frames"],
            video["gaps"],
            video["outage_gaps"],
            video["corrupt"],
            audio["frames"],
            audio["corrupt"],
            s["player"]["rebuffers"],
        );
        assert_eq!(s["ok"], true, "{s:#}");
        assert!(s["reconnects"].as_u64().unwrap() >= 1, "no reconnect: {s:#}");
        assert!(s["reconnect_attempts"].as_u64().unwrap() >= s["reconnects"].as_u64().unwrap(), "{s:#}");
        assert!(outage >= downtime, "outage {outage:?} shorter than the downtime {downtime:?}: {s:#}");
        assert!(outage < downtime + BACK_WITHIN, "outage {outage:?} vs downtime {downtime:?}: {s:#}");
        for track in [video, audio] {
            assert_eq!(track["corrupt"], 0, "{s:#}");
            // Groups skipped while down are the outage's, not gaps the relay made.
            assert_eq!(track["gaps"], 0, "{s:#}");
        }
    }
}

#[test]
fn a_viewer_whose_broadcast_ends_exits_without_reconnecting() {
    let _serial = serial();
    let relay = Relay::start();
    let url = format!("http://127.0.0.1:{}/", relay.port);
    let viewer = Viewer::new(&url, "reliability/ends").summary().background();
    std::thread::sleep(Duration::from_millis(1500));
    let mut publisher = Publisher::new(&url, "reliability/ends").groups(2).spawn();
    let started = Instant::now();
    let out = viewer.finish_in_time(Duration::from_secs(20));
    let s = watch_summary(&out);
    eprintln!(
        "RELIABILITY broadcast ended: viewer exited {:.2} s after the publisher started, code {:?}, reconnects {}, \
         attempts {}, video frames {}",
        started.elapsed().as_secs_f64(),
        out.status.code(),
        s["reconnects"],
        s["reconnect_attempts"],
        s["tracks"]["video"]["frames"],
    );
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["reconnects"], 0, "{s:#}");
    assert_eq!(s["reconnect_attempts"], 0, "{s:#}");
    assert_eq!(s["tracks"]["video"]["groups_complete_min_per_viewer"], 2, "{s:#}");
    assert_eq!(publisher.wait_exit(Duration::from_secs(10)).map(|s| s.success()), Some(true));
}
