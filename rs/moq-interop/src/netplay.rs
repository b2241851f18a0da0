//! Netplay sessions (docs/netplay.md): a relay serving them, the `moq netplay host` / `moq
//! netplay join` builders (their stdout and stderr kept apart, in files, to tell the one place a
//! join code may be shown from every other output), the relay's HTTP API, join codes, and the
//! documented telemetry to check scrapes and JSON log lines against: the metrics as parsed from
//! the doc's table ([`documented_metrics`], [`assert_documented_metrics`]) and the log lines
//! with their fields ([`LOG_LINES`], [`assert_fields`]).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http::{Request, Response};
use crate::{bin, Configure, Relay, RelayBuilder, Scrape, Spec};

/// The join codes' alphabet: no `0 O 1 I L`.
pub const ALPHABET: &str = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// What logs, spans and metrics may show of a secret (a join code in its display form
/// `ABCD-EFGH`, a token): `sha256:` and the first 12 hex digits of its digest.
pub fn secret_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A random well-formed join code (`ABCD-EFGH`) from the OS random source: what a guesser sends.
pub fn random_code() -> String {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("reading /dev/urandom");
    let letters: Vec<char> = ALPHABET.chars().collect();
    let code: String = bytes.iter().map(|b| letters[*b as usize % letters.len()]).collect();
    format!("{}-{}", &code[..4], &code[4..])
}

/// A relay serving netplay rooms (`--netplay`), its operator listener on, logging JSON lines
/// (`LOG_FORMAT=json`). Netplay is its only access control: `--auth-public-subscribe` names an
/// unrelated subtree only so that the kit adds no `--auth-public '**'`.
pub fn relay() -> RelayBuilder {
    Relay::builder().ops().env("LOG_FORMAT", "json").args(["--netplay", "--auth-public-subscribe", "not-netplay/**"])
}

/// A scratch directory for one test (audit log, the CLIs' output files); removed on drop unless
/// the test is failing, then kept for a look (its path is printed).
pub struct Scratch {
    pub dir: PathBuf,
}

