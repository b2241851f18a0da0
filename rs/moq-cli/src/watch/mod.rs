//! `moq watch`: discovers a broadcast, receives every track, verifies every frame byte for byte
//! and reports frames, bitrate, latency to the live edge, gaps and stalls.
//!
//! - [`args`]: the command line and exit codes;
//! - [`impairment`]: throttle, delay and the measured window applied to received frames;
//! - [`verify`]: per-frame checks and per-track statistics;
//! - [`report`]: the live line and the final summary;
//! - here: the run loop, one task per viewer, and reading tracks (adaptively for video).

mod args;
mod impairment;
mod report;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moq_lite::model::{BroadcastConsumer, Origin, Scope, TrackConsumer};
use moq_lite::session::{Session, SessionConfig};
use tracing::Instrument;

use crate::backoff::{self, Outages};
use crate::catalog;
use crate::media::{self, Catalog};
use crate::player::{Abr, Player};
use impairment::Impairment;
use verify::{Feed, RenditionCounters, Stats};

pub use args::{broadcast_label, exit, Verify, WatchArgs};

/// One viewer's state: per-track statistics and its player.
#[derive(Clone)]
struct Viewer {
    stats: Stats,
    player: Arc<Mutex<Player>>,
    outages: Arc<Mutex<Outages>>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<u8> {
    run_until(args, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// As [`run`], stopping early (with the summary so far) when `stop` resolves instead of on Ctrl-C.
pub async fn run_until(args: WatchArgs, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<u8> {
    let started = Instant::now();
    impairment::measure_from(started, args.warmup);
    let mut viewers = tokio::task::JoinSet::new();
    let all: Vec<Viewer> = (0..args.viewers.max(1))
        .map(|_| Viewer {
            stats: Stats::default(),
            player: Arc::new(Mutex::new(Player::new(args.target_latency, Instant::now()))),
            outages: Arc::default(),
        })
        .collect();
    let all_stats: Vec<Stats> = all.iter().map(|v| v.stats.clone()).collect();
    // Each viewer has its own QUIC connection; `--viewers-per-socket` lets several share one UDP
    // socket (and endpoint driver), which is how a load generator keeps its own CPU down.
    let per_socket = args.viewers_per_socket.max(1);
    let mut clients = Vec::new();
    for (i, v) in all.iter().enumerate() {
        if i % per_socket == 0 {
            clients.push(Arc::new(args.connect.client()?));
        }
        viewers.spawn(viewer(args.clone(), v.clone(), clients.last().expect("created above").clone()));
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
    // One future for the whole loop: a `ctrl_c()` made afresh each turn misses a SIGINT that
    // arrives while the loop body runs (Tokio's listener only sees signals after it subscribes).
    let mut interrupted = std::pin::pin!(stop);
    loop {
        tokio::select! {
            joined = viewers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err((c, e)))) => { code = code.max(c); errors.push(format!("{e:#}")); }
                Some(Err(e)) => { code = code.max(exit::CONNECT); errors.push(e.to_string()); }
            },
            _ = report.tick(), if !args.stats_interval.is_zero() => report::print_live(&all_stats, &report::outages(&all), started),
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = &mut interrupted => break,
        }
    }
    viewers.shutdown().await;
    // The viewers stopped mid-watch closed their sessions; let the closes reach the relay.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        futures::future::join_all(clients.iter().map(|c| c.wait_idle())),
    )
    .await;

    let mut summary = report::summarize(&all_stats, &args, code, errors);
    summary.player = report::summarize_players(&all);
    summary.outages = report::outages(&all);
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

/// How long tracks may still finish after their session ended before the viewer gives up on them.
const SESSION_GONE_DRAIN: Duration = Duration::from_millis(500);

/// Aborts a task when dropped, however the future owning it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Closes a session when dropped (a no-op for one already closed).
struct CloseOnDrop(Session);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(&moq_lite::Error::Cancel);
    }
}

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

/// How one session of a viewer ended.
enum Ended {
    /// The viewer is done: the broadcast ended, its goal was reached, or it failed for good.
    Done(ViewerResult),
    /// The session was lost (the relay went away): reconnect, at once after a GOAWAY.
    Lost { why: String, goaway: bool },
}

