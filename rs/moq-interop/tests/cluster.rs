//! Meshes of relays (docs/CLUSTER.md) with the real binaries: an origin and two edges (one
//! upstream per edge, not per viewer; an edge killed and restarted; a publisher moving to another
//! relay), a partitioned link (network namespaces), a loop of three, meshes mixed with the
//! reference relay 0.17.10, and peer tokens.
//!
//! Timings are printed on `CLUSTER ...` lines (`cargo test -p moq-interop --test cluster --
//! --nocapture 2>&1 | grep CLUSTER`). Relays run with 2 s QUIC idle timeouts ([`cluster::QUICK`]).

use std::time::{Duration, Instant};

use moq_interop::auth::{Grant, TokenLab};
use moq_interop::cluster::{self, IDLE_TIMEOUT};
use moq_interop::relay::reference_relay_with;
use moq_interop::*;
use serde_json::json;

const FRAMES_SENT: &str = "moq_relay_frames_sent_total";
const FRAMES_RECEIVED: &str = "moq_relay_frames_received_total";
const PEER_FRAMES: &str = "moq_relay_cluster_peer_frames_total";
const PEER_BYTES: &str = "moq_relay_cluster_peer_bytes_total";
const PEER_ROUTES: &str = "moq_relay_cluster_peer_routes";
const PEER_DIALS: &str = "moq_relay_cluster_peer_dials_total";
const PEER_RTT: &str = "moq_relay_cluster_peer_rtt_seconds";

