//! This relay with the `moq` CLI: end-to-end delivery, fan-out, transports, replacement, GOAWAY
//! and hostile peers.

use std::time::Duration;

use moq_interop::*;

/// Every frame of every group reached every viewer intact, from the first group on.
fn assert_complete(summary: &serde_json::Value, viewers: u64, groups: u64) {
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["viewers"], viewers);
    let video = &summary["tracks"]["video"];
    let audio = &summary["tracks"]["audio"];
    // Defaults: 30 fps video with 30-frame groups, 50 fps audio in groups of 50.
    assert_eq!(video["frames_min_per_viewer"], groups * 30, "{summary:#}");
    assert_eq!(audio["frames_min_per_viewer"], groups * 50, "{summary:#}");
    for track in [video, audio] {
        assert_eq!(track["first_group_max"], 0, "{summary:#}");
        assert_eq!(track["corrupt"], 0, "{summary:#}");
        assert_eq!(track["gaps"], 0, "{summary:#}");
        assert_eq!(track["groups_complete_min_per_viewer"], groups, "{summary:#}");
    }
}

#[test]
fn webtransport_publish_to_fifty_viewers_every_frame_intact() {
    let _serial = serial();
    let relay = Relay::start();
    let url = format!("http://localhost:{}/", relay.port);
    // Viewers first, so each one receives the broadcast from its first group.
    let viewers = Viewer::new(&url, "demo/fanout").summary().viewers(50).groups(4).background();
    std::thread::sleep(Duration::from_millis(1500));
    let mut publisher = Publisher::new(&url, "demo/fanout").groups(4).spawn();
    let out = viewers.finish_in_time(Duration::from_secs(60));
    assert_complete(&watch_summary(&out), 50, 4);
    assert_eq!(publisher.wait_exit(Duration::from_secs(20)).map(|s| s.success()), Some(true));
}

