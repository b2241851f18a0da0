//! Processes: the workspace's binaries and the reference peers, children killed on drop, and
//! the serial lock, free ports and polling every end-to-end test uses.

use std::ffi::{OsStr, OsString};
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

/// Arguments and environment changes collected by a builder, applied after the builder's own.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    args: Vec<OsString>,
    /// In order: `Some` sets a variable, `None` removes it; a later change wins.
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Spec {
    /// Appends the arguments to `cmd` and applies the environment changes in order.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Whether `arg` is one of the arguments.
    pub fn has_arg(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// Whether any argument starts with `prefix` (`--auth` for every access flag).
    pub fn has_arg_prefix(&self, prefix: &str) -> bool {
        self.args.iter().any(|a| a.to_str().is_some_and(|a| a.starts_with(prefix)))
    }
}

/// Extra arguments and environment for the kit's process builders ([`crate::RelayBuilder`],
/// [`crate::Publisher`], [`crate::Viewer`]).
pub trait Configure: Sized {
    fn spec(&mut self) -> &mut Spec;

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.spec().args.push(arg.as_ref().to_owned());
        self
    }

    fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.spec().args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.spec().envs.push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        vars.into_iter().fold(self, |builder, (key, value)| builder.env(key, value))
    }

    fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.spec().envs.push((key.as_ref().to_owned(), None));
        self
    }
}
