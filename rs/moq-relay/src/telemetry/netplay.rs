//! The netplay events: each writes its log line (the names and camelCase fields of
//! docs/netplay.md) and updates its metrics together, so the service and its handlers only say
//! what happened. Join codes appear only hashed; tokens never.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};

use super::catalog::{self, NETPLAY_PROVIDER as PROVIDER};
use crate::netplay::sessions::{Ended, Settings};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A room was created.
pub struct SessionCreated<'a> {
    pub id: &'a str,
    /// The join code's hash (`JoinCode::hash`).
    pub join_code: &'a str,
    pub ttl_minutes: u32,
    pub latency: Duration,
}

impl SessionCreated<'_> {
    pub fn emit(self) {
        counter!(catalog::NETPLAY_CREATED.name, "provider" => PROVIDER, "result" => "ok").increment(1);
        tracing::info!(
            sessionId = self.id,
            joinCode = self.join_code,
            ttlMinutes = self.ttl_minutes,
            signalingLatencyMs = ms(self.latency),
            provider = PROVIDER,
            "netplay session created"
        );
    }
}

/// A create request was refused (`result` is a `CreateRefusal`'s code). Logged only when `log`
/// (callers thin them per address: see [`Thinning`]); always counted.
pub struct CreateRefused<'a> {
    pub result: &'static str,
    pub message: &'a str,
    /// The client's address as logs may show it (`--peer-ip`): where abuse comes from.
    pub client: Option<&'a str>,
    pub log: bool,
}

impl CreateRefused<'_> {
    pub fn emit(self) {
        counter!(catalog::NETPLAY_CREATED.name, "provider" => PROVIDER, "result" => self.result).increment(1);
        if !self.log {
            return;
        }
        match self.result {
            "error" | "capacity" => {
                tracing::warn!(
                    result = self.result,
                    detail = self.message,
                    provider = PROVIDER,
                    client.address = self.client,
                    "netplay session creation refused"
                )
            }
            _ => tracing::info!(
                result = self.result,
                detail = self.message,
                client.address = self.client,
                "netplay session creation refused"
            ),
        }
    }
}

/// A participant joined a room.
pub struct ParticipantJoined<'a> {
    pub id: &'a str,
    pub participant: &'a str,
}

impl ParticipantJoined<'_> {
    pub fn emit(self) {
        counter!(catalog::NETPLAY_JOINED.name, "result" => "accepted").increment(1);
        tracing::info!(
            sessionId = self.id,
            participantUserId = self.participant,
            result = "accepted",
            "netplay participant join"
        );
    }
}

/// A join was refused (`reason` is a `JoinRefusal`'s code). Logged only when `log` (the first
/// few per address per minute: [`Thinning`]), always counted.
pub struct JoinRefused<'a> {
    pub reason: &'static str,
    /// The room, when the code named one.
    pub id: Option<&'a str>,
    /// The participant id, when it was a valid one.
    pub participant: Option<&'a str>,
    /// The client's address as logs may show it (`--peer-ip`): where code guessing comes from.
    pub client: Option<&'a str>,
    pub log: bool,
}

impl JoinRefused<'_> {
    pub fn emit(self) {
        counter!(catalog::NETPLAY_JOINED.name, "result" => self.reason).increment(1);
        if self.log {
            tracing::info!(
                sessionId = self.id,
                participantUserId = self.participant,
                result = "refused",
                reason = self.reason,
                client.address = self.client,
                "netplay participant join"
            );
        }
    }
}

/// A participant left its room (DELETE with its token); the room goes on.
pub struct ParticipantLeft<'a> {
    pub id: &'a str,
    pub participant: &'a str,
    /// Its MoQ sessions closed.
    pub moq_sessions: usize,
}

impl ParticipantLeft<'_> {
    pub fn emit(self) {
        tracing::info!(
            sessionId = self.id,
            participantUserId = self.participant,
            moqSessions = self.moq_sessions,
            "netplay participant left"
        );
    }
}

/// A room ended (any reason).
pub struct SessionEnded<'a> {
    pub ended: &'a Ended,
    /// Its MoQ sessions closed.
    pub moq_sessions: usize,
}

