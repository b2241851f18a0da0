//! `moq netplay host` / `moq netplay join CODE`: netplay sessions on the relay (docs/netplay.md).
//!
//! - host: creates a session (its id pre-generated, so the first log line names it), prints the
//!   join code on stdout, publishes the synthetic stream as `host` under `netplay/<id>` with the
//!   host token, and ends the session (DELETE) on Ctrl-C / SIGTERM or when `--groups` are done;
//! - join: joins with the code, watches `host` (verifying every frame, as `moq watch` does) and
//!   publishes a small input track as `p/<participant>`, then leaves (DELETE) on exit.
//!
//! - [`signaling`]: the HTTP client of the relay's API, with retries;
//! - [`telemetry`]: the client's log lines, spans and metrics.

pub mod signaling;
pub mod telemetry;

use std::time::Duration;

use clap::{Args, Subcommand};
use url::Url;

use crate::connect::ConnectArgs;
use crate::publish::{self, ClockShape, Publication, Shape, StreamArgs};
use crate::watch::{self, WatchArgs};
use signaling::{CreateRequest, Failure, JoinRequest, RetryPolicy, Secret, Signaling};

/// Exit codes beyond `moq watch`'s ([`crate::watch::exit`]).
pub mod exit {
    /// The relay refused the request for good (unknown or expired code, full, duplicate, invalid).
    pub const REFUSED: u8 = 6;
    /// Interrupted before the session was set up.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Args, Debug)]
pub struct NetplayArgs {
    #[command(subcommand)]
    pub command: NetplayCommand,
}

#[derive(Subcommand, Debug)]
pub enum NetplayCommand {
    /// Create a session, print its join code, publish the host's stream until Ctrl-C or
    /// `--groups`, then end the session.
    Host(HostArgs),
    /// Join a session by its code: watch the host's stream, publish an input track, leave on exit.
    Join(JoinArgs),
}

/// How to reach the relay's signaling API.
#[derive(Args, Debug, Clone)]
pub struct SignalingArgs {
    /// The relay's HTTP API (default: the relay behind --url, same host and port, at its root;
    /// http:// for http:// and ws:// URLs, https:// for https://, wss:// and moqt://).
    #[arg(long)]
    pub api_url: Option<Url>,
    /// Retries of a signaling call after a connection failure, a 5xx or a 429 (jittered
    /// exponential backoff from 250 ms up to 5 s); other refusals are final.
    #[arg(long, default_value_t = 3)]
    pub signaling_retries: u32,
    /// Bound of one signaling request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub signaling_timeout: Duration,
}

impl SignalingArgs {
    fn client(&self, connect: &ConnectArgs) -> anyhow::Result<Signaling> {
        let base = Signaling::base_url(&connect.url, self.api_url.as_ref())?;
        Signaling::new(base, connect, RetryPolicy::new(self.signaling_retries), self.signaling_timeout)
    }
}

#[derive(Args, Debug)]
pub struct HostArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub signaling: SignalingArgs,
    /// Session lifetime in minutes (default: the relay's `--netplay-default-ttl-minutes`).
    #[arg(long)]
    pub ttl_minutes: Option<u32>,
    /// What is played (at most 64 characters of `[A-Za-z0-9._-]`).
    #[arg(long)]
    pub rom_id: Option<String>,
    /// Who creates the session (at most 64 characters of `[A-Za-z0-9._-]`).
    #[arg(long)]
    pub initiator_user_id: Option<String>,
    /// The session id to ask for (a UUID; default: a fresh random one).
    #[arg(long, value_parser = parse_uuid)]
    pub session_id: Option<String>,
    /// Serve the netplay signaling metrics in Prometheus text format on this address.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

#[derive(Args, Debug)]
// The watched broadcast is always the session's `host`.
#[command(mut_arg("broadcast", |a| a.required(false).hide(true).default_value("host")))]
pub struct JoinArgs {
    /// The join code the host got (`ABCD-EFGH`; case and the dash do not matter).
    #[arg(value_parser = parse_join_code)]
    pub code: Secret,
    /// This participant's id in the session (1-64 characters of `[A-Za-z0-9_-]`, not `host`); its
    /// input track is published as `p/<id>`.
    #[arg(long)]
    pub participant_id: String,
    /// One input frame this often.
    #[arg(long, default_value = "16ms", value_parser = humantime::parse_duration)]
    pub input_interval: Duration,
    /// Bytes per input frame (at least the 24-byte header of the synthetic format).
    #[arg(long, default_value_t = 32)]
    pub input_frame_bytes: usize,
    /// Input frames per group.
    #[arg(long, default_value_t = 60)]
    pub input_group_frames: u32,
    #[command(flatten)]
    pub signaling: SignalingArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// A UUID in its text form (any version; the relay checks the rest).
pub fn parse_uuid(s: &str) -> Result<String, String> {
    let ok = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    match ok {
        true => Ok(s.to_ascii_lowercase()),
        false => Err("not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)".into()),
    }
}

/// A fresh random (version 4) UUID.
pub fn new_session_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The join code as the relay shows it (`ABCD-EFGH`) when it has that shape (in any case, with
/// or without the dash); otherwise as typed, for the relay to judge.
pub fn normalize_join_code(code: &str) -> String {
    let compact: String = code.trim().chars().filter(|c| *c != '-').collect::<String>().to_ascii_uppercase();
    if compact.len() == 8 && compact.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("{}-{}", &compact[..4], &compact[4..])
    } else {
        code.trim().to_string()
    }
}

fn parse_join_code(s: &str) -> Result<Secret, String> {
    match normalize_join_code(s) {
        code if code.is_empty() => Err("empty join code".into()),
        code => Ok(Secret::new(code)),
    }
}

/// The MoQ URL of a session: the relay behind `url` at `/<path>` (`netplay/<id>`), with the
/// token as `?jwt=`.
pub fn session_url(url: &Url, path: &str, token: &Secret) -> Url {
    let mut url = url.clone();
    url.set_path(&format!("/{}", moq_lite::path::normalize(path)));
    url.query_pairs_mut().clear().append_pair("jwt", token.expose());
    url
}

/// Ctrl-C or SIGTERM, seen by every clone.
#[derive(Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    fn install() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            #[cfg(unix)]
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate => {}
            }
            let _ = tx.send(true);
            // Keep the sender: receivers must not mistake its drop for a signal.
            std::future::pending::<()>().await;
        });
        Self(rx)
    }

    async fn wait(mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a netplay subcommand; its exit code.
pub async fn run(args: NetplayArgs, telemetry: &mut moq_telemetry::Guard) -> u8 {
    let shutdown = Shutdown::install();
    match args.command {
        NetplayCommand::Host(args) => {
            if let Err(e) = telemetry.install_metrics(args.metrics_listen, &[crate::catalog::netplay_catalog()], &[]) {
                eprintln!("moq netplay host: metrics: {e:#}");
                return 2;
            }
            match host(args, shutdown).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("moq netplay host: {e:#}");
                    watch::exit::CONNECT
                }
            }
        }
        NetplayCommand::Join(args) => {
            let catalogs = [crate::catalog::catalog(), crate::catalog::netplay_catalog()];
            if let Err(e) = telemetry.install_metrics(args.watch.metrics_listen, &catalogs, &[]) {
                eprintln!("moq netplay join: metrics: {e:#}");
                return 2;
            }
            match join(args, shutdown).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("moq netplay join: {e:#}");
                    watch::exit::CONNECT
                }
            }
        }
    }
}

