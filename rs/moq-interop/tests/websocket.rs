//! moq-lite over qmux over WebSocket: `moq publish` / `moq watch` with `ws://` and `wss://`
//! URLs against this relay's TCP port, the sub-protocol negotiation, the request timeout and
//! hostile WebSocket peers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use moq_interop::*;

/// Every frame of every group reached every viewer intact, from the first group on.
fn assert_complete(summary: &serde_json::Value, viewers: u64, groups: u64) {
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["viewers"], viewers);
    for (track, per_group) in [("video", 30), ("audio", 50)] {
        let t = &summary["tracks"][track];
        assert_eq!(t["frames_min_per_viewer"], groups * per_group, "{summary:#}");
        assert_eq!(t["first_group_max"], 0, "{summary:#}");
        assert_eq!(t["corrupt"], 0, "{summary:#}");
        assert_eq!(t["gaps"], 0, "{summary:#}");
        assert_eq!(t["groups_complete_min_per_viewer"], groups, "{summary:#}");
    }
}

const FAILURES: &str = "moq_relay_websocket_upgrade_failures_total";

#[test]
fn websocket_publish_to_websocket_viewers_every_frame_intact() {
    let _serial = serial();
    // A real token (verified by the relay), so its absence from the logs means something.
    let lab = auth::TokenLab::new();
    let token = lab.sign(&lab.k1, &auth::Grant::new("room").publish(["**"]).subscribe(["**"]));
    let relay = Relay::builder().ops().args(["--auth-key", lab.key_dir.to_str().unwrap()]).start();
    let url = format!("ws://127.0.0.1:{}/room?jwt={token}", relay.port);
    let viewers = Viewer::new(&url, "cam").summary().viewers(3).groups(3).background();
    std::thread::sleep(Duration::from_millis(1500));
    let mut publisher = Publisher::new(&url, "cam").groups(3).spawn();
    let out = viewers.finish_in_time(Duration::from_secs(60));
    assert_complete(&watch_summary(&out), 3, 3);
    assert_eq!(publisher.wait_exit(Duration::from_secs(20)).map(|s| s.success()), Some(true));
    // The sessions were counted as WebSocket ones, and the token never reached a log line.
    let scrape = relay.scrape();
    let opened = scrape.total("moq_relay_sessions_total", &[("result", "accepted")]);
    assert!(opened >= 4.0, "{opened}");
    assert!(scrape.value("moq_relay_active_connections", &[("transport", "websocket")]).is_some());
    let mut relay = relay;
    assert!(scrape.total("moq_relay_auth_decisions_total", &[("result", "accepted"), ("reason", "token")]) >= 4.0);
    assert!(relay.drain().iter().all(|l| !l.contains(&token) && !l.contains(auth::signature(&token))));
}

#[test]
fn quic_publisher_to_websocket_viewer_and_back() {
    let _serial = serial();
    let relay = Relay::start();
    let port = relay.port;
    let viewer = Viewer::new(&format!("ws://localhost:{port}/mixed"), "cam").summary().groups(2).background();
    let back = Viewer::new(&format!("http://localhost:{port}/mixed"), "ws-cam").summary().groups(2).background();
    std::thread::sleep(Duration::from_millis(1500));
    let _quic = Publisher::new(&format!("http://localhost:{port}/mixed"), "cam").groups(2).spawn();
    let _ws = Publisher::new(&format!("ws://[::1]:{port}/mixed"), "ws-cam").groups(2).spawn();
    assert_complete(&watch_summary(&viewer.finish_in_time(Duration::from_secs(30))), 1, 2);
    assert_complete(&watch_summary(&back.finish_in_time(Duration::from_secs(30))), 1, 2);
}

#[test]
fn wss_with_the_development_certificate_fingerprint() {
    let _serial = serial();
    let relay = Relay::start();
    let port = relay.port;
    let fingerprint = http::get(&relay.url("certificate.sha256")).unwrap().body;
    let url = format!("wss://localhost:{port}/secure");
    let viewer =
        Viewer::new(&url, "cam").summary().groups(2).args(["--tls-fingerprint", fingerprint.trim()]).background();
    std::thread::sleep(Duration::from_millis(1500));
    let _publisher = Publisher::new(&url, "cam").groups(2).args(["--tls-fingerprint", fingerprint.trim()]).spawn();
    assert_complete(&watch_summary(&viewer.finish_in_time(Duration::from_secs(30))), 1, 2);
    // A wrong pin is refused by the client; plain HTTP still answers on the same port.
    let wrong = Viewer::new(&url, "cam").summary().groups(1).args(["--tls-fingerprint", &"00".repeat(32)]);
    let out = wrong.run(Duration::from_secs(30));
    assert!(!out.status.success());
    assert_eq!(http::get(&relay.url("health")).unwrap().body, "ok");
}