static SCRATCHES: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    pub fn new() -> Self {
        let n = SCRATCHES.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("moq-netplay-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("netplay scratch directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `moq` CLI process whose stdout and stderr go to two files (read at any time, apart), killed
/// on drop.
pub struct Cli {
    pub name: String,
    child: Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Cli {
    /// Spawns `cmd` with its output in `dir/<file>.stdout` and `dir/<file>.stderr`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path, file: &str) -> Cli {
        let stdout_path = dir.join(format!("{file}.stdout"));
        let stderr_path = dir.join(format!("{file}.stderr"));
        let create = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(create(&stdout_path))
            .stderr(create(&stderr_path))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Cli { name: name.to_string(), child, stdout_path, stderr_path }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Both, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!("{} stdout:\n{}\n{} stderr:\n{}", self.name, self.stdout(), self.name, self.stderr())
    }

    /// Waits for a complete stdout line matching `pred`; panics with the output on timeout.
    pub fn wait_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            // Only lines already ended by a newline: the last one may be half written.
            let complete = out.rfind('\n').map_or("", |i| &out[..i]);
            if let Some(line) = complete.lines().find(|l| pred(l)) {
                return line.to_string();
            }
            if Instant::now() > deadline {
                panic!("{}: no matching stdout line within {timeout:?}\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status once it exits within `timeout`, else `None` (still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`Cli::wait_exit`], but not exiting in time fails the test with its output.
    pub fn exit_in_time(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => panic!("{} still running after {timeout:?}\n{}", self.name, self.output()),
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    /// The JSON log lines it wrote on stderr (`LOG_FORMAT=json`).
    pub fn log_lines(&self) -> Vec<Value> {
        json_lines(self.stderr().lines())
    }

    /// The last JSON object on stdout (a `--json` summary).
    pub fn summary(&self) -> Value {
        let out = self.stdout();
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary\n{}", self.output()));
        serde_json::from_str(line).unwrap()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moq netplay SUBCOMMAND` with `RUST_LOG=info LOG_FORMAT=json` (the client's log lines as JSON
/// on stderr) unless [`Configure::env`] says otherwise.
fn netplay_command(subcommand: &str, spec: &Spec) -> Command {
    let mut cmd = Command::new(bin("moq"));
    cmd.args(["netplay", subcommand]).env("RUST_LOG", "info").env("LOG_FORMAT", "json");
    spec.apply(&mut cmd);
    cmd
}

/// `moq netplay host --url URL`: creates a session, prints `JOIN CODE: ABCD-EFGH` (and with
/// [`Host::json`] the session as a JSON line) on stdout, publishes `host` until `--groups` are
/// done or SIGTERM, then ends the session.
pub struct Host {
    spec: Spec,
}

impl Configure for Host {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

impl Host {
    pub fn new(url: &str) -> Self {
        Self { spec: Spec::default() }.args(["--url", url])
    }

    /// `--groups N`: publish N groups, then end the session.
    pub fn groups(self, groups: u64) -> Self {
        self.args(["--groups", &groups.to_string()])
    }

    /// `--json`: the session (and later the payload totals) as JSON lines on stdout.
    pub fn json(self) -> Self {
        self.arg("--json")
    }

    /// `--metrics-listen 127.0.0.1:PORT`.
    pub fn metrics_listen(self, port: u16) -> Self {
        self.args(["--metrics-listen", &format!("127.0.0.1:{port}")])
    }

    pub fn command(self) -> Command {
        netplay_command("host", &self.spec)
    }

    /// Spawned with its output in `scratch` (`host.stdout`, `host.stderr`, or `file.*`).
    pub fn spawn(self, scratch: &Scratch, file: &str) -> Cli {
        Cli::spawn("moq netplay host", &mut self.command(), &scratch.dir, file)
    }
}

/// `moq netplay join CODE --url URL --participant-id ID`: joins, watches `host`, publishes
/// `p/ID`, leaves on exit.
pub struct Join {
    spec: Spec,
}

impl Configure for Join {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

impl Join {
    pub fn new(url: &str, code: &str, participant: &str) -> Self {
        Self { spec: Spec::default() }.args([code, "--url", url, "--participant-id", participant])
    }

    /// `--json --stats-interval 0s`: nothing on stdout but the watch summary.
    pub fn summary(self) -> Self {
        self.args(["--json", "--stats-interval", "0s"])
    }

    /// `--groups N`: succeed (and leave) once N complete groups of the host arrived.
    pub fn groups(self, groups: u64) -> Self {
        self.args(["--groups", &groups.to_string()])
    }

    /// `--metrics-listen 127.0.0.1:PORT`.
    pub fn metrics_listen(self, port: u16) -> Self {
        self.args(["--metrics-listen", &format!("127.0.0.1:{port}")])
    }

    pub fn command(self) -> Command {
        netplay_command("join", &self.spec)
    }

    pub fn spawn(self, scratch: &Scratch, file: &str) -> Cli {
        Cli::spawn("moq netplay join", &mut self.command(), &scratch.dir, file)
    }
}

/// The session a host created, from its stdout.
#[derive(Debug, Clone)]
pub struct HostSession {
    /// The raw join code (`ABCD-EFGH`).
    pub code: String,
    pub session_id: String,
    /// `netplay/<sessionId>`.
    pub path: String,
    /// The whole `--json` session line.
    pub json: Value,
}

impl HostSession {
    /// Waits for the host's `JOIN CODE:` line and its `--json` session line.
    pub fn wait(host: &Cli, timeout: Duration) -> HostSession {
        let line = host.wait_stdout(timeout, |l| l.starts_with("JOIN CODE: "));
        let code = line.trim_start_matches("JOIN CODE: ").trim().to_string();
        let json: Value =
            serde_json::from_str(&host.wait_stdout(timeout, |l| l.starts_with('{') && l.contains("\"hostBroadcast\"")))
                .unwrap();
        let session_id = json["sessionId"].as_str().expect("sessionId").to_string();
        let path = json["path"].as_str().expect("path").to_string();
        HostSession { code, session_id, path, json }
    }
}

/// The relay's netplay API at `base` (`http://127.0.0.1:PORT`).
pub struct Api {
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_string() }
    }

    /// The API of `relay` on 127.0.0.1.
    pub fn of(relay: &Relay) -> Self {
        Self::new(&format!("http://127.0.0.1:{}", relay.port))
    }

    /// The API of `relay` on [::1]: another client address, with its own rate-limit buckets.
    pub fn v6(relay: &Relay) -> Self {
        Self::new(&format!("http://[::1]:{}", relay.port))
    }

    fn send(request: Request) -> Response {
        request.send().unwrap_or_else(|e| panic!("netplay API request failed: {e}"))
    }

    /// `POST /api/netplay/sessions` with `body`.
    pub fn create(&self, body: &Value) -> Response {
        Self::send(Request::new("POST", &format!("{}/api/netplay/sessions", self.base)).json(body))
    }

    /// `POST /api/netplay/join`.
    pub fn join(&self, code: &str, participant: &str) -> Response {
        let body = serde_json::json!({"joinCode": code, "participantUserId": participant});
        Self::send(Request::new("POST", &format!("{}/api/netplay/join", self.base)).json(&body))
    }

    /// `DELETE /api/netplay/sessions/ID` with `Authorization: Bearer TOKEN`.
    pub fn delete(&self, id: &str, token: &str) -> Response {
        Self::send(Request::new("DELETE", &format!("{}/api/netplay/sessions/{id}", self.base)).bearer(token))
    }
}

/// A response's JSON body.
pub fn body(response: &Response) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("not a JSON answer ({e}): {response}"))
}

/// The JSON log lines (`LOG_FORMAT=json`) among `lines`: objects with a `message`.
pub fn json_lines<S: AsRef<str>>(lines: impl IntoIterator<Item = S>) -> Vec<Value> {
    lines
        .into_iter()
        .filter(|l| l.as_ref().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l.as_ref()).ok())
        .filter(|v| v.get("message").is_some())
        .collect()
}

/// The lines whose message is `message`.
pub fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

/// A field of a JSON log line: under `fields` (the relay's and the CLI's format), or at the top.
pub fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get("fields").and_then(|f| f.get(name)).or_else(|| line.get(name))
}

/// A log line of docs/netplay.md, "Telemetry": who writes it and its documented fields.
#[derive(Debug, Clone, Copy)]
pub struct LogLine {
    pub message: &'static str,
    pub client: bool,
    pub relay: bool,
    /// Fields every such line carries.
    pub fields: &'static [&'static str],
}

