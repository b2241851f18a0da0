//! `moq publish`: a synthetic live broadcast shaped like real media.

use std::time::Duration;

use clap::Args;
use moq_lite::model::{BroadcastProducer, GroupProducer, Origin, Scope, TrackProducer};
use moq_lite::session::{Session, SessionConfig};
use tracing::Instrument;

use crate::connect::ConnectArgs;
use crate::media::{self, Catalog, CatalogTrack};

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Broadcast path, relative to the URL path.
    #[arg(long)]
    pub broadcast: String,
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

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.fps > 0.0 && args.gop > 0, "--fps and --gop must be positive");
    let origin = Origin::new();
    let broadcast = BroadcastProducer::new();
    let mut catalog_track = broadcast.create_track(media::CATALOG_TRACK, 255);
    anyhow::ensure!((1..=8).contains(&args.renditions), "--renditions must be 1..=8");
    let renditions: Vec<(String, u64)> = (0..args.renditions)
        .map(|i| {
            let name = if args.renditions == 1 { "video".to_string() } else { format!("video/{i}") };
            (name, args.video_bitrate >> i)
        })
        .collect();
    let mut videos: Vec<Source> = renditions
        .iter()
        .map(|(name, bitrate)| Source::new(&broadcast, name, 2, *bitrate, args.fps, args.gop, true))
        .collect();
    // Audio groups span the video GOP's duration.
    let audio_gop = (AUDIO_FPS * args.gop as f64 / args.fps).round().max(1.0) as u32;
    let mut audio = (args.audio_bitrate > 0)
        .then(|| Source::new(&broadcast, "audio", 3, args.audio_bitrate, AUDIO_FPS, audio_gop, false));

    let mut catalog = Catalog {
        tracks: renditions
            .iter()
            .map(|(name, bitrate)| CatalogTrack {
                name: name.clone(),
                kind: "video".into(),
                bitrate: *bitrate,
                fps: args.fps,
                gop: args.gop,
            })
            .collect(),
    };
    if audio.is_some() {
        catalog.tracks.push(CatalogTrack {
            name: "audio".into(),
            kind: "audio".into(),
            bitrate: args.audio_bitrate,
            fps: AUDIO_FPS,
            gop: audio_gop,
        });
    }
    let mut group = catalog_track.append_group();
    let catalog_json = serde_json::to_vec(&catalog)?;
    let catalog_bytes = catalog_json.len();
    group.write_frame(catalog_json.into())?;
    group.finish();

    let path = moq_lite::path::normalize(&args.broadcast);
    let _publication = origin.publish(&path, broadcast.consume(), vec![]);

    let client = args.connect.client()?;
    let span = tracing::info_span!("moq.publish", moq.broadcast = %path, url.full = %args.connect.url_for_logs());
    let (current_tx, current) = tokio::sync::watch::channel(None);
    let mut connection = tokio::spawn(
        keep_connected(args.connect.clone(), client, origin, path.clone(), args.max_retries, current_tx)
            .instrument(span.clone()),
    );

    let video_limit = args.groups.map(|n| n * args.gop as u64);
    let audio_limit = match audio {
        Some(_) => args.groups.map(|n| n * audio_gop as u64),
        None => Some(0),
    };
    let start = tokio::time::Instant::now();
    let (mut video_frames, mut audio_frames) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the whole loop: a `ctrl_c()` made afresh each turn misses a SIGINT that
    // arrives while the loop body runs (Tokio's listener only sees signals after it subscribes).
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Only returns once reconnecting gave up.
            result = &mut connection => return Err(match result {
                Ok(gave_up) => gave_up,
                Err(panicked) => panicked.into(),
            }),
            _ = &mut interrupted => break,
        }
        // Emit every frame that is due by the wall clock; a group starts every `gop` frames.
        let elapsed = start.elapsed().as_secs_f64();
        while (video_frames as f64) < elapsed * args.fps && video_limit.is_none_or(|l| video_frames < l) {
            // Every rendition has the same GOP, so all start their groups on the same frame and a
            // viewer can switch at a group edge.
            for video in &mut videos {
                video.write()?;
            }
            video_frames += 1;
        }
        if let Some(audio) = audio.as_mut() {
            while (audio_frames as f64) < elapsed * AUDIO_FPS && audio_limit.is_none_or(|l| audio_frames < l) {
                audio.write()?;
                audio_frames += 1;
            }
        }
        if video_limit.is_some_and(|l| video_frames >= l) && audio_limit.is_some_and(|l| audio_frames >= l) {
            break;
        }
    }
    let groups = video_frames.div_ceil(args.gop as u64);
    let (video_bytes, audio_bytes) = (videos[0].bytes, audio.as_ref().map_or(0, |a| a.bytes));
    for video in videos {
        video.finish();
    }
    if let Some(audio) = audio {
        audio.finish();
    }
    catalog_track.finish();
    eprintln!("moq publish: done after {groups} groups, {video_frames} video frames, {audio_frames} audio frames");
    if args.json {
        // Payload totals per track, for checking what relays and viewers counted.
        let summary = serde_json::json!({
            "groups": groups,
            "tracks": {
                "video": { "frames": video_frames, "bytes": video_bytes },
                "audio": { "frames": audio_frames, "bytes": audio_bytes },
                "catalog": { "frames": 1, "bytes": catalog_bytes },
            }
        });
        println!("{summary}");
    }
    tokio::time::sleep(args.linger).await;
    // Close explicitly so the relay sees us leave now, not after its idle timeout.
    connection.abort();
    if let Some(session) = current.borrow().clone() {
        session.close(&moq_lite::Error::Cancel);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A session that lasted this long resets the failure count.
const STABLE: Duration = Duration::from_secs(10);

/// Keeps a session to the relay up, reconnecting with exponential backoff (GOAWAY: at once).
/// Each retry is logged at WARN with its code and count; when `max_retries` consecutive attempts
/// failed it logs at ERROR and returns why.
async fn keep_connected(
    connect: ConnectArgs,
    client: moq_lite::transport::Client,
    origin: Origin,
    path: String,
    max_retries: u32,
    current: tokio::sync::watch::Sender<Option<Session>>,
) -> anyhow::Error {
    let span = tracing::Span::current();
    let mut failures = 0u32;
    loop {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect.connect(&client, &span)).await;
        // (stream/session code, what happened); `None` when the relay asked us to come back.
        let failed: Option<(Option<u32>, String)> = match attempt {
            Ok(Ok(connected)) => {
                eprintln!(
                    "moq publish: {} via {} ({}) as {path:?}",
                    connect.url_for_logs(),
                    connected.transport,
                    connected.version
                );
                let scope = Scope::everything(origin.clone(), "");
                let setup_path = connect.setup_path(&connected);
                let session = Session::new(
                    connected.conn,
                    connected.version,
                    SessionConfig { publish: Some(scope), setup_path, ..Default::default() },
                );
                current.send_replace(Some(session.clone()));
                let opened = std::time::Instant::now();
                let ended = tokio::select! {
                    err = session.run() => Some(err),
                    _ = session.goaway_received() => None,
                };
                current.send_replace(None);
                if opened.elapsed() > STABLE {
                    failures = 0;
                }
                match ended {
                    None => {
                        // Close now so the relay can finish draining, then come back at once.
                        session.close(&moq_lite::Error::Cancel);
                        eprintln!("moq publish: the relay is going away (GOAWAY); reconnecting");
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
        let backoff = Duration::from_millis(250) * 2u32.saturating_pow(failures - 1).min(20);
        tokio::time::sleep(backoff).await;
    }
}