impl SessionEnded<'_> {
    pub fn emit(self) {
        let reason = self.ended.reason.as_str();
        counter!(catalog::NETPLAY_ENDED.name, "provider" => PROVIDER, "reason" => reason).increment(1);
        histogram!(catalog::NETPLAY_DURATION.name, "provider" => PROVIDER)
            .record(self.ended.lifetime.as_secs_f64() / 60.0);
        tracing::info!(
            sessionId = self.ended.id.as_str(),
            reason,
            activeParticipants = self.ended.active_participants,
            moqSessions = self.moq_sessions,
            "netplay session ended"
        );
    }
}

/// A cleanup sweep ran. Emit inside its `netplay.cleanup.run` span.
pub struct CleanupSwept {
    /// Rooms it ended (their TTL had passed).
    pub expired: usize,
    /// Rooms past their TTL still alive afterwards.
    pub past_ttl: usize,
    pub took: Duration,
    pub processed_at: SystemTime,
}

impl CleanupSwept {
    pub fn emit(self) {
        counter!(catalog::NETPLAY_SWEEPS.name).increment(1);
        histogram!(catalog::NETPLAY_SWEEP_DURATION.name).record(ms(self.took));
        gauge!(catalog::NETPLAY_SWEEP_EXPIRED.name).set(self.expired as f64);
        gauge!(catalog::NETPLAY_PAST_TTL.name).set(self.past_ttl as f64);
        let span = tracing::Span::current();
        span.record("netplay.cleanup.expired_sessions", self.expired);
        span.record("netplay.cleanup.past_ttl", self.past_ttl);
        let processed_at = humantime::format_rfc3339_millis(self.processed_at).to_string();
        let duration_ms = ms(self.took);
        if self.expired > 0 {
            tracing::info!(
                expiredSessions = self.expired,
                processedAt = processed_at,
                durationMs = duration_ms,
                "netplay cleanup sweep"
            );
        } else {
            tracing::debug!(
                expiredSessions = self.expired,
                processedAt = processed_at,
                durationMs = duration_ms,
                "netplay cleanup sweep"
            );
        }
        if self.past_ttl > 0 {
            tracing::warn!(sessions = self.past_ttl, "netplay sessions past their TTL survived the cleanup sweep");
        }
    }
}

/// One signaling request handled, whatever its outcome: its handling time.
pub struct Signaled {
    pub operation: &'static str,
    pub took: Duration,
}

impl Signaled {
    pub fn emit(self) {
        histogram!(catalog::NETPLAY_LATENCY.name, "provider" => PROVIDER, "operation" => self.operation)
            .record(ms(self.took));
    }
}

/// The TTL a create request asked for (the default when it named none), valid or not.
pub struct TtlRequested(pub f64);

impl TtlRequested {
    pub fn emit(self) {
        if self.0.is_finite() {
            histogram!(catalog::NETPLAY_REQUESTED_TTL.name).record(self.0);
        }
    }
}

/// The live room count changed.
pub struct ActiveSessions(pub usize);

impl ActiveSessions {
    pub fn emit(self) {
        gauge!(catalog::NETPLAY_ACTIVE.name, "provider" => PROVIDER).set(self.0 as f64);
    }
}

/// The netplay service started: its TTL bounds, and every gauge at its starting value.
pub struct NetplayStarted<'a> {
    pub settings: &'a Settings,
}

impl NetplayStarted<'_> {
    pub fn emit(self) {
        let s = self.settings;
        for (bound, minutes) in
            [("min", s.min_ttl_minutes), ("max", s.max_ttl_minutes), ("default", s.default_ttl_minutes)]
        {
            gauge!(catalog::NETPLAY_TTL_LIMIT.name, "bound" => bound).set(f64::from(minutes));
        }
        ActiveSessions(0).emit();
        gauge!(catalog::NETPLAY_SWEEP_EXPIRED.name).set(0.0);
        gauge!(catalog::NETPLAY_PAST_TTL.name).set(0.0);
        tracing::info!(
            minTtlMinutes = s.min_ttl_minutes,
            maxTtlMinutes = s.max_ttl_minutes,
            defaultTtlMinutes = s.default_ttl_minutes,
            maxParticipants = s.max_participants,
            maxSessions = s.max_sessions,
            "netplay sessions enabled (POST /api/netplay/sessions, POST /api/netplay/join, DELETE /api/netplay/sessions/ID)"
        );
    }
}

/// Refusal log lines allowed per client address per minute.
pub const LOGGED_PER_MINUTE: u32 = 5;
/// Most addresses whose refusals are being thinned at once; past it (a flood from many
/// addresses) newcomers' refusals are counted but not logged until the minute turns.
pub const MAX_THINNED: usize = 4_096;

