//! The relay's /metrics under real traffic: conservation of bytes, live gauges, the cardinality
//! cap, the bearer token, and `promtool check metrics` on a live scrape.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use moq_interop::*;

/// One sample: metric name, sorted labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn scrape_raw(port: u16, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}/metrics")]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = run("curl", &mut cmd, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

fn scrape(port: u16) -> Vec<Sample> {
    let (status, body) = scrape_raw(port, None);
    assert_eq!(status, 200);
    parse(&body)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
}

fn relay_with_ops(extra: &[&str]) -> (Proc, u16, u16) {
    let port = free_port();
    let ops = free_port();
    let ops_addr = format!("127.0.0.1:{ops}");
    let mut args = vec!["--ops-listen", ops_addr.as_str()];
    args.extend_from_slice(extra);
    let relay = start_relay_args(port, &args);
    (relay, port, ops)
}

/// Like start_relay, but without its `--ops-listen off`.
fn start_relay_args(port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("moq-relay"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--tls-generate", "localhost,127.0.0.1"]).args(extra);
    let mut relay = Proc::spawn("moq-relay", &mut cmd);
    relay.wait_line(Duration::from_secs(20), |l| l.contains("relay ready"));
    relay
}

fn watchers(port: u16, broadcast: &str, viewers: usize, groups: u64) -> Background {
    Background::spawn(
        "moq watch",
        Command::new(bin("moq"))
            .args(["watch", "--url", &format!("http://127.0.0.1:{port}/"), "--broadcast", broadcast])
            .args([
                "--json",
                "--stats-interval",
                "0s",
                "--viewers",
                &viewers.to_string(),
                "--groups",
                &groups.to_string(),
            ]),
    )
}

/// Publishes `groups` groups of every track to `broadcast` and returns the publisher's JSON summary.
fn publish_groups(port: u16, broadcast: &str, groups: u64) -> serde_json::Value {
    let publisher = run(
        "moq publish",
        Command::new(bin("moq"))
            .args(["publish", "--url", &format!("http://127.0.0.1:{port}/"), "--broadcast", broadcast])
            .args(["--groups", &groups.to_string(), "--json"]),
        Duration::from_secs(30),
    );
    serde_json::from_str(String::from_utf8_lossy(&publisher.stdout).lines().last().unwrap()).unwrap()
}

#[test]
fn bytes_are_conserved_from_publisher_to_every_viewer() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&[]);
    const N: usize = 4;
    let viewers = watchers(port, "cons/bbb", N, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let published = publish_groups(port, "cons/bbb", 3);
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");

    let samples = scrape(ops);
    for track in ["video", "audio", "catalog"] {
        let k = published["tracks"][track]["bytes"].as_f64().unwrap();
        assert!(k > 0.0);
        let labels = [("broadcast", "cons/bbb"), ("track_type", track)];
        let received =
            value(&samples, "moq_relay_bytes_received_total", &[labels[0], labels[1], ("direction", "publish")]);
        let sent = value(&samples, "moq_relay_bytes_sent_total", &[labels[0], labels[1], ("direction", "subscribe")]);
        assert_eq!(received, Some(k), "{track}: received");
        assert_eq!(sent, Some(N as f64 * k), "{track}: sent to {N} viewers");
        let frames = published["tracks"][track]["frames"].as_f64().unwrap();
        let frames_sent = value(&samples, "moq_relay_frames_sent_total", &[labels[0], labels[1]]);
        assert_eq!(frames_sent, Some(N as f64 * frames), "{track}: frames");
    }
    eprintln!(
        "conservation: video K={} B, sent {} B to {N} viewers",
        published["tracks"]["video"]["bytes"],
        value(&samples, "moq_relay_bytes_sent_total", &[("broadcast", "cons/bbb"), ("track_type", "video")]).unwrap()
    );
}

/// Sum of every sample of `name` whose labels include `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
        .sum()
}