/// The log lines docs/netplay.md lists, with the fields every one of them carries. The rest are
/// checked where they apply: `netplay participant join` has `participantUserId` once the id is a
/// valid one, `sessionId` once a live room is named and `reason` on refusals; `netplay signaling
/// error` has `providerStatus` when an answer came.
pub const LOG_LINES: &[LogLine] = &[
    LogLine {
        message: "netplay session creation request sent",
        client: true,
        relay: false,
        fields: &["sessionId", "romId", "requestedTtlMinutes", "initiatorUserId"],
    },
    LogLine {
        message: "netplay session created",
        client: true,
        relay: true,
        fields: &["sessionId", "joinCode", "ttlMinutes", "signalingLatencyMs", "provider"],
    },
    LogLine { message: "netplay participant join", client: false, relay: true, fields: &["result"] },
    LogLine {
        message: "netplay participant left",
        client: false,
        relay: true,
        fields: &["sessionId", "participantUserId"],
    },
    LogLine { message: "netplay session creation refused", client: false, relay: true, fields: &["result"] },
    LogLine {
        message: "netplay session ended",
        client: false,
        relay: true,
        fields: &["sessionId", "reason", "activeParticipants", "moqSessions"],
    },
    LogLine { message: "netplay signaling error", client: true, relay: false, fields: &["errorCode", "retryCount"] },
    LogLine {
        message: "netplay cleanup sweep",
        client: false,
        relay: true,
        fields: &["expiredSessions", "processedAt", "durationMs"],
    },
];

