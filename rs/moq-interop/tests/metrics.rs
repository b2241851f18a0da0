//! The relay's /metrics under real traffic: conservation of bytes, live gauges, the cardinality
//! cap, the bearer token, and `promtool check metrics` on a live scrape.

use std::process::Command;
use std::time::Duration;

use moq_interop::*;

#[test]
fn bytes_are_conserved_from_publisher_to_every_viewer() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    const N: usize = 4;
    let viewers = Viewer::new(&relay.url(""), "cons/bbb").summary().viewers(N).groups(3).background();
    std::thread::sleep(Duration::from_millis(1500));
    let published =
        publish_summary(&Publisher::new(&relay.url(""), "cons/bbb").groups(3).json().run(Duration::from_secs(30)));
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");

    let samples = relay.scrape();
    for track in ["video", "audio", "catalog"] {
        let k = published["tracks"][track]["bytes"].as_f64().unwrap();
        assert!(k > 0.0);
        let labels = [("broadcast", "cons/bbb"), ("track_type", track)];
        let received =
            samples.value("moq_relay_bytes_received_total", &[labels[0], labels[1], ("direction", "publish")]);
        let sent = samples.value("moq_relay_bytes_sent_total", &[labels[0], labels[1], ("direction", "subscribe")]);
        assert_eq!(received, Some(k), "{track}: received");
        assert_eq!(sent, Some(N as f64 * k), "{track}: sent to {N} viewers");
        let frames = published["tracks"][track]["frames"].as_f64().unwrap();
        let frames_sent = samples.value("moq_relay_frames_sent_total", &[labels[0], labels[1]]);
        assert_eq!(frames_sent, Some(N as f64 * frames), "{track}: frames");
    }
    eprintln!(
        "conservation: video K={} B, sent {} B to {N} viewers",
        published["tracks"]["video"]["bytes"],
        samples.value("moq_relay_bytes_sent_total", &[("broadcast", "cons/bbb"), ("track_type", "video")]).unwrap()
    );
}

/// The wire counters agree with the payload counters and with what a QUIC packet can be: an
/// operator reads bytes / datagram as the packet size in use and datagrams / transmit as the GSO
/// batching, so a swapped or missing counter would mislead exactly there.
#[test]
fn wire_counters_count_datagrams_and_sends_consistently_with_the_payload() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let viewers = Viewer::new(&relay.url(""), "wire/bbb").summary().viewers(3).groups(3).background();
    std::thread::sleep(Duration::from_millis(1500));
    publish_summary(&Publisher::new(&relay.url(""), "wire/bbb").groups(3).json().run(Duration::from_secs(30)));
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");

    let samples = relay.scrape();
    let payload_out = samples.total("moq_relay_bytes_sent_total", &[]);
    let payload_in = samples.total("moq_relay_bytes_received_total", &[]);
    let transmits = samples.total("moq_relay_quic_udp_transmits_total", &[]);
    // quinn never builds a packet larger than its path MTU probe ceiling (1452 bytes by default).
    const LARGEST_PACKET: f64 = 1452.0;
    for (direction, payload) in [("tx", payload_out), ("rx", payload_in)] {
        let bytes = samples.total("moq_relay_quic_udp_bytes_total", &[("direction", direction)]);
        let datagrams = samples.total("moq_relay_quic_udp_datagrams_total", &[("direction", direction)]);
        eprintln!("{direction}: payload {payload} B, wire {bytes} B in {datagrams} datagrams");
        assert!(payload > 0.0, "{direction}: traffic flowed");
        assert!(bytes > payload, "{direction}: the wire carries the payload and its headers");
        assert!(datagrams >= bytes / LARGEST_PACKET, "{direction}: no datagram above {LARGEST_PACKET} B");
        assert!(bytes / datagrams >= 20.0, "{direction}: a datagram holds at least a QUIC short header and tag");
    }
    let sent = samples.total("moq_relay_quic_udp_datagrams_total", &[("direction", "tx")]);
    eprintln!("tx: {sent} datagrams in {transmits} transmits");
    assert!(transmits > 0.0 && transmits <= sent, "a transmit carries one or more datagrams");
}

