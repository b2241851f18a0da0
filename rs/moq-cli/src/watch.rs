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

use crate::connect::ConnectArgs;
use crate::media::{self, Catalog};

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
    latency_us: Vec<u64>,
    last_frame: Option<Instant>,
    ended: bool,
    error: Option<String>,
}

type Stats = Arc<Mutex<BTreeMap<String, TrackStats>>>;

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
    pub latency_ms_max: f64,
    pub errors: Vec<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct Summary {
    pub viewers: usize,
    pub ok: bool,
    pub exit_code: u8,
    pub tracks: BTreeMap<String, TrackSummary>,
    pub errors: Vec<String>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut viewers = tokio::task::JoinSet::new();
    let all_stats: Vec<Stats> = (0..args.viewers.max(1)).map(|_| Stats::default()).collect();
    for stats in &all_stats {
        viewers.spawn(viewer(args.clone(), stats.clone()));
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
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    viewers.shutdown().await;

    let summary = summarize(&all_stats, &args, code, errors);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(summary.exit_code)
}

type ViewerResult = Result<(), (u8, anyhow::Error)>;

async fn viewer(args: WatchArgs, stats: Stats) -> ViewerResult {
    let fail = |code: u8| move |e: anyhow::Error| (code, e);
    let client = args.connect.client().map_err(fail(exit::CONNECT))?;
    let span = tracing::info_span!(
        "moq.watch",
        moq.broadcast = %args.broadcast,
        url.full = %args.connect.url_for_logs(),
    );
    let connected = args.connect.connect(&client, &span).instrument(span.clone()).await.map_err(fail(exit::CONNECT))?;
    span.in_scope(|| tracing::info!(transport = %connected.transport, version = %connected.version, "connected"));
    let origin = Origin::new();
    let session = Session::new(
        connected.conn,
        connected.version,
        SessionConfig {
            publish: None,
            subscribe: Some(Scope::new(origin.clone(), "", vec![String::new()])),
            hop_id: 0,
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
        receive(&broadcast, &args, stats).await
    }
    .await;
    session.close(&moq_lite::Error::Cancel);
    run.abort();
    let _ = tokio::time::timeout(Duration::from_millis(500), client.wait_idle()).await;
    result
}

async fn receive(broadcast: &BroadcastConsumer, args: &WatchArgs, stats: Stats) -> ViewerResult {
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

    let mut tracks = tokio::task::JoinSet::new();
    for t in &catalog.tracks {
        let consumer = broadcast
            .subscribe_track(&t.name)
            .map_err(|e| (exit::NOT_FOUND, anyhow::anyhow!("track {}: {e}", t.name)))?;
        stats.lock().unwrap().insert(t.name.clone(), TrackStats::default());
        tracks.spawn(read_track(consumer, stats.clone(), args.groups));
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

async fn read_track(mut track: TrackConsumer, stats: Stats, want_groups: Option<u64>) {
    let name = track.name().to_string();
    let update = |f: &mut dyn FnMut(&mut TrackStats)| {
        if let Some(s) = stats.lock().unwrap().get_mut(&name) {
            f(s)
        }
    };
    loop {
        let mut group = match track.next_group().await {
            Ok(Some(g)) => g,
            Ok(None) => {
                update(&mut |s| s.ended = true);
                return;
            }
            Err(e) => {
                update(&mut |s| s.error = Some(e.to_string()));
                return;
            }
        };
        let sequence = group.sequence();
        update(&mut |s| {
            if let Some(last) = s.last_group {
                s.gaps += sequence.saturating_sub(last + 1);
            }
            s.first_group.get_or_insert(sequence);
            s.last_group = Some(s.last_group.map_or(sequence, |l| l.max(sequence)));
        });
        let mut expected_index = 0u32;
        let complete = loop {
            match group.read_frame().await {
                Ok(Some(frame)) => {
                    let now = Instant::now();
                    let info = media::verify_frame(&frame.payload);
                    let latency = info.map(|i| media::now_us().saturating_sub(i.capture_us));
                    update(&mut |s| {
                        s.frames += 1;
                        s.bytes += frame.payload.len() as u64;
                        match info {
                            Some(i) if i.group == sequence => {
                                s.gaps += u64::from(i.index.saturating_sub(expected_index));
                            }
                            _ => s.corrupt += 1,
                        }
                        if let Some(l) = latency {
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
        update(&mut |s| {
            if complete {
                s.groups_complete += 1;
            }
            done = want_groups.is_some_and(|w| s.groups_complete >= w);
        });
        if done {
            return;
        }
    }
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
