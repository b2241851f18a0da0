//! The access events: each counts itself, writes its log line and its audit record together, so
//! connection.rs and the gate only say what happened. Tokens never reach these: only their hash,
//! inside the [`AuditContext`].

use std::time::Duration;

use metrics::{counter, histogram};

use super::catalog;
use crate::access::audit::{Audit, AuditContext, AuditRecord, Role, Verdict};
use crate::access::limits::Limit;
use crate::access::{Denial, Grant, Refusal};

/// A session's access decision. Emit inside the `moq.auth` span: its attributes are recorded there.
pub struct AccessDecided<'a> {
    pub ctx: &'a AuditContext,
    pub outcome: Result<&'a Grant, &'a Refusal>,
}

impl AccessDecided<'_> {
    pub fn emit(self, audit: &Audit) {
        let verdict = match self.outcome {
            Ok(grant) => Verdict::Accepted(grant.source),
            Err(refusal) => Verdict::Rejected(refusal.denial),
        };
        let (result, reason) = (verdict.result(), verdict.reason());
        counter!(catalog::AUTH_DECISIONS.name, "result" => result, "reason" => reason).increment(1);
        let span = tracing::Span::current();
        span.record("moq.auth.result", result);
        span.record("moq.auth.reason", reason);
        let token = self.ctx.token.as_ref().map(|t| t.as_str());
        let mut record = AuditRecord::decision(self.ctx, verdict);
        match self.outcome {
            Ok(grant) => {
                span.record("moq.auth.publish", tracing::field::display(&grant.publish));
                span.record("moq.auth.subscribe", tracing::field::display(&grant.subscribe));
                tracing::debug!(
                    result,
                    reason,
                    token,
                    subject = grant.subject.as_deref(),
                    publish = %grant.publish,
                    subscribe = %grant.subscribe,
                    "access granted"
                );
            }
            Err(refusal) => {
                tracing::info!(result, reason, token, detail = %refusal.detail, "access refused");
                record = record.detail(&refusal.detail);
            }
        }
        audit.record(record);
    }
}

/// One request of a running session refused: outside its grant (an announce or subscribe) or
/// over a per-session limit. Logged for the first few of a session, then every hundredth, so a
/// client asking in a loop cannot flood the log; every one is counted and audited.
pub struct StreamRefused<'a> {
    pub ctx: &'a AuditContext,
    pub refused: moq_lite::session::Refused<'a>,
    /// How many this session had refused before, this one included.
    pub nth: u64,
}

/// Refusals of one session logged one by one before the log thins out.
const LOGGED_REFUSALS: u64 = 5;

impl StreamRefused<'_> {
    pub fn emit(self, audit: &Audit) {
        use moq_lite::session::Refused;
        let log = self.nth <= LOGGED_REFUSALS || self.nth.is_multiple_of(100);
        match self.refused {
            Refused::Announce(path) | Refused::Subscribe(path) => {
                let role = match self.refused {
                    Refused::Announce(_) => Role::Publish,
                    _ => Role::Subscribe,
                };
                let reason = Denial::PathDenied.as_str();
                counter!(catalog::AUTH_DECISIONS.name, "result" => "rejected", "reason" => reason).increment(1);
                if log {
                    tracing::info!(
                        reason,
                        moq.role = role.as_str(),
                        moq.broadcast = path,
                        refused = self.nth,
                        "request refused: outside the session's grant"
                    );
                }
                audit.record(AuditRecord::decision(self.ctx, Denial::PathDenied).stream(role, path));
            }
            Refused::AnnounceLimit(path) => {
                LimitHit { ctx: self.ctx, limit: Limit::AnnouncesPerSession, log, broadcast: Some(path) }.emit(audit)
            }
            Refused::SubscriptionLimit => {
                LimitHit { ctx: self.ctx, limit: Limit::SubscriptionsPerSession, log, broadcast: None }.emit(audit)
            }
        }
    }
}

/// A per-client limit refused something (a session, or one request of a session).
pub struct LimitHit<'a> {
    pub ctx: &'a AuditContext,
    pub limit: Limit,
    /// Whether to write the log line (callers thin out repeated hits).
    pub log: bool,
    pub broadcast: Option<&'a str>,
}