/// Every open QUIC session gets one send-rate sample per scrape (the estimate PROBE reports), and
/// on loopback it is far above any video bitrate. An empty histogram, or one stuck near zero,
/// would hide the viewers' bandwidth from whoever sizes an ABR ladder.
#[test]
fn each_scrape_samples_the_send_rate_estimate_of_every_quic_session() {
    const RATE: &str = "moq_relay_quic_send_rate_estimate_bytes_per_second";
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let _publisher = Publisher::new(&relay.url(""), "rate/bbb").spawn();
    let _viewers = Viewer::new(&relay.url(""), "rate/bbb").summary().viewers(2).groups(1_000).background();
    assert!(
        eventually(Duration::from_secs(20), || relay.scrape().total("moq_relay_active_connections", &[]) == 3.0),
        "publisher and two viewers connected"
    );
    let before = relay.scrape();
    let after = relay.scrape();
    let count = after.total(&format!("{RATE}_count"), &[]) - before.total(&format!("{RATE}_count"), &[]);
    let sum = after.total(&format!("{RATE}_sum"), &[]) - before.total(&format!("{RATE}_sum"), &[]);
    eprintln!("one scrape: {count} samples, mean {:.0} B/s", sum / count);
    assert_eq!(count, 3.0, "one sample per open session per scrape");
    // 1 Mbit/s: loopback's window over its sub-millisecond RTT is orders of magnitude above it.
    assert!(sum / count > 125_000.0, "mean estimate {} B/s", sum / count);
}

#[test]
fn gauges_follow_publishers_and_viewers() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let mut publisher = Publisher::new(&relay.url(""), "gauge/live").spawn();
    publisher.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
    let streams = || relay.scrape().value("moq_relay_active_streams", &[("namespace", "gauge")]);
    assert!(eventually(Duration::from_secs(15), || streams() == Some(1.0)), "one stream announced");

    let viewers = Viewer::new(&relay.url(""), "gauge/live").summary().viewers(3).groups(1000).background();
    let subscribers = || relay.scrape().value("moq_relay_active_subscribers", &[("broadcast", "gauge/live")]);
    assert!(
        eventually(Duration::from_secs(15), || subscribers() == Some(3.0)),
        "three distinct viewers: {:?}",
        subscribers()
    );
    let connections = relay.scrape().value("moq_relay_active_connections", &[("transport", "webtransport")]);
    assert_eq!(connections, Some(4.0));

    drop(viewers.finish(Duration::from_millis(10)));
    assert!(eventually(Duration::from_secs(15), || subscribers() == Some(0.0)), "viewers gone: {:?}", subscribers());
    drop(publisher);
    assert!(eventually(Duration::from_secs(15), || streams() == Some(0.0)), "stream gone: {:?}", streams());
    assert!(
        eventually(Duration::from_secs(15), || relay.scrape().value("moq_relay_active_connections", &[]) == Some(0.0))
    );
}

#[test]
fn an_ended_broadcasts_series_age_out_after_the_linger_window_and_fixed_totals_stay() {
    let _serial = serial();
    let relay = Relay::builder().ops().args(["--metrics-linger", "2s"]).start();
    let viewers = Viewer::new(&relay.url(""), "age/out").summary().viewers(2).groups(2).background();
    std::thread::sleep(Duration::from_millis(1500));
    Publisher::new(&relay.url(""), "age/out").groups(2).run(Duration::from_secs(30));
    assert_eq!(watch_summary(&viewers.finish(Duration::from_secs(30)))["ok"], true);

    let of_broadcast =
        |samples: &Scrape| samples.samples.iter().filter(|s| s.label("broadcast") == Some("age/out")).count();
    let ended = relay.scrape();
    assert!(
        ended.value("moq_relay_bytes_sent_total", &[("broadcast", "age/out"), ("track_type", "video")]) > Some(0.0),
        "an ended broadcast's totals are still there right after it ends"
    );
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || of_broadcast(&relay.scrape()) == 0),
        "series left: {:?}",
        relay.scrape().samples.into_iter().filter(|s| s.labels.contains_key("broadcast")).collect::<Vec<_>>()
    );
    let gone_after = started.elapsed();
    let samples = relay.scrape();
    assert_eq!(
        samples.value("moq_relay_sessions_total", &[("result", "accepted")]),
        Some(3.0),
        "totals without a broadcast label stay"
    );
    assert!(samples.value("moq_relay_active_streams", &[("namespace", "age")]).is_none(), "namespace gauge aged out");
    eprintln!("broadcast series gone {gone_after:?} after the broadcast ended (linger 2 s, upkeep every 5 s)");
}

