//! Real media for the interop matrix: a short H.264 + AAC fMP4 clip made once with ffmpeg and
//! cached, and bit-exact per-packet hashes of any MP4/fMP4 file for comparing what a subscriber
//! received with what was published.
//!
//! - [`clip`]: the cached clip (`~/.cache/moq-media/`, or `$MOQ_MEDIA_DIR`): 10 s of `testsrc2`
//!   640x360 at 30 fps, H.264 Main without B-frames, one keyframe (one group) per second, and a
//!   440 Hz `sine` tone as AAC-LC 48 kHz; fragmented one video frame per fragment, the layout
//!   moq-cli 0.14.10's `import fmp4` accepts (see [`PUBLISH_MUX`]).
//! - [`packets`]: the SHA-256 of every video frame and audio packet, per stream, in decode order
//!   (`ffprobe -show_packets -show_data_hash sha256`); [`Packets::compare`] says whether a
//!   received stream holds exactly the same packets.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Clip length in seconds.
pub const CLIP_SECONDS: u32 = 10;

/// ffmpeg output options of an fMP4 stream moq-cli 0.14.10 `import fmp4` accepts: one fragment
/// per 30 fps frame. Its `frag_every_frame` recipe is refused ("fragment decode time does not
/// advance"), `-frag_duration` works. Used both to write the cached clip and to replay it.
pub const PUBLISH_MUX: &[&str] =
    &["-f", "mp4", "-movflags", "cmaf+separate_moof+delay_moov+skip_trailer", "-frag_duration", "33333"];

/// Bump when the recipe below changes, so a stale cached clip is not reused.
const CLIP_NAME: &str = "testsrc2-sine-10s-h264main-aac-v1.mp4";

fn cache_dir() -> PathBuf {
    std::env::var_os("MOQ_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/moq-media"))
}

/// `ffmpeg` and `ffprobe` on PATH; missing is a failure, not a skip.
fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("-version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{name} missing: run scripts/install-test-deps.sh (just test does)");
    let mut cmd = Command::new(name);
    cmd.arg("-hide_banner");
    cmd
}

/// The cached clip, generated on first use (about a second of encoding).
pub fn clip() -> PathBuf {
    let dir = cache_dir();
    let path = dir.join(CLIP_NAME);
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // Written next to the final name and renamed, so a concurrent or interrupted run never leaves
    // a partial clip behind under the final name.
    let partial = dir.join(format!("{CLIP_NAME}.{}.partial", std::process::id()));
    let seconds = CLIP_SECONDS.to_string();
    let out = tool("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p"])
        // No B-frames; a keyframe every 30 frames (1 s), never elsewhere: 10 groups.
        .args(["-bf", "0", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .args(PUBLISH_MUX)
        .arg(&partial)
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "ffmpeg failed to make the clip: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// The ffmpeg arguments that replay `clip` in real time (`-re`) as fMP4 to `output` (a path,
/// a FIFO, or `-`), copying every packet unchanged.
pub fn replay_args(clip: &Path, output: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-re", "-i"].map(String::from).to_vec();
    args.push(clip.display().to_string());
    args.extend(["-map", "0", "-c", "copy"].map(String::from));
    args.extend(PUBLISH_MUX.iter().map(|s| s.to_string()));
    args.push(output.display().to_string());
    args
}

/// One packet: its size and SHA-256, and whether it is a keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub size: usize,
    pub sha256: String,
    pub key: bool,
}

/// Every video frame and audio packet of a file, per stream kind, in decode order.
#[derive(Debug, Clone, Default)]
pub struct Packets {
    pub video: Vec<Packet>,
    pub audio: Vec<Packet>,
}

/// Hashes every packet of `path` (MP4 or fMP4). A file whose last fragment was cut off (the
/// writer was killed) still yields its complete packets; a file with no packets at all is an
/// error carrying ffprobe's complaint.
pub fn packets(path: &Path) -> anyhow::Result<Packets> {
    let out = tool("ffprobe")
        .args(["-v", "error", "-show_data_hash", "sha256", "-of", "json"])
        .args(["-show_entries", "packet=codec_type,size,flags,data_hash"])
        .arg(path)
        .output()
        .context("running ffprobe")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ffprobe {}: no JSON; stderr: {stderr}", path.display()))?;
    let mut packets = Packets::default();
    for p in json["packets"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let field = |key: &str| p[key].as_str().unwrap_or_default();
        let packet = Packet {
            size: field("size").parse().unwrap_or_default(),
            sha256: field("data_hash").trim_start_matches("SHA256:").to_string(),
            key: field("flags").starts_with('K'),
        };
        match field("codec_type") {
            "video" => packets.video.push(packet),
            "audio" => packets.audio.push(packet),
            _ => {}
        }
    }
    if packets.video.is_empty() && packets.audio.is_empty() {
        bail!("{}: no packets (ffprobe exit {}): {}", path.display(), out.status, stderr.trim());
    }
    Ok(packets)
}

impl Packets {
    /// `Ok` when `received` holds exactly this file's packets: per stream, the same number, each
    /// with the same bytes (SHA-256 and size), in the same order. Otherwise the first difference
    /// of each stream that differs.
    pub fn compare(&self, received: &Packets) -> Result<(), String> {
        let problems: Vec<String> = [("video", &self.video, &received.video), ("audio", &self.audio, &received.audio)]
            .into_iter()
            .filter_map(|(kind, sent, got)| diff(kind, sent, got))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn diff(kind: &str, sent: &[Packet], got: &[Packet]) -> Option<String> {
    if sent == got {
        return None;
    }
    let same = |a: &Packet, b: &Packet| a.sha256 == b.sha256 && a.size == b.size;
    if let Some(i) = sent.iter().zip(got).position(|(a, b)| !same(a, b)) {
        // Say whether what was received is a later stretch of the source (a late start) or
        // something else.
        let offset = got.first().and_then(|first| sent.iter().position(|s| same(s, first)));
        let note = match offset {
            Some(k) if k > 0 && sent[k..].iter().zip(got).all(|(a, b)| same(a, b)) => {
                format!(", received starts at source {kind} #{k} (keyframe: {})", sent[k].key)
            }
            _ => String::new(),
        };
        return Some(format!(
            "{kind} #{i} differs (sent {} bytes {}, received {} bytes {}), {} sent vs {} received{note}",
            sent[i].size,
            &sent[i].sha256[..12.min(sent[i].sha256.len())],
            got[i].size,
            &got[i].sha256[..12.min(got[i].sha256.len())],
            sent.len(),
            got.len()
        ));
    }
    Some(format!(
        "{kind}: {} sent, {} received, the common first {} identical",
        sent.len(),
        got.len(),
        sent.len().min(got.len())
    ))
}