impl LimitHit<'_> {
    pub fn emit(self, audit: &Audit) {
        let limit = self.limit.as_str();
        counter!(catalog::LIMIT_HITS.name, "limit" => limit).increment(1);
        let session_refused = !matches!(self.limit, Limit::AnnouncesPerSession | Limit::SubscriptionsPerSession);
        if session_refused {
            let reason = Denial::Limit.as_str();
            counter!(catalog::AUTH_DECISIONS.name, "result" => "rejected", "reason" => reason).increment(1);
        }
        if self.log {
            let client = self.ctx.client.as_deref();
            tracing::info!(limit, client.address = client, moq.broadcast = self.broadcast, "limit reached: refused");
        }
        audit.record(AuditRecord::limit_hit(self.ctx, limit));
    }
}

/// A running session's right ended (its token expired, or a revalidation narrowed or withdrew
/// it): the session is being closed. The one log line of that close.
pub struct RightEnded<'a> {
    pub ctx: &'a AuditContext,
    pub refusal: &'a Refusal,
}

impl RightEnded<'_> {
    pub fn emit(self, audit: &Audit) {
        let reason = self.refusal.denial.as_str();
        counter!(catalog::AUTH_DECISIONS.name, "result" => "rejected", "reason" => reason).increment(1);
        tracing::info!(reason, detail = %self.refusal.detail, "session closed: its access right ended");
        audit.record(AuditRecord::session_revoked(self.ctx, self.refusal.denial).detail(&self.refusal.detail));
    }
}

/// A running session's grant was checked again and still holds.
pub struct Revalidated<'a> {
    pub ctx: &'a AuditContext,
    pub grant: &'a Grant,
}

impl Revalidated<'_> {
    pub fn emit(self, audit: &Audit) {
        tracing::debug!(reason = self.grant.source.as_str(), "access revalidated");
        audit.record(AuditRecord::revalidation(self.ctx, Verdict::Accepted(self.grant.source)));
    }
}

/// The auth server answered (or failed to): `event` is connect, revalidate or end.
pub struct AuthServerAnswered<'a> {
    pub event: &'static str,
    pub outcome: Result<(), &'a Refusal>,
    pub took: Duration,
}

impl AuthServerAnswered<'_> {
    pub fn emit(self) {
        let outcome = match self.outcome {
            Ok(()) => "ok",
            Err(r) if r.denial == Denial::AuthServerUnavailable => "unavailable",
            Err(_) => "denied",
        };
        counter!(catalog::AUTH_SERVER_REQUESTS.name, "event" => self.event, "outcome" => outcome).increment(1);
        histogram!(catalog::AUTH_SERVER_DURATION.name).record(self.took.as_secs_f64());
        if let Err(refusal) = self.outcome {
            if refusal.denial == Denial::AuthServerUnavailable {
                tracing::warn!(event = self.event, detail = %refusal.detail, "auth server unavailable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::limits::Limit;
    use crate::access::Source;

    #[test]
    fn the_reason_labels_are_the_denials_and_sources() {
        let mut spelled: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        spelled.extend(Denial::ALL.iter().map(|d| d.as_str()));
        assert_eq!(spelled, catalog::AUTH_REASONS);
        let limits: Vec<&str> = Limit::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(limits, catalog::LIMIT_NAMES);
    }

    #[test]
    fn decisions_and_refusals_count_by_result_and_reason() {
        let ctx = AuditContext::session(7);
        let audit = Audit::disabled();
        let counts = crate::telemetry::counters_during(|| {
            let grant = Grant { source: Source::Token, ..Default::default() };
            AccessDecided { ctx: &ctx, outcome: Ok(&grant) }.emit(&audit);
            let refusal = Refusal::new(Denial::Expired, "exp passed");
            AccessDecided { ctx: &ctx, outcome: Err(&refusal) }.emit(&audit);
            for nth in 1..=3 {
                StreamRefused { ctx: &ctx, refused: moq_lite::session::Refused::Subscribe("x"), nth }.emit(&audit);
            }
            StreamRefused { ctx: &ctx, refused: moq_lite::session::Refused::SubscriptionLimit, nth: 4 }.emit(&audit);
            LimitHit { ctx: &ctx, limit: Limit::SessionsPerAddress, log: true, broadcast: None }.emit(&audit);
        });
        assert_eq!(
            counts,
            vec![
                ("moq_relay_auth_decisions_total{result=accepted,reason=token}".to_string(), 1),
                ("moq_relay_auth_decisions_total{result=rejected,reason=expired}".to_string(), 1),
                ("moq_relay_auth_decisions_total{result=rejected,reason=limit}".to_string(), 1),
                ("moq_relay_auth_decisions_total{result=rejected,reason=path_denied}".to_string(), 3),
                ("moq_relay_limit_hits_total{limit=sessions_per_address}".to_string(), 1),
                ("moq_relay_limit_hits_total{limit=subscriptions_per_session}".to_string(), 1),
            ]
        );
    }
}
