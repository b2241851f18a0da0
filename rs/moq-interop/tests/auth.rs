//! Signed-token access control, end to end, against the reference relay's decisions.
//!
//! - `decision_matrix`: one row per (token, dialed path, publish|subscribe, broadcast), each
//!   decided by real media: a publish row's token publishes and an all-access viewer watches; a
//!   subscribe row's token watches what an all-access publisher publishes. Accepted means the
//!   viewer received frames. Columns: this relay over WebTransport, WebSocket and raw QUIC
//!   (lite-05, the token in the SETUP Path's query), and the reference relay 0.17.10 consulting
//!   the reference auth server (`moq auth serve`) over the same three (its WebSocket column only
//!   when the installed reference serves WebSocket: `install-test-deps.sh` builds it without its
//!   `websocket` feature today). Every cell must equal the row's expected decision, and this
//!   relay's cells must equal the reference's over the same transport (else over WebTransport).
//!   Then no token (nor its signature alone) may appear in anything this relay printed or wrote
//!   to its `--audit-log`, and every row's dialed path must (the lines searched are the right
//!   ones).
//! - `reference_cli_publishes_with_a_token`: the reference `moq` 0.14.10 publishing the cached
//!   clip to this relay with `?jwt=` (WebTransport, and raw QUIC lite-06 with the token in the
//!   SETUP Path), the reference `moq export` with an all-access token receiving every packet
//!   bit-exact (this repo's `moq watch` reads only its own synthetic broadcasts); a token for
//!   another path gets nothing through. The reference relay runs the same cases as a baseline.
//! - `crafted_tokens_as_the_reference_verifies_them`: the hand-made tokens are what they claim
//!   (the reference verifier accepts the control and refuses each defect for its own reason).
//!
//! Keys and most tokens come from the reference `moq auth` tools (see `moq_interop::auth`).
//! Run with `-- --nocapture` to see the matrix.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use moq_interop::auth::{now, payload, reference_moq, signature, tamper};
use moq_interop::media;
use moq_interop::*;
use serde_json::{json, Value};

/// The public rule both relays are configured with: anonymous publish and subscribe under
/// `anon/`.
const PUBLIC: &str = "anon/**";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Publish,
    Subscribe,
}

/// One decision: `token` (none: anonymous) dials `path` and publishes or watches `broadcast`
/// (relative to `path`).
struct Row {
    name: String,
    token: Option<String>,
    path: String,
    action: Action,
    broadcast: String,
    expect: bool,
}

impl Row {
    /// The broadcast's path in the relay (what the all-access side names).
    fn full(&self) -> String {
        let path = self.path.trim_matches('/');
        if path.is_empty() {
            self.broadcast.clone()
        } else {
            format!("{path}/{}", self.broadcast)
        }
    }
}

/// The rows being written. Each row has a namespace of its own (`tNN`, or `anon/tNN`), so all of
/// a column's rows run at once without seeing each other's broadcasts.
#[derive(Default)]
struct Rows(Vec<Row>);

impl Rows {
    /// A row in its namespace `r`: the token `token(r)` dials `/{r}{dial}` and publishes or
    /// watches `broadcast` there.
    fn at(
        &mut self,
        name: &str,
        token: impl FnOnce(&str) -> Option<String>,
        dial: &str,
        action: Action,
        broadcast: &str,
        expect: bool,
    ) {
        let r = self.ns();
        self.push(name, token(&r), format!("/{r}{dial}"), action, broadcast, expect);
    }

    /// A row on the public path: `token` dials `/anon` and publishes or watches the row's
    /// namespace there.
    fn public(&mut self, name: &str, token: Option<String>, action: Action, expect: bool) {
        let r = self.ns();
        self.push(name, token, "/anon".into(), action, &r, expect);
    }

    /// The next row's namespace.
    fn ns(&self) -> String {
        format!("t{:02}", self.0.len() + 1)
    }

    fn push(&mut self, name: &str, token: Option<String>, path: String, action: Action, broadcast: &str, expect: bool) {
        self.0.push(Row { name: name.to_string(), token, path, action, broadcast: broadcast.to_string(), expect });
    }
}