/// Checks that do not stop the test: each failure is printed at once (`CLUSTER FAIL ...`) and all
/// of them fail it at the end, so one run shows every way the mesh falls short, not the first.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn that(&mut self, ok: bool, what: impl std::fmt::Display) {
        if !ok {
            eprintln!("CLUSTER FAIL {what}");
            self.0.push(what.to_string());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: impl std::fmt::Display) {
        let ok = got == want;
        self.that(ok, format_args!("{what}: got {got:?}, want {want:?}"));
    }

    fn done(self) {
        assert!(self.0.is_empty(), "{} check(s) failed:\n{}", self.0.len(), self.0.join("\n"));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// A token that makes its bearer a peer (`"peer": true`) with publish and subscribe everywhere,
/// under subject `sub` (the inbound peer's label).
fn peer_token(lab: &TokenLab, sub: &str) -> String {
    lab.craft(&json!({ "root": "", "publish": ["**"], "subscribe": ["**"], "peer": true, "sub": sub }))
}

/// How long viewers watch at most (`--duration`): they should stop well before, when the
/// broadcast ends.
const WATCH_AT_MOST: &str = "30s";

/// How soon after its publisher finished a viewer must have seen the broadcast end.
const END_SEEN: Duration = Duration::from_secs(8);

/// A viewer of `broadcast` on `relay`, run in the background with its JSON summary: `viewers`
/// sessions, watching until the broadcast ends (at most [`WATCH_AT_MOST`]), waiting up to 20 s
/// for it to be announced.
fn viewers(relay: &Relay, broadcast: &str, viewers: usize) -> Background {
    Viewer::new(&relay.url(""), broadcast)
        .summary()
        .viewers(viewers)
        .args(["--duration", WATCH_AT_MOST, "--timeout", "20s"])
        .background()
}

/// The summary of [`viewers`] once they end, and a check that they ended because the broadcast
/// did (within [`END_SEEN`] of `ended`, when its publisher finished), not at `--duration`.
fn finish(w: Background, ended: Instant, checks: &mut Checks, who: &str) -> serde_json::Value {
    let out = w.finish_in_time(Duration::from_secs(45));
    let took = ended.elapsed();
    let what = format!("{who}: the broadcast's end reached the viewers {} after the publisher finished", secs(took));
    checks.that(took < END_SEEN, what);
    watch_summary(&out)
}

/// [`every_frame_once`] as checks.
fn every_frame(checks: &mut Checks, summary: &serde_json::Value, viewers: u64, groups: u64, who: &str) {
    for problem in every_frame_once(summary, viewers, groups) {
        checks.that(false, format_args!("{who}: {problem}"));
    }
}

/// `moq publish --groups N --json` of `broadcast` on `relay`, in the background.
fn publish(relay: &Relay, broadcast: &str, groups: u64) -> Background {
    Publisher::new(&relay.url(""), broadcast).groups(groups).json().background()
}

fn published_frames(out: &std::process::Output, track: &str) -> f64 {
    let summary = publish_summary(out);
    summary["tracks"][track]["frames"].as_f64().unwrap_or_else(|| panic!("publisher summary: {summary:#}"))
}

/// Case a, b and d on one origin and two edges (the edges dial the origin with peer tokens):
///
/// a. a publisher on the origin, two viewers on each edge: every frame once on every viewer; the
///    origin sends each track once per edge (its frames sent ≈ 2 × published, each edge's ≈ 2
///    viewers × published), the per-peer metrics and `/nodes` describe the links, the route hop
///    gauge is 0 on the origin and 1 on the edges;
/// b. edge 2 killed: the origin's inbound peer series for it goes down within the idle timeout;
///    restarted on the same ports it dials again by itself and a viewer on it receives, while the
///    viewers on edge 1 lose nothing (no gap, no stall);
/// d. the publisher leaves the origin and a new one of the same path starts on edge 2: viewers
///    waiting on edge 1 and on the origin receive it within a few seconds, every frame once.
#[test]
fn origin_and_two_edges() {
    let _serial = serial();
    let lab = TokenLab::new();
    let key_dir = lab.key_dir.to_str().unwrap().to_string();
    let origin = Node::new("origin").with(|b| b.args(["--auth-key", &key_dir, "--auth-public", "**"]));
    let e1 = Node::new("edge-1").dial(&format!("{}?jwt={}", origin.url(), peer_token(&lab, "edge-1")));
    let e2 = Node::new("edge-2").dial(&format!("{}?jwt={}", origin.url(), peer_token(&lab, "edge-2")));
    let o = origin.start();
    let started = Instant::now();
    let mut r1 = e1.start();
    let mut r2 = e2.start();
    for r in [&r1, &r2] {
        r.wait_peer(&origin.label(), "outbound", true, Duration::from_secs(15));
    }
    for edge in ["edge-1", "edge-2"] {
        o.wait_peer(edge, "inbound", true, Duration::from_secs(5));
    }
    eprintln!("CLUSTER origin+2 edges: both edges peered {} after they started", secs(started.elapsed()));

    // (a) Fan-out through the edges, one upstream per edge.
    let broadcast = "live/a";
    let groups = 4;
    let (w1, w2) = (viewers(&r1, broadcast, 2), viewers(&r2, broadcast, 2));
    std::thread::sleep(Duration::from_millis(1500));
    let publisher = publish(&o, broadcast, groups);
    // While it is live: routes, hops, /nodes.
    let mut checks = Checks::default();
    for r in [&r1, &r2] {
        r.wait_scrape("a route to live/a (routes >= 1, hops = 1)", Duration::from_secs(5), |s| {
            s.value(PEER_ROUTES, &[("peer", &origin.label())]).is_some_and(|v| v >= 1.0)
                && s.value("moq_relay_broadcast_route_hops", &[("broadcast", broadcast)]) == Some(1.0)
        });
        match r.node(&origin.label()) {
            None => checks.that(false, format_args!("{}: /nodes lacks the origin: {}", r.name, r.nodes())),
            Some(node) => {
                checks.eq(node["direction"].as_str(), Some("outbound"), format_args!("{}: /nodes {node}", r.name));
                checks.eq(node["state"].as_str(), Some("connected"), format_args!("{}: /nodes {node}", r.name));
                let routes = node["routes"].as_u64().is_some_and(|n| n >= 1);
                checks.that(routes, format_args!("{}: /nodes routes >= 1: {node}", r.name));
            }
        }
    }
    checks.eq(o.route_hops(broadcast), Some(0.0), "route hops on the origin (published there)");
    for edge in ["edge-1", "edge-2"] {
        match o.node(edge) {
            None => checks.that(false, format_args!("origin /nodes lacks {edge}: {}", o.nodes())),
            Some(node) => {
                checks.eq(node["direction"].as_str(), Some("inbound"), format_args!("origin /nodes {node}"));
                checks.eq(node["state"].as_str(), Some("connected"), format_args!("origin /nodes {node}"));
            }
        }
    }
    let published = publisher.finish_in_time(Duration::from_secs(30));
    let ended = Instant::now();
    for (who, w) in [("edge-1's viewers", w1), ("edge-2's viewers", w2)] {
        let summary = finish(w, ended, &mut checks, who);
        every_frame(&mut checks, &summary, 2, groups, who);
    }
    let (so, s1, s2) = (o.scrape(), r1.scrape(), r2.scrape());
    for track in ["video", "audio"] {
        let labels = [("broadcast", broadcast), ("track_type", track)];
        let p = published_frames(&published, track);
        let (sent_o, recv_o) = (so.total(FRAMES_SENT, &labels), so.total(FRAMES_RECEIVED, &labels));
        let (sent_1, sent_2) = (s1.total(FRAMES_SENT, &labels), s2.total(FRAMES_SENT, &labels));
        eprintln!(
            "CLUSTER fan-out {track}: published {p}, origin received {recv_o} sent {sent_o} (2 edges), \
             edge-1 sent {sent_1}, edge-2 sent {sent_2} (2 viewers each)"
        );
        checks.eq(recv_o, p, format_args!("origin frames received ({track}): the broadcast once"));
        // Once per edge: 2 × published. Once per viewer would be 4 ×.
        let once_per_edge = (1.9 * p..=2.1 * p).contains(&sent_o);
        checks.that(once_per_edge, format_args!("origin sent {track} {sent_o} for {p} published to 2 edges"));
        for (edge, sent) in [("edge-1", sent_1), ("edge-2", sent_2)] {
            let ok = (1.9 * p..=2.1 * p).contains(&sent);
            checks.that(ok, format_args!("{edge} sent {track} {sent} to 2 viewers of {p}"));
        }
    }
    let total_published: f64 = ["video", "audio"].iter().map(|t| published_frames(&published, t)).sum();
    for (edge, s) in [("edge-1", &s1), ("edge-2", &s2)] {
        let peer = origin.label();
        let o_tx = so.value(PEER_FRAMES, &[("peer", edge), ("direction", "tx")]).unwrap_or(0.0);
        let e_rx = s.value(PEER_FRAMES, &[("peer", &peer), ("direction", "rx")]).unwrap_or(0.0);
        eprintln!("CLUSTER peer frames: origin→{edge} tx {o_tx}, {edge} rx from origin {e_rx}");
        checks
            .that(o_tx >= total_published, format_args!("origin peer frames tx to {edge}: {o_tx} < {total_published}"));
        checks.that(e_rx >= total_published, format_args!("{edge} peer frames rx: {e_rx} < {total_published}"));
        let bytes = s.value(PEER_BYTES, &[("peer", &peer), ("direction", "rx")]).unwrap_or(0.0);
        checks.that(bytes > 0.0, format_args!("{edge} peer bytes rx from the origin: {bytes}"));
        let bytes = so.value(PEER_BYTES, &[("peer", edge), ("direction", "tx")]).unwrap_or(0.0);
        checks.that(bytes > 0.0, format_args!("origin peer bytes tx to {edge}: {bytes}"));
        let up = s.value("moq_relay_cluster_peer_up", &[("peer", &peer), ("direction", "outbound")]);
        checks.eq(up, Some(1.0), format_args!("{edge} peer_up outbound"));
        let up = so.value("moq_relay_cluster_peer_up", &[("peer", edge), ("direction", "inbound")]);
        checks.eq(up, Some(1.0), format_args!("origin peer_up inbound {edge}"));
        let dials = s.value(PEER_DIALS, &[("peer", &peer), ("result", "connected")]).unwrap_or(0.0);
        checks.that(dials >= 1.0, format_args!("{edge} dials connected {dials}"));
        let rtt = s.value(PEER_RTT, &[("peer", &peer)]).unwrap_or(-1.0);
        checks.that((0.0..0.5).contains(&rtt), format_args!("{edge}: rtt to the origin on loopback {rtt}"));
        checks.eq(s.value("moq_relay_cluster_info", &[("node", edge)]), Some(1.0), format_args!("{edge} cluster_info"));
    }
    if !checks.0.is_empty() {
        eprintln!("CLUSTER series of the origin:\n{}", cluster::cluster_series(&so));
    }
    // The documented log line, with the peer's host:port and never its token.
    for (edge, r) in [("edge-1", &mut r1), ("edge-2", &mut r2)] {
        let logs = r.drain().to_vec();
        let connected = logs.iter().find(|l| l.contains("cluster peer connected"));
        let labelled = connected.is_some_and(|l| l.contains(&origin.label()) && l.contains("version"));
        checks.that(
            labelled,
            format_args!("{edge} logged `cluster peer connected` with the peer and version: {connected:?}"),
        );
        let token = peer_token(&lab, edge);
        checks.that(logs.iter().all(|l| !l.contains(&token)), format_args!("{edge} never logs its peer token"));
    }

    // (b) Edge 2 killed and restarted on the same ports; edge 1's viewers lose nothing.
    let broadcast = "live/b";
    let groups = 15;
    let steady = viewers(&r1, broadcast, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let publisher = publish(&o, broadcast, groups);
    r2.wait_announced(broadcast, true, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    drop(r2); // SIGKILL: no GOAWAY, no close; the origin notices by the idle timeout.
    let killed = Instant::now();
    let gone = o.wait_peer("edge-2", "inbound", false, IDLE_TIMEOUT + Duration::from_secs(5));
    eprintln!("CLUSTER edge-2 killed: origin's inbound peer series down after {}", secs(gone));
    let restarted = Instant::now();
    r2 = e2.start();
    let mut w = Watch::start(Viewer::new(&r2.url(""), broadcast).groups(2).args(["--timeout", "20s"]));
    let ready = restarted.elapsed();
    r2.wait_peer(&origin.label(), "outbound", true, Duration::from_secs(15));
    let peered = restarted.elapsed();
    r2.wait_announced(broadcast, true, Duration::from_secs(10));
    let route = restarted.elapsed();
    let first = w.first_frame(Duration::from_secs(15)).duration_since(restarted);
    o.wait_peer("edge-2", "inbound", true, Duration::from_secs(5));
    eprintln!(
        "CLUSTER edge-2 restarted {} after the kill: relay ready {}, peered {}, route {}, first frame {} after the restart",
        secs(restarted - killed),
        secs(ready),
        secs(peered),
        secs(route),
        secs(first)
    );
    let summary = w.summary(Duration::from_secs(20));
    checks.eq(&summary["ok"], &json!(true), format_args!("viewer on the restarted edge: {summary}"));
    for track in ["video", "audio"] {
        checks.eq(&summary["tracks"][track]["corrupt"], &json!(0), "restarted edge's viewer: corrupt");
        checks.eq(&summary["tracks"][track]["gaps"], &json!(0), "restarted edge's viewer: gaps");
    }
    publisher.finish_in_time(Duration::from_secs(30));
    let steady = finish(steady, Instant::now(), &mut checks, "edge-1's viewers while edge-2 restarted");
    every_frame(&mut checks, &steady, 2, groups, "edge-1's viewers while edge-2 restarted");
    for track in ["video", "audio"] {
        checks.eq(
            &steady["tracks"][track]["stalls"],
            &json!(0),
            format_args!("edge-1's viewers never stopped ({track})"),
        );
    }
    let lost: Vec<String> = r1.drain().iter().filter(|l| l.contains("cluster peer lost")).cloned().collect();
    checks.that(lost.is_empty(), format_args!("edge-1 never lost the origin: {lost:#?}"));

    // (d) The publisher moves from the origin to edge 2.
    let broadcast = "live/d";
    let mut first_publisher = Publisher::new(&o.url(""), broadcast).spawn();
    r1.wait_announced(broadcast, true, Duration::from_secs(10));
    first_publisher.signal("INT");
    let stopped = Instant::now();
    assert!(first_publisher.wait_exit(Duration::from_secs(10)).is_some(), "the first publisher stops on SIGINT");
    r1.wait_announced(broadcast, false, Duration::from_secs(10));
    let withdrawn = stopped.elapsed();
    o.wait_announced(broadcast, false, Duration::from_secs(1));
    eprintln!("CLUSTER publisher left the origin: withdrawn on edge-1 {} after SIGINT", secs(withdrawn));
    let groups = 4;
    let mut on_1 =
        Watch::start(Viewer::new(&r1.url(""), broadcast).args(["--duration", WATCH_AT_MOST, "--timeout", "20s"]));
    let mut on_o =
        Watch::start(Viewer::new(&o.url(""), broadcast).args(["--duration", WATCH_AT_MOST, "--timeout", "20s"]));
    std::thread::sleep(Duration::from_millis(1000));
    let moved = Instant::now();
    let publisher = publish(&r2, broadcast, groups);
    let first_1 = on_1.first_frame(Duration::from_secs(10)).duration_since(moved);
    let first_o = on_o.first_frame(Duration::from_secs(10)).duration_since(moved);
    eprintln!(
        "CLUSTER publisher moved to edge-2: first frame on edge-1 {} and on the origin {} after it started",
        secs(first_1),
        secs(first_o)
    );
    checks.eq(o.route_hops(broadcast), Some(1.0), "route hops on the origin, served from edge-2");
    checks.eq(r1.route_hops(broadcast), Some(2.0), "route hops on edge-1, served through the origin from edge-2");
    publisher.finish_in_time(Duration::from_secs(30));
    let ended = Instant::now();
    for (who, w) in [("viewer on edge-1 after the move", on_1), ("viewer on the origin after the move", on_o)] {
        let summary = w.summary(Duration::from_secs(45));
        let took = ended.elapsed();
        checks.that(took < END_SEEN, format_args!("{who}: saw the end {} after the publisher finished", secs(took)));
        every_frame(&mut checks, &summary, 1, groups, who);
    }
    checks.that(first_1 < Duration::from_secs(5) && first_o < Duration::from_secs(5), "viewers followed within 5 s");
    checks.done();
}

/// Case c: the link between an edge (in a network namespace) and the origin is cut for longer
/// than the idle timeout. The edge withdraws the broadcast within a bounded time, its peer gauge
/// goes to 0 and its failed dials grow; healed, it comes back by itself and its viewers receive
/// again.
#[test]
fn a_partitioned_edge_withdraws_and_recovers() {
    let _serial = serial();
    let Some(ns) = netns_or_skip("a_partitioned_edge_withdraws_and_recovers") else { return };
    let origin = Node::new("origin").with(|b| b.listen_also(&ns.link.outer_ip));
    let edge = Node::new("edge").in_netns(&ns).dial(&origin.url_at(&ns.link.outer_ip));
    let peer = format!("{}:{}", ns.link.outer_ip, origin.port);
    let o = origin.start();
    let mut e = edge.start();
    e.wait_peer(&peer, "outbound", true, Duration::from_secs(15));

    let broadcast = "live/c";
    let _publisher = Publisher::new(&o.url(""), broadcast).spawn();
    e.wait_announced(broadcast, true, Duration::from_secs(10));
    let mut before = Watch::start(Viewer::new(&e.url(""), broadcast).args(["--duration", WATCH_AT_MOST]));
    before.first_frame(Duration::from_secs(10));
    let failed = |s: &Scrape| s.value(PEER_DIALS, &[("peer", &peer), ("result", "failed")]).unwrap_or(0.0);
    let failed_before = failed(&e.scrape());

    let cut = ns.partition();
    let t_cut = Instant::now();
    let withdrawn = e.wait_announced(broadcast, false, IDLE_TIMEOUT + Duration::from_secs(8));
    let down = e.wait_peer(&peer, "outbound", false, Duration::from_secs(5)).max(withdrawn);
    let failing = e.wait_scrape("failed dials grow", Duration::from_secs(10), |s| failed(s) > failed_before);
    let failed_during = failed(&e.scrape());
    // Cut for at least twice the idle timeout.
    std::thread::sleep((2 * IDLE_TIMEOUT).saturating_sub(t_cut.elapsed()));
    let held = t_cut.elapsed();
    cut.heal();
    let healed = Instant::now();
    let mut after =
        Watch::start(Viewer::new(&e.url(""), broadcast).groups(2).args(["--timeout", "40s", "--duration", "20s"]));
    e.wait_peer(&peer, "outbound", true, Duration::from_secs(40));
    let up = healed.elapsed();
    e.wait_announced(broadcast, true, Duration::from_secs(10));
    let route = healed.elapsed();
    let first = after.first_frame(Duration::from_secs(20)).duration_since(healed);
    eprintln!(
        "CLUSTER partition (idle timeout {}): withdrawn {} after the cut, peer_up 0 by {}, failed dials {} → {} \
         (growing by {}); cut held {}; after healing: peer up {}, route {}, first frame {}",
        secs(IDLE_TIMEOUT),
        secs(withdrawn),
        secs(down),
        failed_before,
        failed_during,
        secs(failing),
        secs(held),
        secs(up),
        secs(route),
        secs(first)
    );
    let mut checks = Checks::default();
    checks.that(withdrawn < IDLE_TIMEOUT + Duration::from_secs(5), "withdrawn within the idle timeout + 5 s");
    let summary = after.summary(Duration::from_secs(30));
    checks.eq(&summary["ok"], &json!(true), format_args!("viewer after healing: {summary}"));
    if summary["ok"] != true {
        eprintln!("CLUSTER edge series:\n{}", cluster::cluster_series(&e.scrape()));
        eprintln!("CLUSTER origin series:\n{}", cluster::cluster_series(&o.scrape()));
    }
    let summary = before.summary(Duration::from_secs(45));
    eprintln!("CLUSTER partition: the viewer during the cut ended with {}", summary["errors"]);
    for track in ["video", "audio"] {
        checks.eq(
            &summary["tracks"][track]["corrupt"],
            &json!(0),
            format_args!("viewer during the cut: {track} corrupt"),
        );
    }
    let logs = e.drain().join("\n");
    checks.that(logs.contains("cluster peer lost"), "the edge logged `cluster peer lost`");
    checks.that(logs.contains("cluster peer dial failed"), "the edge logged `cluster peer dial failed`");
    checks.done();
}

/// Case e: a loop A → B → C → A (each dials the next), publisher on A, viewers on B and C. The
/// mesh converges (hop gauge 1 on B and C: each hears A directly), every frame reaches each viewer
/// exactly once, and when the publisher leaves every relay withdraws the broadcast: no ghost
/// route kept alive by the loop.
#[test]
fn a_loop_of_three_delivers_once_and_withdraws() {
    let _serial = serial();
    let (a, b, c) = (Node::new("a"), Node::new("b"), Node::new("c"));
    let (url_a, url_b, url_c) = (a.url(), b.url(), c.url());
    let (a, b, c) = (a.dial(&url_b), b.dial(&url_c), c.dial(&url_a));
    let relays = [a.start(), b.start(), c.start()];
    let [ra, rb, rc] = &relays;
    ra.wait_peer(&b.label(), "outbound", true, Duration::from_secs(15));
    rb.wait_peer(&c.label(), "outbound", true, Duration::from_secs(15));
    rc.wait_peer(&a.label(), "outbound", true, Duration::from_secs(15));

    let broadcast = "live/e";
    let groups = 5;
    let (wb, wc) = (viewers(rb, broadcast, 1), viewers(rc, broadcast, 1));
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let publisher = publish(ra, broadcast, groups);
    for r in [rb, rc] {
        r.wait_scrape("hops = 1", Duration::from_secs(5), |s| {
            s.value("moq_relay_broadcast_route_hops", &[("broadcast", broadcast)]) == Some(1.0)
        });
    }
    let converged = started.elapsed();
    let mut checks = Checks::default();
    checks.eq(ra.route_hops(broadcast), Some(0.0), "route hops on A (published there)");
    eprintln!("CLUSTER loop: hops settled (B = C = 1) {} after the publisher started", secs(converged));
    publisher.finish_in_time(Duration::from_secs(30));
    let ended = Instant::now();
    for r in &relays {
        r.wait_announced(broadcast, false, Duration::from_secs(10));
    }
    let withdrawn = ended.elapsed();
    for (who, w) in [("B's viewer", wb), ("C's viewer", wc)] {
        let summary = finish(w, ended, &mut checks, who);
        every_frame(&mut checks, &summary, 1, groups, who);
    }
    // And it stays gone: nothing in the loop brings it back.
    let ghost =
        eventually(Duration::from_secs(3), || relays.iter().any(|r| r.announced().iter().any(|x| x == broadcast)));
    let lists: Vec<Vec<String>> = relays.iter().map(Relay::announced).collect();
    checks.that(!ghost, format_args!("no ghost route came back: {lists:?}"));
    for r in &relays {
        let s = r.scrape();
        checks.eq(s.total(PEER_ROUTES, &[]), 0.0, format_args!("{}: peer routes left", r.name));
        let looped = s.total("moq_relay_announcements_received_total", &[("event", "looped")]);
        eprintln!("CLUSTER loop: {} refused {looped} looped announcements", r.name);
    }
    eprintln!("CLUSTER loop: every relay withdrew the broadcast within {} of the publisher's exit", secs(withdrawn));
    checks.done();
}

/// Case f: meshes mixed with the reference relay 0.17.10. The reference as the origin with two of
/// our edges dialing it; then our relay as the origin of a reference edge. Frames intact both
/// ways.
#[test]
fn mixed_mesh_with_the_reference_relay() {
    let _serial = serial();
    // The reference as origin, our two edges dialing it.
    let (_reference, ref_url, ref_port) = reference_relay_with(&["--auth-public", "**"]);
    let ref_label = format!("127.0.0.1:{ref_port}");
    let e1 = Node::new("edge-1").dial(&ref_url).start();
    let e2 = Node::new("edge-2").dial(&ref_url).start();
    for e in [&e1, &e2] {
        e.wait_peer(&ref_label, "outbound", true, Duration::from_secs(15));
    }
    let broadcast = "mix/ref-origin";
    let groups = 3;
    let (w1, w2) = (viewers(&e1, broadcast, 1), viewers(&e2, broadcast, 1));
    std::thread::sleep(Duration::from_millis(1500));
    let publisher = Publisher::new(&ref_url, broadcast).groups(groups).background();
    let mut checks = Checks::default();
    for e in [&e1, &e2] {
        e.wait_scrape("a route from the reference (hops >= 1)", Duration::from_secs(10), |s| {
            s.value("moq_relay_broadcast_route_hops", &[("broadcast", broadcast)]).is_some_and(|h| h >= 1.0)
        });
        // The publisher is on the reference, which our edge dials. The chain our edge receives is
        // the reference's: it also holds its publishing client's own origin id and a 0 before its
        // hop id (observed: `[client origin, 0, reference]`), so the gauge reads the chain's length
        // as sent, at least 1, and this relay's own routes from it are never mistaken for local.
        let hops = e.route_hops(broadcast);
        checks.that(
            hops.is_some_and(|h| (1.0..=3.0).contains(&h)),
            format_args!("{}: route hops from the reference origin: {hops:?}", e.name),
        );
    }
    publisher.finish_in_time(Duration::from_secs(30));
    let ended = Instant::now();
    for (who, w) in [("edge-1's viewer (reference origin)", w1), ("edge-2's viewer (reference origin)", w2)] {
        let summary = finish(w, ended, &mut checks, who);
        every_frame(&mut checks, &summary, 1, groups, who);
    }
    match e1.node(&ref_label) {
        Some(node) => eprintln!("CLUSTER mixed: our edge's /nodes entry for the reference origin: {node}"),
        None => checks.that(false, format_args!("/nodes lacks the reference: {}", e1.nodes())),
    }

    // Our relay as origin, a reference edge dialing it.
    let origin = Node::new("origin");
    let o = origin.start();
    let (_ref_edge, ref_edge_url, _) =
        reference_relay_with(&["--auth-public", "**", "--cluster-connect", &origin.url()]);
    let broadcast = "mix/our-origin";
    let watch = Viewer::new(&ref_edge_url, broadcast)
        .summary()
        .args(["--duration", WATCH_AT_MOST, "--timeout", "20s"])
        .background();
    std::thread::sleep(Duration::from_millis(1500));
    let publisher = publish(&o, broadcast, groups);
    publisher.finish_in_time(Duration::from_secs(30));
    let who = "the reference edge's viewer (our origin)";
    let summary = finish(watch, Instant::now(), &mut checks, who);
    every_frame(&mut checks, &summary, 1, groups, who);
    let s = o.scrape();
    let sent = s.total(FRAMES_SENT, &[("broadcast", broadcast), ("track_type", "video")]);
    eprintln!("CLUSTER mixed: our origin sent {sent} video frames to the reference edge");
    checks.eq(sent, (groups * cluster::VIDEO_FRAMES_PER_GROUP) as f64, "video frames sent once to the reference edge");
    checks.done();
}

/// Case g: an origin that requires tokens refuses an edge without one, accepts one presenting a
/// peer token (`?jwt=` in its `--cluster-connect` URL) and labels it an inbound peer by its
/// subject; the token appears in no log.
#[test]
fn peers_need_a_peer_token() {
    let _serial = serial();
    let lab = TokenLab::new();
    let origin = Node::new("origin").with(|b| b.args(["--auth-key", lab.key_dir.to_str().unwrap()]));
    let mut o = origin.start();
    let admin = lab.sign(&lab.k1, &Grant::new("").publish(["**"]).subscribe(["**"]));
    let broadcast = "tok/live";
    let _publisher = Publisher::new(&format!("{}?jwt={admin}", o.url("")), broadcast).spawn();

    // No token: refused, so no route reaches the edge.
    let edge = Node::new("edge-g");
    let mut bare = edge.clone().dial(&origin.url()).start();
    let peer = origin.label();
    bare.wait_scrape("a refused dial", Duration::from_secs(10), |s| {
        s.value(PEER_DIALS, &[("peer", &peer), ("result", "failed")]).is_some_and(|v| v >= 1.0)
            || s.value(PEER_DIALS, &[("peer", &peer), ("result", "connected")]).is_some_and(|v| v >= 1.0)
    });
    let out = Viewer::new(&bare.url(""), broadcast).summary().args(["--timeout", "3s"]).run(Duration::from_secs(20));
    let summary = watch_summary(&out);
    assert_eq!(summary["exit_code"], 3, "no route without a peer token: {summary:#}");
    let s = bare.scrape();
    eprintln!(
        "CLUSTER tokens: the edge without a token: dials failed {:?}, connected {:?}",
        s.value(PEER_DIALS, &[("peer", &peer), ("result", "failed")]),
        s.value(PEER_DIALS, &[("peer", &peer), ("result", "connected")])
    );
    assert_ne!(s.value("moq_relay_cluster_peer_up", &[("peer", &peer), ("direction", "outbound")]), Some(1.0));
    let so = o.scrape();
    let refused = so.total("moq_relay_auth_decisions_total", &[("result", "rejected")]);
    assert!(refused >= 1.0, "the origin refused the edge: {refused}");
    assert!(so.value("moq_relay_cluster_peer_up", &[("peer", "edge-g")]).is_none_or(|v| v == 0.0));
    let bare_logs = bare.drain().join("\n");
    assert!(bare_logs.contains("cluster peer"), "the edge logged its refused dials: {bare_logs}");
    drop(bare);

    // A peer token: accepted, labelled by its subject.
    let token = peer_token(&lab, "edge-g");
    let mut e = edge.clone().dial(&format!("{}?jwt={token}", origin.url())).start();
    let up = e.wait_peer(&peer, "outbound", true, Duration::from_secs(15));
    o.wait_peer("edge-g", "inbound", true, Duration::from_secs(5));
    let node = o.node("edge-g").unwrap_or_else(|| panic!("origin /nodes lacks edge-g: {}", o.nodes()));
    assert_eq!(node["direction"], "inbound", "{node}");
    let summary = watch_summary(&Viewer::new(&e.url(""), broadcast).summary().groups(2).run(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "a viewer on the admitted edge: {summary:#}");
    eprintln!("CLUSTER tokens: the edge with a peer token peered {} after it started", secs(up));
    for (who, logs) in [("edge", e.drain().join("\n")), ("origin", o.drain().join("\n"))] {
        assert!(!logs.contains(&token), "the {who} logged the peer token");
    }
    drop(e);

    // The operator's way (docs/CLUSTER.md "Tokens"): `--cluster-token FILE` holding a legacy
    // put/get token; the label follows the token's subject.
    let file = lab.dir.join("edge-g.jwt");
    let legacy = lab.craft(&json!({ "sub": "edge-g-file", "peer": true, "put": [""], "get": [""] }));
    std::fs::write(&file, &legacy).unwrap();
    let e = edge.with(|b| b.arg("--cluster-token").arg(&file)).dial(&origin.url()).start();
    e.wait_peer(&peer, "outbound", true, Duration::from_secs(15));
    o.wait_peer("edge-g-file", "inbound", true, Duration::from_secs(5));
    o.wait_peer("edge-g", "inbound", false, IDLE_TIMEOUT + Duration::from_secs(5));
    let summary = watch_summary(&Viewer::new(&e.url(""), broadcast).summary().groups(2).run(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "a viewer on the edge with a --cluster-token file: {summary:#}");
}

/// The kit's namespaces: a relay in one is reached over both links; a partition cuts the link
/// (the side link still answers), healing restores it, and a bounded partition heals by itself;
/// netem applies when the kernel has it. Dropping the namespace removes it.
#[test]
fn netns_links_partition_and_heal() {
    let _serial = serial();
    let Some(ns) = netns_or_skip("netns_links_partition_and_heal") else { return };
    let relay = Relay::builder().netns(&ns.name, &ns.side.inner_ip).listen_also(&ns.link.inner_ip).start();
    let through_link = format!("http://{}:{}/certificate.sha256", ns.link.inner_ip, relay.port);
    let fingerprint = http::text(&relay.url("certificate.sha256"));
    assert_eq!(fingerprint.len(), 64, "reached over the side link: {fingerprint:?}");
    assert_eq!(http::text(&through_link), fingerprint, "reached over the link");
    let cut = ns.partition();
    let refused = http::Request::get(&through_link).timeout(Duration::from_millis(700)).send();
    assert!(refused.is_err(), "the cut link answered: {refused:?}");
    assert_eq!(http::text(&relay.url("certificate.sha256")), fingerprint, "the side link still answers");
    cut.heal();
    assert!(eventually(Duration::from_secs(5), || http::text(&through_link) == fingerprint), "healed");
    // A partition outlives neither its bound nor its guard.
    let cut = ns.partition_for(Duration::from_millis(500));
    let bounded = eventually(Duration::from_secs(5), || http::text(&through_link) == fingerprint);
    assert!(bounded, "healed by the watchdog after 500 ms");
    drop(cut);
    match ns.netem(&["delay", "20ms"]) {
        Ok(()) => {
            let t = Instant::now();
            assert_eq!(http::text(&through_link), fingerprint);
            assert!(t.elapsed() >= Duration::from_millis(80), "a TCP exchange takes 2+ delayed round trips");
            ns.clear_netem();
        }
        Err(e) => eprintln!("CLUSTER netns: no netem in this kernel ({e}); partitions use link down"),
    }
    let name = ns.name.clone();
    drop(relay);
    drop(ns);
    let list =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    assert!(!list.contains(&name), "{name} left behind: {list}");
}
