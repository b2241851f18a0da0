//! Meshes of relays (docs/CLUSTER.md): relays whose ports are known before they start so peers
//! can be pointed at each other ([`Node`]), what a test reads off a peering relay (the per-peer
//! metrics, `/nodes`, `/announced`: inherent methods on [`Relay`] below), a viewer that reports
//! when its first frame arrived ([`Watch`]), the exactly-once check of a `moq watch` summary
//! ([`assert_every_frame_once`]), and network namespaces whose link to the root namespace can be
//! delayed, made lossy or cut ([`NetNs`]).
//!
//! Clustered relays get short QUIC timers ([`QUICK`]: a silent peer is given up after 2 s, not
//! 10 s) so losing a peer is seen within a test's patience.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clients::Client;
use crate::{eventually, free_port, http, Configure, Proc, Relay, RelayBuilder, Scrape, Viewer};

/// QUIC timers for clustered test relays: `--idle-timeout 2s --keep-alive 500ms`, and a 1 s
/// drain on shutdown.
pub const QUICK: [&str; 6] = ["--idle-timeout", "2s", "--keep-alive", "500ms", "--drain-timeout", "1s"];

/// The QUIC idle timeout of [`QUICK`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A relay of a mesh, its ports picked now so its peers can dial it before it starts, and
/// restartable on the same ports ([`Node::start`] again once the previous [`Relay`] is dropped).
/// Started with the operator listener, `--cluster-node NAME` and [`QUICK`] timers.
#[derive(Clone)]
pub struct Node {
    pub name: String,
    pub port: u16,
    pub ops: u16,
    builder: RelayBuilder,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let port = free_port();
        let ops = std::iter::repeat_with(free_port).find(|&p| p != port).unwrap();
        let builder = Relay::builder().port(port).ops_port(ops).args(["--cluster-node", name]).args(QUICK);
        Node { name: name.to_string(), port, ops, builder }
    }

    /// Dials `url` as a peer (`--cluster-connect URL`).
    pub fn dial(mut self, url: &str) -> Node {
        self.builder = self.builder.args(["--cluster-connect", url]);
        self
    }

    /// Anything else about its relay: arguments, environment, [`RelayBuilder::listen_also`].
    pub fn with(mut self, f: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Node {
        self.builder = f(self.builder);
        self
    }

    /// Runs it in `ns`, reached (by the tests, its viewers) through the namespace's side link.
    pub fn in_netns(self, ns: &NetNs) -> Node {
        let (name, host) = (ns.name.clone(), ns.side.inner_ip.clone());
        self.with(|b| b.netns(&name, &host))
    }

    /// `http://127.0.0.1:PORT/`: what a peer on the loopback dials.
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// `http://IP:PORT/`.
    pub fn url_at(&self, ip: &str) -> String {
        format!("http://{ip}:{}/", self.port)
    }

    /// `127.0.0.1:PORT`: the label its peers give it when they dial [`Node::url`] (docs/CLUSTER.md:
    /// a dialed peer is labelled by its URL's `host:port`).
    pub fn label(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts its relay (waiting for "relay ready").
    pub fn start(&self) -> Relay {
        let mut relay = self.builder.clone().start();
        relay.proc.name = format!("moq-relay {}", self.name);
        relay
    }
}

/// What a test reads off a peering relay. Every read scrapes afresh.
impl Relay {
    /// `moq_relay_cluster_peer_up{peer, direction}`, if the series exists.
    pub fn peer_up(&self, peer: &str, direction: &str) -> Option<f64> {
        self.scrape().value("moq_relay_cluster_peer_up", &[("peer", peer), ("direction", direction)])
    }

    /// Waits until `cond` holds of its scrape, returning how long that took; panics after
    /// `timeout` with `what` and the cluster series of the last scrape.
    pub fn wait_scrape(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Scrape) -> bool) -> Duration {
        let started = Instant::now();
        let mut last = Scrape::default();
        let held = eventually(timeout, || {
            last = self.scrape();
            cond(&last)
        });
        assert!(held, "{}: {what} not within {timeout:?}; cluster series:\n{}", self.proc.name, cluster_series(&last));
        started.elapsed()
    }

    /// Waits until its peer session with `peer` (`direction` outbound|inbound) is up (gauge 1),
    /// or down (0 or no series) when `up` is false; how long that took.
    pub fn wait_peer(&self, peer: &str, direction: &str, up: bool, timeout: Duration) -> Duration {
        let what =
            format!("peer_up{{peer={peer:?},direction={direction:?}}} {}", if up { "= 1" } else { "= 0 or gone" });
        self.wait_scrape(&what, timeout, |s| {
            let v = s.value("moq_relay_cluster_peer_up", &[("peer", peer), ("direction", direction)]);
            if up {
                v == Some(1.0)
            } else {
                v.is_none_or(|v| v == 0.0)
            }
        })
    }

    /// `moq_relay_broadcast_route_hops{broadcast}`: the hop count of the route it serves
    /// `broadcast` from (0 = published here).
    pub fn route_hops(&self, broadcast: &str) -> Option<f64> {
        self.scrape().value("moq_relay_broadcast_route_hops", &[("broadcast", broadcast)])
    }

    /// Waits until `GET /announced` lists `broadcast` (`listed`) or no longer does; how long that
    /// took. Panics after `timeout`.
    pub fn wait_announced(&self, broadcast: &str, listed: bool, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last = Vec::new();
        let held = eventually(timeout, || {
            last = self.announced();
            last.iter().any(|b| b == broadcast) == listed
        });
        assert!(
            held,
            "{}: {broadcast} {} /announced within {timeout:?}; it lists {last:?}",
            self.proc.name,
            if listed { "never appeared in" } else { "never left" }
        );
        started.elapsed()
    }

    /// `GET /nodes` on the operator listener: its peers (docs/CLUSTER.md).
    pub fn nodes(&self) -> serde_json::Value {
        let url = self.ops_url("nodes");
        let reply = http::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(reply.status, 200, "GET {url}: {reply}");
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("GET {url} is not JSON ({e}): {}", reply.body))
    }

    /// The `/nodes` entry of `peer`, if listed.
    pub fn node(&self, peer: &str) -> Option<serde_json::Value> {
        let nodes = self.nodes();
        let list = nodes.as_array().cloned().or_else(|| nodes["peers"].as_array().cloned()).unwrap_or_default();
        list.into_iter().find(|n| n["peer"] == peer)
    }
}

