//! This relay, started on free ports and ready to use.

use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::Duration;

use crate::{bin, eventually, free_port, http, reference, Configure, Proc, Scrape, Spec};

/// A running `moq-relay`: QUIC/WebTransport (UDP) and HTTP (TCP) on `port` on both loopbacks,
/// and the operator listener (/metrics) on `ops` when asked for. Killed on drop; derefs to its
/// [`Proc`] (`wait_line`, `drain`, `signal`, `wait_exit`).
pub struct Relay {
    pub proc: Proc,
    pub port: u16,
    pub ops: Option<u16>,
    /// The address [`Relay::url`] and [`Relay::ops_url`] reach it on: `127.0.0.1`, or its
    /// namespace's address for a relay started with [`RelayBuilder::netns`].
    pub host: String,
}

/// Builds a [`Relay`]: `moq-relay --listen 127.0.0.1:PORT --listen [::1]:PORT --tls-generate
/// localhost,127.0.0.1,::1 --ops-listen off|127.0.0.1:OPS [args]` with `RUST_LOG=info` and no
/// `LOG_FORMAT` unless [`Configure::env`] says otherwise; `--auth-public '**'` unless `args` has
/// an `--auth*` flag, and the per-address session limits lifted unless it has `--limit-session*`.
///
/// Ports are free ones picked at start unless [`RelayBuilder::port`] / [`RelayBuilder::ops_port`]
/// fix them (a relay its peers dial before it starts, or one restarted on the same ports: the
/// builder is `Clone`); [`RelayBuilder::listen_also`] adds addresses, [`RelayBuilder::netns`] runs
/// it in a network namespace ([`crate::cluster::NetNs`]).
#[derive(Default, Clone)]
pub struct RelayBuilder {
    ops: bool,
    port: Option<u16>,
    ops_port: Option<u16>,
    also: Vec<String>,
    netns: Option<(String, String)>,
    spec: Spec,
}

impl Configure for RelayBuilder {
    fn spec(&mut self) -> &mut Spec {
        &mut self.spec
    }
}

impl RelayBuilder {
    /// Starts the operator listener (/metrics, /health) on a free port of 127.0.0.1.
    pub fn ops(mut self) -> Self {
        self.ops = true;
        self
    }

    /// Listens on `port` (UDP and TCP) instead of a free port picked at start.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the operator listener on `port` instead of a free one.
    pub fn ops_port(mut self, port: u16) -> Self {
        self.ops = true;
        self.ops_port = Some(port);
        self
    }

    /// Also listens on `ip` (same port), e.g. the root end of a [`crate::cluster::NetNs`] link its
    /// peers in the namespace dial; the generated certificate names it too.
    pub fn listen_also(mut self, ip: &str) -> Self {
        self.also.push(ip.to_string());
        self
    }

    /// Runs the relay in network namespace `name` (`ip netns exec NAME moq-relay ...`), reached at
    /// `host`, an address of that namespace: it listens there and on the namespace's 127.0.0.1
    /// (not `[::1]`), its operator listener binds `host`, and [`Relay::url`] points at `host`.
    pub fn netns(mut self, name: &str, host: &str) -> Self {
        self.netns = Some((name.to_string(), host.to_string()));
        self
    }

