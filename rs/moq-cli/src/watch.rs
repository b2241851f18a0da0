//! `moq watch`: discovers a broadcast, receives every track, verifies every frame byte for byte
//! and reports frames, bitrate, latency to the live edge, gaps and stalls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use moq_lite::model::{BroadcastConsumer, Origin, Scope, TrackConsumer};
use moq_lite::session::{Session, SessionConfig};
use serde::Serialize;
use tracing::Instrument;

use crate::catalog;
use crate::connect::ConnectArgs;
use crate::media::{self, Catalog};
use crate::player::{Abr, Player};

/// An inter-frame gap on a track longer than this counts as a stall.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(500);
/// Latency samples kept per track per viewer.
const MAX_SAMPLES: usize = 100_000;

/// Exit codes, so scripts can tell failures apart.
pub mod exit {
    pub const CONNECT: u8 = 1;
    pub const NOT_FOUND: u8 = 3;
    pub const CORRUPT: u8 = 4;
    pub const INCOMPLETE: u8 = 5;
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Broadcast path, relative to the URL path.
    #[arg(long)]
    pub broadcast: String,
    /// Subscribe by path without waiting for the broadcast to be announced.
    #[arg(long)]
    pub direct: bool,
    /// Run this many independent viewers (one session each) and aggregate their results.
    #[arg(long, default_value_t = 1)]
    pub viewers: usize,
    /// Succeed once this many complete groups arrived on every media track of every viewer.
    #[arg(long)]
    pub groups: Option<u64>,
    /// Stop after this long (default: until the broadcast ends or Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Give up if the broadcast is not found within this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print live stats to stderr this often (0 disables).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Playback starts this long after the first frame arrives (the player's target latency).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub target_latency: Duration,
    /// Impairment: deliver received frames to the player at most this fast (kbit/s).
    #[arg(long)]
    pub throttle_kbps: Option<u64>,
    /// Impairment: hold every received frame this long before the player sees it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Verify every track in the catalog instead of playing one video rendition adaptively.
    #[arg(long)]
    pub all_renditions: bool,
    /// Serve the client metrics in Prometheus text format on this address (any path).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How much of each frame to check: `full` regenerates and compares every byte; `header`
    /// checks the header and length only (for load generation, where full checks cost CPU).
    #[arg(long, value_enum, default_value_t = Verify::Full)]
    pub verify: Verify,
    /// Frames delivered later than this after capture count as late in the summary.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub late_after: Duration,
    /// Count frames, bytes, latency and lateness only from this long after start (gaps and
    /// corruption always count): leaves out the join and the cached catch-up for load tests.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Viewers sharing one UDP socket (each keeps its own QUIC connection). 1 is what real
    /// viewers look like; load tests use more to spend less of the machine on the load itself.
    #[arg(long, default_value_t = 1)]
    pub viewers_per_socket: usize,
    /// Keep running (and serving metrics) this long after finishing.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
}

/// When counting starts (`--warmup` after the process started), the same instant for every viewer
/// so the measured window matches `--duration` whatever each viewer's connect time.
static MEASURE_FROM: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Full,
    Header,
}

/// How received frames are handled before they count: checked (`verify`, `late_after`), and
/// impaired on purpose (`rate_bps`, `delay`) so stalls and down-switches happen for real.
struct Impairment {
    rate_bps: Option<u64>,
    delay: Option<Duration>,
    next: Mutex<tokio::time::Instant>,
    verify: Verify,
    late_after: Duration,
    measure_from: Instant,
}

impl Impairment {
    fn new(args: &WatchArgs) -> Self {
        Self {
            rate_bps: args.throttle_kbps.map(|k| k.max(1) * 1000),
            delay: args.delay,
            next: Mutex::new(tokio::time::Instant::now()),
            verify: args.verify,
            late_after: args.late_after,
            measure_from: *MEASURE_FROM.get_or_init(|| Instant::now() + args.warmup),
        }
    }

    async fn apply(&self, len: usize, received: Instant) {
        if let Some(delay) = self.delay {
            tokio::time::sleep_until(tokio::time::Instant::from_std(received) + delay).await;
        }
        if let Some(rate) = self.rate_bps {
            let release = {
                let mut next = self.next.lock().unwrap();
                let start = (*next).max(tokio::time::Instant::now());
                *next = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                *next
            };
            tokio::time::sleep_until(release).await;
        }
    }
}