/// The wire counters agree with the payload counters and with what a QUIC packet can be: an
/// operator reads bytes / datagram as the packet size in use and datagrams / transmit as the GSO
/// batching, so a swapped or missing counter would mislead exactly there.
#[test]
fn wire_counters_count_datagrams_and_sends_consistently_with_the_payload() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&[]);
    let viewers = watchers(port, "wire/bbb", 3, 3);
    std::thread::sleep(Duration::from_millis(1500));
    publish_groups(port, "wire/bbb", 3);
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");

    let samples = scrape(ops);
    let payload_out = total(&samples, "moq_relay_bytes_sent_total", &[]);
    let payload_in = total(&samples, "moq_relay_bytes_received_total", &[]);
    let transmits = total(&samples, "moq_relay_quic_udp_transmits_total", &[]);
    // quinn never builds a packet larger than its path MTU probe ceiling (1452 bytes by default).
    const LARGEST_PACKET: f64 = 1452.0;
    for (direction, payload) in [("tx", payload_out), ("rx", payload_in)] {
        let bytes = total(&samples, "moq_relay_quic_udp_bytes_total", &[("direction", direction)]);
        let datagrams = total(&samples, "moq_relay_quic_udp_datagrams_total", &[("direction", direction)]);
        eprintln!("{direction}: payload {payload} B, wire {bytes} B in {datagrams} datagrams");
        assert!(payload > 0.0, "{direction}: traffic flowed");
        assert!(bytes > payload, "{direction}: the wire carries the payload and its headers");
        assert!(datagrams >= bytes / LARGEST_PACKET, "{direction}: no datagram above {LARGEST_PACKET} B");
        assert!(bytes / datagrams >= 20.0, "{direction}: a datagram holds at least a QUIC short header and tag");
    }
    let sent = total(&samples, "moq_relay_quic_udp_datagrams_total", &[("direction", "tx")]);
    eprintln!("tx: {sent} datagrams in {transmits} transmits");
    assert!(transmits > 0.0 && transmits <= sent, "a transmit carries one or more datagrams");
}

#[test]
fn gauges_follow_publishers_and_viewers() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&[]);
    let url = format!("http://127.0.0.1:{port}/");
    let mut publisher = Proc::spawn(
        "moq publish",
        Command::new(bin("moq")).args(["publish", "--url", &url, "--broadcast", "gauge/live"]),
    );
    publisher.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
    let streams = || value(&scrape(ops), "moq_relay_active_streams", &[("namespace", "gauge")]);
    assert!(eventually(Duration::from_secs(15), || streams() == Some(1.0)), "one stream announced");

    let viewers = watchers(port, "gauge/live", 3, 1000);
    let subscribers = || value(&scrape(ops), "moq_relay_active_subscribers", &[("broadcast", "gauge/live")]);
    assert!(
        eventually(Duration::from_secs(15), || subscribers() == Some(3.0)),
        "three distinct viewers: {:?}",
        subscribers()
    );
    let connections = value(&scrape(ops), "moq_relay_active_connections", &[("transport", "webtransport")]);
    assert_eq!(connections, Some(4.0));

    drop(viewers.finish(Duration::from_millis(10)));
    assert!(eventually(Duration::from_secs(15), || subscribers() == Some(0.0)), "viewers gone: {:?}", subscribers());
    drop(publisher);
    assert!(eventually(Duration::from_secs(15), || streams() == Some(0.0)), "stream gone: {:?}", streams());
    assert!(
        eventually(Duration::from_secs(15), || value(&scrape(ops), "moq_relay_active_connections", &[]) == Some(0.0))
    );
}