/// Which refusals get a log line: the first [`LOGGED_PER_MINUTE`] per client address (IPv6 by
/// its /64) per minute. Bounded by [`MAX_THINNED`] addresses.
#[derive(Default)]
pub struct Thinning {
    seen: HashMap<IpAddr, (u64, u32)>,
}

impl Thinning {
    /// Whether a refusal for `ip` in minute `minute` (any monotonic minute count) is logged.
    pub fn log(&mut self, ip: IpAddr, minute: u64) -> bool {
        let key = crate::access::limits::client_key(ip);
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_THINNED {
            self.seen.retain(|_, (m, _)| *m == minute);
            if self.seen.len() >= MAX_THINNED {
                return false;
            }
        }
        let entry = self.seen.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= LOGGED_PER_MINUTE
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netplay::sessions::EndReason;

    #[test]
    fn label_sets_are_spelled_from_the_state_machine() {
        use crate::netplay::sessions::{CreateRefusal, JoinRefusal};
        let ends: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(ends, catalog::NETPLAY_END_REASONS);
        let creates = [
            CreateRefusal::InvalidRequest(""),
            CreateRefusal::InvalidTtl { min: 1, max: 2 },
            CreateRefusal::Conflict,
            CreateRefusal::RateLimited,
            CreateRefusal::Capacity,
            CreateRefusal::Error(""),
        ];
        let mut spelled = vec!["ok"];
        spelled.extend(creates.iter().map(|c| c.as_str()));
        assert_eq!(spelled, catalog::NETPLAY_CREATE_RESULTS);
        let joins = [
            JoinRefusal::UnknownCode,
            JoinRefusal::Expired,
            JoinRefusal::Full,
            JoinRefusal::Duplicate,
            JoinRefusal::RateLimited,
            JoinRefusal::InvalidRequest,
            JoinRefusal::Error,
        ];
        let mut spelled = vec!["accepted"];
        spelled.extend(joins.iter().map(|j| j.as_str()));
        assert_eq!(spelled, catalog::NETPLAY_JOIN_RESULTS);
    }

    #[test]
    fn events_count_by_their_labels() {
        let ended =
            Ended { id: "x".into(), reason: EndReason::CleanupJob, active_participants: 2, lifetime: Duration::ZERO };
        let counts = crate::telemetry::counters_during(|| {
            SessionCreated { id: "x", join_code: "sha256:0", ttl_minutes: 5, latency: Duration::ZERO }.emit();
            CreateRefused { result: "rate_limited", message: "slow down", client: None, log: false }.emit();
            ParticipantJoined { id: "x", participant: "bob" }.emit();
            for log in [true, false] {
                JoinRefused {
                    reason: "unknown_code",
                    id: None,
                    participant: Some("bob"),
                    client: Some("192.0.2.1"),
                    log,
                }
                .emit();
            }
            SessionEnded { ended: &ended, moq_sessions: 0 }.emit();
            let processed_at = SystemTime::now();
            CleanupSwept { expired: 1, past_ttl: 0, took: Duration::ZERO, processed_at }.emit();
        });
        assert_eq!(
            counts,
            vec![
                ("netplay_cleanup_sweeps_total{}".to_string(), 1),
                ("netplay_participants_joined_total{result=accepted}".to_string(), 1),
                ("netplay_participants_joined_total{result=unknown_code}".to_string(), 2),
                ("netplay_sessions_created_total{provider=moq-relay,result=ok}".to_string(), 1),
                ("netplay_sessions_created_total{provider=moq-relay,result=rate_limited}".to_string(), 1),
                ("netplay_sessions_ended_total{provider=moq-relay,reason=cleanupJob}".to_string(), 1),
            ]
        );
    }

    #[test]
    fn refusal_logs_thin_per_address_per_minute_and_stay_bounded() {
        let mut thinning = Thinning::default();
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let logged = (0..10).filter(|_| thinning.log(a, 7)).count();
        assert_eq!(logged, LOGGED_PER_MINUTE as usize);
        assert!(thinning.log("203.0.113.6".parse().unwrap(), 7), "another address");
        assert!(thinning.log(a, 8), "the next minute");
        for i in 0..(MAX_THINNED as u32 * 2) {
            thinning.log(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 8);
        }
        assert!(thinning.len() <= MAX_THINNED);
        assert!(thinning.log(a, 8), "known addresses still log");
        assert!(thinning.log("192.0.2.99".parse().unwrap(), 9), "a new minute frees room");
    }
}