/// The rows.
fn rows(lab: &TokenLab) -> Vec<Row> {
    use Action::{Publish, Subscribe};
    let hour_ago = now() - 3600;
    let in_an_hour = now() + 3600;
    let mut t = Rows::default();

    // Tokens: signed with `key` (`k1` the trusted one), tampered after signing with k1, or crafted
    // by hand.
    let sign = |key: &Path, grant: Grant| Some(lab.sign(key, &grant));
    let k1 = |grant: Grant| sign(&lab.k1, grant);
    let tampered = |grant: Grant| Some(tamper(&lab.sign(&lab.k1, &grant)));
    let craft = |claims: Value| Some(lab.craft(&claims));
    // Token makers, given the row's namespace `r` (the root): k1 granting publishing or watching
    // of `patterns`.
    let put = |patterns: &'static [&'static str]| move |r: &str| k1(Grant::new(r).publish(patterns));
    let get = |patterns: &'static [&'static str]| move |r: &str| k1(Grant::new(r).subscribe(patterns));
    let pub_bbb = |r: &str| Grant::new(r).publish(["bbb/**"]);

    // Publishing: the grant's pattern kinds.
    t.at("pub subtree bbb/** -> bbb/x", put(&["bbb/**"]), "", Publish, "bbb/x", true);
    t.at("pub subtree bbb/** -> bbb", put(&["bbb/**"]), "", Publish, "bbb", true);
    t.at("pub subtree bbb/** -> ccc (wrong path)", put(&["bbb/**"]), "", Publish, "ccc", false);
    t.at("pub exact bbb -> bbb", put(&["bbb"]), "", Publish, "bbb", true);
    t.at("pub exact bbb -> bbb/x", put(&["bbb"]), "", Publish, "bbb/x", false);
    t.at("pub one-segment bbb/* -> bbb/x", put(&["bbb/*"]), "", Publish, "bbb/x", true);
    t.at("pub one-segment bbb/* -> bbb/x/y", put(&["bbb/*"]), "", Publish, "bbb/x/y", false);
    t.at("pub everything ** -> x/y", put(&["**"]), "", Publish, "x/y", true);
    t.at("pub subscribe-only token", get(&["**"]), "", Publish, "bbb", false);

    // Publishing: validity.
    t.at("pub expired", |r| k1(pub_bbb(r).expires(hour_ago)), "", Publish, "bbb/x", false);
    t.at("pub exp in an hour", |r| k1(pub_bbb(r).expires(in_an_hour)), "", Publish, "bbb/x", true);
    // Crafted: `{"root": r, "put": ["bbb"]}` and then these claims.
    for (name, more, expect) in [
        ("pub not yet valid (nbf +1h, crafted)", json!({ "nbf": in_an_hour }), false),
        ("pub crafted control (nbf -1h)", json!({ "nbf": hour_ago, "iat": hour_ago, "exp": in_an_hour }), true),
        ("pub crafted iss/sub/jti (ignored)", json!({ "iss": "lab", "sub": "alice", "jti": "1" }), true),
        ("pub unknown claim admin:true", json!({ "admin": true }), false),
        ("pub mixed put + publish", json!({ "publish": ["bbb/**"] }), false),
    ] {
        let claims = |r: &str| {
            let mut claims = json!({ "root": r, "put": ["bbb"] });
            claims.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
            claims
        };
        t.at(name, |r| craft(claims(r)), "", Publish, "bbb/x", expect);
    }
    t.at("pub alg none", |r| Some(lab.unsigned(&json!({ "root": r, "put": ["bbb"] }))), "", Publish, "bbb/x", false);
    t.at("pub tampered (same claims, old signature)", |r| tampered(pub_bbb(r)), "", Publish, "bbb/x", false);
    t.at("pub wrong key (kid k1, other secret)", |r| sign(&lab.impostor, pub_bbb(r)), "", Publish, "bbb/x", false);
    t.at("pub key k2 not trusted", |r| sign(&lab.k2, pub_bbb(r)), "", Publish, "bbb/x", false);
    t.at("pub unknown kid k9", |r| sign(&lab.k9, pub_bbb(r)), "", Publish, "bbb/x", false);
    t.at("pub ES256 (public half trusted)", |r| sign(&lab.es256, pub_bbb(r)), "", Publish, "bbb/x", true);

    // Publishing: legacy prefixes, hand-written in their string form.
    let legacy = |r: &str| craft(json!({ "root": r, "put": "bbb", "get": ["bbb"] }));
    t.at("pub legacy put:\"bbb\" -> bbb/x", legacy, "", Publish, "bbb/x", true);
    t.at("pub legacy put:\"bbb\" -> ccc", legacy, "", Publish, "ccc", false);

    // Publishing: the dialed path against the token's root.
    t.at("pub root mismatch", put(&["**"]), "-other", Publish, "x", false);
    t.at("pub dial deeper than root", put(&["bbb/**"]), "/bbb", Publish, "x", true);
    t.at("pub dial deeper, outside grant", put(&["bbb/**"]), "/ccc", Publish, "x", false);
    let above = |r: &str| k1(Grant::new(&format!("{r}/bbb")).publish(["**"]));
    t.at("pub dial above root", above, "", Publish, "bbb/x", true);
    t.at("pub dial above root, outside", above, "", Publish, "ccc", false);

    // Publishing: anonymous.
    t.public("pub anonymous under anon/**", None, Publish, true);
    t.at("pub anonymous outside public", |_| None, "", Publish, "x", false);
    let expired = k1(Grant::new("anon").publish(["**"]).expires(hour_ago));
    t.public("pub expired token on public path", expired, Publish, false);

    // Subscribing.
    t.at("sub subtree bbb/** -> bbb/x", get(&["bbb/**"]), "", Subscribe, "bbb/x", true);
    t.at("sub subtree bbb/** -> ccc (wrong path)", get(&["bbb/**"]), "", Subscribe, "ccc", false);
    t.at("sub exact bbb -> bbb", get(&["bbb"]), "", Subscribe, "bbb", true);
    t.at("sub exact bbb -> bbb/x", get(&["bbb"]), "", Subscribe, "bbb/x", false);
    t.at("sub one-segment bbb/* -> bbb/x", get(&["bbb/*"]), "", Subscribe, "bbb/x", true);
    t.at("sub publish-only token", put(&["**"]), "", Subscribe, "bbb", false);
    t.at("sub expired", |r| k1(Grant::new(r).subscribe(["**"]).expires(hour_ago)), "", Subscribe, "bbb", false);
    let legacy = |r: &str| craft(json!({ "root": r, "get": "bbb" }));
    t.at("sub legacy get:\"bbb\" -> bbb/x", legacy, "", Subscribe, "bbb/x", true);
    let get_all = |r: &str| Grant::new(r).subscribe(["**"]);
    t.at("sub ES256", |r| sign(&lab.es256, get_all(r)), "", Subscribe, "bbb", true);
    t.at("sub wrong key", |r| sign(&lab.impostor, get_all(r)), "", Subscribe, "bbb", false);
    t.at("sub tampered", |r| tampered(get_all(r)), "", Subscribe, "bbb", false);
    t.at("sub root mismatch", get(&["**"]), "-other", Subscribe, "x", false);
    t.at("sub dial deeper than root", get(&["bbb/**"]), "/bbb", Subscribe, "x", true);
    t.public("sub anonymous under anon/**", None, Subscribe, true);
    t.at("sub anonymous outside public", |_| None, "", Subscribe, "x", false);
    t.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    WebTransport,
    WebSocket,
    Quic05,
}