#[test]
fn an_ended_broadcasts_series_age_out_after_the_linger_window_and_fixed_totals_stay() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&["--metrics-linger", "2s"]);
    let viewers = watchers(port, "age/out", 2, 2);
    std::thread::sleep(Duration::from_millis(1500));
    run(
        "moq publish",
        Command::new(bin("moq"))
            .args(["publish", "--url", &format!("http://127.0.0.1:{port}/"), "--broadcast", "age/out"])
            .args(["--groups", "2"]),
        Duration::from_secs(30),
    );
    assert_eq!(watch_summary(&viewers.finish(Duration::from_secs(30)))["ok"], true);

    let of_broadcast = |samples: &[Sample]| {
        samples.iter().filter(|(_, l, _)| l.get("broadcast").map(String::as_str) == Some("age/out")).count()
    };
    let ended = scrape(ops);
    assert!(
        value(&ended, "moq_relay_bytes_sent_total", &[("broadcast", "age/out"), ("track_type", "video")]) > Some(0.0),
        "an ended broadcast's totals are still there right after it ends"
    );
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || of_broadcast(&scrape(ops)) == 0),
        "series left: {:?}",
        scrape(ops).into_iter().filter(|(_, l, _)| l.contains_key("broadcast")).collect::<Vec<_>>()
    );
    let gone_after = started.elapsed();
    let samples = scrape(ops);
    assert_eq!(
        value(&samples, "moq_relay_sessions_total", &[("result", "accepted")]),
        Some(3.0),
        "totals without a broadcast label stay"
    );
    assert!(value(&samples, "moq_relay_active_streams", &[("namespace", "age")]).is_none(), "namespace gauge aged out");
    eprintln!("broadcast series gone {gone_after:?} after the broadcast ended (linger 2 s, upkeep every 5 s)");
}

#[test]
fn broadcast_series_never_exceed_the_cap() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&["--metrics-max-broadcasts", "2"]);
    let url = format!("http://127.0.0.1:{port}/");
    let mut publishers = Vec::new();
    for i in 0..5 {
        let mut p = Proc::spawn(
            "moq publish",
            Command::new(bin("moq")).args([
                "publish",
                "--url",
                &url,
                "--broadcast",
                &format!("cap/b{i}"),
                "--groups",
                "2",
            ]),
        );
        p.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
        publishers.push(p);
    }
    let mut viewers = Vec::new();
    for i in 0..5 {
        viewers.push(watchers(port, &format!("cap/b{i}"), 1, 1));
    }
    for v in viewers {
        v.finish(Duration::from_secs(20));
    }
    let samples = scrape(ops);
    let broadcasts: std::collections::BTreeSet<&str> =
        samples.iter().filter_map(|(_, l, _)| l.get("broadcast").map(String::as_str)).collect();
    assert!(broadcasts.len() <= 3, "at most 2 broadcasts plus _other: {broadcasts:?}");
    assert!(broadcasts.contains("_other"), "{broadcasts:?}");
    let overflow = value(&samples, "moq_relay_metric_cardinality_overflow_total", &[("label", "broadcast")]);
    assert!(overflow.unwrap_or(0.0) >= 3.0, "overflow counted: {overflow:?}");
}

