//! One dialer per configured peer: dial, run one moq-lite session (publish and subscribe
//! everything at the root, our hop id, the link's cost, the peer's traffic counters shared across
//! its sessions), and when it ends, redial after [`Backoff`]. A GOAWAY from the peer ends the
//! session and redials at once. A dialer stops when its peer is removed (hanging up) or when the
//! relay shuts down (no redial; a running session is left to the drain, which closes it last).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moq_lite::model::Scope;
use moq_lite::session::{Session, SessionConfig, Traffic};
use moq_lite::transport::{Backoff, Connected, Transport};
use moq_lite::Error;
use tokio::sync::watch;
use tracing::Instrument;
use url::Url;

use super::registry::State;
use super::Env;
use crate::config::PeerUrl;
use crate::serve::Stopping;
use crate::telemetry::cluster::{Direction, PeerConnected, PeerDialFailed, PeerLost, PeerSeries};

/// How long one dial (QUIC, TLS, WebTransport CONNECT, the fingerprint fetch) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Redial delays: 0.5 s doubling to 30 s, each ±25 % (so peers that lost the same node do not
/// redial in step); a session that lasted [`STABLE`] or more starts the sequence again.
pub fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// A session at least this long counts as a success: the next wait starts from the first again.
pub const STABLE: Duration = Duration::from_secs(10);

/// Whether the `failures`-th failure in a row is logged: the first three, then every tenth (the
/// backoff spaces them, so a peer down for an hour writes about 15 lines).
pub fn should_log(failures: u64) -> bool {
    failures <= 3 || failures.is_multiple_of(10)
}