impl Via {
    const ALL: [Via; 3] = [Via::WebTransport, Via::WebSocket, Via::Quic05];

    fn label(self) -> &'static str {
        match self {
            Via::WebTransport => "webtransport",
            Via::WebSocket => "websocket",
            Via::Quic05 => "quic05",
        }
    }

    /// The URL dialing `path` on `port` with `token`, and the client arguments it needs.
    fn dial(self, port: u16, path: &str, token: Option<&str>) -> (String, Vec<&'static str>) {
        let scheme = match self {
            Via::WebTransport => "http",
            Via::WebSocket => "ws",
            Via::Quic05 => "moqt",
        };
        let mut url = format!("{scheme}://127.0.0.1:{port}/{}", path.trim_start_matches('/'));
        if let Some(token) = token {
            url += &format!("?jwt={token}");
        }
        let args = match self {
            Via::Quic05 => vec!["--tls-insecure", "--moq-version", "moq-lite-05"],
            _ => vec![],
        };
        (url, args)
    }
}

/// A publisher small enough to run dozens at once: 3 groups a second of a 100 kbit/s video
/// track, no audio, for about 6 s.
fn publisher(url: &str, broadcast: &str, args: &[&str]) -> Proc {
    Publisher::new(url, broadcast)
        .groups(18)
        .args(["--gop", "10", "--video-bitrate", "100000", "--audio-bitrate", "0"])
        .args(args)
        .spawn()
}

