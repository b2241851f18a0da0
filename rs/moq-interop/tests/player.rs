//! `moq watch` as a measured player: an unthrottled viewer plays without stalls or switches at
//! sub-second latency; a throttled one rebuffers, switches down and shows the latency; the
//! Prometheus metrics it serves match what it printed.

use std::process::Command;
use std::time::Duration;

use moq_interop::*;

struct Played {
    summary: serde_json::Value,
    metrics: String,
}

/// Publishes a 3-rendition ladder (1.6 Mbit/s, 800 kbit/s, 400 kbit/s) and plays it.
fn play(broadcast: &str, groups: u64, extra: &[&str]) -> Played {
    let port = free_port();
    let metrics_port = free_port();
    let _relay = start_relay(port, &[]);
    let url = format!("http://127.0.0.1:{port}/");
    let mut viewer = Proc::spawn(
        "moq watch",
        Command::new(bin("moq"))
            .args(["watch", "--url", &url, "--broadcast", broadcast, "--json", "--stats-interval", "0s"])
            .args(["--groups", &groups.to_string(), "--linger", "5s"])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra),
    );
    std::thread::sleep(Duration::from_millis(800));
    let _publisher = Proc::spawn(
        "moq publish",
        Command::new(bin("moq")).args(["publish", "--url", &url, "--broadcast", broadcast]).args([
            "--renditions",
            "3",
            "--video-bitrate",
            "1600000",
            "--groups",
            &(groups + 4).to_string(),
        ]),
    );
    let line = viewer.wait_line(Duration::from_secs(60), |l| l.starts_with('{'));
    let summary: serde_json::Value = serde_json::from_str(&line).unwrap();
    // The viewer lingers with its metrics endpoint up: read the final values.
    let out = run(
        "curl",
        Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")]),
        Duration::from_secs(5),
    );
    Played { summary, metrics: String::from_utf8_lossy(&out.stdout).into_owned() }
}

/// The value of one series, e.g. `moq_client_rebuffer_count_total` or `name{label="x"}`, written
/// without the `broadcast` label every client series carries (checked here: it must be present and
/// equal to `broadcast`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        let (name, labels) = head.split_once('{').map_or((head, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty() && !l.starts_with("broadcast=")).collect();
        let canonical = if labels.is_empty() { name.to_string() } else { format!("{name}{{{}}}", labels.join(",")) };
        (canonical == series).then(|| value.parse().ok())?
    })
}

/// Every client series names the broadcast it measures; the transport's relay-side counters are
/// not exported by a client.
fn assert_client_series_carry(metrics: &str, broadcast: &str) {
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(!samples.is_empty());
    for line in &samples {
        assert!(line.starts_with("moq_client_"), "a client exported {line:?}");
        assert!(line.contains(&format!("broadcast=\"{broadcast}\"")), "no broadcast label: {line:?}");
    }
    // The viewer has stopped watching (it lingers only to be scraped): back to 0.
    assert_eq!(sample(metrics, "moq_client_active_viewers"), Some(0.0), "{metrics}");
}

#[test]
fn an_unthrottled_viewer_plays_without_stalls_or_switches_below_a_second() {
    let _serial = serial();
    let played = play("player/clean", 5, &[]);
    let (s, p) = (&played.summary, &played.summary["player"]);
    assert_eq!(s["ok"], true, "{s:#}");
    assert_eq!(p["rebuffers"], 0, "{p:#}");
    assert_eq!(p["switches_down"], 0, "{p:#}");
    assert_eq!(p["switches_up"], 0, "{p:#}");
    assert!(p["latency_ms_p99"].as_f64().unwrap() < 1000.0, "{p:#}");
    assert!(p["played"].as_u64().unwrap() > 100, "{p:#}");
    // What it printed is what it exported.
    let m = &played.metrics;
    assert_client_series_carry(m, "player/clean");
    assert_eq!(sample(m, "moq_client_rebuffer_count_total").unwrap_or(0.0), 0.0);
    assert!(sample(m, "moq_client_quality_switches_total{direction=\"down\"}").is_none());
    assert_eq!(sample(m, "moq_client_latency_seconds_count"), p["played"].as_f64(), "{m}");
    assert_eq!(sample(m, "moq_client_startup_time_seconds_count"), Some(1.0));
    assert_eq!(sample(m, "moq_client_connections_total{transport=\"webtransport\"}"), Some(1.0));
    eprintln!("unthrottled: {p}");
}

#[test]
fn a_throttled_viewer_rebuffers_switches_down_and_its_latency_shows_it() {
    let _serial = serial();
    let played = play("player/throttled", 8, &["--throttle-kbps", "600"]);
    let (s, p) = (&played.summary, &played.summary["player"]);
    assert_eq!(s["ok"], true, "{s:#}");
    assert!(p["rebuffers"].as_u64().unwrap() >= 1, "{p:#}");
    assert!(p["switches_down"].as_u64().unwrap() >= 1, "{p:#}");
    assert!(p["latency_ms_p99"].as_f64().unwrap() > 1000.0, "{p:#}");
    let m = &played.metrics;
    assert_client_series_carry(m, "player/throttled");
    assert_eq!(sample(m, "moq_client_rebuffer_count_total"), p["rebuffers"].as_f64(), "{m}");
    assert_eq!(sample(m, "moq_client_quality_switches_total{direction=\"down\"}"), p["switches_down"].as_f64(), "{m}");
    assert_eq!(sample(m, "moq_client_latency_seconds_count"), p["played"].as_f64(), "{m}");
    // The latency histogram holds frames played more than a second behind the live edge.
    let within_1s = sample(m, "moq_client_latency_seconds_bucket{le=\"1\"}").unwrap();
    assert!(within_1s < p["played"].as_f64().unwrap(), "{m}");
    eprintln!("throttled: {p}");
}