/// Publish over WebTransport under the session root "room". Raw QUIC lite-05/06 carries the URL's
/// path and query in SETUP Path: rooted at "room" exactly as WebTransport, the broadcast is "cam"
/// there. Raw QUIC lite-04 carries no path: the root, where it is "room/cam". A viewer rooted
/// anywhere else would wait for ever, so each must find the broadcast under its own name. (The
/// query's `jwt` reaches the access layer: tests/auth.rs.)
#[test]
fn raw_quic_sessions_are_rooted_at_their_setup_path_from_lite_05() {
    let _serial = serial();
    let mut relay = Relay::start();
    let port = relay.port;
    let watch = |url: String, broadcast: &str, version: &str| {
        Viewer::new(&url, broadcast).summary().groups(2).args(["--tls-insecure", "--moq-version", version]).background()
    };
    let rooted = format!("moqt://localhost:{port}/room?client=test");
    let viewers = [
        ("moq-lite-06", watch(rooted.clone(), "cam", "moq-lite-06")),
        ("moq-lite-05", watch(rooted, "cam", "moq-lite-05")),
        ("moq-lite-04", watch(format!("moqt://localhost:{port}"), "room/cam", "moq-lite-04")),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    let _publisher = Publisher::new(&format!("http://localhost:{port}/room"), "cam").groups(2).spawn();
    for (version, viewer) in viewers {
        eprintln!("{version}:");
        assert_complete(&watch_summary(&viewer.finish_in_time(Duration::from_secs(30))), 1, 2);
    }
    let logs = relay.drain().join("\n");
    for version in ["moq-lite-06", "moq-lite-05", "moq-lite-04"] {
        assert!(logs.contains(version), "a session on {version}: {logs}");
    }
}

#[test]
fn announced_and_fingerprint_endpoints_answer_browsers() {
    let _serial = serial();
    let relay = Relay::start();
    let port = relay.port;
    let mut publisher = Publisher::new(&format!("http://localhost:{port}/"), "demo/listed").groups(20).spawn();
    publisher.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
    let announced = http::Request::get(&relay.url("announced/demo")).header("Origin", "https://example.org");
    let mut listed = announced.send().unwrap();
    for _ in 1..50 {
        if listed.body.contains("listed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        listed = announced.send().unwrap();
    }
    assert_eq!(listed.header("access-control-allow-origin"), Some("*"), "{listed}");
    assert!(listed.body.ends_with("listed\n"), "{listed}");
    let fingerprint = http::get(&format!("http://[::1]:{port}/certificate.sha256")).unwrap().body;
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn sigterm_sends_goaway_and_drains() {
    let _serial = serial();
    let mut relay = Relay::builder().args(["--drain-timeout", "5s"]).start();
    let url = format!("http://localhost:{}/", relay.port);
    let mut publisher = Publisher::new(&url, "demo/drain").spawn();
    publisher.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:"));
    relay.wait_line(Duration::from_secs(10), |l| l.contains("session opened"));

    let started = std::time::Instant::now();
    relay.signal("TERM");
    relay.wait_line(Duration::from_secs(5), |l| l.contains("sending GOAWAY"));
    // The publisher hears GOAWAY, leaves, and the relay stops without waiting out the window.
    publisher.wait_line(Duration::from_secs(5), |l| l.contains("going away (GOAWAY)"));
    let status = relay.wait_exit(Duration::from_secs(10)).expect("relay exits");
    assert!(status.success(), "{status:?}");
    eprintln!("relay stopped {:?} after SIGTERM", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "drained early: {:?}", started.elapsed());
    // With the relay gone, the publisher retries with backoff, warning each time, then gives up.
    publisher.wait_line(Duration::from_secs(20), |l| l.contains("retries exhausted"));
    assert!(publisher.seen.iter().any(|l| l.contains("WARN") && l.contains("retry=1")), "{:?}", publisher.seen);
    assert_eq!(publisher.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()), Some(1));
}

#[test]
fn renditions_share_group_boundaries_and_are_listed_in_the_catalog() {
    let _serial = serial();
    let relay = Relay::start();
    let url = format!("http://localhost:{}/", relay.port);
    let viewer = Viewer::new(&url, "demo/abr").summary().viewers(1).groups(2).arg("--all-renditions").background();
    std::thread::sleep(Duration::from_millis(1000));
    let _publisher =
        Publisher::new(&url, "demo/abr").groups(2).args(["--renditions", "3", "--video-bitrate", "1600000"]).spawn();
    let summary = watch_summary(&viewer.finish_in_time(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    let bytes: Vec<f64> = (0..3)
        .map(|i| {
            let t = &summary["tracks"][format!("video/{i}")];
            // Same frames, same groups: every rendition starts its groups on the same frame.
            assert_eq!(t["frames_min_per_viewer"], 60, "{summary:#}");
            assert_eq!(t["groups_complete_min_per_viewer"], 2, "{summary:#}");
            assert_eq!(t["first_group_max"], 0, "{summary:#}");
            assert_eq!(t["corrupt"], 0, "{summary:#}");
            t["bytes"].as_f64().unwrap()
        })
        .collect();
    // Each rendition carries about half the bytes of the one above.
    for pair in bytes.windows(2) {
        let ratio = pair[0] / pair[1];
        assert!((1.6..2.4).contains(&ratio), "bitrate ladder {bytes:?}");
    }
}

#[test]
fn viewers_sharing_sockets_are_still_separate_sessions() {
    let _serial = serial();
    let mut relay = Relay::start();
    let url = format!("http://localhost:{}/", relay.port);
    // 12 viewers on 3 sockets (5 + 5 + 2): the load-generator mode of `moq watch`.
    let viewers = Viewer::new(&url, "demo/shared")
        .summary()
        .viewers(12)
        .groups(2)
        .args(["--viewers-per-socket", "5"])
        .background();
    std::thread::sleep(Duration::from_millis(1500));
    let _publisher = Publisher::new(&url, "demo/shared").groups(2).spawn();
    let out = viewers.finish_in_time(Duration::from_secs(60));
    assert_complete(&watch_summary(&out), 12, 2);
    let opened = relay.drain().iter().filter(|l| l.contains("session opened")).count();
    assert_eq!(opened, 13, "12 viewers and the publisher");
}