    /// Starts the relay and waits up to 20 s for its "relay ready" line.
    pub fn start(self) -> Relay {
        let port = self.port.unwrap_or_else(free_port);
        let ops = self
            .ops
            .then(|| self.ops_port.unwrap_or_else(|| std::iter::repeat_with(free_port).find(|&p| p != port).unwrap()));
        let (mut cmd, host, mut hosts) = match &self.netns {
            None => (Command::new(bin("moq-relay")), "127.0.0.1".to_string(), vec!["127.0.0.1", "[::1]"]),
            Some((name, host)) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", name]).arg(bin("moq-relay"));
                (cmd, host.clone(), vec!["127.0.0.1", host.as_str()])
            }
        };
        hosts.extend(self.also.iter().map(String::as_str));
        for h in &hosts {
            cmd.args(["--listen", &format!("{h}:{port}")]);
        }
        let names: Vec<&str> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .chain(hosts.iter().copied().filter(|h| !h.starts_with('[') && *h != "127.0.0.1"))
            .collect();
        cmd.args(["--tls-generate", &names.join(",")]).env("RUST_LOG", "info").env_remove("LOG_FORMAT");
        // Tests that don't configure access get everything public, and no per-address limits to
        // trip over (every test client is on 127.0.0.1); the relay itself assumes neither.
        if !self.spec.has_arg_prefix("--auth") {
            cmd.args(["--auth-public", "**"]);
        }
        if !self.spec.has_arg_prefix("--limit-session") {
            cmd.args(["--limit-sessions-per-address", "100000", "--limit-session-rate-per-address", "100000"]);
        }
        match ops {
            Some(ops) => cmd.args(["--ops-listen", &format!("{host}:{ops}")]),
            // No ops listener unless the test asks for one.
            None if !self.spec.has_arg("--ops-listen") => cmd.args(["--ops-listen", "off"]),
            None => &mut cmd,
        };
        let mut proc = Proc::spawn("moq-relay", self.spec.apply(&mut cmd));
        proc.wait_line(Duration::from_secs(20), |l| l.contains("relay ready"));
        Relay { proc, port, ops, host }
    }
}

impl Relay {
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    /// A relay with the defaults: no ops listener, no extra arguments.
    pub fn start() -> Relay {
        Self::builder().start()
    }

    /// `http://HOST:PORT/PATH` on the relay's HTTP (and WebTransport) port; HOST is `127.0.0.1`
    /// unless it runs in a namespace.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}/{}", self.host, self.port, path.trim_start_matches('/'))
    }

    /// `http://HOST:OPS/PATH` on the operator listener; panics without [`RelayBuilder::ops`].
    pub fn ops_url(&self, path: &str) -> String {
        let ops = self.ops.expect("the relay was started without RelayBuilder::ops");
        format!("http://{}:{ops}/{}", self.host, path.trim_start_matches('/'))
    }

    /// The broadcasts its `GET /announced` lists (empty when it does not answer 2xx).
    pub fn announced(&self) -> Vec<String> {
        crate::http::text(&self.url("announced")).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// The relay's /metrics, which must answer 200.
    pub fn scrape(&self) -> Scrape {
        Scrape::fetch(&self.ops_url("metrics"))
    }
}

impl Deref for Relay {
    type Target = Proc;

    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for Relay {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// The reference relay the interop tests run against (`cargo install`ed by the test deps).
pub const REFERENCE_RELAY: (&str, &str) = ("moq-relay", "0.17.10");

/// The reference `moq-relay` on a free port of 127.0.0.1 (anonymous access everywhere, a generated
/// certificate, WebTransport and HTTP on the same port), ready once it serves its fingerprint;
/// with its `http://127.0.0.1:PORT/` URL. Killed on drop.
pub fn reference_relay() -> (Proc, String) {
    let (relay, url, _port) = reference_relay_with(&["--auth-public", "**"]);
    (relay, url)
}

/// The reference `moq-relay` on a free port of 127.0.0.1 with `args` (its access rules) after the
/// common ones: a generated certificate, WebTransport and raw QUIC on UDP, HTTP and WebSocket on
/// TCP, same port, a 1 s drain. Ready once it serves its fingerprint; with its
/// `http://127.0.0.1:PORT/` URL and port. Killed on drop.
pub fn reference_relay_with(args: &[&str]) -> (Proc, String, u16) {
    let port = free_port();
    let mut relay = Proc::spawn(
        "reference moq-relay",
        Command::new(reference(REFERENCE_RELAY.0, REFERENCE_RELAY.1))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--listen-tls-generate", "localhost,127.0.0.1"])
            .args(["--web-http-listen", &format!("127.0.0.1:{port}")])
            .args(["--drain-timeout", "1s"])
            .args(args),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let ready = eventually(Duration::from_secs(10), || {
        http::get(&format!("{url}certificate.sha256")).is_ok_and(|r| r.is_success())
    });
    assert!(ready, "reference relay never served its fingerprint: {:?}", relay.drain());
    (relay, url, port)
}
