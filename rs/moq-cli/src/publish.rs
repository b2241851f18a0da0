//! `moq publish`: a synthetic live broadcast shaped like real media.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use moq_lite::model::{BroadcastProducer, GroupProducer, Origin, Scope, TrackProducer};
use moq_lite::session::{Session, SessionConfig};
use tracing::Instrument;

use crate::backoff::{self, Outages};
use crate::connect::ConnectArgs;
use crate::media::{self, Catalog, CatalogTrack};

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Broadcast path, relative to the URL path.
    #[arg(long)]
    pub broadcast: String,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// The shape and lifetime of the synthetic media stream (shared by `moq publish` and
/// `moq netplay host`).
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Video-like track bitrate in bits per second.
    #[arg(long, default_value_t = 2_000_000)]
    pub video_bitrate: u64,
    /// Video renditions sharing GOP boundaries, each half the bitrate of the one above; with more
    /// than one the tracks are `video/0` (highest) .. `video/N-1`, all listed in the catalog.
    #[arg(long, default_value_t = 1)]
    pub renditions: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Video frames per group (GOP length); each group starts with a large key frame.
    #[arg(long, default_value_t = 30)]
    pub gop: u32,
    /// Audio-like track bitrate in bits per second (50 frames/s); 0 disables audio.
    #[arg(long, default_value_t = 64_000)]
    pub audio_bitrate: u64,
    /// Stop after this many video groups (default: run until Ctrl-C).
    #[arg(long)]
    pub groups: Option<u64>,
    /// Print payload totals per track as JSON on stdout when done.
    #[arg(long)]
    pub json: bool,
    /// Consecutive failed (re)connection attempts before giving up.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// How long to keep the session open after the last group so viewers receive it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
}

const AUDIO_FPS: f64 = 50.0;

struct Source {
    track: TrackProducer,
    group: Option<GroupProducer>,
    frame_size: usize,
    key_size: usize,
    /// Frames per group: the group is finished with its last frame, as an encoder with a fixed
    /// GOP knows it is, so the FIN can share that frame's packet all the way to each viewer.
    gop: u32,
    index: u32,
    /// Payload bytes produced so far (what a relay should count as received).
    bytes: u64,
}

impl Source {
    /// `gop` frames per group; with `key_frames` each group starts with a larger frame (video),
    /// otherwise all frames are equal (audio).
    fn new(
        broadcast: &BroadcastProducer,
        name: &str,
        priority: u8,
        bitrate: u64,
        fps: f64,
        gop: u32,
        key_frames: bool,
    ) -> Self {
        let avg = (bitrate as f64 / 8.0 / fps).max(media::HEADER_SIZE as f64) as usize;
        let keyed = key_frames && gop > 1;
        // A key frame four times the average; deltas share the rest of the GOP's budget.
        let key_size = if keyed { avg * 4 } else { avg };
        let frame_size = if keyed {
            ((avg * gop as usize).saturating_sub(key_size) / (gop as usize - 1)).max(media::HEADER_SIZE)
        } else {
            avg
        };
        Self {
            track: broadcast.create_track(name, priority),
            group: None,
            frame_size,
            key_size,
            gop,
            index: 0,
            bytes: 0,
        }
    }

    /// Writes the next frame: the first of a new group after every `gop` frames.
    fn write(&mut self) -> anyhow::Result<()> {
        let group = match self.group.as_mut() {
            Some(group) => group,
            None => {
                self.index = 0;
                self.group.insert(self.track.append_group())
            }
        };
        let size = if self.index == 0 { self.key_size } else { self.frame_size };
        let frame = media::make_frame(group.sequence(), self.index, size, media::now_us());
        self.bytes += frame.len() as u64;
        group.write_frame(frame)?;
        self.index += 1;
        if self.index >= self.gop {
            if let Some(group) = self.group.take() {
                group.finish();
            }
        }
        Ok(())
    }

    fn finish(mut self) {
        if let Some(group) = self.group.take() {
            group.finish();
        }
        self.track.finish();
    }
}

/// Frames ticking together at one rate: the video renditions (which share GOP boundaries), the
/// audio, a netplay input track.
#[derive(Debug, Clone)]
pub struct ClockShape {
    /// Its key in the summary (`video`, `audio`, `input`).
    pub name: String,
    /// The catalog `kind` of its tracks.
    pub kind: String,
    pub fps: f64,
    /// Frames per group.
    pub gop: u32,
    /// Each group starts with a larger frame (video).
    pub key_frames: bool,
    pub priority: u8,
    /// (track name, bitrate in bits per second), highest first.
    pub tracks: Vec<(String, u64)>,
}

