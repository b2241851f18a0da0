//! The `moq watch` command line: [`WatchArgs`], how much of each frame to [`Verify`], the
//! [`exit`] codes, and the `broadcast` label derived from the arguments.

use std::time::Duration;

use clap::Args;

use crate::connect::ConnectArgs;

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
    /// Do not reconnect when the session is lost (the relay went away): stop with exit code 1.
    /// By default a viewer reconnects with jittered exponential backoff (250 ms doubling to 5 s)
    /// and resumes at the live edge; a broadcast that ended is never reconnected to.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Give up reconnecting once an outage lasted this long (exit code 1).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_reconnect_time: Duration,
    /// Keep running (and serving metrics) this long after finishing.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Full,
    Header,
}

/// The `broadcast` label every client metric carries: the broadcast's path as the relay labels it
/// (the URL path joined with `--broadcast`), so client and relay series join on it.
pub fn broadcast_label(args: &WatchArgs) -> String {
    use moq_lite::path::{join, normalize};
    join(&normalize(args.connect.url.path()), &normalize(&args.broadcast))
}