/// A viewer that gives up after 8 s without the broadcast, or stops after 2 complete groups.
fn viewer(url: &str, broadcast: &str, args: &[&str]) -> Background {
    Viewer::new(url, broadcast)
        .summary()
        .groups(2)
        .args(["--timeout", "8s", "--verify", "header"])
        .args(args)
        .background()
}

/// What one cell saw: whether frames arrived, and notes for when that surprises.
struct Cell {
    accepted: bool,
    notes: String,
}

/// Runs every row at once against the relay on `port` over `transport`; the all-access side
/// (`admin`, a token granting everything from the root) always uses WebTransport.
fn column(port: u16, transport: Via, rows: &[Row], admin: &str) -> Vec<Cell> {
    // A row's end (its token over `transport` at its path, its broadcast) and the all-access end
    // (at the root, the broadcast's full path): (publishing, watching).
    let ends = |row: &Row| {
        let own = (transport.dial(port, &row.path, row.token.as_deref()), row.broadcast.clone());
        let all = (Via::WebTransport.dial(port, "/", Some(admin)), row.full());
        match row.action {
            Action::Publish => (own, all),
            Action::Subscribe => (all, own),
        }
    };
    let viewers: Vec<Background> = rows
        .iter()
        .map(|row| {
            let (_, ((url, args), broadcast)) = ends(row);
            viewer(&url, &broadcast, &args)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let mut publishers: Vec<Proc> = rows
        .iter()
        .map(|row| {
            let (((url, args), broadcast), _) = ends(row);
            publisher(&url, &broadcast, &args)
        })
        .collect();
    viewers
        .into_iter()
        .zip(publishers.iter_mut())
        .map(|(viewer, publisher)| {
            let out = viewer.finish(Duration::from_secs(30));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let summary = stdout
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            let frames =
                summary.as_ref().and_then(|s| s["tracks"]["video"]["frames_min_per_viewer"].as_u64()).unwrap_or(0);
            let errors = summary.as_ref().map(|s| s["errors"].to_string()).unwrap_or_else(|| "no summary".into());
            let notes = format!(
                "viewer exit {} frames {frames} errors {errors}; viewer stderr: [{}]; publisher: [{}]",
                out.status,
                last_lines(&String::from_utf8_lossy(&out.stderr), 3),
                last_lines(&publisher.drain().join("\n"), 3)
            );
            Cell { accepted: frames > 0, notes }
        })
        .collect()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn word(accepted: bool) -> &'static str {
    if accepted {
        "accept"
    } else {
        "reject"
    }
}

/// Runs `f`, turning a panic (a relay that did not start, say) into an error.
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

/// Runs `column` (`None`: the relay has no such column) over every transport into `columns` as
/// `{relay}.{transport}`, a panic making the column an error; how long that took.
fn run_columns(
    columns: &mut BTreeMap<String, Result<Vec<Cell>, String>>,
    relay: &str,
    mut column: impl FnMut(Via) -> Option<Vec<Cell>>,
) -> Duration {
    let started = Instant::now();
    for transport in Via::ALL {
        if let Some(result) = catching(|| column(transport)).transpose() {
            columns.insert(format!("{relay}.{}", transport.label()), result);
        }
    }
    started.elapsed()
}

/// Whether the relay's TCP port upgrades an anonymous WebSocket (qmux, moq-lite-04) at the
/// public path.
fn serves_websocket(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let head = "GET /anon HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Protocol: qmux-01.moq-lite-04\r\n\r\n";
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut status = [0u8; 12];
    stream.write_all(head.as_bytes()).is_ok()
        && stream.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 101")
}

/// This relay with the lab's keys, the public rule and an audit log.
fn our_relay(lab: &TokenLab, audit: &Path) -> Relay {
    Relay::builder()
        .arg("--auth-key")
        .arg(&lab.key_dir)
        .args(["--auth-public", PUBLIC])
        .arg("--audit-log")
        .arg(audit)
        .start()
}

/// Everything this relay printed and audited, for the token check.
#[derive(Default)]
struct Captured {
    lines: Vec<String>,
    /// How many of `lines` came from audit logs.
    audited: usize,
}

impl Captured {
    fn relay(&mut self, relay: &mut Relay, audit: Option<&Path>) {
        // Give the last session ends a moment to be logged.
        std::thread::sleep(Duration::from_millis(300));
        self.lines.extend(relay.drain().iter().cloned());
        if let Some(audit) = audit {
            let text = std::fs::read_to_string(audit).unwrap_or_else(|e| panic!("audit log {}: {e}", audit.display()));
            assert!(!text.trim().is_empty(), "the audit log {} is empty", audit.display());
            self.audited += text.lines().count();
            self.lines.extend(text.lines().map(|l| format!("audit: {l}")));
        }
    }

    /// Fails unless every one of `paths` (the dialed paths, which the relay logs per session)
    /// appears somewhere: the lines searched for tokens are the ones sessions were logged in.
    fn assert_mentions(&self, paths: &[String]) {
        let missing: Vec<&String> =
            paths.iter().filter(|path| !self.lines.iter().any(|line| line.contains(path.as_str()))).collect();
        assert!(missing.is_empty(), "this relay never logged sessions at {missing:?}");
    }

    /// Fails if any token, or any token's signature alone, appears anywhere.
    fn assert_no_token(&self, tokens: &[&str]) {
        let mut leaks = Vec::new();
        for token in tokens {
            let sig = signature(token);
            for line in &self.lines {
                if line.contains(token) || (sig.len() >= 16 && line.contains(sig)) {
                    leaks.push(format!("{token:.24}...: {line}"));
                }
            }
        }
        assert!(leaks.is_empty(), "tokens in this relay's output:\n{}", leaks.join("\n"));
        eprintln!(
            "checked {} lines of this relay's output ({} of them audit records) for {} tokens: none found",
            self.lines.len(),
            self.audited,
            tokens.len()
        );
    }
}

#[test]
fn decision_matrix() {
    let _serial = serial();
    let started = Instant::now();
    let lab = TokenLab::new();
    let rows = rows(&lab);
    let admin = lab.sign(&lab.k1, &Grant::new("").publish(["**"]).subscribe(["**"]));
    eprintln!("{} rows, tokens signed in {:?}", rows.len(), started.elapsed());

    // The reference relay and its auth server: a fresh relay per transport, one auth server.
    let mut columns: BTreeMap<String, Result<Vec<Cell>, String>> = BTreeMap::new();
    let auth = AuthServer::start(&lab.key_dir, &[PUBLIC], &[PUBLIC]);
    let reference_took = run_columns(&mut columns, "reference", |transport| {
        let (_relay, _url, port) = reference_relay_with_auth(&auth.url());
        if transport == Via::WebSocket && !serves_websocket(port) {
            eprintln!(
                "NOTE: the installed reference relay serves no WebSocket (built without its `websocket` \
                 feature); this relay's WebSocket column is compared with the reference's WebTransport one"
            );
            return None;
        }
        Some(column(port, transport, &rows, &admin))
    });
    drop(auth);

    // This relay, a fresh one per transport.
    let audit_dir = lab.dir.join("audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    let mut captured = Captured::default();
    let this_took = run_columns(&mut columns, "this", |transport| {
        let audit = audit_dir.join(format!("{}.jsonl", transport.label()));
        let mut relay = our_relay(&lab, &audit);
        let cells = column(relay.port, transport, &rows, &admin);
        captured.relay(&mut relay, Some(&audit));
        Some(cells)
    });

    // The table.
    let order: Vec<String> = Via::ALL
        .iter()
        .map(|t| format!("this.{}", t.label()))
        .chain(Via::ALL.iter().map(|t| format!("reference.{}", t.label())))
        .filter(|name| columns.contains_key(name))
        .collect();
    let mut problems = Vec::new();
    for (name, result) in &columns {
        if let Err(e) = result {
            problems.push(format!("column {name} did not run: {}", e.lines().next().unwrap_or_default()));
        }
    }
    println!("MATRIX columns: expect {}", order.join(" "));
    for (i, row) in rows.iter().enumerate() {
        let mut line = format!(
            "MATRIX row={:?} path={} {}={} expect={}",
            row.name,
            row.path,
            match row.action {
                Action::Publish => "publish",
                Action::Subscribe => "subscribe",
            },
            row.broadcast,
            word(row.expect)
        );
        // This relay's cell against the reference's over the same transport, or else over
        // WebTransport.
        let reference = |name: &str| {
            let transport = name.trim_start_matches("this.");
            [format!("reference.{transport}"), "reference.webtransport".to_string()]
                .into_iter()
                .find_map(|column| columns.get(&column))
                .and_then(|cells| cells.as_ref().ok())
                .map(|cells| cells[i].accepted)
        };
        for name in &order {
            let cell = columns[name].as_ref().ok().map(|cells| &cells[i]);
            match cell {
                Some(cell) => {
                    line += &format!(" {name}={}", word(cell.accepted));
                    if cell.accepted != row.expect {
                        problems.push(format!(
                            "row {:?} {name}: {} but expected {}; {}",
                            row.name,
                            word(cell.accepted),
                            word(row.expect),
                            cell.notes
                        ));
                    }
                    if name.starts_with("this.") && reference(name).is_some_and(|r| r != cell.accepted) {
                        problems.push(format!(
                            "row {:?} {name}: {} but the reference relay decided {}",
                            row.name,
                            word(cell.accepted),
                            word(!cell.accepted)
                        ));
                    }
                }
                None => line += &format!(" {name}=error"),
            }
        }
        println!("{line}");
    }
    eprintln!("reference relay columns took {reference_took:?}, this relay's {this_took:?}");

    // No token in anything this relay printed.
    let mut tokens: Vec<&str> = rows.iter().filter_map(|r| r.token.as_deref()).collect();
    tokens.push(&admin);
    if columns.keys().any(|k| k.starts_with("this.") && columns[k].is_ok()) {
        let paths: Vec<String> = rows.iter().map(|r| r.path.trim_matches('/').to_string()).collect();
        problems.extend(catching(|| captured.assert_mentions(&paths)).err());
        problems.extend(catching(|| captured.assert_no_token(&tokens)).err());
    }
    eprintln!("decision_matrix took {:?}", started.elapsed());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// `sh -c 'exec PROGRAM ARGS REDIRECT'`: the process replaces the shell (killing the [`Proc`]
/// kills it) with its stdout to a file or its stdin from a FIFO.
fn redirected(program: &Path, redirect: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("exec \"$0\" \"$@\" {redirect}")]).arg(program);
    cmd
}

/// The reference `moq ... import fmp4` publishing the clip (replayed by ffmpeg in real time
/// into a FIFO) to `url` as `broadcast`.
struct ReferencePublisher {
    _ffmpeg: Proc,
    proc: Proc,
}

fn reference_publisher(dir: &Path, name: &str, url: &str, broadcast: &str, extra: &[&str]) -> ReferencePublisher {
    let fifo = dir.join(format!("{name}.fifo"));
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let ffmpeg = Proc::spawn("ffmpeg -re", Command::new("ffmpeg").args(media::replay_args(&media::clip(), &fifo)));
    let proc = Proc::spawn(
        &format!("reference moq import ({name})"),
        redirected(&reference_moq(), "< \"$AUTH_IN\"")
            .args(["--connect", url, "--connect-once", "--connect-tls-insecure", "--broadcast", broadcast])
            .args(extra)
            .args(["import", "fmp4"])
            .env("AUTH_IN", &fifo)
            .env("RUST_LOG", "info"),
    );
    ReferencePublisher { _ffmpeg: ffmpeg, proc }
}

/// The reference `moq ... export fmp4` writing `broadcast` from `url` to `out`.
fn reference_subscriber(url: &str, broadcast: &str, out: &Path) -> Proc {
    Proc::spawn(
        "reference moq export",
        redirected(&reference_moq(), "> \"$AUTH_OUT\"")
            .args(["--connect", url, "--connect-once", "--connect-tls-insecure", "--broadcast", broadcast])
            .args(["export", "fmp4", "--max-age", "10s"])
            .env("AUTH_OUT", out)
            .env("RUST_LOG", "info"),
    )
}

/// One publishing case of [`reference_cli_publishes_with_a_token`].
struct RefCase {
    relay: &'static str,
    name: &'static str,
    url: String,
    broadcast: &'static str,
    extra: &'static [&'static str],
    allowed: bool,
    received: PathBuf,
}

/// The cases against the relay on `port`: the token publishes over WebTransport and raw QUIC
/// (lite-06, the token in the SETUP Path), and where it may not.
fn ref_cases(relay: &'static str, port: u16, token: &str, dir: &Path) -> Vec<RefCase> {
    let case = |name: &'static str, scheme: &str, broadcast, extra, allowed| RefCase {
        relay,
        name,
        url: format!("{scheme}://127.0.0.1:{port}/demo?jwt={token}"),
        broadcast,
        extra,
        allowed,
        received: dir.join(format!("{relay}-{name}.mp4")),
    };
    vec![
        case("webtransport", "http", "ref/wt", &[], true),
        case("quic-lite-06", "moqt", "ref/quic", &["--connect-version", "moq-lite-06"], true),
        case("outside-grant", "http", "denied/x", &[], false),
    ]
}