/// How long one reconnection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One viewer: connects, watches, and when the session is lost (connection error, idle timeout,
/// GOAWAY, relay restart) reconnects with jittered backoff and resumes at the live edge (a fresh
/// subscription starts at the latest group), until the broadcast ends, the goal is reached, or an
/// outage outlasts `--max-reconnect-time`.
async fn viewer(args: WatchArgs, me: Viewer, client: Arc<moq_lite::transport::Client>) -> ViewerResult {
    let fail = |code: u8| move |e: anyhow::Error| (code, e);
    let span = tracing::info_span!(
        "moq.watch",
        moq.broadcast = %args.broadcast,
        url.full = %args.connect.url_for_logs(),
    );
    // The first connection failing is an error, as ever: there is nothing to recover yet.
    let mut conn = args.connect.connect(&client, &span).instrument(span.clone()).await.map_err(fail(exit::CONNECT))?;
    let mut backoff = backoff::backoff();
    let mut resumed = false;
    loop {
        let (why, goaway) = match watch_session(&args, &me, &client, &span, conn, resumed).await {
            Ended::Done(result) => return result,
            Ended::Lost { why, goaway } => (why, goaway),
        };
        if args.no_reconnect {
            return Err((exit::CONNECT, anyhow::anyhow!("session lost: {why}")));
        }
        // The outage began with the last frame received (or now, if none came).
        let last_frame =
            me.stats.lock().unwrap().values().filter_map(|s| s.last_frame).max().unwrap_or_else(Instant::now);
        me.outages.lock().unwrap().begin(last_frame);
        let lost_at = Instant::now();
        span.in_scope(|| tracing::warn!(error = %why, goaway, "session lost; reconnecting"));
        if goaway {
            backoff.reset();
        }
        let mut why = why;
        let mut first = true;
        conn = loop {
            let waited = lost_at.elapsed();
            if waited >= args.max_reconnect_time {
                let e = anyhow::anyhow!("gave up reconnecting after {waited:.1?} (--max-reconnect-time): {why}");
                span.in_scope(|| tracing::error!(error = %e, "reconnecting gave up"));
                return Err((exit::CONNECT, e));
            }
            if !(goaway && first) {
                tokio::time::sleep(backoff::next_random(&mut backoff).min(args.max_reconnect_time - waited)).await;
            }
            first = false;
            me.outages.lock().unwrap().reconnect_attempts += 1;
            metrics::counter!(catalog::RECONNECT_ATTEMPTS.name).increment(1);
            let attempt = args.connect.connect(&client, &span).instrument(span.clone());
            why = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(conn)) => break conn,
                // The relay answered and refused us (401/403: the token no longer admits us):
                // retrying cannot help.
                Ok(Err(e)) if refused_by_relay(&e) => {
                    let e = anyhow::anyhow!("the relay refused to reconnect: {e:#}");
                    span.in_scope(|| tracing::error!(error = %e, "reconnecting gave up"));
                    return Err((exit::CONNECT, e));
                }
                Ok(Err(e)) => format!("connect failed: {e:#}"),
                Err(_) => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
            };
            span.in_scope(|| tracing::warn!(error = %why, "reconnect attempt failed"));
        };
        backoff.reset();
        resumed = true;
        me.outages.lock().unwrap().reconnects += 1;
        metrics::counter!(catalog::RECONNECTS.name).increment(1);
        // The next group of every track resumes at the live edge: what was skipped is the outage's.
        for s in me.stats.lock().unwrap().values_mut() {
            s.resumed = true;
        }
    }
}

/// Whether a failed connection attempt was the relay refusing the session (HTTP 401 or 403 to
/// the WebTransport CONNECT or the WebSocket upgrade), not a network failure.
fn refused_by_relay(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    ["Some(401)", "Some(403)", "401 Unauthorized", "403 Forbidden"].iter().any(|s| text.contains(s))
}

/// Whether every track this viewer watches ended normally or reached the `--groups` goal.
fn finished(me: &Viewer, args: &WatchArgs) -> bool {
    let stats = me.stats.lock().unwrap();
    !stats.is_empty() && stats.values().all(|s| s.ended || args.groups.is_some_and(|w| s.groups_complete >= w))
}

/// Ends the outage going on (if any) once a frame arrived after it began.
fn check_back(me: &Viewer) {
    let mut outages = me.outages.lock().unwrap();
    let Some(since) = outages.since else { return };
    let back = me.stats.lock().unwrap().values().filter_map(|s| s.last_frame).filter(|&t| t > since).min();
    if let Some(took) = back.and_then(|at| outages.end(at)) {
        metrics::histogram!(catalog::OUTAGE.name).record(took.as_secs_f64());
        tracing::info!(outage_ms = took.as_millis() as u64, "receiving again");
    }
}

