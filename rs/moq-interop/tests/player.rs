//! `moq watch` as a measured player: an unthrottled viewer plays without stalls or switches at
//! sub-second latency; a throttled one rebuffers, switches down and shows the latency; the
//! Prometheus metrics it serves match what it printed.

use std::time::Duration;

use moq_interop::*;

struct Played {
    summary: serde_json::Value,
    /// The viewer's final /metrics.
    metrics: Scrape,
}

/// Publishes a 3-rendition ladder (1.6 Mbit/s, 800 kbit/s, 400 kbit/s) and plays it.
fn play(broadcast: &str, groups: u64, extra: &[&str]) -> Played {
    let metrics_port = free_port();
    let relay = Relay::start();
    let url = relay.url("");
    let mut viewer = Viewer::new(&url, broadcast)
        .summary()
        .groups(groups)
        .args(["--linger", "5s"])
        .metrics_listen(metrics_port)
        .args(extra)
        .spawn();
    std::thread::sleep(Duration::from_millis(800));
    let _publisher = Publisher::new(&url, broadcast)
        .args(["--renditions", "3", "--video-bitrate", "1600000"])
        .groups(groups + 4)
        .spawn();
    let line = viewer.wait_line(Duration::from_secs(60), |l| l.starts_with('{'));
    let summary: serde_json::Value = serde_json::from_str(&line).unwrap();
    // The viewer lingers with its metrics endpoint up: read the final values.
    let reply = http::get(&format!("http://127.0.0.1:{metrics_port}/metrics")).unwrap();
    Played { summary, metrics: Scrape::parse(&reply.body) }
}

/// Every client series names the broadcast it measures (checked here, so the comparisons below
/// leave that label out: `series` is the scrape without it); the transport's relay-side counters
/// are not exported by a client.
fn assert_client_series_carry(metrics: &Scrape, broadcast: &str) -> Scrape {
    assert!(!metrics.samples.is_empty());
    for sample in &metrics.samples {
        assert!(sample.name.starts_with("moq_client_"), "a client exported {sample}");
        assert_eq!(sample.label("broadcast"), Some(broadcast), "no broadcast label: {sample}");
    }
    let series = metrics.without_label("broadcast");
    // The viewer has stopped watching (it lingers only to be scraped): back to 0.
    assert_eq!(series.exact("moq_client_active_viewers", &[]), Some(0.0), "{}", metrics.text);
    series
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
    let m = &played.metrics.text;
    let series = assert_client_series_carry(&played.metrics, "player/clean");
    // Counters with known label sets are exported at 0 from start-up, so alerts and rate() see
    // the first event: a viewer that never rebuffered or switched still exports both.
    assert_eq!(series.exact("moq_client_rebuffer_count_total", &[]), Some(0.0), "{m}");
    assert_eq!(series.exact("moq_client_quality_switches_total", &[("direction", "down")]), Some(0.0), "{m}");
    assert_eq!(series.exact("moq_client_quality_switches_total", &[("direction", "up")]), Some(0.0), "{m}");
    assert_eq!(series.exact("moq_client_latency_seconds_count", &[]), p["played"].as_f64(), "{m}");
    assert_eq!(series.exact("moq_client_startup_time_seconds_count", &[]), Some(1.0));
    assert_eq!(series.exact("moq_client_connections_total", &[("transport", "webtransport")]), Some(1.0));
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
    let m = &played.metrics.text;
    let series = assert_client_series_carry(&played.metrics, "player/throttled");
    assert_eq!(series.exact("moq_client_rebuffer_count_total", &[]), p["rebuffers"].as_f64(), "{m}");
    let down = series.exact("moq_client_quality_switches_total", &[("direction", "down")]);
    assert_eq!(down, p["switches_down"].as_f64(), "{m}");
    assert_eq!(series.exact("moq_client_latency_seconds_count", &[]), p["played"].as_f64(), "{m}");
    // The latency histogram holds frames played more than a second behind the live edge.
    let within_1s = series.exact("moq_client_latency_seconds_bucket", &[("le", "1")]).unwrap();
    assert!(within_1s < p["played"].as_f64().unwrap(), "{m}");
    eprintln!("throttled: {p}");
}