#[derive(Debug, Default, Clone)]
struct TrackStats {
    frames: u64,
    bytes: u64,
    groups_complete: u64,
    first_group: Option<u64>,
    last_group: Option<u64>,
    corrupt: u64,
    gaps: u64,
    stalls: u64,
    late: u64,
    latency_us: Vec<u64>,
    last_frame: Option<Instant>,
    ended: bool,
    error: Option<String>,
}

type Stats = Arc<Mutex<BTreeMap<String, TrackStats>>>;

/// One viewer's state: per-track statistics and its player.
#[derive(Clone)]
struct Viewer {
    stats: Stats,
    player: Arc<Mutex<Player>>,
}

#[derive(Serialize, Debug, Default)]
pub struct TrackSummary {
    pub frames: u64,
    pub frames_min_per_viewer: u64,
    pub bytes: u64,
    pub groups_complete_min_per_viewer: u64,
    pub first_group_max: Option<u64>,
    pub corrupt: u64,
    pub gaps: u64,
    pub stalls: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    /// Frames delivered more than `--late-after` after capture.
    pub late: u64,
    pub errors: Vec<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct PlayerSummary {
    pub startup_ms_max: f64,
    pub rebuffers: u64,
    pub rebuffer_ms: f64,
    pub played: u64,
    pub switches_up: u64,
    pub switches_down: u64,
    pub dropped: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub renditions: Vec<usize>,
}

#[derive(Serialize, Debug, Default)]
pub struct Summary {
    pub viewers: usize,
    pub ok: bool,
    pub exit_code: u8,
    pub tracks: BTreeMap<String, TrackSummary>,
    pub player: PlayerSummary,
    pub errors: Vec<String>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    MEASURE_FROM.get_or_init(|| started + args.warmup);
    let mut viewers = tokio::task::JoinSet::new();
    let all: Vec<Viewer> = (0..args.viewers.max(1))
        .map(|_| Viewer {
            stats: Stats::default(),
            player: Arc::new(Mutex::new(Player::new(args.target_latency, Instant::now()))),
        })
        .collect();
    let all_stats: Vec<Stats> = all.iter().map(|v| v.stats.clone()).collect();
    // Each viewer has its own QUIC connection; `--viewers-per-socket` lets several share one UDP
    // socket (and endpoint driver), which is how a load generator keeps its own CPU down.
    let per_socket = args.viewers_per_socket.max(1);
    let mut client = None;
    for (i, v) in all.iter().enumerate() {
        if i % per_socket == 0 {
            client = Some(Arc::new(args.connect.client()?));
        }
        viewers.spawn(viewer(args.clone(), v.clone(), client.clone().expect("created above")));
    }
    let mut errors = Vec::new();
    let mut code = 0u8;
    let mut report = tokio::time::interval(if args.stats_interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        args.stats_interval
    });
    report.tick().await;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    // One listener for the whole loop: a `ctrl_c()` made afresh each turn misses a SIGINT that
    // arrives while the loop body runs (Tokio's listener only sees signals after it subscribes).
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            joined = viewers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err((c, e)))) => { code = code.max(c); errors.push(format!("{e:#}")); }
                Some(Err(e)) => { code = code.max(exit::CONNECT); errors.push(e.to_string()); }
            },
            _ = report.tick(), if !args.stats_interval.is_zero() => print_live(&all_stats, started),
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = &mut interrupted => break,
        }
    }
    viewers.shutdown().await;

    let mut summary = summarize(&all_stats, &args, code, errors);
    summary.player = summarize_players(&all);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{}", serde_json::to_string_pretty(&summary)?);
    }
    // Leaves the metrics endpoint up for a scraper to read the final values.
    tokio::time::sleep(args.linger).await;
    Ok(summary.exit_code)
}

type ViewerResult = Result<(), (u8, anyhow::Error)>;

/// Counts this viewer in `moq_client_active_viewers` from connect until it stops, however it stops.
struct Watching(metrics::Gauge);