/// Watches over one session until the viewer is done or the session is lost.
async fn watch_session(
    args: &WatchArgs,
    me: &Viewer,
    client: &moq_lite::transport::Client,
    span: &tracing::Span,
    connected: moq_lite::transport::Connected,
    resumed: bool,
) -> Ended {
    span.in_scope(
        || tracing::info!(transport = %connected.transport, version = %connected.version, resumed, "connected"),
    );
    metrics::counter!(catalog::CONNECTIONS.name, "transport" => connected.transport.as_str()).increment(1);
    let _watching = Watching::start();
    let origin = Origin::new();
    let setup_path = args.connect.setup_path(&connected);
    let session = Session::new(
        connected.conn,
        connected.version,
        SessionConfig {
            setup_path,
            publish: None,
            subscribe: Some(Scope::everything(origin.clone(), "")),
            ..Default::default()
        },
    );
    let mut run = tokio::spawn({
        let session = session.clone();
        async move { session.run().await }
    });
    // A viewer stopped from outside (--duration, Ctrl-C) is dropped mid-watch: it still says
    // goodbye, or the relay would hold the session until its idle timeout.
    let _goodbye = CloseOnDrop(session.clone());
    let path = moq_lite::path::normalize(&args.broadcast);
    let received = async {
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
        let _clock = (!args.all_renditions).then(|| {
            AbortOnDrop(tokio::spawn({
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
            }))
        });
        receive(&broadcast, args, me).await
    };
    let mut received = std::pin::pin!(received);
    let mut back = tokio::time::interval(Duration::from_millis(20));
    let lost = |why: String| Ended::Lost { why, goaway: false };
    let ended = loop {
        tokio::select! {
            result = &mut received => {
                // Corruption, or a broadcast that ended or reached the goal: done. Tracks that
                // failed because the session went down (it ends shortly after them): lost.
                if matches!(&result, Err((c, _)) if *c == exit::CORRUPT) || finished(me, args) {
                    break Ended::Done(result);
                }
                match tokio::time::timeout(SESSION_GONE_DRAIN, &mut run).await {
                    Ok(Ok(moq_lite::Error::Unauthorized)) => break Ended::Done(result),
                    Ok(_) if shut_out(&session) => break Ended::Done(result),
                    Ok(ended) => break lost(why(ended)),
                    // Back on a restarted relay whose publisher is not back yet: keep trying.
                    Err(_) if resumed && matches!(&result, Err((c, _)) if *c == exit::NOT_FOUND) => {
                        break lost(format!("{:#}", result.unwrap_err().1));
                    }
                    Err(_) => break Ended::Done(result),
                }
            }
            // The session is gone (e.g. the relay went away, or closed it: a netplay session
            // ended) and the tracks may never end: let what already arrived drain, then decide.
            ended = &mut run => {
                // The relay shut us out (access ended, a netplay room closed): nothing to retry.
                let refused = matches!(ended, Ok(moq_lite::Error::Unauthorized)) || shut_out(&session);
                let why = why(ended);
                match tokio::time::timeout(SESSION_GONE_DRAIN, &mut received).await {
                    Ok(result) if finished(me, args) || matches!(&result, Err((c, _)) if *c == exit::CORRUPT) => {
                        break Ended::Done(result)
                    }
                    _ if refused => break Ended::Done(Err((exit::CONNECT, anyhow::anyhow!("session lost: {why}")))),
                    _ => break lost(why),
                }
            }
            _ = session.goaway_received() => {
                break Ended::Lost { why: "the relay is going away (GOAWAY)".into(), goaway: true };
            }
            _ = back.tick() => check_back(me),
        }
    };
    check_back(me);
    session.close(&moq_lite::Error::Cancel);
    run.abort();
    let _ = tokio::time::timeout(Duration::from_millis(500), client.wait_idle()).await;
    ended
}

/// Whether the relay closed the session because the viewer's right to it ended (its token
/// expired or was revoked, an operator closed it, a netplay room ended): reconnecting would only
/// be refused, or undo what the operator did.
fn shut_out(session: &Session) -> bool {
    session.connection().close_code() == Some(moq_lite::code::UNAUTHORIZED.into())
}

/// Why a session's run task ended.
fn why(ended: Result<moq_lite::Error, tokio::task::JoinError>) -> String {
    match ended {
        Ok(err) => err.to_string(),
        Err(e) => e.to_string(),
    }
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
        resubscribed(&stats, &t.name);
        let feed = (t.kind == "video").then(|| me.player.clone());
        tracks.spawn(read_track(consumer, stats.clone(), args.groups, impair.clone(), t.kind.clone(), feed));
    }
    if adaptive {
        resubscribed(&stats, "video");
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

/// A track (re)subscribed: its statistics carry on across reconnections, its ending starts over.
fn resubscribed(stats: &Stats, name: &str) {
    let mut stats = stats.lock().unwrap();
    let s = stats.entry(name.to_string()).or_default();
    s.ended = false;
    s.error = None;
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
