//! The gatekeeper: the one object connection.rs asks about access. It admits addresses (limits),
//! decides sessions (policy + subject limit), watches running sessions' rights (expiry, auth
//! server revalidation), tells the auth server when they end, and hands moq-lite the callback
//! that reports refused requests. Every outcome goes through the events in
//! `telemetry::access`, which count, log and audit it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::audit::{Audit, AuditContext};
use super::auth_server::{AuthRequest, SessionEnd};
use super::limits::{AddressSlot, Counter, Limit, SubjectSlot};
use super::policy::{Access, Issuer, Policy};
use super::token;
use super::{Denial, Grant, Refusal};
use crate::telemetry::access::{AccessDecided, AuthServerAnswered, LimitHit, Revalidated, RightEnded, StreamRefused};

pub struct Gatekeeper {
    pub policy: Policy,
    pub limits: Counter,
    pub audit: Audit,
    /// This relay's name in auth-server requests.
    pub node: String,
    /// The relay's own tokens (netplay), decided before the policy.
    pub issuer: Option<Arc<dyn Issuer>>,
}

/// What a session holds while it runs: its places in the limits, released on drop.
pub struct Admitted {
    pub grant: Grant,
    _subject: Option<SubjectSlot>,
}

impl Gatekeeper {
    /// A new connection from `ip` (before its handshake): the address limits.
    pub fn admit_address(&self, ip: IpAddr, ctx: &AuditContext) -> Option<AddressSlot> {
        match self.limits.admit_address(ip, Instant::now()) {
            Ok(slot) => Some(slot),
            Err(limit) => {
                self.limit_hit(ctx, limit);
                None
            }
        }
    }

    /// A per-client limit refused a session (or its handshake).
    pub fn limit_hit(&self, ctx: &AuditContext, limit: Limit) {
        // Limits are hit in floods: the counter carries the rate, the log only the first of each
        // second (roughly), so a loop cannot fill the disk.
        static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let log = LAST_LOGGED.swap(now, Ordering::Relaxed) != now;
        LimitHit { ctx, limit, log, broadcast: None }.emit(&self.audit);
    }

    /// The access decision for a session; emit inside its `moq.auth` span.
    pub async fn decide(&self, ctx: &AuditContext, access: &Access<'_>) -> Result<Admitted, Refusal> {
        let outcome = match self.issued(access) {
            Some(outcome) => outcome,
            None => {
                let started = Instant::now();
                let outcome = self.policy.decide(access).await;
                if self.policy.server().is_some() {
                    let took = started.elapsed();
                    AuthServerAnswered { event: "connect", outcome: outcome.as_ref().map(|_| ()), took }.emit();
                }
                outcome
            }
        };
        let outcome = outcome.and_then(|grant| {
            let subject = match grant.subject.as_deref() {
                Some(subject) => Some(self.limits.admit_subject(subject).map_err(|limit| {
                    self.limit_hit(ctx, limit);
                    Refusal::new(Denial::Limit, format!("{}: too many live sessions of this subject", limit.as_str()))
                })?),
                None => None,
            };
            Ok(Admitted { grant, _subject: subject })
        });
        match &outcome {
            // A subject-limit refusal was counted as a limit hit already.
            Err(r) if r.denial == Denial::Limit => {}
            _ => AccessDecided { ctx, outcome: outcome.as_ref().map(|a| &a.grant) }.emit(&self.audit),
        }
        outcome
    }

    /// The decision on a token of the relay's own issuer (by its `kid`); `None` for anything else.
    fn issued(&self, access: &Access<'_>) -> Option<Result<Grant, Refusal>> {
        let issuer = self.issuer.as_ref()?;
        let jwt = access.token?;
        let ours = token::kid(jwt).is_some_and(|kid| kid == issuer.kid());
        ours.then(|| issuer.grant(jwt, access.dialed, SystemTime::now()))
    }

    /// The callback moq-lite calls for each request it refuses in this session.
    pub fn session_gate(self: &Arc<Self>, ctx: AuditContext) -> moq_lite::session::Gate {
        let gate = self.clone();
        let refused = AtomicU64::new(0);
        moq_lite::session::Gate(Arc::new(move |what| {
            let nth = refused.fetch_add(1, Ordering::Relaxed) + 1;
            StreamRefused { ctx: &ctx, refused: what, nth }.emit(&gate.audit);
        }))
    }

    /// Resolves when the session's right ends: its grant expires, or a revalidation with the auth
    /// server narrows or withdraws it. Never resolves for a grant without expiry or revalidation.
    pub async fn watch(&self, ctx: &AuditContext, grant: &Grant, request: &AuthRequest) -> Refusal {
        let mut expires = grant.expires;
        loop {
            let until_expiry = expires.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
            let revalidate = grant.revalidate.filter(|_| self.policy.server().is_some());
            let wait = match (until_expiry, revalidate) {
                (None, None) => return std::future::pending().await,
                (Some(e), None) => (e, false),
                (None, Some(r)) => (r, true),
                (Some(e), Some(r)) if r < e => (r, true),
                (Some(e), Some(_)) => (e, false),
            };
            tokio::time::sleep(wait.0).await;
            if !wait.1 {
                let refusal = Refusal::new(Denial::Expired, "the grant expired");
                RightEnded { ctx, refusal: &refusal }.emit(&self.audit);
                return refusal;
            }
            let server = self.policy.server().expect("revalidation needs the auth server");
            let started = Instant::now();
            let answer = server.revalidate(request).await;
            let took = started.elapsed();
            AuthServerAnswered { event: "revalidate", outcome: answer.as_ref().map(|_| ()), took }.emit();
            let refusal = match answer {
                Ok(fresh) if covers(&fresh, grant) => {
                    Revalidated { ctx, grant: &fresh }.emit(&self.audit);
                    expires = fresh.expires;
                    continue;
                }
                Ok(_) => Refusal::new(Denial::Revoked, "revalidation narrowed the grant"),
                // An unreachable server does not end sessions it admitted: they run to expiry.
                Err(r) if r.denial == Denial::AuthServerUnavailable => continue,
                Err(r) => Refusal::new(Denial::Revoked, format!("revalidation refused: {}", r.detail)),
            };
            RightEnded { ctx, refusal: &refusal }.emit(&self.audit);
            return refusal;
        }
    }

    /// Tells the auth server (if any) that a session ended, off the session's path.
    pub fn ended(&self, request: AuthRequest, reason: &str, duration: Duration, sent: u64, received: u64) {
        let Some(server) = self.policy.server().cloned() else { return };
        let end = SessionEnd { reason: reason.to_string(), duration, sent, received };
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = server.end(&request, &end).await;
            AuthServerAnswered { event: "end", outcome: answer.as_ref().map(|_| ()), took: started.elapsed() }.emit();
        });
    }
}

/// Whether `fresh` still allows everything `old` did (member by member: a running session's scopes
/// are fixed, so a grant that changed shape counts as narrowed).
fn covers(fresh: &Grant, old: &Grant) -> bool {
    old.publish.iter().all(|p| fresh.publish.iter().any(|f| f == p))
        && old.subscribe.iter().all(|p| fresh.subscribe.iter().any(|f| f == p))
}