impl Watching {
    fn start() -> Self {
        let gauge = metrics::gauge!(catalog::ACTIVE_VIEWERS.name);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The `broadcast` label every client metric carries: the broadcast's path as the relay labels it
/// (the URL path joined with `--broadcast`), so client and relay series join on it.
pub fn broadcast_label(args: &WatchArgs) -> String {
    use moq_lite::path::{join, normalize};
    join(&normalize(args.connect.url.path()), &normalize(&args.broadcast))
}

async fn viewer(args: WatchArgs, me: Viewer, client: Arc<moq_lite::transport::Client>) -> ViewerResult {
    let fail = |code: u8| move |e: anyhow::Error| (code, e);
    let span = tracing::info_span!(
        "moq.watch",
        moq.broadcast = %args.broadcast,
        url.full = %args.connect.url_for_logs(),
    );
    let connected = args.connect.connect(&client, &span).instrument(span.clone()).await.map_err(fail(exit::CONNECT))?;
    span.in_scope(|| tracing::info!(transport = %connected.transport, version = %connected.version, "connected"));
    metrics::counter!(catalog::CONNECTIONS.name, "transport" => connected.transport.as_str()).increment(1);
    let _watching = Watching::start();
    let origin = Origin::new();
    let session = Session::new(
        connected.conn,
        connected.version,
        SessionConfig {
            publish: None,
            subscribe: Some(Scope::new(origin.clone(), "", vec![String::new()])),
            ..Default::default()
        },
    );
    let run = tokio::spawn({
        let session = session.clone();
        async move { session.run().await }
    });
    let path = moq_lite::path::normalize(&args.broadcast);
    let result = async {
        let broadcast = if args.direct {
            session.subscribe_broadcast(&path)
        } else {
            let route = tokio::time::timeout(args.timeout, origin.wait_route(&path)).await.map_err(|_| {
                (exit::NOT_FOUND, anyhow::anyhow!("broadcast {path:?} not announced within {:?}", args.timeout))
            })?;
            route.broadcast
        };
        // The player's clock runs beside the tracks feeding it (not when only verifying: at 100
        // wake-ups a second per viewer it would cost a load test more than the frames do).
        let clock = (!args.all_renditions).then(|| {
            tokio::spawn({
                let player = me.player.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    for n in 0u64.. {
                        tick.tick().await;
                        let now = Instant::now();
                        let mut p = player.lock().unwrap();
                        p.tick(now);
                        if n % 10 == 0 {
                            p.sample_buffer(now);
                        }
                    }
                }
            })
        });
        let result = receive(&broadcast, &args, &me).await;
        if let Some(clock) = clock {
            clock.abort();
        }
        result
    }
    .await;
    session.close(&moq_lite::Error::Cancel);
    run.abort();
    let _ = tokio::time::timeout(Duration::from_millis(500), client.wait_idle()).await;
    result
}

async fn receive(broadcast: &BroadcastConsumer, args: &WatchArgs, me: &Viewer) -> ViewerResult {
    let stats = me.stats.clone();
    let mut catalog_track = broadcast
        .subscribe_track(media::CATALOG_TRACK)
        .map_err(|e| (exit::NOT_FOUND, anyhow::anyhow!("catalog: {e}")))?;
    let catalog: Catalog = tokio::time::timeout(args.timeout, async {
        let mut group = catalog_track.next_group().await?.ok_or(moq_lite::Error::NotFound)?;
        let frame = group.read_frame().await?.ok_or(moq_lite::Error::NotFound)?;
        Ok::<_, moq_lite::Error>(frame.payload)
    })
    .await
    .map_err(|_| (exit::NOT_FOUND, anyhow::anyhow!("no catalog within {:?}", args.timeout)))?
    .map_err(|e| (exit::NOT_FOUND, anyhow::anyhow!("catalog: {e}")))
    .and_then(|p| serde_json::from_slice(&p).map_err(|e| (exit::CORRUPT, anyhow::anyhow!("catalog: {e}"))))?;
    // Keep the catalog subscribed, as a player does, to follow updates.
    let _catalog_track = catalog_track;

    let impair = Arc::new(Impairment::new(args));
    let mut tracks = tokio::task::JoinSet::new();
    // The video renditions, highest bitrate first: played adaptively, one at a time.
    let mut ladder: Vec<(String, u64)> =
        catalog.tracks.iter().filter(|t| t.kind == "video").map(|t| (t.name.clone(), t.bitrate)).collect();
    ladder.sort_by_key(|(_, bitrate)| std::cmp::Reverse(*bitrate));
    let adaptive = !args.all_renditions && !ladder.is_empty();
    for t in &catalog.tracks {
        if adaptive && t.kind == "video" {
            continue;
        }
        let consumer = broadcast
            .subscribe_track(&t.name)
            .map_err(|e| (exit::NOT_FOUND, anyhow::anyhow!("track {}: {e}", t.name)))?;
        stats.lock().unwrap().insert(t.name.clone(), TrackStats::default());
        let feed = (t.kind == "video").then(|| me.player.clone());
        tracks.spawn(read_track(consumer, stats.clone(), args.groups, impair.clone(), t.kind.clone(), feed));
    }
    if adaptive {
        stats.lock().unwrap().insert("video".to_string(), TrackStats::default());
        tracks.spawn(play_video(
            broadcast.clone(),
            ladder,
            me.clone(),
            args.groups,
            impair.clone(),
            args.target_latency,
        ));
    }
    while tracks.join_next().await.is_some() {}
    let stats = stats.lock().unwrap();
    if stats.values().any(|s| s.corrupt > 0) {
        return Err((exit::CORRUPT, anyhow::anyhow!("corrupt frames received")));
    }
    if let Some(want) = args.groups {
        if let Some((name, s)) = stats.iter().find(|(_, s)| s.groups_complete < want) {
            let why = s.error.clone().unwrap_or_else(|| "track ended".into());
            return Err((exit::INCOMPLETE, anyhow::anyhow!("{name}: {} of {want} groups ({why})", s.groups_complete)));
        }
    }
    Ok(())
}

/// Where one stream of groups goes: statistics under `name`, metrics under `label`, the
/// impairment, and (for video) the player.
struct Feed {
    stats: Stats,
    name: String,
    counters: RenditionCounters,
    impair: Arc<Impairment>,
    player: Option<Arc<Mutex<Player>>>,
    want_groups: Option<u64>,
}

/// Frame and byte counters of one rendition label, resolved once rather than per frame.
struct RenditionCounters {
    frames: metrics::Counter,
    bytes: metrics::Counter,
}

impl RenditionCounters {
    fn new(label: &str) -> Self {
        Self {
            frames: metrics::counter!(catalog::FRAMES.name, "rendition" => label.to_string()),
            bytes: metrics::counter!(catalog::BYTES.name, "rendition" => label.to_string()),
        }
    }
}

impl Feed {
    fn update(&self, f: &mut dyn FnMut(&mut TrackStats)) {
        if let Some(s) = self.stats.lock().unwrap().get_mut(&self.name) {
            f(s)
        }
    }

