//! The relay's session events. Each struct's `emit` writes its log line and updates its metrics
//! together; connection.rs only says what happened.

use std::fmt::Display;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use moq_lite::session::Session;
use moq_lite::telemetry::Reason;
use moq_lite::transport::Transport;
use moq_lite::{Error, Version};

use super::{catalog, Telemetry};

/// A session was admitted; keep the guard for its lifetime. Emit inside the session's span.
pub struct SessionAccepted<'a> {
    pub session: &'a Session,
    pub transport: Transport,
    pub version: Version,
    pub handshake: Duration,
}

impl SessionAccepted<'_> {
    pub fn emit(self, telemetry: &Telemetry) -> SessionGuard {
        counter!(catalog::SESSIONS.name, "result" => "accepted", "reason" => Reason::Ok.as_str()).increment(1);
        histogram!(catalog::HANDSHAKE.name).record(self.handshake.as_secs_f64());
        if let Some(mut live) = telemetry.live() {
            *live.connections.entry((self.transport, self.version)).or_default() += 1;
            live.quic.opened(self.session);
        }
        tracing::info!(handshake_ms = self.handshake.as_millis() as u64, "session opened");
        SessionGuard {
            telemetry: telemetry.clone(),
            id: self.session.id(),
            key: (self.transport, self.version),
            opened: Instant::now(),
        }
    }
}

/// A session attempt that never became a session. Emit inside the session's span where there
/// is one.
pub struct SessionRejected<'a> {
    /// Why: a `reason` of the sessions counter (handshake_failed, auth_failed, version, ...).
    pub reason: Reason,
    pub error: Option<&'a dyn Display>,
    /// The peer's address as logs may show it.
    pub client: Option<&'a str>,
    pub max_sessions: Option<usize>,
    /// Resident memory and the budget it exceeded, in bytes (reason `memory`).
    pub memory: Option<(u64, u64)>,
}

impl<'a> SessionRejected<'a> {
    pub fn new(reason: Reason) -> Self {
        Self { reason, error: None, client: None, max_sessions: None, memory: None }
    }

    pub fn emit(self) {
        let (result, reason) = match self.reason {
            // A client that went away (closed, vanished, timed out) before its session was set
            // up failed its handshake; it was not refused. (Those reasons are not values of the
            // counter's `reason` label either.)
            Reason::HandshakeFailed
            | Reason::Closed
            | Reason::Cancel
            | Reason::ClientClosed
            | Reason::IdleTimeout
            | Reason::Timeout => ("handshake_failed", Reason::HandshakeFailed.as_str()),
            other => ("rejected", other.as_str()),
        };
        counter!(catalog::SESSIONS.name, "result" => result, "reason" => reason).increment(1);
        let error = self.error.map(tracing::field::display);
        match self.reason {
            Reason::Closed | Reason::Cancel | Reason::ClientClosed | Reason::IdleTimeout | Reason::Timeout => {
                tracing::debug!(client.address = self.client, error, "client left before its session was set up")
            }
            // Debug only: under a connection flood an info line per attempt would flood the logs
            // too; the counter carries the rate.
            Reason::Capacity => tracing::debug!(max_sessions = self.max_sessions, "connection refused: at capacity"),
            // A warning: being over budget is a state an operator acts on (the counter has the
            // rate; the log limiter keeps a flood of these to a few lines).
            Reason::Memory => {
                let (resident, budget) = self.memory.unwrap_or_default();
                tracing::warn!(
                    resident_mib = resident >> 20,
                    budget_mib = budget >> 20,
                    "connection refused: over the memory budget"
                )
            }
            Reason::HandshakeFailed => tracing::debug!(client.address = self.client, error, "handshake failed"),
            // The access events (telemetry::access) wrote the line that says why.
            Reason::AuthFailed | Reason::Limit => tracing::debug!(reason, error, "session rejected"),
            _ => tracing::info!(reason, error, "session rejected"),
        }
    }
}

/// Holds a session's place in the live gauges; [`SessionGuard::closed`] records how it ended.
pub struct SessionGuard {
    telemetry: Telemetry,
    id: u64,
    key: (Transport, Version),
    opened: Instant,
}