/// The exit code of a signaling failure.
fn failure_code(failure: &Failure) -> u8 {
    match failure.retryable() {
        true => watch::exit::CONNECT,
        false => exit::REFUSED,
    }
}

async fn host(args: HostArgs, shutdown: Shutdown) -> anyhow::Result<u8> {
    let label = "moq netplay host";
    let shape = Shape::media(&args.stream)?;
    let api = args.signaling.client(&args.connect)?;
    let request = CreateRequest {
        session_id: Some(args.session_id.clone().unwrap_or_else(new_session_id)),
        ttl_minutes: args.ttl_minutes,
        rom_id: args.rom_id.clone(),
        initiator_user_id: args.initiator_user_id.clone(),
    };
    let created = tokio::select! {
        created = api.create(&request) => created,
        _ = shutdown.clone().wait() => {
            eprintln!("{label}: interrupted before the session was created");
            return Ok(exit::INTERRUPTED);
        }
    };
    let session = match created {
        Ok(created) => created.session,
        Err(failure) => {
            eprintln!("{label}: creating the session failed: {failure}");
            return Ok(failure_code(&failure));
        }
    };
    // The one place the raw code is shown: stdout, for the user to pass on.
    println!("JOIN CODE: {}", session.join_code.expose());
    if args.stream.json {
        let line = serde_json::json!({
            "sessionId": session.session_id,
            "joinCode": session.join_code.expose(),
            "ttlMinutes": session.ttl_minutes,
            "expiresAt": session.expires_at,
            "path": session.path,
            "hostBroadcast": session.host_broadcast,
            "provider": session.provider,
        });
        println!("{line}");
    }
    eprintln!("{label}: session {} created, expires at {}", session.session_id, session.expires_at);

    let mut connect = args.connect.clone();
    connect.url = session_url(&args.connect.url, &session.path, &session.host_token);
    let publication = Publication {
        connect,
        broadcast: "host".into(),
        shape,
        groups: args.stream.groups,
        max_retries: args.stream.max_retries,
        label,
    };
    let published = publish::publish(&publication, shutdown.clone().wait()).await;
    let mut code = 0;
    let published = match published {
        Ok(published) => {
            publish::report(&published, label, args.stream.json);
            // Viewers get the last group before the session ends.
            tokio::time::sleep(args.stream.linger).await;
            Some(published)
        }
        Err(e) => {
            eprintln!("{label}: {e:#}");
            code = watch::exit::CONNECT;
            None
        }
    };
    // The host leaving ends the session, while its own MoQ session is still open: the relay then
    // closes every member's sessions. Closing ours first would end the host's stream, and the
    // participants, seeing it end, would race to leave before the session ended.
    if let Err(failure) = api.delete(&session.session_id, &session.host_token).await {
        eprintln!("{label}: ending the session failed: {failure}");
        code = code.max(watch::exit::CONNECT);
    } else {
        eprintln!("{label}: session {} ended", session.session_id);
    }
    if let Some(published) = published {
        published.close(Duration::ZERO).await;
    }
    Ok(code)
}