#[test]
fn broadcast_series_never_exceed_the_cap() {
    let _serial = serial();
    let relay = Relay::builder().ops().args(["--metrics-max-broadcasts", "2"]).start();
    let mut publishers = Vec::new();
    for i in 0..5 {
        let mut p = Publisher::new(&relay.url(""), &format!("cap/b{i}")).groups(2).spawn();
        p.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
        publishers.push(p);
    }
    let mut viewers = Vec::new();
    for i in 0..5 {
        viewers.push(Viewer::new(&relay.url(""), &format!("cap/b{i}")).summary().viewers(1).groups(1).background());
    }
    for v in viewers {
        v.finish(Duration::from_secs(20));
    }
    let samples = relay.scrape();
    let broadcasts = samples.label_values("broadcast");
    assert!(broadcasts.len() <= 3, "at most 2 broadcasts plus _other: {broadcasts:?}");
    assert!(broadcasts.contains("_other"), "{broadcasts:?}");
    let overflow = samples.value("moq_relay_metric_cardinality_overflow_total", &[("label", "broadcast")]);
    assert!(overflow.unwrap_or(0.0) >= 3.0, "overflow counted: {overflow:?}");
}

#[test]
fn metrics_require_the_bearer_token_when_configured() {
    let _serial = serial();
    let mut relay = Relay::builder().ops().env("MOQ_OPS_TOKEN", "s3cret-token-value").start();
    let metrics = |token: Option<&str>| {
        let request = http::Request::get(&relay.ops_url("metrics"));
        match token {
            Some(token) => request.bearer(token),
            None => request,
        }
        .send()
        .unwrap()
    };
    assert_eq!(metrics(None).status, 401);
    assert_eq!(metrics(Some("wrong")).status, 401);
    let reply = metrics(Some("s3cret-token-value"));
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("moq_relay_build_info"));
    assert!(!relay.drain().iter().any(|l| l.contains("s3cret-token-value")), "the token is never logged");
}