/// What a synthetic broadcast carries: a catalog track plus the tracks of every clock.
#[derive(Debug, Clone)]
pub struct Shape {
    pub clocks: Vec<ClockShape>,
}

impl Shape {
    /// The media-like broadcast of `moq publish`: video renditions and (unless disabled) audio.
    pub fn media(args: &StreamArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(args.fps > 0.0 && args.gop > 0, "--fps and --gop must be positive");
        anyhow::ensure!((1..=8).contains(&args.renditions), "--renditions must be 1..=8");
        let video = ClockShape {
            name: "video".into(),
            kind: "video".into(),
            fps: args.fps,
            gop: args.gop,
            key_frames: true,
            priority: 2,
            tracks: (0..args.renditions)
                .map(|i| {
                    let name = if args.renditions == 1 { "video".to_string() } else { format!("video/{i}") };
                    (name, args.video_bitrate >> i)
                })
                .collect(),
        };
        let mut clocks = vec![video];
        if args.audio_bitrate > 0 {
            // Audio groups span the video GOP's duration.
            let gop = (AUDIO_FPS * args.gop as f64 / args.fps).round().max(1.0) as u32;
            clocks.push(ClockShape {
                name: "audio".into(),
                kind: "audio".into(),
                fps: AUDIO_FPS,
                gop,
                key_frames: false,
                priority: 3,
                tracks: vec![("audio".into(), args.audio_bitrate)],
            });
        }
        Ok(Self { clocks })
    }

    fn catalog(&self) -> Catalog {
        Catalog {
            tracks: self
                .clocks
                .iter()
                .flat_map(|c| {
                    c.tracks.iter().map(|(name, bitrate)| CatalogTrack {
                        name: name.clone(),
                        kind: c.kind.clone(),
                        bitrate: *bitrate,
                        fps: c.fps,
                        gop: c.gop,
                    })
                })
                .collect(),
        }
    }
}

/// One synthetic broadcast to publish through one relay.
#[derive(Debug, Clone)]
pub struct Publication {
    pub connect: ConnectArgs,
    /// Broadcast path, relative to the URL path.
    pub broadcast: String,
    pub shape: Shape,
    /// Stop after this many groups of the first clock (the others stop at the same time).
    pub groups: Option<u64>,
    /// Consecutive failed (re)connection attempts before giving up.
    pub max_retries: u32,
    /// Prefix of the lines printed on stderr (`moq publish`).
    pub label: &'static str,
}

/// Frames and payload bytes one clock produced (bytes of its first track: the top rendition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub frames: u64,
    pub bytes: u64,
}

/// A publication whose tracks are finished; its session is still open until [`Self::close`].
pub struct Published {
    /// Groups of the first clock.
    pub groups: u64,
    /// Per clock, by its name.
    pub totals: Vec<(String, Totals)>,
    pub catalog_bytes: usize,
    /// Sessions lost and re-established while publishing, and the time without one.
    pub outages: Arc<Mutex<Outages>>,
    connection: AbortOnDrop<anyhow::Error>,
    current: tokio::sync::watch::Receiver<Option<Session>>,
}

impl Published {
    pub fn totals(&self, clock: &str) -> Totals {
        self.totals.iter().find(|(name, _)| name == clock).map(|(_, t)| *t).unwrap_or_default()
    }

