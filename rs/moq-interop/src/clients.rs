//! The `moq` CLI: `moq publish` and `moq watch` builders and their `--json` summaries.

use std::process::{Command, Output};
use std::time::Duration;

use crate::{bin, Background, Configure, Proc, Spec};

/// A `moq` subcommand built up by [`Publisher`] or [`Viewer`]: spawned as a [`Proc`] (output
/// read line by line), as a [`Background`] child (output read when it ends) or run to completion.
pub trait Client: Configure {
    /// `publish` or `watch`.
    const SUBCOMMAND: &'static str;

    fn from_spec(spec: Spec) -> Self;

    /// `moq SUBCOMMAND --url URL --broadcast BROADCAST`.
    fn new(url: &str, broadcast: &str) -> Self {
        Self::from_spec(Spec::default()).args(["--url", url, "--broadcast", broadcast])
    }

    /// `--groups N`: publish N groups of every track, or watch until N complete groups; then exit.
    fn groups(self, groups: u64) -> Self {
        self.args(["--groups", &groups.to_string()])
    }

    /// `--json`: print a JSON summary ([`publish_summary`], [`watch_summary`]) as the last stdout
    /// line.
    fn json(self) -> Self {
        self.arg("--json")
    }

    /// `moq SUBCOMMAND --url URL --broadcast BROADCAST [options]`, with the environment changes.
    fn command(mut self) -> Command {
        let mut cmd = Command::new(bin("moq"));
        cmd.arg(Self::SUBCOMMAND);
        self.spec().apply(&mut cmd);
        cmd
    }

    fn spawn(self) -> Proc {
        Proc::spawn(&format!("moq {}", Self::SUBCOMMAND), &mut self.command())
    }

    fn background(self) -> Background {
        Background::spawn(&format!("moq {}", Self::SUBCOMMAND), &mut self.command())
    }

    /// Runs to completion; taking longer than `timeout` fails the test (see [`crate::run`]).
    fn run(self, timeout: Duration) -> Output {
        self.background().finish_in_time(timeout)
    }
}

/// `moq publish --url URL --broadcast BROADCAST` ([`Client::new`]): a synthetic broadcast, live
/// until stopped unless [`Client::groups`] limits it.
pub struct Publisher {
    spec: Spec,
}

impl Configure for Publisher {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

impl Client for Publisher {
    const SUBCOMMAND: &'static str = "publish";

    fn from_spec(spec: Spec) -> Self {
        Self { spec }
    }
}

/// `moq watch --url URL --broadcast BROADCAST` ([`Client::new`]): one or more viewers verifying
/// every frame.
pub struct Viewer {
    spec: Spec,
}

impl Viewer {
    /// `--viewers N`: N concurrent viewers, each its own session.
    pub fn viewers(self, viewers: usize) -> Self {
        self.args(["--viewers", &viewers.to_string()])
    }

    /// `--json --stats-interval 0s`: nothing on stdout but the JSON summary ([`watch_summary`]).
    pub fn summary(self) -> Self {
        self.json().stats_interval("0s")
    }

    /// `--stats-interval D` (`"0s"`: no periodic statistics).
    pub fn stats_interval(self, interval: &str) -> Self {
        self.args(["--stats-interval", interval])
    }

    /// `--metrics-listen 127.0.0.1:PORT`: serve the player's Prometheus metrics there.
    pub fn metrics_listen(self, port: u16) -> Self {
        self.args(["--metrics-listen", &format!("127.0.0.1:{port}")])
    }
}

impl Configure for Viewer {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

impl Client for Viewer {
    const SUBCOMMAND: &'static str = "watch";

    fn from_spec(spec: Spec) -> Self {
        Self { spec }
    }
}

/// Parses the JSON summary `moq watch --json` prints as its last stdout line.
pub fn watch_summary(out: &Output) -> serde_json::Value {
    json_summary(out)
}

/// Parses the JSON summary `moq publish --json` prints as its last stdout line.
pub fn publish_summary(out: &Output) -> serde_json::Value {
    json_summary(out)
}

fn json_summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("no JSON summary; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(line).unwrap()
}