/// The documented log line `message`.
pub fn log_line(message: &str) -> &'static LogLine {
    LOG_LINES.iter().find(|l| l.message == message).unwrap_or_else(|| panic!("{message:?} is not a documented line"))
}

/// Every documented field of its message is in `line` (under `fields`), with a non-null value.
pub fn assert_fields(line: &Value) {
    let message = line["message"].as_str().expect("a log line with a message");
    for name in log_line(message).fields {
        assert!(field(line, name).is_some_and(|v| !v.is_null()), "{message:?} without {name}: {line}");
    }
}

/// The repository's docs/netplay.md.
pub fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/netplay.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One row of the metrics table of docs/netplay.md.
#[derive(Debug, Clone, PartialEq)]
pub struct DocMetric {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// A histogram's bucket bounds as written (`1`, `0.5`, ...).
    pub buckets: Vec<String>,
    /// Label names, each with its documented values (empty: any value).
    pub labels: Vec<(String, Vec<String>)>,
}

/// The metrics table of docs/netplay.md ("Telemetry"), parsed.
pub fn documented_metrics() -> Vec<DocMetric> {
    let metrics: Vec<DocMetric> = doc()
        .lines()
        .filter(|l| l.starts_with("| `netplay_"))
        .map(|row| {
            let cells: Vec<&str> = row.trim().trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 3, "a metrics row with name, type and labels: {row}");
            let name = cells[0].trim_matches('`').to_string();
            let (kind, buckets) = match cells[1].split_once('(') {
                Some((kind, rest)) => (
                    kind.trim().to_string(),
                    rest.trim_end_matches(')').split(',').map(|b| b.trim().to_string()).collect(),
                ),
                None => (cells[1].to_string(), Vec::new()),
            };
            DocMetric { name, kind, buckets, labels: parse_labels(cells[2]) }
        })
        .collect();
    assert!(metrics.len() >= 10, "the metrics table of docs/netplay.md: {metrics:#?}");
    metrics
}

/// `` `provider`, `result` (`ok`, `invalid_request`) `` → [(provider, []), (result, [ok, invalid_request])];
/// `—` → no labels.
fn parse_labels(cell: &str) -> Vec<(String, Vec<String>)> {
    let mut labels = Vec::new();
    let (mut depth, mut item) = (0, String::new());
    for c in cell.chars().chain(std::iter::once(',')) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            let text = std::mem::take(&mut item);
            let text = text.trim();
            if text.is_empty() || !text.starts_with('`') {
                continue;
            }
            let (name, values) = match text.split_once('(') {
                Some((name, values)) => (
                    name,
                    values.trim_end_matches(')').split(',').map(|v| v.trim().trim_matches('`').to_string()).collect(),
                ),
                None => (text, Vec::new()),
            };
            labels.push((name.trim().trim_matches('`').to_string(), values));
        } else {
            item.push(c);
        }
    }
    labels
}