/// An upgrade request's head (the key is RFC 6455's sample).
fn upgrade_head(path: &str, protocols: Option<&str>) -> String {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocols {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    head + "\r\n"
}

/// Sends `head` on a new connection and returns the response head.
fn exchange(port: u16, head: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => response.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&response).into_owned())
}

#[test]
fn an_upgrade_without_a_supported_sub_protocol_is_refused_and_counted() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    for protocols in [Some("qmux-01, qmux-00, webtransport"), Some("qmux-01.moq-lite-99"), None] {
        let (_, response) = exchange(relay.port, &upgrade_head("/", protocols));
        assert!(response.starts_with("HTTP/1.1 400"), "{protocols:?}: {response}");
    }
    let (_, response) = exchange(relay.port, &upgrade_head("/", Some("qmux-01, qmux-01.moq-lite-04")));
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(response.to_ascii_lowercase().contains("sec-websocket-protocol: qmux-01.moq-lite-04"), "{response}");
    assert!(response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{response}");
    assert!(eventually(Duration::from_secs(5), || relay.scrape().total(FAILURES, &[("reason", "no_protocol")]) == 3.0));
    // A broken upgrade (no key) is a bad request.
    let (_, response) =
        exchange(relay.port, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(eventually(Duration::from_secs(5), || relay.scrape().total(FAILURES, &[("reason", "bad_request")]) == 1.0));
}

#[test]
fn a_request_that_never_completes_is_dropped_within_the_bound() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 512];
    // The relay closes it (EOF or reset) after its 10 s request timeout.
    let _ = stream.read(&mut buf);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(20), "{waited:?}");
    // A TCP connection that sends nothing at all is dropped too.
    let mut silent = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    assert!(eventually(Duration::from_secs(5), || relay.scrape().total(FAILURES, &[("reason", "timeout")]) >= 2.0));
}

/// A masked client WebSocket frame header announcing `len` payload bytes (opcode binary).
fn frame_header(len: u64) -> Vec<u8> {
    let mut out = vec![0x82];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: the payload goes as is
    out
}

/// Opens a WebSocket session rooted at `path` and sends `bytes` after the upgrade.
fn hostile(port: u16, path: &str, bytes: &[u8]) -> TcpStream {
    let (mut stream, response) = exchange(port, &upgrade_head(path, Some("qmux-01.moq-lite-04")));
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    stream.write_all(bytes).unwrap();
    stream
}

#[test]
fn hostile_websocket_input_closes_only_that_session_and_is_counted() {
    let _serial = serial();
    let relay = Relay::builder().ops().start();
    let port = relay.port;
    let url = format!("ws://127.0.0.1:{port}/hostile");
    let viewer = Viewer::new(&url, "cam").summary().groups(5).background();
    std::thread::sleep(Duration::from_millis(1500));
    let _publisher = Publisher::new(&url, "cam").groups(5).spawn();
    std::thread::sleep(Duration::from_millis(1500));

    // A frame that claims 1 TiB, then a few bytes.
    let mut liar = frame_header(1 << 40);
    liar.extend_from_slice(b"not a terabyte");
    let mut a = hostile(port, "/hostile", &liar);
    // A well-framed message of garbage qmux frames.
    let garbage = [0x3f, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78];
    let mut message = frame_header(garbage.len() as u64);
    message.extend_from_slice(&garbage);
    let mut b = hostile(port, "/hostile", &message);
    // The relay drops both connections.
    for stream in [&mut a, &mut b] {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let closed = (0..100).any(|_| matches!(stream.read(&mut buf), Ok(0) | Err(_)));
        assert!(closed, "the relay kept a hostile session open");
    }
    assert_complete(&watch_summary(&viewer.finish_in_time(Duration::from_secs(40))), 1, 5);
    let mut relay = relay;
    let violations = || relay.scrape().total("moq_relay_session_closes_total", &[("reason", "protocol_violation")]);
    let counted = eventually(Duration::from_secs(5), || violations() >= 2.0);
    let violations = violations();
    let log: Vec<String> = relay.drain().iter().filter(|l| l.contains("session")).cloned().collect();
    assert!(counted, "{violations}: {log:#?}");
}