impl SessionGuard {
    /// The session ended with `err`; `draining` when shutdown had begun (it left because of
    /// GOAWAY). Emit inside the session's span. Returns the close reason.
    pub fn closed(self, err: &Error, draining: bool) -> Reason {
        let reason = if draining { Reason::Goaway } else { close_reason(err) };
        counter!(catalog::SESSION_CLOSES.name, "reason" => reason.as_str()).increment(1);
        let duration = self.opened.elapsed();
        histogram!(catalog::SESSION_DURATION.name).record(duration.as_secs_f64());
        let (reason_str, duration_s) = (reason.as_str(), duration.as_secs_f64());
        if err.is_protocol_violation() {
            tracing::warn!(reason = reason_str, code = err.code(), error = %err, duration_s, "session closed");
        } else {
            tracing::info!(reason = reason_str, error = %err, duration_s, "session closed");
        }
        reason
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(mut live) = self.telemetry.live() {
            if let Some(n) = live.connections.get_mut(&self.key) {
                *n -= 1;
            }
            live.quic.closed(self.id);
        }
    }
}

/// How an accepted session ended, from the error that ended it.
fn close_reason(err: &Error) -> Reason {
    match err {
        Error::Closed(msg) if msg.contains("timed out") => Reason::IdleTimeout,
        Error::Closed(_) | Error::Cancel => Reason::ClientClosed,
        Error::GoingAway => Reason::Goaway,
        e => e.reason(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_is_a_listed_label_value() {
        let errors = [
            Error::Closed("connection lost: timed out".into()),
            Error::Closed("closed by peer".into()),
            Error::Cancel,
            Error::GoingAway,
            Error::ProtocolViolation("x".into()),
            Error::Version,
            Error::Transport("x".into()),
            Error::RemoteReset(3),
        ];
        for e in &errors {
            let r = close_reason(e).as_str();
            assert!(catalog::CLOSE_REASONS.contains(&r), "{e:?} -> {r}");
        }
        assert_eq!(close_reason(&errors[0]), Reason::IdleTimeout);
        assert_eq!(close_reason(&errors[1]), Reason::ClientClosed);
    }

    #[test]
    fn rejections_count_by_result_and_reason() {
        let counts = crate::telemetry::counters_during(|| {
            SessionRejected { max_sessions: Some(2), ..SessionRejected::new(Reason::Capacity) }.emit();
            SessionRejected { error: Some(&"tls alert"), ..SessionRejected::new(Reason::HandshakeFailed) }.emit();
            SessionRejected::new(Reason::AuthFailed).emit();
            SessionRejected::new(Reason::AuthFailed).emit();
            // Clients that left before SETUP failed their handshake; `closed` is no reason value.
            SessionRejected::new(Reason::Closed).emit();
            SessionRejected::new(Reason::IdleTimeout).emit();
        });
        assert_eq!(
            counts,
            vec![
                ("moq_relay_sessions_total{result=handshake_failed,reason=handshake_failed}".to_string(), 3),
                ("moq_relay_sessions_total{result=rejected,reason=auth_failed}".to_string(), 2),
                ("moq_relay_sessions_total{result=rejected,reason=capacity}".to_string(), 1),
            ]
        );
    }
}

/// Why a connection on the public TCP listener never became a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeFailure {
    /// No offered `Sec-WebSocket-Protocol` names a qmux draft and a moq-lite version we serve.
    NoProtocol,
    /// A malformed HTTP request or WebSocket upgrade.
    BadRequest,
    /// The TLS handshake or the HTTP request did not complete in time.
    Timeout,
    /// The TLS handshake failed.
    Tls,
    /// The connection failed mid-request, or the upgraded socket could not be taken over.
    Io,
}

impl UpgradeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoProtocol => "no_protocol",
            Self::BadRequest => "bad_request",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Io => "io",
        }
    }
}

/// A WebSocket upgrade (or the TCP/TLS connection that should have carried one) failed.
pub struct WebSocketUpgradeFailed<'a> {
    pub reason: UpgradeFailure,
    pub error: Option<&'a dyn Display>,
    /// The peer's address as logs may show it.
    pub client: Option<&'a str>,
}

impl WebSocketUpgradeFailed<'_> {
    pub fn emit(self) {
        let reason = self.reason.as_str();
        counter!(catalog::WEBSOCKET_UPGRADE_FAILURES.name, "reason" => reason).increment(1);
        let error = self.error.map(tracing::field::display);
        match self.reason {
            // A client's mistake worth seeing: it offered nothing we speak, or a broken upgrade.
            UpgradeFailure::NoProtocol | UpgradeFailure::BadRequest => {
                tracing::info!(reason, client.address = self.client, error, "WebSocket upgrade refused")
            }
            // Debug only: scanners and floods make these; the counter carries the rate.
            _ => tracing::debug!(reason, client.address = self.client, error, "WebSocket connection failed"),
        }
    }
}