    /// Reads, verifies and accounts one group; returns (complete, payload bytes, time taken), and
    /// whether enough groups are complete.
    async fn read_group(&self, group: &mut moq_lite::model::GroupConsumer) -> (bool, u64, Duration, bool) {
        let sequence = group.sequence();
        self.update(&mut |s| {
            if let Some(last) = s.last_group {
                s.gaps += sequence.saturating_sub(last + 1);
            }
            s.first_group.get_or_insert(sequence);
            s.last_group = Some(s.last_group.map_or(sequence, |l| l.max(sequence)));
        });
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut expected_index = 0u32;
        let late_after_us = self.impair.late_after.as_micros() as u64;
        let complete = loop {
            match group.read_frame().await {
                Ok(Some(frame)) => {
                    let len = frame.payload.len();
                    self.impair.apply(len, frame.received).await;
                    let now = Instant::now();
                    bytes += len as u64;
                    let info = match self.impair.verify {
                        Verify::Full => media::verify_frame(&frame.payload),
                        Verify::Header => media::read_header(&frame.payload),
                    };
                    self.counters.frames.increment(1);
                    self.counters.bytes.increment(len as u64);
                    if let (Some(player), Some(info)) = (&self.player, info) {
                        player.lock().unwrap().push(info.capture_us, now);
                    }
                    let latency = info.map(|i| media::now_us().saturating_sub(i.capture_us));
                    let measured = now >= self.impair.measure_from;
                    self.update(&mut |s| {
                        if measured {
                            s.frames += 1;
                            s.bytes += len as u64;
                        }
                        match info {
                            Some(i) if i.group == sequence => {
                                s.gaps += u64::from(i.index.saturating_sub(expected_index));
                            }
                            _ => s.corrupt += 1,
                        }
                        if let Some(l) = latency.filter(|_| measured) {
                            if l > late_after_us {
                                s.late += 1;
                            }
                            if s.latency_us.len() < MAX_SAMPLES {
                                s.latency_us.push(l);
                            }
                        }
                        if s.last_frame.is_some_and(|t| now.duration_since(t) > STALL_THRESHOLD) {
                            s.stalls += 1;
                        }
                        s.last_frame = Some(now);
                    });
                    expected_index = info.map_or(expected_index, |i| i.index + 1);
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        let mut done = false;
        self.update(&mut |s| {
            if complete {
                s.groups_complete += 1;
            }
            done = self.want_groups.is_some_and(|w| s.groups_complete >= w);
        });
        (complete, bytes, started.elapsed(), done)
    }

    fn ended(&self, result: Result<(), moq_lite::Error>) {
        match result {
            Ok(()) => self.update(&mut |s| s.ended = true),
            Err(e) => self.update(&mut |s| s.error = Some(e.to_string())),
        }
    }
}

async fn read_track(
    mut track: TrackConsumer,
    stats: Stats,
    want_groups: Option<u64>,
    impair: Arc<Impairment>,
    label: String,
    player: Option<Arc<Mutex<Player>>>,
) {
    let feed = Feed {
        stats,
        name: track.name().to_string(),
        counters: RenditionCounters::new(&label),
        impair,
        player,
        want_groups,
    };
    loop {
        match track.next_group().await {
            Ok(Some(mut group)) => {
                if feed.read_group(&mut group).await.3 {
                    return;
                }
            }
            Ok(None) => return feed.ended(Ok(())),
            Err(e) => return feed.ended(Err(e)),
        }
    }
}

/// Plays the video ladder (highest bitrate first) adaptively: one rendition at a time, switching
/// at group edges by the rule in [`Abr`]. Statistics are kept under `video` whatever the rendition.
async fn play_video(
    broadcast: BroadcastConsumer,
    ladder: Vec<(String, u64)>,
    me: Viewer,
    want_groups: Option<u64>,
    impair: Arc<Impairment>,
    target: Duration,
) {
    let bitrates: Vec<u64> = ladder.iter().map(|(_, b)| *b).collect();
    let mut feed = Feed {
        stats: me.stats.clone(),
        name: "video".into(),
        counters: RenditionCounters::new("0"),
        impair,
        player: Some(me.player.clone()),
        want_groups,
    };
    let mut current = 0;
    let mut track = match broadcast.subscribe_track(&ladder[0].0) {
        Ok(t) => t,
        Err(e) => return feed.ended(Err(e)),
    };
    let mut abr = Abr::default();
    let mut last_sequence: Option<u64> = None;
    loop {
        let mut group = match track.next_group().await {
            Ok(Some(g)) => g,
            Ok(None) => return feed.ended(Ok(())),
            Err(e) => return feed.ended(Err(e)),
        };
        // After a switch the new rendition offers its cached group first: skip what already played.
        if last_sequence.is_some_and(|l| group.sequence() <= l) {
            continue;
        }
        last_sequence = Some(group.sequence());
        let (_, bytes, took, done) = feed.read_group(&mut group).await;
        if done {
            return;
        }
        let throughput = bytes as f64 * 8.0 / took.as_secs_f64().max(0.001);
        let buffered = me.player.lock().unwrap().buffered(Instant::now());
        let next = abr.decide(&bitrates, current, throughput, buffered, target);
        if next == current {
            continue;
        }
        let Ok(switched) = broadcast.subscribe_track(&ladder[next].0) else { continue };
        let direction = if next > current { "down" } else { "up" };
        tracing::info!(
            from = current,
            to = next,
            throughput,
            buffered_ms = buffered.as_millis() as u64,
            direction,
            "quality switch"
        );
        metrics::counter!(catalog::SWITCHES.name, "direction" => direction).increment(1);
        {
            let mut p = me.player.lock().unwrap();
            if next > current {
                p.stats.switches_down += 1;
            } else {
                p.stats.switches_up += 1;
            }
            p.stats.rendition = next;
        }
        track = switched;
        current = next;
        feed.counters = RenditionCounters::new(&next.to_string());
    }
}

fn summarize_players(all: &[Viewer]) -> PlayerSummary {
    let mut summary = PlayerSummary::default();
    let mut latency = Vec::new();
    for v in all {
        let p = v.player.lock().unwrap();
        let s = &p.stats;
        summary.startup_ms_max = summary.startup_ms_max.max(s.startup_ms.unwrap_or(0.0));
        summary.rebuffers += s.rebuffers;
        summary.rebuffer_ms += s.rebuffer_ms;
        summary.played += s.played;
        summary.switches_up += s.switches_up;
        summary.switches_down += s.switches_down;
        summary.dropped += s.dropped;
        summary.renditions.push(s.rendition);
        latency.extend(&s.latency_us);
    }
    latency.sort_unstable();
    summary.latency_ms_p50 = percentile(&latency, 0.5);
    summary.latency_ms_p99 = percentile(&latency, 0.99);
    summary.latency_ms_max = latency.last().map_or(0.0, |&l| l as f64 / 1000.0);
    summary
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn print_live(all: &[Stats], started: Instant) {
    let mut line = format!("[{:>5.1}s]", started.elapsed().as_secs_f64());
    let mut per_track: BTreeMap<String, (u64, u64, u64, Vec<u64>)> = BTreeMap::new();
    for stats in all {
        for (name, s) in stats.lock().unwrap().iter() {
            let e = per_track.entry(name.clone()).or_default();
            e.0 += s.frames;
            e.1 += s.bytes;
            e.2 += s.gaps + s.stalls;
            e.3.extend(s.latency_us.iter().rev().take(64));
        }
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    for (name, (frames, bytes, problems, mut lat)) in per_track {
        lat.sort_unstable();
        line += &format!(
            " {name}: {frames} frames {:.2} Mbit/s latency p50 {:.1} ms, gaps+stalls {problems} |",
            bytes as f64 * 8.0 / secs / 1e6 / all.len() as f64,
            percentile(&lat, 0.5)
        );
    }
    eprintln!("{line}");
}

fn summarize(all: &[Stats], args: &WatchArgs, code: u8, errors: Vec<String>) -> Summary {
    let mut summary = Summary { viewers: all.len(), exit_code: code, errors, ..Default::default() };
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for stats in all {
        for (name, s) in stats.lock().unwrap().iter() {
            let t = summary.tracks.entry(name.clone()).or_insert_with(|| TrackSummary {
                frames_min_per_viewer: u64::MAX,
                groups_complete_min_per_viewer: u64::MAX,
                ..Default::default()
            });
            t.frames += s.frames;
            t.frames_min_per_viewer = t.frames_min_per_viewer.min(s.frames);
            t.bytes += s.bytes;
            t.groups_complete_min_per_viewer = t.groups_complete_min_per_viewer.min(s.groups_complete);
            t.first_group_max = t.first_group_max.max(s.first_group);
            t.corrupt += s.corrupt;
            t.gaps += s.gaps;
            t.stalls += s.stalls;
            t.late += s.late;
            if let Some(e) = &s.error {
                t.errors.push(e.clone());
            }
            latencies.entry(name.clone()).or_default().extend(&s.latency_us);
        }
    }
    for (name, mut lat) in latencies {
        lat.sort_unstable();
        if let Some(t) = summary.tracks.get_mut(&name) {
            t.latency_ms_p50 = percentile(&lat, 0.5);
            t.latency_ms_p99 = percentile(&lat, 0.99);
            t.latency_ms_p999 = percentile(&lat, 0.999);
            t.latency_ms_max = lat.last().map_or(0.0, |&l| l as f64 / 1000.0);
        }
    }
    // Viewers that never saw a track still count against completeness.
    let viewers_with_tracks = all.iter().filter(|s| !s.lock().unwrap().is_empty()).count();
    if viewers_with_tracks < all.len() {
        for t in summary.tracks.values_mut() {
            t.frames_min_per_viewer = 0;
            t.groups_complete_min_per_viewer = 0;
        }
    }
    if summary.exit_code == 0 && summary.tracks.values().any(|t| t.corrupt > 0) {
        summary.exit_code = exit::CORRUPT;
    }
    if summary.exit_code == 0 {
        if let Some(want) = args.groups {
            if summary.tracks.is_empty() || summary.tracks.values().any(|t| t.groups_complete_min_per_viewer < want) {
                summary.exit_code = exit::INCOMPLETE;
            }
        }
    }
    summary.ok = summary.exit_code == 0;
    summary
}