#[test]
fn promtool_accepts_a_live_scrape_under_traffic() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let viewers = Viewer::new(&relay.url(""), "lint/bbb").summary().viewers(2).groups(2).background();
    std::thread::sleep(Duration::from_millis(1000));
    let _publisher = Publisher::new(&relay.url(""), "lint/bbb").spawn();
    viewers.finish(Duration::from_secs(20));
    let body = http::get(&relay.ops_url("metrics")).unwrap().body;
    assert!(body.contains("moq_relay_bytes_sent_total{"), "traffic visible");
    assert!(body.contains("moq_relay_forwarding_delay_seconds_bucket"), "histograms have buckets");
    let path = std::env::temp_dir().join(format!("moq-metrics-{}.txt", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let out = run(
        "promtool",
        Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", path.display())),
        Duration::from_secs(20),
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sessions_beyond_the_cap_are_refused_and_counted() {
    let _serial = serial();
    let relay = Relay::builder().ops().args(["--max-sessions", "2"]).start();
    let _publisher = Publisher::new(&relay.url(""), "cap/bbb").spawn();
    // The publisher takes its slot first (else viewers could fill both and starve it); of three
    // viewers at most one gets the other.
    let announced = || http::get(&relay.url("announced")).is_ok_and(|r| r.body.contains("cap/bbb"));
    assert!(eventually(Duration::from_secs(10), announced), "publisher never announced");
    let crowd = Viewer::new(&relay.url(""), "cap/bbb")
        .summary()
        .viewers(3)
        .groups(1)
        .background()
        .finish(Duration::from_secs(30));
    let summary = watch_summary(&crowd);
    assert_eq!(summary["ok"], false, "{summary:#}");
    let samples = relay.scrape();
    assert_eq!(samples.value("moq_relay_max_sessions", &[]), Some(2.0));
    let refused = samples.value("moq_relay_sessions_total", &[("result", "rejected"), ("reason", "capacity")]);
    assert!(refused.unwrap_or(0.0) >= 2.0, "refused {refused:?}");
    // Slots come back when sessions end: a lone viewer now gets in.
    let lone = Viewer::new(&relay.url(""), "cap/bbb").summary().viewers(1).groups(1).background();
    let lone = watch_summary(&lone.finish(Duration::from_secs(30)));
    assert_eq!(lone["ok"], true, "{lone:#}");
    eprintln!("session cap 2: {refused:?} attempts refused, a later viewer admitted");
}

/// Connections per worker thread, from /metrics (sampled every 0.5 s by the relay, absent before
/// the first sample).
fn worker_connections(relay: &Relay) -> Vec<f64> {
    let samples = relay.scrape();
    (0..2).filter_map(|w| samples.value("moq_relay_worker_connections", &[("worker", &w.to_string())])).collect()
}

/// The worker layout once the relay's gauges count `total` connections (or after 10 s).
fn wait_worker_connections(relay: &Relay, total: f64) -> Vec<f64> {
    eventually(Duration::from_secs(10), || worker_connections(relay).iter().sum::<f64>() == total);
    worker_connections(relay)
}

/// New connections fill worker 0 while it is below `--worker-spill-at` and go to the next worker
/// otherwise; a broadcast reaches viewers on both workers intact, and /metrics shows the layout.
#[test]
fn connections_fill_workers_in_order_and_frames_cross_workers() {
    let _serial = serial();
    const N: usize = 4;
    // Threshold 1: a lightly loaded relay keeps every connection on worker 0.
    let relay = Relay::builder().ops().args(["--worker-threads", "2", "--worker-spill-at", "1"]).start();
    let viewers = Viewer::new(&relay.url(""), "fill/bbb").summary().viewers(N).groups(2).background();
    let layout = wait_worker_connections(&relay, N as f64);
    assert_eq!(layout, vec![N as f64, 0.0], "all on worker 0");
    publish_summary(&Publisher::new(&relay.url(""), "fill/bbb").groups(2).json().run(Duration::from_secs(30)));
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    drop(relay);

    // A tiny threshold: worker 0 is "full" after one connection, so the others spill to worker 1
    // and frames from the publisher's worker cross to the other.
    let relay = Relay::builder().ops().args(["--worker-threads", "2", "--worker-spill-at", "0.0001"]).start();
    let viewers = Viewer::new(&relay.url(""), "spill/bbb").summary().viewers(N).groups(2).background();
    let layout = wait_worker_connections(&relay, N as f64);
    assert_eq!(layout.iter().sum::<f64>(), N as f64, "{layout:?}");
    assert!(layout[1] >= 1.0, "spilled to worker 1: {layout:?}");
    let published =
        publish_summary(&Publisher::new(&relay.url(""), "spill/bbb").groups(2).json().run(Duration::from_secs(30)));
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    let frames = published["tracks"]["video"]["frames"].as_f64().unwrap();
    let sent =
        relay.scrape().value("moq_relay_frames_sent_total", &[("broadcast", "spill/bbb"), ("track_type", "video")]);
    assert_eq!(sent, Some(N as f64 * frames), "every viewer got every frame");
    let busy = relay.scrape().value("moq_relay_worker_busy_ratio", &[("worker", "1")]).unwrap();
    assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");
    eprintln!("layout with spill threshold 0.0001: {layout:?}");
}
