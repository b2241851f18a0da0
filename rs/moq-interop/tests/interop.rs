//! Interoperability with the reference moq-lite peers (installed by
//! scripts/install-test-deps.sh): moq-clock 0.10.21 through this relay, and this CLI through the
//! reference moq-relay 0.17.10.

use std::process::Command;
use std::time::Duration;

use moq_interop::*;

const CLOCK: (&str, &str) = ("moq-clock", "0.10.21");

/// A clock line as moq-clock prints it: `YYYY-MM-DD HH:MM:SS`.
fn is_clock_line(line: &str) -> bool {
    let b = line.trim().as_bytes();
    b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b.iter().enumerate().all(|(i, c)| [4, 7, 10, 13, 16].contains(&i) || c.is_ascii_digit())
}

/// Reference clock publisher → this relay → reference clock subscriber, printing live seconds.
fn clock_through_our_relay(url_for: impl Fn(u16) -> String, flags: &[&str], version: &str) {
    let _serial = serial();
    let mut relay = Relay::start();
    let url = url_for(relay.port);
    let clock = reference(CLOCK.0, CLOCK.1);
    let _publisher = Proc::spawn(
        "moq-clock publish",
        Command::new(&clock).args(["--url", &url, "--broadcast", "clock"]).args(flags).arg("publish"),
    );
    let mut subscriber = Proc::spawn(
        "moq-clock subscribe",
        Command::new(&clock).args(["--url", &url, "--broadcast", "clock"]).args(flags).arg("subscribe"),
    );
    // Late join prints the current minute's seconds so far at once; then one line per second.
    let first = subscriber.wait_line(Duration::from_secs(30), is_clock_line);
    let mut last = first.clone();
    let mut live = 0;
    while live < 2 {
        let line = subscriber.wait_line(Duration::from_secs(5), is_clock_line);
        assert!(line > last, "clock went backwards: {last} then {line}");
        last = line;
        live += 1;
    }
    eprintln!("{url}: first {first}, then live up to {last}");
    let opened = relay.drain().iter().filter(|l| l.contains("session opened")).cloned().collect::<Vec<_>>();
    assert!(opened.len() >= 2 && opened.iter().all(|l| l.contains(version)), "sessions on {version}: {opened:#?}");
}

#[test]
fn clock_over_webtransport_with_fingerprint_bootstrap() {
    clock_through_our_relay(|port| format!("http://localhost:{port}/"), &[], "moq-lite-04");
}

#[test]
fn clock_over_webtransport_without_verification() {
    clock_through_our_relay(|port| format!("https://localhost:{port}/"), &["--tls-disable-verify"], "moq-lite-04");
}

#[test]
fn clock_over_lite_03() {
    clock_through_our_relay(
        |port| format!("http://localhost:{port}/"),
        &["--client-version", "moq-lite-03"],
        "moq-lite-03",
    );
}

#[test]
fn clock_over_raw_quic() {
    clock_through_our_relay(|port| format!("moqt://localhost:{port}/"), &["--tls-disable-verify"], "moq-lite-04");
}

/// This publisher → the reference relay → this viewer: every frame intact.
#[test]
fn moq_cli_through_reference_relay() {
    let _serial = serial();
    let (mut relay, url) = reference_relay();

    let viewer = Viewer::new(&url, "ref/bbb").summary().groups(3).args(["--timeout", "20s"]).background();
    std::thread::sleep(Duration::from_millis(1000));
    let _publisher = Publisher::new(&url, "ref/bbb").groups(3).spawn();
    let out = viewer.finish(Duration::from_secs(40));
    let summary = watch_summary(&out);
    assert_eq!(summary["ok"], true, "{summary:#}\nrelay: {:?}", relay.drain());
    for (track, per_group) in [("video", 30), ("audio", 50)] {
        let t = &summary["tracks"][track];
        assert_eq!(t["frames_min_per_viewer"], 3 * per_group, "{summary:#}");
        assert_eq!(t["first_group_max"], 0, "{summary:#}");
        assert_eq!(t["corrupt"], 0, "{summary:#}");
        assert_eq!(t["gaps"], 0, "{summary:#}");
    }
}
