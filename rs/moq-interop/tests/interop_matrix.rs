//! The interop matrix: real media and this repo's relay/CLI against the reference moq-lite peers
//! (installed by scripts/install-test-deps.sh), one test per cell, each printing one line:
//!
//! `MATRIX publisher=.. relay=.. subscriber=.. version=.. transport=.. video_frames=N
//! audio_packets=M result=ok|FAIL(reason)`
//!
//! Run with `cargo test -p moq-interop --test interop_matrix -- --nocapture` to see every line
//! (without `--nocapture` only failing tests show theirs).
//!
//! Cells:
//! - reference `moq` 0.14.10 `import fmp4` (the cached clip, replayed in real time by ffmpeg) →
//!   THIS relay → reference `moq` 0.14.10 `export fmp4`, forced to one version with
//!   `--connect-version`; passes when every H.264 frame and AAC packet the subscriber wrote is
//!   byte-identical to the clip's, in order, with none missing (the subscriber starts first);
//! - the same over `ws://` (qmux over WebSocket);
//! - this `moq publish` → reference `moq-relay` 0.17.10 → this `moq watch`, forced with
//!   `--moq-version`; `moq watch` verifies every byte of the synthetic broadcast itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moq_interop::media::{self, Packets};
use moq_interop::*;

const REF_CLI: (&str, &str) = ("moq-cli", "0.14.10");

/// The reference `moq` binary, by its full cached path (this repo's CLI is also called `moq`).
fn reference_moq() -> PathBuf {
    reference(REF_CLI.0, REF_CLI.1).with_file_name("moq")
}

/// One cell of the matrix.
struct Cell {
    publisher: &'static str,
    relay: &'static str,
    subscriber: &'static str,
    version: &'static str,
    transport: &'static str,
}

/// What a cell observed: packets received per kind, and whether the cell passed.
struct Outcome {
    video: usize,
    audio: usize,
    result: Result<(), String>,
}

impl Outcome {
    fn fail(reason: impl Into<String>) -> Self {
        Outcome { video: 0, audio: 0, result: Err(reason.into()) }
    }
}

impl Cell {
    /// Runs `case`, prints the MATRIX line (a panic is a FAIL too), and fails the test unless
    /// the case passed.
    fn run(&self, case: impl FnOnce() -> Outcome) {
        let outcome = catch_unwind(AssertUnwindSafe(case)).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Outcome::fail(format!("panic: {msg}"))
        });
        let result = match &outcome.result {
            Ok(()) => "ok".to_string(),
            Err(reason) => format!("FAIL({})", one_line(reason, 400)),
        };
        let line = format!(
            "MATRIX publisher={} relay={} subscriber={} version={} transport={} video_frames={} audio_packets={} result={}",
            self.publisher,
            self.relay,
            self.subscriber,
            self.version,
            self.transport,
            outcome.video,
            outcome.audio,
            result
        );
        println!("{line}");
        if let Err(reason) = outcome.result {
            panic!("{line}\n\nfull reason:\n{reason}");
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

/// The last `n` lines a process printed, for failure reasons.
fn tail(proc: &mut Proc, n: usize) -> String {
    let seen = proc.drain();
    let last = seen[seen.len().saturating_sub(n)..].iter().map(|l| strip_ansi(l)).collect::<Vec<_>>().join(" | ");
    format!("{}: [{last}]", proc.name)
}

/// `line` without terminal colour escapes (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A scratch directory for one cell, removed when the cell passes.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moq-matrix-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sh -c 'exec PROGRAM ARGS > $MATRIX_OUT'` (or `< $MATRIX_IN`): the process itself replaces
/// the shell, so killing the [`Proc`] kills it, while its stdout goes to a file (binary media;
/// [`Proc`] reads line by line) or its stdin comes from a file or FIFO.
fn redirected(program: &Path, redirect: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("exec \"$0\" \"$@\" {redirect}")]).arg(program);
    cmd
}