/// A random number in [0, 1), for the jitter.
fn unit() -> f64 {
    (crate::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// `text` (an error's) with the URL's query and each of its values cut out: a token never gets
/// into a log line, even if a transport error repeats the URL.
pub fn redact(text: &str, url: &Url) -> String {
    let mut text = text.to_string();
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        text = text.replace(query, "…");
        for (_, value) in url.query_pairs() {
            if value.len() >= 4 {
                text = text.replace(value.as_ref(), "…");
            }
        }
    }
    text
}

/// The dialer of one configured peer.
pub(super) struct Dialer {
    pub peer: PeerUrl,
    pub env: Arc<Env>,
    /// Becomes true (or is dropped) when the peer is removed from the configuration.
    pub removed: watch::Receiver<bool>,
    pub stopping: Stopping,
}

/// How one session with the peer ended.
struct Ended {
    lasted: Duration,
    /// The peer said GOAWAY: redial at once.
    goaway: bool,
}

impl Dialer {
    pub async fn run(self) {
        let label = self.peer.label.clone();
        let (traffic, series) = self.env.peers.configured(&label);
        let mut backoff = backoff();
        let mut failures = 0u64;
        while !self.ending() {
            self.env.peers.set_state(&label, State::Connecting, None);
            let id = moq_lite::session::next_id();
            let span = tracing::info_span!(
                "moq.cluster.peer",
                moq.cluster.peer = %label,
                moq.cluster.node = %self.env.node,
                moq.session.id = id,
                server.address = self.peer.url.host_str().unwrap_or_default(),
                url.full = %self.peer.redacted(),
                network.protocol.name = "moq-lite",
                network.protocol.version = tracing::field::Empty,
                moq.close.reason = tracing::field::Empty,
            );
            let dialed = tokio::select! {
                dialed = self.dial().instrument(span.clone()) => dialed,
                _ = self.ended() => break,
            };
            let wait = match dialed {
                Err(err) => {
                    failures += 1;
                    let wait = backoff.next(unit());
                    let error = redact(&format!("{err:#}"), &self.peer.url);
                    span.in_scope(|| {
                        PeerDialFailed {
                            peer: &label,
                            url: &self.peer.redacted(),
                            error: &error,
                            attempt: failures,
                            retry_in: wait,
                            log: should_log(failures),
                            series: &series,
                        }
                        .emit()
                    });
                    wait
                }
                Ok((connected, url)) => {
                    failures = 0;
                    span.record("network.protocol.version", connected.version.alpn());
                    let ended =
                        self.serve(connected, &url, id, &traffic, &series, &span).instrument(span.clone()).await;
                    match ended.goaway {
                        true => {
                            backoff.reset();
                            Duration::ZERO
                        }
                        false => {
                            backoff.session_ended(ended.lasted, STABLE);
                            backoff.next(unit())
                        }
                    }
                }
            };
            if self.ending() {
                break;
            }
            if !wait.is_zero() {
                self.env.peers.set_state(&label, State::Backoff, None);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.ended() => break,
                }
            }
        }
        self.env.peers.unconfigured(&label);
    }

    /// Whether the peer was removed or the relay is shutting down.
    fn ending(&self) -> bool {
        self.stopping.began() || self.removed.has_changed().is_err() || *self.removed.borrow()
    }

    /// Resolves when the peer is removed or the relay shuts down.
    fn ended(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (mut removed, mut stopping) = (self.removed.clone(), self.stopping.clone());
        async move {
            tokio::select! {
                _ = async { drop(removed.wait_for(|r| *r).await) } => {}
                _ = stopping.wait() => {}
            }
        }
    }

    /// One dial: the URL (with `--cluster-token` as `?jwt=` when it has no token of its own,
    /// read now so a rotated token is picked up) and the connection.
    async fn dial(&self) -> anyhow::Result<(Connected, Url)> {
        let mut url = self.peer.url.clone();
        if let (false, Some(path)) = (self.peer.has_token(), &self.env.token) {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| anyhow::anyhow!("reading --cluster-token {}: {e}", path.display()))?;
            url.query_pairs_mut().append_pair("jwt", token.trim());
        }
        let connected = tokio::time::timeout(DIAL_TIMEOUT, self.env.client.connect(&url))
            .await
            .map_err(|_| anyhow::anyhow!("no session within {DIAL_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| anyhow::anyhow!(redact(&format!("{e:#}"), &url))))?;
        Ok((connected, url))
    }

    /// Runs one session with the peer until it ends.
    async fn serve(
        &self,
        connected: Connected,
        url: &Url,
        id: u64,
        traffic: &Arc<Traffic>,
        series: &PeerSeries,
        span: &tracing::Span,
    ) -> Ended {
        let env = self.env.clone();
        // Raw QUIC lite-05+ carries the path and query (the token) in SETUP, as moq-cli sends it.
        let setup_path =
            (connected.transport == Transport::Quic && connected.version.has_setup()).then(|| match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_string(),
            });
        let session = Session::new(
            connected.conn,
            connected.version,
            SessionConfig {
                publish: Some(Scope::everything(env.origin.clone(), "")),
                subscribe: Some(Scope::everything(env.origin.clone(), "")),
                hop_id: env.hop_id,
                max_streams: env.max_streams,
                telemetry: env.telemetry.clone(),
                id: Some(id),
                setup_path,
                link_cost: self.peer.cost.unwrap_or(1),
                max_hops: env.max_hops,
                traffic: Some(traffic.clone()),
                // Upstream subscriptions over this link carry the viewers' trace context.
                trace: Some(crate::telemetry::TRACE_PROPAGATION),
                ..Default::default()
            },
        );
        let label = &self.peer.label;
        env.sessions.insert_dialed(id, session.clone());
        env.peers.set_state(label, State::Connected, Some(&session));
        PeerConnected {
            peer: label,
            direction: Direction::Outbound,
            url: Some(&self.peer.redacted()),
            version: connected.version,
            hop_id: None,
            rtt: session.connection().quic().map(|q| q.rtt()),
            series: Some(series),
        }
        .emit();
        let started = Instant::now();
        let mut removed = self.removed.clone();
        let run = session.run();
        tokio::pin!(run);
        let (err, expected, goaway) = tokio::select! {
            err = &mut run => {
                let expected = self.stopping.began() || crate::telemetry::cluster::left_on_purpose(&err);
                (err, expected, false)
            }
            _ = session.goaway_received() => {
                session.close(&Error::GoingAway);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut run).await;
                (Error::GoingAway, true, true)
            }
            _ = async { drop(removed.wait_for(|r| *r).await) } => {
                session.close(&Error::Cancel);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut run).await;
                (Error::Cancel, true, false)
            }
        };
        env.sessions.remove(id);
        traffic.routes.store(0, std::sync::atomic::Ordering::Relaxed);
        span.record("moq.close.reason", err.reason().as_str());
        let lasted = started.elapsed();
        PeerLost { peer: label, direction: Direction::Outbound, error: &err, after: lasted, expected }.emit();
        Ended { lasted, goaway }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = backoff();
        // The middle of the jitter is the base.
        let waits: Vec<u128> = (0..9).map(|_| ms(b.next(0.5))).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        let mut b = backoff();
        assert_eq!(ms(b.next(0.0)), 375, "-25 %");
        assert_eq!(ms(b.next(0.999_999_9)), 1249, "just under +25 %");
        assert_eq!(ms(b.next(7.0)), 2500, "clamped");
    }

    #[test]
    fn a_stable_session_resets_the_backoff_and_a_short_one_does_not() {
        let mut b = backoff();
        for _ in 0..4 {
            b.next(0.5);
        }
        b.session_ended(Duration::from_secs(3), STABLE);
        assert_eq!(ms(b.next(0.5)), 8000, "a flapping peer keeps backing off");
        b.session_ended(STABLE, STABLE);
        assert_eq!(ms(b.next(0.5)), 500);
        b.next(0.5);
        b.reset();
        assert_eq!(b, backoff());
    }

    #[test]
    fn dial_failures_are_thinned() {
        let logged: Vec<u64> = (1..=40).filter(|&n| should_log(n)).collect();
        assert_eq!(logged, [1, 2, 3, 10, 20, 30, 40]);
    }

    #[test]
    fn errors_lose_the_token() {
        let url = Url::parse("https://relay-b:4443/?jwt=eyJhbGci.payload.sig").unwrap();
        let text =
            "WebTransport CONNECT https://relay-b:4443/?jwt=eyJhbGci.payload.sig: 401, token eyJhbGci.payload.sig";
        let redacted = redact(text, &url);
        assert!(!redacted.contains("eyJ"), "{redacted}");
        assert!(redacted.contains("relay-b:4443"), "{redacted}");
        assert_eq!(redact("refused", &Url::parse("https://r:1/").unwrap()), "refused");
    }
}