/// The cluster series of a scrape (and every series of a broadcast), one per line: what a failing
/// cluster assertion prints.
pub fn cluster_series(scrape: &Scrape) -> String {
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.name.starts_with("moq_relay_cluster")
                || s.name.contains("route")
                || s.name.starts_with("moq_relay_announce")
                || s.name.starts_with("moq_relay_frames_")
        })
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `moq watch` whose live statistics (every 100 ms) tell when its first video frame arrived,
/// ending with its JSON summary.
pub struct Watch {
    pub proc: Proc,
    /// When it was spawned.
    pub spawned: Instant,
}

impl Watch {
    /// Spawns `viewer` with `--json --stats-interval 100ms`.
    pub fn start(viewer: Viewer) -> Watch {
        let spawned = Instant::now();
        let proc = viewer.json().stats_interval("100ms").spawn();
        Watch { proc, spawned }
    }

    /// Waits for the first live line counting a video frame; when it was printed.
    pub fn first_frame(&mut self, timeout: Duration) -> Instant {
        self.proc.wait_line(timeout, |l| frames_in(l, "video").is_some_and(|n| n > 0));
        Instant::now()
    }

    /// Waits for the JSON summary (the process ends after printing it).
    pub fn summary(mut self, timeout: Duration) -> serde_json::Value {
        let line = self.proc.wait_line(timeout, |l| l.starts_with('{'));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("moq watch summary is not JSON ({e}): {line}"))
    }
}

