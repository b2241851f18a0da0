//! Real browsers against this relay: headless Chromium running the published browser clients
//! (`@moq/net`, `@moq/lite` 0.2.2) over WebTransport and the WebSocket fallback, subscribing to
//! `moq publish` with every byte verified in the page, and publishing for `moq watch` to verify.
//! Needs Chromium, node 20+ and the npm packages from `scripts/install-test-deps.sh`.

use std::time::Duration;

use moq_interop::*;
use serde_json::Value;

/// What `@moq/net` 0.3.x must negotiate: the newest moq-lite it offers (it offers `moq-lite-05`,
/// `moq-lite-04`, `moq-lite-03`; lite-06 only as a `-wip` it never advertises). Fails while the
/// relay speaks only lite-03/04.
const NET_VERSION: &str = "moq-lite-05";
/// What `@moq/lite` 0.2.2 must negotiate: the newest it offers (`moq-lite-04`, `moq-lite-03`).
const LITE_VERSION: &str = "moq-lite-04";

/// Receive for this long after the first group...
const RECEIVE: Duration = Duration::from_secs(12);
/// ...and this much of it must have arrived, counted in frames at the track's frame rate.
const AT_LEAST_SECONDS: f64 = 10.0;

/// A relay with `moq publish` live on `broadcast` (default shape: 30 fps video in 30-frame groups,
/// 50 fps audio, a catalog), connected before the page starts.
fn relay_with_publisher(broadcast: &str) -> (Relay, Proc) {
    let relay = Relay::start();
    let mut publisher = Publisher::new(&relay.url(""), broadcast).spawn();
    publisher.wait_line(Duration::from_secs(10), |l| l.contains("moq publish:") && l.contains(" via "));
    (relay, publisher)
}

/// Every frame of the page's subscription verified byte for byte, groups consecutive with every
/// frame in order, at least [`AT_LEAST_SECONDS`] of frames, over `transport`.
fn assert_every_frame(result: &Value, transport: &str) {
    let frames = result["frames"].as_u64().unwrap_or(0);
    let fps = result["fps"].as_f64().expect("the catalog's fps");
    let gop = result["gop"].as_u64().expect("the catalog's gop");
    assert_eq!(result["errors"], 0, "corrupt, missing or reordered frames: {result:#}");
    assert!(
        frames as f64 >= AT_LEAST_SECONDS * fps,
        "{frames} frames at {fps} fps is under {AT_LEAST_SECONDS} s: {result:#}"
    );
    assert!(result["span_ms"].as_u64().unwrap_or(0) >= (AT_LEAST_SECONDS * 1000.0) as u64, "{result:#}");
    let (first, last) = (result["first_group"].as_u64().unwrap(), result["last_group"].as_u64().unwrap());
    let (groups, complete) = (result["groups"].as_u64().unwrap(), result["groups_complete"].as_u64().unwrap());
    assert_eq!(last - first + 1, groups, "groups {first}..={last} with gaps: {result:#}");
    // Every group but the one the run stopped in arrived whole.
    assert!(complete + 1 >= groups, "{result:#}");
    assert!(frames >= complete * gop && frames <= groups * gop, "{result:#}");
    assert_eq!(result["transport"], transport, "{result:#}");
    let opened = result["transports"].as_array().unwrap();
    assert!(opened.iter().any(|t| t["kind"] == transport && t["state"] == "open"), "{result:#}");
}

#[test]
fn net_over_webtransport_receives_every_frame_intact() {
    let _serial = serial();
    let (relay, _publisher) = relay_with_publisher("demo/net");
    let result = Browser::subscribe(&relay.url(""), "demo/net").library(Library::Net).duration(RECEIVE).run();
    assert_eq!(result["library"], "@moq/net");
    assert_every_frame(&result, "webtransport");
    // WebTransport names the version in `wt-protocol`; Chromium exposes it to the page.
    assert_eq!(result["transport_protocol"], result["version"], "{result:#}");
    assert_eq!(result["version"], NET_VERSION, "negotiated version: {result:#}");
}

#[test]
fn lite_over_webtransport_receives_every_frame_intact() {
    let _serial = serial();
    let (relay, _publisher) = relay_with_publisher("demo/lite");
    let result = Browser::subscribe(&relay.url(""), "demo/lite").library(Library::Lite).duration(RECEIVE).run();
    assert_eq!(result["library"], "@moq/lite");
    assert_eq!(result["library_version"], "0.2.2");
    assert_every_frame(&result, "webtransport");
    assert_eq!(result["transport_protocol"], result["version"], "{result:#}");
    assert_eq!(result["version"], LITE_VERSION, "negotiated version: {result:#}");
}

#[test]
fn net_without_webtransport_falls_back_to_websocket_and_receives_every_frame_intact() {
    let _serial = serial();
    let (relay, _publisher) = relay_with_publisher("demo/safari");
    let result =
        Browser::subscribe(&relay.url(""), "demo/safari").library(Library::Net).websocket().duration(RECEIVE).run();
    assert_every_frame(&result, "websocket");
    let opened = result["transports"].as_array().unwrap();
    assert!(opened.iter().all(|t| t["kind"] == "websocket"), "WebTransport was hidden: {result:#}");
    // The sub-protocol the relay picked: `qmux-0N.<moq version>`, the version the session runs.
    let protocol = result["transport_protocol"].as_str().unwrap_or_default();
    let (qmux, version) = protocol.split_once('.').unwrap_or_default();
    assert!(qmux.starts_with("qmux-0"), "sub-protocol {protocol:?}: {result:#}");
    assert_eq!(version, result["version"], "{result:#}");
    assert_eq!(result["version"], NET_VERSION, "negotiated version: {result:#}");
}

#[test]
fn net_publishes_from_the_page_and_moq_watch_verifies_every_byte() {
    let _serial = serial();
    let relay = Relay::start();
    let (fps, gop, groups) = (30, 10, 20);
    let page = Browser::publish(&relay.url(""), "page/cam")
        .fps(fps)
        .gop(gop)
        .bitrate(1_000_000)
        .duration(Duration::from_secs(14))
        .start();
    // Waits for the page's announcement (Chromium takes a second or two to start).
    let watch = Viewer::new(&relay.url(""), "page/cam")
        .summary()
        .groups(groups)
        .args(["--timeout", "20s"])
        .run(Duration::from_secs(45));
    let summary = watch_summary(&watch);
    eprintln!("moq watch: {summary}");
    let published = page.result();
    assert_eq!(summary["ok"], true, "{summary:#}\npage: {published:#}");
    let video = &summary["tracks"]["video"];
    assert_eq!(video["corrupt"], 0, "{summary:#}");
    assert_eq!(video["gaps"], 0, "{summary:#}");
    assert_eq!(video["groups_complete_min_per_viewer"], groups, "{summary:#}");
    assert!(video["frames"].as_u64().unwrap() >= groups * gop as u64, "{summary:#}");
    assert_eq!(published["transport"], "webtransport", "{published:#}");
    // The page kept publishing at its frame rate for the whole run.
    assert!(published["frames"].as_u64().unwrap() >= 13 * fps as u64, "{published:#}");
    assert!(published["groups"].as_u64().unwrap() >= video["frames"].as_u64().unwrap() / gop as u64, "{published:#}");
    // Whichever moq-lite version it got (the subscribe tests pin it), the page says which.
    assert!(published["version"].as_str().is_some_and(|v| v.starts_with("moq-lite-0")), "{published:#}");
}