    /// Keeps the session open `linger` so viewers receive the last group, then closes it
    /// explicitly so the relay sees us leave now, not after its idle timeout.
    pub async fn close(self, linger: Duration) {
        tokio::time::sleep(linger).await;
        drop(self.connection);
        if let Some(session) = self.current.borrow().clone() {
            session.close(&moq_lite::Error::Cancel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Aborts a task when dropped (an early return must not leave the reconnect loop running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let publication = Publication {
        connect: args.connect,
        broadcast: args.broadcast,
        shape: Shape::media(&args.stream)?,
        groups: args.stream.groups,
        max_retries: args.stream.max_retries,
        label: "moq publish",
    };
    let published = publish(&publication, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    report(&published, "moq publish", args.stream.json);
    published.close(args.stream.linger).await;
    Ok(())
}

/// The `done after` line on stderr and, with `json`, the payload totals per track on stdout (for
/// checking what relays and viewers counted).
pub fn report(published: &Published, label: &str, json: bool) {
    let (video, audio) = (published.totals("video"), published.totals("audio"));
    let outages = published.outages.lock().unwrap().at(std::time::Instant::now());
    eprintln!(
        "{label}: done after {} groups, {} video frames, {} audio frames; reconnects {} (attempts {}), outage {:.1} s (longest {:.1} s)",
        published.groups,
        video.frames,
        audio.frames,
        outages.reconnects,
        outages.reconnect_attempts,
        outages.outage_ms / 1000.0,
        outages.longest_outage_ms / 1000.0
    );
    if json {
        let mut tracks = serde_json::json!({
            "video": { "frames": video.frames, "bytes": video.bytes },
            "audio": { "frames": audio.frames, "bytes": audio.bytes },
            "catalog": { "frames": 1, "bytes": published.catalog_bytes },
        });
        for (name, totals) in &published.totals {
            tracks[name] = serde_json::json!({ "frames": totals.frames, "bytes": totals.bytes });
        }
        let mut summary = serde_json::json!({ "groups": published.groups, "tracks": tracks });
        if let (Some(summary), serde_json::Value::Object(outages)) =
            (summary.as_object_mut(), serde_json::json!(outages))
        {
            summary.extend(outages);
        }
        println!("{summary}");
    }
}

/// A clock's tracks and how far it got.
struct Clock {
    fps: f64,
    gop: u32,
    sources: Vec<Source>,
    frames: u64,
    /// Frames to produce (`None`: until stopped).
    limit: Option<u64>,
}

impl Clock {
    fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.frames >= l)
    }
}

/// Publishes `p` until its `groups` are written, `stop` resolves, or reconnecting gives up (the
/// error). The tracks are finished on return; the session stays open until
/// [`Published::close`].
pub async fn publish(p: &Publication, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<Published> {
    anyhow::ensure!(!p.shape.clocks.is_empty(), "nothing to publish");
    for c in &p.shape.clocks {
        anyhow::ensure!(c.fps > 0.0 && c.gop > 0, "{}: fps and frames per group must be positive", c.name);
    }
    let origin = Origin::new();
    let broadcast = BroadcastProducer::new();
    let mut catalog_track = broadcast.create_track(media::CATALOG_TRACK, 255);
    let mut clocks: Vec<Clock> = p
        .shape
        .clocks
        .iter()
        .map(|c| Clock {
            fps: c.fps,
            gop: c.gop,
            sources: c
                .tracks
                .iter()
                .map(|(name, bitrate)| Source::new(&broadcast, name, c.priority, *bitrate, c.fps, c.gop, c.key_frames))
                .collect(),
            frames: 0,
            limit: p.groups.map(|n| n * c.gop as u64),
        })
        .collect();

    let mut group = catalog_track.append_group();
    let catalog_json = serde_json::to_vec(&p.shape.catalog())?;
    let catalog_bytes = catalog_json.len();
    group.write_frame(catalog_json.into())?;
    group.finish();

    let path = moq_lite::path::normalize(&p.broadcast);
    let _publication = origin.publish(&path, broadcast.consume(), vec![]);

    let client = p.connect.client()?;
    let span = tracing::info_span!("moq.publish", moq.broadcast = %path, url.full = %p.connect.url_for_logs());
    let (current_tx, current) = tokio::sync::watch::channel(None);
    let outages = Arc::new(Mutex::new(Outages::default()));
    let mut connection = AbortOnDrop(tokio::spawn(
        keep_connected(p.clone(), client, origin, path.clone(), current_tx, outages.clone()).instrument(span.clone()),
    ));

    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One future for the whole loop: a `ctrl_c()` made afresh each turn misses a SIGINT that
    // arrives while the loop body runs (Tokio's listener only sees signals after it subscribes).
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Only returns once reconnecting gave up.
            result = &mut connection.0 => return Err(match result {
                Ok(gave_up) => gave_up,
                Err(panicked) => panicked.into(),
            }),
            _ = &mut stop => break,
        }
        // Emit every frame that is due by the wall clock; a group starts every `gop` frames.
        let elapsed = start.elapsed().as_secs_f64();
        for clock in &mut clocks {
            while (clock.frames as f64) < elapsed * clock.fps && !clock.done() {
                // Every track of a clock (the video renditions) has the same GOP, so all start
                // their groups on the same frame and a viewer can switch at a group edge.
                for source in &mut clock.sources {
                    source.write()?;
                }
                clock.frames += 1;
            }
        }
        if clocks.iter().all(Clock::done) {
            break;
        }
    }
    let groups = clocks[0].frames.div_ceil(clocks[0].gop as u64);
    let totals = p
        .shape
        .clocks
        .iter()
        .zip(clocks)
        .map(|(shape, clock)| {
            let bytes = clock.sources.first().map_or(0, |s| s.bytes);
            for source in clock.sources {
                source.finish();
            }
            (shape.name.clone(), Totals { frames: clock.frames, bytes })
        })
        .collect();
    catalog_track.finish();
    Ok(Published { groups, totals, catalog_bytes, outages, connection, current })
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A session that lasted this long resets the failure count.
const STABLE: Duration = Duration::from_secs(10);

/// Keeps a session to the relay up, reconnecting with jittered exponential backoff ([`backoff::backoff`];
/// GOAWAY: at once). Each retry is logged at WARN with its code and count, and counted in
/// `outages` with the time without a session; when `max_retries` consecutive attempts failed it
/// logs at ERROR and returns why.
async fn keep_connected(
    p: Publication,
    client: moq_lite::transport::Client,
    origin: Origin,
    path: String,
    current: tokio::sync::watch::Sender<Option<Session>>,
    outages: Arc<Mutex<Outages>>,
) -> anyhow::Error {
    let (connect, max_retries, label) = (p.connect, p.max_retries, p.label);
    let span = tracing::Span::current();
    let mut failures = 0u32;
    let mut backoff = backoff::backoff();
    let mut lost = false;
    loop {
        if lost {
            outages.lock().unwrap().reconnect_attempts += 1;
        }
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect.connect(&client, &span)).await;
        // (stream/session code, what happened); `None` when the relay asked us to come back.
        let failed: Option<(Option<u32>, String)> = match attempt {
            Ok(Ok(connected)) => {
                eprintln!(
                    "{label}: {} via {} ({}) as {path:?}",
                    connect.url_for_logs(),
                    connected.transport,
                    connected.version
                );
                let scope = Scope::everything(origin.clone(), "");
                let setup_path = connect.setup_path(&connected);
                let session = Session::new(
                    connected.conn,
                    connected.version,
                    SessionConfig {
                        publish: Some(scope),
                        setup_path,
                        trace: Some(crate::TRACE_PROPAGATION),
                        ..Default::default()
                    },
                );
                current.send_replace(Some(session.clone()));
                let opened = std::time::Instant::now();
                if std::mem::take(&mut lost) {
                    let mut o = outages.lock().unwrap();
                    o.reconnects += 1;
                    if let Some(took) = o.end(opened) {
                        eprintln!("{label}: reconnected after {:.1} s", took.as_secs_f64());
                    }
                }
                let ended = tokio::select! {
                    err = session.run() => Some(err),
                    _ = session.goaway_received() => None,
                };
                current.send_replace(None);
                lost = true;
                outages.lock().unwrap().begin(std::time::Instant::now());
                if opened.elapsed() > STABLE {
                    failures = 0;
                    backoff.reset();
                }
                match ended {
                    None => {
                        // Close now so the relay can finish draining, then come back at once.
                        session.close(&moq_lite::Error::Cancel);
                        eprintln!("{label}: the relay is going away (GOAWAY); reconnecting");
                        tracing::info!("relay sent GOAWAY; reconnecting");
                        None
                    }
                    Some(err) => Some((Some(err.code()), format!("session lost: {err}"))),
                }
            }
            Ok(Err(err)) => Some((None, format!("connect failed: {err:#}"))),
            Err(_) => Some((None, format!("connect timed out after {CONNECT_TIMEOUT:?}"))),
        };
        let Some((code, error)) = failed else { continue };
        failures += 1;
        if failures > max_retries {
            tracing::error!(code, retries = max_retries, error, "retries exhausted; giving up");
            return anyhow::anyhow!("could not reach the relay after {max_retries} retries: {error}");
        }
        tracing::warn!(code, retry = failures, max_retries, error, "relay unreachable; retrying");
        tokio::time::sleep(backoff::next_random(&mut backoff)).await;
    }
}
