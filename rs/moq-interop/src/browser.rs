//! Real browsers: headless Chromium running the published browser clients (`@moq/net`,
//! `@moq/lite`) against a relay, one scenario per run of `rs/moq-interop/browser/run.mjs`.
//!
//! The page verifies the synthetic format of `moq publish` byte for byte (or publishes it, for
//! `moq watch` to verify) and the runner prints one JSON line: the library and its version, the
//! transport and moq version actually negotiated, and what was received. Chromium, node and the
//! npm packages come from `scripts/install-test-deps.sh`; missing is a failure, not a skip.
//!
//! ```no_run
//! # use moq_interop::*;
//! # let relay = Relay::start();
//! let result = Browser::subscribe(&relay.url(""), "demo/cam").library(Library::Lite).run();
//! assert_eq!(result["version"], "moq-lite-04");
//! ```

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::{Background, Configure, Spec};

/// The browser client a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// `@moq/net` (0.3.x): the current client; offers lite-05, 04, 03.
    Net,
    /// `@moq/lite` 0.2.2: the superseded client still on deployed pages; offers lite-04, 03.
    Lite,
}

impl Library {
    fn arg(self) -> &'static str {
        match self {
            Library::Net => "net",
            Library::Lite => "lite",
        }
    }
}

/// One scenario for `run.mjs`, built up like the other process builders ([`Configure`] adds raw
/// `run.mjs` arguments and environment).
pub struct Browser {
    spec: Spec,
    library: Library,
    duration: Duration,
    timeout: Duration,
}

impl Configure for Browser {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

/// `rs/moq-interop/browser`: the page sources, `run.mjs` and the npm lockfile.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

impl Browser {
    fn new(mode: &str, relay_url: &str, broadcast: &str) -> Self {
        let spec = Spec::default();
        Browser { spec, library: Library::Net, duration: Duration::from_secs(12), timeout: Duration::from_secs(15) }
            .args(["--mode", mode, "--relay", relay_url, "--broadcast", broadcast])
    }

    /// A page subscribing to `broadcast` (its `video` track unless [`Browser::track`]) through the
    /// relay at `relay_url` (`http://HOST:PORT/PATH`: the page pins the relay's certificate from
    /// `/certificate.sha256`, as the libraries do), verifying every frame for the
    /// [`Browser::duration`] after the first group arrives.
    pub fn subscribe(relay_url: &str, broadcast: &str) -> Self {
        Self::new("subscribe", relay_url, broadcast)
    }

    /// A page publishing `broadcast` with `@moq/net` in the synthetic format of `moq publish`
    /// (a catalog and one video track; see [`Browser::fps`], [`Browser::gop`]) for the
    /// [`Browser::duration`].
    pub fn publish(relay_url: &str, broadcast: &str) -> Self {
        Self::new("publish", relay_url, broadcast)
    }

    /// Which client library the page runs (default [`Library::Net`]).
    pub fn library(mut self, library: Library) -> Self {
        self.library = library;
        self
    }

    /// Hides `WebTransport` from the page before the library loads, as the libraries treat
    /// Safari: they fall back to WebSocket (qmux sub-protocols) on the same URL.
    pub fn websocket(self) -> Self {
        self.args(["--transport", "websocket"])
    }

    /// The track to subscribe to or publish (default `video`).
    pub fn track(self, track: &str) -> Self {
        self.args(["--track", track])
    }

    /// How long to receive after the first group, or to publish (default 12 s).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How long connecting, the catalog and the first group may each take (default 15 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Published video frames per second (default 30).
    pub fn fps(self, fps: u32) -> Self {
        self.args(["--fps", &fps.to_string()])
    }

    /// Published video frames per group (default 10).
    pub fn gop(self, gop: u32) -> Self {
        self.args(["--gop", &gop.to_string()])
    }

    /// Published video bitrate in bits per second (default 1,000,000).
    pub fn bitrate(self, bitrate: u64) -> Self {
        self.args(["--bitrate", &bitrate.to_string()])
    }

    /// `node run.mjs --library L --duration D --timeout T [args]`.
    pub fn command(mut self) -> Command {
        let dir = browser_dir();
        let mut cmd = Command::new(std::env::var_os("NODE").unwrap_or_else(|| "node".into()));
        cmd.current_dir(&dir).arg(dir.join("run.mjs")).args([
            "--library",
            self.library.arg(),
            "--duration",
            &secs(self.duration),
            "--timeout",
            &secs(self.timeout),
        ]);
        self.spec().apply(&mut cmd);
        cmd
    }

    /// Everything the run may take: Chromium's start, connecting, the scenario and closing.
    pub fn budget(&self) -> Duration {
        self.duration + self.timeout + Duration::from_secs(30)
    }

    /// Starts the scenario in the background; [`BrowserRun::result`] waits for its result.
    pub fn start(self) -> BrowserRun {
        let budget = self.budget();
        BrowserRun { child: Background::spawn("browser", &mut self.command()), budget }
    }

    /// Runs the scenario to completion and returns its JSON result; a failed scenario fails the
    /// test with the result and the page's console.
    pub fn run(self) -> serde_json::Value {
        self.start().result()
    }
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// A scenario running in the background (e.g. a publishing page while `moq watch` reads).
pub struct BrowserRun {
    child: Background,
    budget: Duration,
}

impl BrowserRun {
    /// Waits for the scenario to end and returns its JSON result; a failed scenario fails the test
    /// with the result and the page's console.
    pub fn result(self) -> serde_json::Value {
        browser_result(&self.child.finish_in_time(self.budget))
    }
}

/// The JSON line `run.mjs` printed. Panics, with the line and everything the page logged, unless
/// the run exited 0 with `"ok": true`.
pub fn browser_result(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let parsed = line.and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match parsed {
        Some(result) if out.status.success() && result["ok"] == true => {
            eprintln!("browser: {}", line.unwrap_or_default());
            result
        }
        _ => panic!(
            "the browser scenario failed ({}):\n{}\n{stderr}",
            out.status,
            line.map_or_else(|| format!("no JSON result; stdout:\n{stdout}"), str::to_string),
        ),
    }
}