#[test]
fn metrics_require_the_bearer_token_when_configured() {
    let _serial = serial();
    let port = free_port();
    let ops = free_port();
    let mut cmd = Command::new(bin("moq-relay"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--tls-generate", "localhost"])
        .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
        .env("MOQ_OPS_TOKEN", "s3cret-token-value");
    let mut relay = Proc::spawn("moq-relay", &mut cmd);
    relay.wait_line(Duration::from_secs(20), |l| l.contains("relay ready"));
    assert_eq!(scrape_raw(ops, None).0, 401);
    assert_eq!(scrape_raw(ops, Some("wrong")).0, 401);
    let (status, body) = scrape_raw(ops, Some("s3cret-token-value"));
    assert_eq!(status, 200);
    assert!(body.contains("moq_relay_build_info"));
    assert!(!relay.drain().iter().any(|l| l.contains("s3cret-token-value")), "the token is never logged");
}

#[test]
fn promtool_accepts_a_live_scrape_under_traffic() {
    let _serial = serial();
    let (_relay, port, ops) = relay_with_ops(&[]);
    let viewers = watchers(port, "lint/bbb", 2, 2);
    std::thread::sleep(Duration::from_millis(1000));
    let _publisher = Proc::spawn(
        "moq publish",
        Command::new(bin("moq")).args([
            "publish",
            "--url",
            &format!("http://127.0.0.1:{port}/"),
            "--broadcast",
            "lint/bbb",
        ]),
    );
    viewers.finish(Duration::from_secs(20));
    let (_, body) = scrape_raw(ops, None);
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
    let (_relay, port, ops) = relay_with_ops(&["--max-sessions", "2"]);
    let url = format!("http://127.0.0.1:{port}/");
    let _publisher =
        Proc::spawn("moq publish", Command::new(bin("moq")).args(["publish", "--url", &url, "--broadcast", "cap/bbb"]));
    // The publisher takes its slot first (else viewers could fill both and starve it); of three
    // viewers at most one gets the other.
    let announced = || {
        let out = run(
            "curl",
            Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/announced")]),
            Duration::from_secs(5),
        );
        String::from_utf8_lossy(&out.stdout).contains("cap/bbb")
    };
    assert!(eventually(Duration::from_secs(10), announced), "publisher never announced");
    let crowd = watchers(port, "cap/bbb", 3, 1).finish(Duration::from_secs(30));
    let summary = watch_summary(&crowd);
    assert_eq!(summary["ok"], false, "{summary:#}");
    let samples = scrape(ops);
    assert_eq!(value(&samples, "moq_relay_max_sessions", &[]), Some(2.0));
    let refused = value(&samples, "moq_relay_sessions_total", &[("result", "rejected"), ("reason", "capacity")]);
    assert!(refused.unwrap_or(0.0) >= 2.0, "refused {refused:?}");
    // Slots come back when sessions end: a lone viewer now gets in.
    let lone = watch_summary(&watchers(port, "cap/bbb", 1, 1).finish(Duration::from_secs(30)));
    assert_eq!(lone["ok"], true, "{lone:#}");
    eprintln!("session cap 2: {refused:?} attempts refused, a later viewer admitted");
}

/// Connections per worker thread, from /metrics (sampled every 0.5 s by the relay, absent before
/// the first sample).
fn worker_connections(ops: u16) -> Vec<f64> {
    let samples = scrape(ops);
    (0..2).filter_map(|w| value(&samples, "moq_relay_worker_connections", &[("worker", &w.to_string())])).collect()
}

/// The worker layout once the relay's gauges count `total` connections (or after 10 s).
fn wait_worker_connections(ops: u16, total: f64) -> Vec<f64> {
    eventually(Duration::from_secs(10), || worker_connections(ops).iter().sum::<f64>() == total);
    worker_connections(ops)
}

/// New connections fill worker 0 while it is below `--worker-spill-at` and go to the next worker
/// otherwise; a broadcast reaches viewers on both workers intact, and /metrics shows the layout.
#[test]
fn connections_fill_workers_in_order_and_frames_cross_workers() {
    let _serial = serial();
    const N: usize = 4;
    // Threshold 1: a lightly loaded relay keeps every connection on worker 0.
    let (relay, port, ops) = relay_with_ops(&["--worker-threads", "2", "--worker-spill-at", "1"]);
    let viewers = watchers(port, "fill/bbb", N, 2);
    let layout = wait_worker_connections(ops, N as f64);
    assert_eq!(layout, vec![N as f64, 0.0], "all on worker 0");
    publish_groups(port, "fill/bbb", 2);
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    drop(relay);

    // A tiny threshold: worker 0 is "full" after one connection, so the others spill to worker 1
    // and frames from the publisher's worker cross to the other.
    let (_relay, port, ops) = relay_with_ops(&["--worker-threads", "2", "--worker-spill-at", "0.0001"]);
    let viewers = watchers(port, "spill/bbb", N, 2);
    let layout = wait_worker_connections(ops, N as f64);
    assert_eq!(layout.iter().sum::<f64>(), N as f64, "{layout:?}");
    assert!(layout[1] >= 1.0, "spilled to worker 1: {layout:?}");
    let published = publish_groups(port, "spill/bbb", 2);
    let summary = watch_summary(&viewers.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    let frames = published["tracks"]["video"]["frames"].as_f64().unwrap();
    let sent =
        value(&scrape(ops), "moq_relay_frames_sent_total", &[("broadcast", "spill/bbb"), ("track_type", "video")]);
    assert_eq!(sent, Some(N as f64 * frames), "every viewer got every frame");
    let busy = value(&scrape(ops), "moq_relay_worker_busy_ratio", &[("worker", "1")]).unwrap();
    assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");
    eprintln!("layout with spill threshold 0.0001: {layout:?}");
}