/// The frame count of `track` in one of `moq watch`'s live lines (`[  1.2s] audio: 50 frames ...
/// | video: 30 frames ...`).
pub fn frames_in(line: &str, track: &str) -> Option<u64> {
    let rest = &line[line.find(&format!(" {track}: "))? + track.len() + 3..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Frames per group of `moq publish`'s defaults: 30 fps video in 30-frame groups, 50 fps audio
/// in groups spanning the same second.
pub const VIDEO_FRAMES_PER_GROUP: u64 = 30;
pub const AUDIO_FRAMES_PER_GROUP: u64 = 50;

/// `viewers` viewers each received every frame of `groups` groups exactly once, from group 0,
/// intact: per viewer the count is exactly the published one (a duplicate would exceed it, a loss
/// fall short), total = viewers × that (so no viewer got more), no gap, nothing corrupt. For
/// viewers started before a `moq publish --groups G` and watching until the broadcast ends.
pub fn assert_every_frame_once(summary: &serde_json::Value, viewers: u64, groups: u64) {
    let problems = every_frame_once(summary, viewers, groups);
    assert!(problems.is_empty(), "{}\n{summary:#}", problems.join("\n"));
}

/// What [`assert_every_frame_once`] would fail on, one line each (empty: all good).
pub fn every_frame_once(summary: &serde_json::Value, viewers: u64, groups: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: String, got: &serde_json::Value, want: serde_json::Value| {
        if *got != want {
            problems.push(format!("{what}: {got}, want {want}"));
        }
    };
    expect("ok".into(), &summary["ok"], true.into());
    expect("viewers".into(), &summary["viewers"], viewers.into());
    for (track, per_group) in [("video", VIDEO_FRAMES_PER_GROUP), ("audio", AUDIO_FRAMES_PER_GROUP)] {
        let t = &summary["tracks"][track];
        expect(format!("{track} frames_min_per_viewer"), &t["frames_min_per_viewer"], (groups * per_group).into());
        expect(
            format!("{track} frames (all viewers; more = duplicates)"),
            &t["frames"],
            (viewers * groups * per_group).into(),
        );
        expect(format!("{track} groups_complete_min_per_viewer"), &t["groups_complete_min_per_viewer"], groups.into());
        expect(format!("{track} first_group_max"), &t["first_group_max"], 0.into());
        expect(format!("{track} gaps"), &t["gaps"], 0.into());
        expect(format!("{track} corrupt"), &t["corrupt"], 0.into());
    }
    problems
}

/// Whether `CI` says this is a CI run (set and not `false`/`0`): missing prerequisites fail then.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A fresh [`NetNs`]; when one cannot be made (not root, no iproute2, no namespaces), `None`
/// after a loud SKIPPED banner on stderr — or, under `CI=true`, a failure.
pub fn netns_or_skip(test: &str) -> Option<NetNs> {
    match NetNs::new() {
        Ok(ns) => Some(ns),
        Err(e) if ci() => panic!("{test}: network namespaces are required under CI=true: {e}"),
        Err(e) => {
            eprintln!(
                "\n\
                 ******************************************************************************\n\
                 SKIPPED {test}: cannot create a network namespace: {e}\n\
                 (needs root and iproute2; with CI=true this is a failure)\n\
                 ******************************************************************************\n"
            );
            None
        }
    }
}

/// One end pair of a veth link between the root namespace and a [`NetNs`].
#[derive(Debug, Clone)]
pub struct Veth {
    /// The interface in the root namespace and its address.
    pub outer: String,
    pub outer_ip: String,
    /// The interface in the namespace and its address.
    pub inner: String,
    pub inner_ip: String,
}

/// A network namespace joined to the root namespace by two veth links (10.x.y.0/30 each):
///
/// - [`NetNs::link`], the link under test: a relay in the namespace dials a peer at
///   `link.outer_ip` through it; [`NetNs::netem`] impairs it and [`NetNs::partition`] cuts it;
/// - [`NetNs::side`], never impaired: the tests reach the namespace's processes (viewers,
///   scrapes) at `side.inner_ip` through it, also while the link is cut.
///
/// The namespace has no default route, so nothing leaks around a cut link. Names are unique per
/// test process (`moqt-PID-N`, interfaces `mqPIDNN{l,s}{o,i}`, PID in hex); namespaces left by a
/// test process that no longer runs are deleted when the next one is made. Dropping it (also when
/// a test panics) deletes the namespace, and with it both links.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
    pub link: Veth,
    pub side: Veth,
    netem: std::cell::Cell<bool>,
}

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

/// How long one `ip`/`tc` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program args` to completion within [`IP_TIMEOUT`]; its stderr is the error.
fn try_ip(program: &str, args: &[&str]) -> Result<(), String> {
    let shown = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + IP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{}: {e}", shown()))? {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return if status.success() { Ok(()) } else { Err(format!("{}: {}", shown(), err.trim())) };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not finish within {IP_TIMEOUT:?}", shown()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl NetNs {
    /// Creates the namespace and both links, up, with their addresses.
    pub fn new() -> Result<NetNs, String> {
        sweep_stale();
        let pid = std::process::id();
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed) % 100;
        let name = format!("moqt-{pid}-{n}");
        // 10.X.Y.0/29: the link at .0/30, the side link at .4/30; X from the pid, Y the count.
        let (x, y) = (128 + pid % 64, n);
        let veth = |kind: char, base: u32| Veth {
            outer: format!("mq{pid:x}{n:02}{kind}o"),
            inner: format!("mq{pid:x}{n:02}{kind}i"),
            outer_ip: format!("10.{x}.{y}.{}", base + 1),
            inner_ip: format!("10.{x}.{y}.{}", base + 2),
        };
        try_ip("ip", &["netns", "add", &name])?;
        let ns = NetNs { name, link: veth('l', 0), side: veth('s', 4), netem: std::cell::Cell::new(false) };
        // From here on, dropping `ns` cleans up whatever was made.
        ns.run_ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        for v in [&ns.link, &ns.side] {
            ns.run_ip(&["link", "add", &v.outer, "type", "veth", "peer", "name", &v.inner])?;
            ns.run_ip(&["link", "set", &v.inner, "netns", &ns.name])?;
            ns.run_ip(&["addr", "add", &format!("{}/30", v.outer_ip), "dev", &v.outer])?;
            ns.run_ip(&["-n", &ns.name, "addr", "add", &format!("{}/30", v.inner_ip), "dev", &v.inner])?;
            ns.run_ip(&["link", "set", &v.outer, "up"])?;
            ns.run_ip(&["-n", &ns.name, "link", "set", &v.inner, "up"])?;
        }
        Ok(ns)
    }

    fn run_ip(&self, args: &[&str]) -> Result<(), String> {
        try_ip("ip", args)
    }

    /// `ip netns exec NAME program`: a command to run in the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Applies `tc qdisc ... netem ARGS` (e.g. `["delay", "20ms"]`, `["loss", "100%"]`) to both
    /// ends of [`NetNs::link`], so each direction gets it; replaces what was there. Errs when the
    /// kernel has no netem (`CONFIG_NET_SCH_NETEM`), which the tests' 2-core VM lacks.
    pub fn netem(&self, args: &[&str]) -> Result<(), String> {
        let outer = [&["qdisc", "replace", "dev", &self.link.outer, "root", "netem"][..], args].concat();
        try_ip("tc", &outer)?;
        self.netem.set(true);
        let inner =
            [&["-n", &self.name, "qdisc", "replace", "dev", &self.link.inner, "root", "netem"][..], args].concat();
        try_ip("tc", &inner)
    }

    /// Removes any netem from the link.
    pub fn clear_netem(&self) {
        if self.netem.replace(false) {
            let _ = try_ip("tc", &["qdisc", "del", "dev", &self.link.outer, "root"]);
            let _ = try_ip("tc", &["-n", &self.name, "qdisc", "del", "dev", &self.link.inner, "root"]);
        }
    }

    /// [`NetNs::partition_for`] at most a minute.
    pub fn partition(&self) -> Partition<'_> {
        self.partition_for(Duration::from_secs(60))
    }

    /// Cuts [`NetNs::link`] for at most `max`: its namespace end goes down, so the namespace loses
    /// its route to the peer (its sends fail at once) and the root end loses carrier (the peer's
    /// packets toward the namespace are dropped silently, not rerouted). Healed by
    /// [`Partition::heal`], when the guard drops, or by a watchdog once `max` has passed, whatever
    /// the test is doing. (A link-down partition, not netem loss: it needs no netem in the kernel.)
    pub fn partition_for(&self, max: Duration) -> Partition<'_> {
        self.run_ip(&["-n", &self.name, "link", "set", &self.link.inner, "down"])
            .unwrap_or_else(|e| panic!("partitioning {}: {e}", self.name));
        let healed = Arc::new(AtomicBool::new(false));
        let (flag, ns, inner) = (healed.clone(), self.name.clone(), self.link.inner.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + max;
            while Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !flag.swap(true, Ordering::Relaxed) {
                eprintln!("NetNs {ns}: partition healed by its watchdog after {max:?}");
                let _ = try_ip("ip", &["-n", &ns, "link", "set", &inner, "up"]);
            }
        });
        Partition { ns: self, healed }
    }

    fn heal(&self) {
        self.run_ip(&["-n", &self.name, "link", "set", &self.link.inner, "up"])
            .unwrap_or_else(|e| panic!("healing {}: {e}", self.name));
        // The namespace's route to the peer comes back with the link's carrier: wait for it.
        let route = || {
            let out =
                Command::new("ip").args(["-n", &self.name, "-4", "route", "show", "dev", &self.link.inner]).output();
            out.is_ok_and(|o| {
                !String::from_utf8_lossy(&o.stdout).trim().is_empty()
                    && !String::from_utf8_lossy(&o.stdout).contains("linkdown")
            })
        };
        eventually(Duration::from_secs(5), route);
    }
}

/// A cut [`NetNs::link`], healed on drop (or by its watchdog).
pub struct Partition<'a> {
    ns: &'a NetNs,
    healed: Arc<AtomicBool>,
}

impl Partition<'_> {
    /// Brings the link back and waits (up to 5 s) for the namespace's route over it.
    pub fn heal(self) {
        // Drop heals.
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        if !self.healed.swap(true, Ordering::Relaxed) && !std::thread::panicking() {
            self.ns.heal();
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.clear_netem();
        // Deleting the namespace destroys the veth pairs with it; the root ends too, in case.
        let _ = try_ip("ip", &["netns", "del", &self.name]);
        for v in [&self.link, &self.side] {
            let _ = Command::new("ip").args(["link", "del", &v.outer]).output();
        }
    }
}

/// Deletes the `moqt-PID-N` namespaces whose test process is gone (a run killed before its drops).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("moqt-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
