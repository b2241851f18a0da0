//! Helpers for end-to-end tests that run real processes: this relay, the `moq` CLI and the
//! reference peers installed by `scripts/install-test-deps.sh`.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// End-to-end tests share two cores; running them one at a time keeps timings meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of this workspace, built by `cargo build` before the tests run. `cargo test -p
/// moq-interop` does not rebuild other crates' binaries, so one older than a source it is built
/// from is refused: the tests would otherwise pass or fail on older code.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    for profile in ["debug", "release"] {
        let path = target.join(profile).join(name);
        if let Ok(built) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            if let Some(source) = changed_since(&target.join(profile).join(format!("{name}.d")), built) {
                panic!(
                    "{} is older than {source}: run `cargo build --workspace --bins` first (just test does)",
                    path.display()
                );
            }
            return path;
        }
    }
    panic!("{name} is not built: run `cargo build --workspace --bins` first (just test does)");
}

/// A source file listed in cargo's dep-info file `dep_info` (`binary: source source ...`) that
/// was modified after `built`.
fn changed_since(dep_info: &std::path::Path, built: std::time::SystemTime) -> Option<String> {
    let listed = std::fs::read_to_string(dep_info).ok()?;
    let (_, sources) = listed.lines().next()?.split_once(": ")?;
    sources
        .split_whitespace()
        .find(|source| std::fs::metadata(source).and_then(|m| m.modified()).is_ok_and(|changed| changed > built))
        .map(str::to_string)
}

/// A reference binary installed by scripts/install-test-deps.sh. Missing is a failure, not a skip.
pub fn reference(crate_name: &str, version: &str) -> PathBuf {
    let dir = std::env::var_os("MOQ_REF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/moq-ref"));
    let path = dir.join(format!("{crate_name}-{version}/bin/{crate_name}"));
    assert!(path.exists(), "{} missing: run scripts/install-test-deps.sh (just test does)", path.display());
    path
}

/// A port free on TCP and UDP, on both loopbacks.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let ok = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok();
        if ok {
            return port;
        }
    }
    panic!("no free port");
}

/// A child process killed on drop, with its output collected line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc { name: name.to_string(), child, lines, seen: Vec::new() }
    }

    /// Waits for a line matching `pred`, returning it; panics with the output so far on timeout.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("{}: no matching line within {timeout:?}; output:\n{}", self.name, self.seen.join("\n"))
                }
            }
        }
    }

    /// Lines printed so far (non-blocking).
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this relay on `port` (UDP QUIC/WebTransport and TCP HTTP, both loopbacks) and waits
/// until it is ready.
pub fn start_relay(port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("moq-relay"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--listen", &format!("[::1]:{port}")])
        .args(["--tls-generate", "localhost,127.0.0.1,::1"])
        // No ops listener unless the test asks for one.
        .args(if extra.contains(&"--ops-listen") { &[][..] } else { &["--ops-listen", "off"][..] })
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT");
    let mut relay = Proc::spawn("moq-relay", &mut cmd);
    relay.wait_line(Duration::from_secs(20), |l| l.contains("relay ready"));
    relay
}

/// A child whose output is read when it ends. Dropped before that (a failing test), it is killed,
/// so no process outlives its test.
pub struct Background {
    name: String,
    child: Option<Child>,
}

impl Background {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self { name: name.to_string(), child: Some(child) }
    }

    /// Waits up to `timeout` for the child to exit, killing it after that; returns its output
    /// and whether it had to be killed.
    fn wait(mut self, timeout: Duration) -> (Output, bool) {
        let mut child = self.child.take().expect("child present until waited");
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (child.wait_with_output().unwrap(), timed_out)
    }

    /// The child's output once it exits, or after `timeout` (then killed).
    pub fn finish(self, timeout: Duration) -> Output {
        self.wait(timeout).0
    }

    /// Like [`Background::finish`], but a timeout fails the test with everything it printed.
    pub fn finish_in_time(self, timeout: Duration) -> Output {
        let name = self.name.clone();
        let (out, timed_out) = self.wait(timeout);
        assert!(
            !timed_out,
            "{name} timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion; failing the test if it takes longer than `timeout`.
pub fn run(name: &str, cmd: &mut Command, timeout: Duration) -> Output {
    Background::spawn(name, cmd).finish_in_time(timeout)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses the JSON summary `moq watch --json` prints as its last stdout line.
pub fn watch_summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("no JSON summary; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(line).unwrap()
}