#[test]
fn reference_cli_publishes_with_a_token() {
    let _serial = serial();
    let started = Instant::now();
    let lab = TokenLab::new();
    let dir = lab.dir.join("media");
    std::fs::create_dir_all(&dir).unwrap();
    let source = media::packets(&media::clip()).expect("hashing the clip");

    // demo/ref/** may be published with this token; demo/denied/** may not.
    let token = lab.sign(&lab.k1, &Grant::new("demo").publish(["ref/**"]).expires(now() + 600));
    let admin = lab.sign(&lab.k1, &Grant::new("").subscribe(["**"]));

    // This relay, and the reference relay as the baseline, side by side.
    let audit = dir.join("audit.jsonl");
    let ours = catching(|| our_relay(&lab, &audit));
    let auth = AuthServer::start(&lab.key_dir, &[], &[]);
    let (_reference, _, reference_port) = reference_relay_with_auth(&auth.url());
    let mut relays = vec![("reference", reference_port)];
    match &ours {
        Ok(relay) => relays.push(("this", relay.port)),
        Err(e) => println!("REFCLI relay=this result=FAIL(did not start: {})", e.lines().next().unwrap_or_default()),
    }
    let cases: Vec<RefCase> = relays.iter().flat_map(|&(relay, port)| ref_cases(relay, port, &token, &dir)).collect();
    let admin_url = |case: &RefCase| {
        let port = relays.iter().find(|(relay, _)| *relay == case.relay).unwrap().1;
        format!("http://127.0.0.1:{port}/?jwt={admin}")
    };
    let mut subscribers: Vec<Proc> = cases
        .iter()
        .map(|case| reference_subscriber(&admin_url(case), &format!("demo/{}", case.broadcast), &case.received))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut publishers: Vec<ReferencePublisher> = cases
        .iter()
        .map(|case| {
            let name = format!("{}-{}", case.relay, case.name);
            reference_publisher(&dir, &name, &case.url, case.broadcast, case.extra)
        })
        .collect();

    // The clip lasts 10 s; the publishers that may publish exit at its end.
    let mut problems = Vec::new();
    if let Err(e) = &ours {
        problems.push(format!("this relay did not start: {e}"));
    }
    for (case, publisher) in cases.iter().zip(&mut publishers) {
        let exit = publisher.proc.wait_exit(Duration::from_secs(if case.allowed { 25 } else { 1 }));
        if case.allowed && exit.map(|s| s.success()) != Some(true) {
            let said = last_lines(&publisher.proc.drain().join("\n"), 4);
            problems.push(format!("{} {}: publisher exit {exit:?}: {said}", case.relay, case.name));
        }
    }
    for (case, subscriber) in cases.iter().zip(&mut subscribers) {
        let exit = subscriber.wait_exit(Duration::from_secs(if case.allowed { 8 } else { 1 }));
        let (relay, name) = (case.relay, case.name);
        let result = match (media::packets(&case.received), case.allowed) {
            (Ok(got), true) => match source.compare(&got) {
                Ok(()) => format!("ok: {} video frames, {} audio packets bit-exact", got.video.len(), got.audio.len()),
                Err(diff) => {
                    problems.push(format!("{relay} {name}: {diff}; subscriber exit {exit:?}"));
                    format!("FAIL({diff})")
                }
            },
            (Err(e), true) => {
                let said = last_lines(&subscriber.drain().join("\n"), 4);
                problems.push(format!("{relay} {name}: nothing received: {e}; {said}"));
                "FAIL(nothing received)".to_string()
            }
            (Ok(got), false) => {
                problems.push(format!("{relay} {name}: {} video frames got through", got.video.len()));
                "FAIL(got through a token for another path)".to_string()
            }
            (Err(_), false) => "ok: nothing got through".to_string(),
        };
        println!(
            "REFCLI relay={relay} case={name} publisher=moq-cli-0.14.10 broadcast=demo/{} allowed={} result={result}",
            case.broadcast, case.allowed
        );
    }
    drop(subscribers);
    drop(publishers);

    if let Ok(mut relay) = ours {
        let mut captured = Captured::default();
        captured.relay(&mut relay, Some(&audit));
        problems.extend(catching(|| captured.assert_no_token(&[&token, &admin])).err());
    }
    eprintln!("reference_cli_publishes_with_a_token took {:?}", started.elapsed());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn crafted_tokens_as_the_reference_verifies_them() {
    let lab = TokenLab::new();
    let hour_ago = now() - 3600;
    let in_an_hour = now() + 3600;
    let verify = |token: &str| lab.verify(&lab.k1, token);

    // The crafting itself is sound: the reference verifier reads a crafted token as it was made.
    let control = lab.craft(&json!({ "root": "demo", "put": ["bbb"], "nbf": hour_ago, "exp": in_an_hour }));
    let claims = verify(&control).unwrap_or_else(|e| panic!("the crafted control was refused: {e}"));
    assert!(claims.contains(r#"root: "demo""#) && claims.contains("bbb"), "{claims}");
    let legacy = lab.craft(&json!({ "root": "demo", "put": "bbb", "get": ["bbb"] }));
    verify(&legacy).unwrap_or_else(|e| panic!("the legacy string form was refused: {e}"));
    // The reference tool's subtree-only grants are the legacy encoding, others the new one.
    let subtree = lab.sign(&lab.k1, &Grant::new("demo").publish(["bbb/**"]).subscribe(["**"]));
    assert_eq!(payload(&subtree), json!({ "root": "demo", "put": ["bbb"], "get": [""] }));
    let exact = lab.sign(&lab.k1, &Grant::new("demo").publish(["bbb"]));
    assert_eq!(payload(&exact), json!({ "root": "demo", "publish": ["bbb"] }));

    // Each defect is refused, for its own reason.
    let refusals = [
        ("not valid yet", lab.craft(&json!({ "root": "demo", "put": ["bbb"], "nbf": in_an_hour }))),
        ("unknown field `admin`", lab.craft(&json!({ "root": "demo", "put": ["bbb"], "admin": true }))),
        ("mixes the legacy", lab.craft(&json!({ "root": "demo", "put": ["bbb"], "publish": ["bbb/**"] }))),
        ("unknown variant `none`", lab.unsigned(&json!({ "root": "demo", "put": ["bbb"] }))),
        ("InvalidSignature", tamper(&subtree)),
        ("InvalidSignature", lab.sign(&lab.impostor, &Grant::new("demo").publish(["bbb/**"]))),
        ("expired", lab.sign(&lab.k1, &Grant::new("demo").publish(["bbb/**"]).expires(hour_ago))),
    ];
    for (reason, token) in refusals {
        let refused = verify(&token).expect_err(reason);
        let first = refused.lines().next().unwrap_or_default();
        assert!(first.contains(reason), "expected a refusal for {reason:?}: {first}");
    }
    // The ES256 token verifies against the public half in the key dir.
    let es = lab.sign(&lab.es256, &Grant::new("demo").publish(["bbb/**"]));
    lab.verify(&lab.key_dir.join("e1.jwk"), &es).unwrap_or_else(|e| panic!("ES256: {e}"));
    assert_eq!(
        moq_interop::auth::read_jwk(&lab.key_dir.join("e1.jwk")).get("d"),
        None,
        "the key dir holds a private key"
    );
}