/// Every metric of docs/netplay.md's table is in `scrape` with exactly its documented label names
/// (plus `le` on buckets), every documented label value has a series (for histograms: every
/// documented value seen together with the others, e.g. `operation` create, join and delete),
/// and every histogram has a `_bucket` per documented bound and `+Inf`, `_sum` and `_count`.
/// Fails listing every gap.
pub fn assert_documented_metrics(scrape: &Scrape) {
    let mut missing = Vec::new();
    for metric in documented_metrics() {
        let names: BTreeSet<&str> = metric.labels.iter().map(|(n, _)| n.as_str()).collect();
        let series: Vec<&crate::Sample> = match metric.kind.as_str() {
            "histogram" => scrape.samples.iter().filter(|s| s.name == format!("{}_count", metric.name)).collect(),
            _ => scrape.samples.iter().filter(|s| s.name == metric.name).collect(),
        };
        if series.is_empty() {
            missing.push(format!("{} ({}): no series", metric.name, metric.kind));
            continue;
        }
        for s in &series {
            let got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            if got != names {
                missing.push(format!("{}: labels {got:?}, documented {names:?}", metric.name));
            }
        }
        for (label, values) in &metric.labels {
            for value in values {
                if !series.iter().any(|s| s.label(label) == Some(value)) {
                    missing.push(format!("{}{{{label}=\"{value}\"}}: no series", metric.name));
                }
            }
        }
        if metric.kind != "histogram" {
            continue;
        }
        for s in &series {
            let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bucket = format!("{}_bucket", metric.name);
            for bound in metric.buckets.iter().map(String::as_str).chain(["+Inf"]) {
                let want: f64 = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap() };
                let found = scrape.samples.iter().any(|b| {
                    b.matches(&bucket, &labels)
                        && b.labels.len() == labels.len() + 1
                        && b.label("le").and_then(|le| le.parse::<f64>().ok()) == Some(want)
                });
                if !found {
                    missing.push(format!("{bucket}{labels:?} le={bound}: no bucket"));
                }
            }
            // Buckets beyond the documented ones would be another histogram.
            let bounds = scrape
                .samples
                .iter()
                .filter(|b| b.matches(&bucket, &labels) && b.labels.len() == labels.len() + 1)
                .count();
            if bounds != metric.buckets.len() + 1 {
                missing.push(format!(
                    "{bucket}{labels:?}: {bounds} buckets, documented {} and +Inf",
                    metric.buckets.len()
                ));
            }
            if scrape.exact(&format!("{}_sum", metric.name), &labels).is_none() {
                missing.push(format!("{}_sum{labels:?}: missing", metric.name));
            }
        }
    }
    assert!(missing.is_empty(), "netplay metrics not as docs/netplay.md says:\n{}", missing.join("\n"));
}

/// The `netplay_*` samples of a scrape as text lines (buckets left out unless `buckets`), for the
/// record.
pub fn metrics_text(scrape: &Scrape, buckets: bool) -> String {
    scrape
        .samples
        .iter()
        .filter(|s| s.name.starts_with("netplay_") && (buckets || !s.name.ends_with("_bucket")))
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cells() {
        assert_eq!(parse_labels("—"), vec![]);
        assert_eq!(parse_labels("`provider`"), vec![("provider".to_string(), vec![])]);
        assert_eq!(
            parse_labels("`provider`, `result` (`ok`, `invalid_ttl`)"),
            vec![("provider".into(), vec![]), ("result".into(), vec!["ok".to_string(), "invalid_ttl".to_string()])]
        );
    }

    #[test]
    fn the_doc_table_parses() {
        let metrics = documented_metrics();
        let latency = metrics.iter().find(|m| m.name == "netplay_signaling_latency_ms").unwrap();
        assert_eq!(latency.kind, "histogram");
        assert_eq!(latency.buckets.first().map(String::as_str), Some("1"));
        assert_eq!(latency.labels[1], ("operation".to_string(), vec!["create".into(), "join".into(), "delete".into()]));
        let sweeps = metrics.iter().find(|m| m.name == "netplay_cleanup_sweeps_total").unwrap();
        assert!(sweeps.labels.is_empty() && sweeps.kind == "counter");
        for line in LOG_LINES {
            assert!(doc().contains(&format!("`{}`", line.message)), "{} is in docs/netplay.md", line.message);
        }
    }

    #[test]
    fn codes_and_hashes() {
        let code = random_code();
        assert_eq!(code.len(), 9);
        assert!(code.chars().all(|c| c == '-' || ALPHABET.contains(c)), "{code}");
        assert!(secret_hash("ABCD-EFGH").starts_with("sha256:") && secret_hash("ABCD-EFGH").len() == 19);
    }
}