/// The synthetic input track of a participant: one small frame every `interval`.
pub fn input_shape(interval: Duration, frame_bytes: usize, group_frames: u32) -> anyhow::Result<Shape> {
    anyhow::ensure!(!interval.is_zero(), "--input-interval must be positive");
    anyhow::ensure!(group_frames > 0, "--input-group-frames must be positive");
    let fps = 1.0 / interval.as_secs_f64();
    let bytes = frame_bytes.max(crate::media::HEADER_SIZE);
    Ok(Shape {
        clocks: vec![ClockShape {
            name: "input".into(),
            kind: "input".into(),
            fps,
            gop: group_frames,
            key_frames: false,
            priority: 1,
            tracks: vec![("input".into(), (bytes as f64 * 8.0 * fps).ceil() as u64)],
        }],
    })
}

/// Reconnection attempts of the input publisher.
const INPUT_MAX_RETRIES: u32 = 3;

async fn join(args: JoinArgs, shutdown: Shutdown) -> anyhow::Result<u8> {
    let label = "moq netplay join";
    let shape = input_shape(args.input_interval, args.input_frame_bytes, args.input_group_frames)?;
    let api = args.signaling.client(&args.watch.connect)?;
    let request = JoinRequest { join_code: args.code.clone(), participant_user_id: args.participant_id.clone() };
    let joined = tokio::select! {
        joined = api.join(&request) => joined,
        _ = shutdown.clone().wait() => {
            eprintln!("{label}: interrupted before joining");
            return Ok(exit::INTERRUPTED);
        }
    };
    let joined = match joined {
        Ok(joined) => joined,
        Err(failure) => {
            match failure.retryable() {
                true => eprintln!("{label}: joining failed: {failure}"),
                false => eprintln!("{label}: join refused: {failure}"),
            }
            return Ok(failure_code(&failure));
        }
    };
    eprintln!("{label}: joined session {} as {}", joined.session_id, args.participant_id);

    let url = session_url(&args.watch.connect.url, &joined.path, &joined.participant_token);
    let mut connect = args.watch.connect.clone();
    connect.url = url;
    let mut watch_args = args.watch.clone();
    watch_args.connect = connect.clone();
    watch_args.broadcast = "host".into();
    // The relay closing the watch's session is how a room ends: no reconnecting to it.
    watch_args.no_reconnect = true;
    // The metrics stay up after the leave instead (its latency is one of them).
    let linger = std::mem::take(&mut watch_args.linger);

    let publication = Publication {
        connect,
        broadcast: format!("p/{}", args.participant_id),
        shape,
        groups: None,
        max_retries: INPUT_MAX_RETRIES,
        label: "moq netplay join (input)",
    };
    let (stop_input, input_stopped) = tokio::sync::watch::channel(false);
    let input = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let stop = async {
                let mut stopped = input_stopped;
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            };
            let published = publish::publish(&publication, stop).await?;
            published.close(Duration::ZERO).await;
            anyhow::Ok(())
        }
    });

    let watched = watch::run_until(watch_args, shutdown.wait()).await;
    let _ = stop_input.send(true);
    let input = match input.await {
        Ok(result) => result,
        Err(e) => Err(e.into()),
    };
    let left = api.delete(&joined.session_id, &joined.participant_token).await;
    // A session that is gone ended while we watched (the host left, or it expired): the relay
    // closed our MoQ sessions, which is how a netplay session ends, not a failure of ours.
    let ended = matches!(left, Err(Failure::Status { status: 401 | 404, .. }));
    let mut code = match watched {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{label}: {e:#}");
            watch::exit::CONNECT
        }
    };
    match left {
        Ok(()) => eprintln!("{label}: left session {}", joined.session_id),
        Err(_) if ended => {
            eprintln!("{label}: session {} ended (the host left, or it expired)", joined.session_id);
            // Without `--groups` nothing more was asked for than watching until the end.
            if code == watch::exit::CONNECT && args.watch.groups.is_none() {
                code = 0;
            }
        }
        Err(failure) => {
            eprintln!("{label}: leaving the session failed: {failure}");
            code = code.max(watch::exit::CONNECT);
        }
    }
    if let Err(e) = input {
        eprintln!("{label}: input track: {e:#}");
        if !ended {
            code = code.max(watch::exit::CONNECT);
        }
    }
    tokio::time::sleep(linger).await;
    Ok(code)
}

#[cfg(test)]
mod tests;