/// Reference `moq` publishing the clip → THIS relay → reference `moq` exporting fMP4; every
/// packet compared with the clip's. `scheme` is `http` (WebTransport after the fingerprint
/// bootstrap) or `ws` (qmux over WebSocket).
fn reference_cli_through_our_relay(version: &'static str, scheme: &str) -> Outcome {
    let _serial = serial();
    let dir = scratch(&format!("{scheme}-{version}"));
    let clip = media::clip();
    let source = media::packets(&clip).expect("hashing the clip");
    let moq = reference_moq();

    let mut relay = Relay::start();
    let url = format!("{scheme}://localhost:{}/", relay.port);
    let dial = ["--connect", &url, "--connect-version", version, "--connect-once", "--broadcast", "matrix.hang"];

    // The subscriber first, so it is subscribed before the first group exists.
    let received = dir.join("received.mp4");
    let mut subscriber = Proc::spawn(
        "reference moq export",
        redirected(&moq, "> \"$MATRIX_OUT\"")
            .args(dial)
            // Never skip a group as stale: the comparison is about bytes, not latency.
            .args(["export", "fmp4", "--max-age", "10s"])
            .env("MATRIX_OUT", &received)
            .env("RUST_LOG", "info"),
    );
    let opened = |relay: &mut Relay| relay.drain().iter().filter(|l| l.contains("session opened")).count();
    if !eventually(Duration::from_secs(10), || opened(&mut relay) >= 1) {
        return Outcome::fail(format!(
            "the subscriber's session never opened on the relay within 10 s; {}; {}",
            tail(&mut subscriber, 40),
            tail(&mut relay, 4)
        ));
    }

    let fifo = dir.join("publish.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut ffmpeg = Proc::spawn("ffmpeg -re", Command::new("ffmpeg").args(media::replay_args(&clip, &fifo)));
    let mut publisher = Proc::spawn(
        "reference moq import",
        redirected(&moq, "< \"$MATRIX_IN\"")
            .args(dial)
            .args(["import", "fmp4"])
            .env("MATRIX_IN", &fifo)
            .env("RUST_LOG", "info"),
    );

    // The clip lasts 10 s; the publisher exits at the end of its input.
    let published = publisher.wait_exit(Duration::from_secs(25));
    let ffmpeg_done = ffmpeg.wait_exit(Duration::from_secs(1));
    // The subscriber ends when the broadcast does; if it does not, what it wrote is still
    // compared first (the line says what arrived), then the cell fails.
    let finished = subscriber.wait_exit(Duration::from_secs(8));
    let sessions = relay.drain().iter().filter(|l| l.contains("session opened")).cloned().collect::<Vec<_>>();
    let notes = format!(
        "publisher exit {published:?}, ffmpeg exit {ffmpeg_done:?}, subscriber exit {finished:?}; {}; {}; {}",
        tail(&mut publisher, 4),
        tail(&mut subscriber, 40),
        tail(&mut relay, 6)
    );
    eprintln!("{notes}");
    drop(subscriber);

    let got = match media::packets(&received) {
        Ok(got) => got,
        Err(e) => return Outcome::fail(format!("nothing decodable received: {e}; {notes}")),
    };
    let outcome = |result| Outcome { video: got.video.len(), audio: got.audio.len(), result };
    if let Err(diff) = source.compare(&got) {
        return outcome(Err(format!("{diff}; kept {}; {notes}", dir.display())));
    }
    // Both sessions on the forced version (the relay logs it in the session span).
    if sessions.len() < 2 || !sessions.iter().all(|l| l.contains(version)) {
        return outcome(Err(format!("sessions not both on {version}: {sessions:?}")));
    }
    if published.map(|s| s.success()) != Some(true) {
        return outcome(Err(format!("the publisher did not exit cleanly; {notes}")));
    }
    // The broadcast's end reached the subscriber as an end (SUBSCRIBE_END / FIN), not as a reset.
    if finished.map(|s| s.success()) != Some(true) {
        return outcome(Err(format!("the subscriber did not end cleanly; {notes}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
    outcome(Ok(()))
}

fn reference_cli_cell(version: &'static str, transport: &'static str) -> Cell {
    Cell {
        publisher: "moq-cli-0.14.10(import fmp4)",
        relay: "moq-relay(this)",
        subscriber: "moq-cli-0.14.10(export fmp4)",
        version,
        transport,
    }
}

#[test]
fn reference_cli_through_our_relay_lite_04() {
    let version = "moq-lite-04";
    reference_cli_cell(version, "webtransport").run(|| reference_cli_through_our_relay(version, "http"));
}

#[test]
fn reference_cli_through_our_relay_lite_05() {
    let version = "moq-lite-05";
    reference_cli_cell(version, "webtransport").run(|| reference_cli_through_our_relay(version, "http"));
}

#[test]
fn reference_cli_through_our_relay_lite_06() {
    let version = "moq-lite-06";
    reference_cli_cell(version, "webtransport").run(|| reference_cli_through_our_relay(version, "http"));
}

/// qmux over WebSocket, on lite-04 so that only the transport is new.
#[test]
fn reference_cli_through_our_relay_websocket() {
    let version = "moq-lite-04";
    reference_cli_cell(version, "websocket").run(|| reference_cli_through_our_relay(version, "ws"));
}

/// This `moq publish` → reference relay → this `moq watch`, both forced to `version`: 3 groups
/// of 30 video and 50 audio frames, every one verified by the viewer.
fn our_cli_through_reference_relay(version: &'static str) -> Outcome {
    let _serial = serial();
    let (mut relay, url) = reference_relay();
    let groups = 3;
    let viewer = Viewer::new(&url, "matrix/synthetic")
        .summary()
        .groups(groups)
        .args(["--timeout", "20s", "--moq-version", version])
        .background();
    std::thread::sleep(Duration::from_millis(1000));
    let mut publisher =
        Publisher::new(&url, "matrix/synthetic").groups(groups).args(["--moq-version", version]).spawn();
    let out = viewer.finish(Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut notes = || {
        format!(
            "viewer exit {}, stderr: [{}]; {}; {}",
            out.status,
            one_line(&String::from_utf8_lossy(&out.stderr), 300),
            tail(&mut publisher, 3),
            tail(&mut relay, 3)
        )
    };
    let Some(summary) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        return Outcome::fail(format!("the viewer printed no summary; {}", notes()));
    };
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    let count = |track: &str| summary["tracks"][track]["frames_min_per_viewer"].as_u64().unwrap_or(0) as usize;
    let (video, audio) = (count("video"), count("audio"));
    let mut problems = Vec::new();
    if summary["ok"] != true {
        problems.push("summary ok=false".to_string());
    }
    for (track, per_group) in [("video", 30), ("audio", 50)] {
        let t = &summary["tracks"][track];
        if t["frames_min_per_viewer"] != groups * per_group {
            problems.push(format!("{track}: {} frames, expected {}", t["frames_min_per_viewer"], groups * per_group));
        }
        for field in ["first_group_max", "corrupt", "gaps"] {
            if t[field] != 0 {
                problems.push(format!("{track}: {field}={}", t[field]));
            }
        }
    }
    let result = if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; summary {summary}; {}", problems.join(", "), notes()))
    };
    Outcome { video, audio, result }
}

fn our_cli_cell(version: &'static str) -> Cell {
    Cell {
        publisher: "moq(this, publish)",
        relay: "moq-relay-0.17.10",
        subscriber: "moq(this, watch)",
        version,
        transport: "webtransport",
    }
}

/// The baseline of this direction: lite-04, which both sides speak today.
#[test]
fn our_cli_through_reference_relay_lite_04() {
    our_cli_cell("moq-lite-04").run(|| our_cli_through_reference_relay("moq-lite-04"));
}

#[test]
fn our_cli_through_reference_relay_lite_05() {
    our_cli_cell("moq-lite-05").run(|| our_cli_through_reference_relay("moq-lite-05"));
}

#[test]
fn our_cli_through_reference_relay_lite_06() {
    our_cli_cell("moq-lite-06").run(|| our_cli_through_reference_relay("moq-lite-06"));
}

/// The comparison itself: the clip equals itself, and equals itself replayed as fMP4 the way
/// the publishing cells replay it (per stream; ffmpeg may interleave differently), while a
/// stream missing its first frame, or with one packet changed, does not. Keeps the matrix from
/// passing on a comparison that cannot fail.
#[test]
fn packet_comparison_is_bit_exact() {
    let clip = media::clip();
    let source = media::packets(&clip).unwrap();
    assert_eq!((source.video.len(), source.audio.len()), (300, 470), "the clip's packet counts");
    assert_eq!(source.video.iter().filter(|p| p.key).count(), 10, "one keyframe per second");
    source.compare(&source).unwrap();

    let dir = scratch("self-check");
    let replayed = dir.join("replayed.mp4");
    // The replay args minus -re (no need to wait 10 s here).
    let args: Vec<String> = media::replay_args(&clip, &replayed).into_iter().filter(|a| a != "-re").collect();
    let out = run("ffmpeg", Command::new("ffmpeg").args(&args), Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    source.compare(&media::packets(&replayed).unwrap()).unwrap();

    let late = Packets { video: source.video[1..].to_vec(), audio: source.audio.clone() };
    assert!(source.compare(&late).is_err());
    let mut changed = source.clone();
    let flipped = if changed.audio[100].sha256.starts_with('0') { "1" } else { "0" };
    changed.audio[100].sha256.replace_range(0..1, flipped);
    assert!(source.compare(&changed).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
