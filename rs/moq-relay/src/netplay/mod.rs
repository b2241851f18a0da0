//! Netplay sessions (docs/netplay.md): small real-time rooms on the relay. A host creates a room
//! and gets a join code, friends join with it, everyone's broadcasts flow under
//! `netplay/<sessionId>/`, and the room ends when the host leaves, when it is abandoned, or when
//! its TTL passes. Rooms live in this process's memory only.
//!
//! - [`codes`]: join codes and session ids from the OS random source;
//! - [`sessions`]: the rooms as a pure state machine (clock injected, unit-tested);
//! - [`api`]: the HTTP handlers (`/api/netplay/...` on the public listener);
//! - `sweep`: the service's `run()`, the cleanup sweep and the host-grace/idle timers.
//!
//! [`Netplay`] is the service around the state machine: it signs the tokens (HS256 with a key made
//! at start, `kid: "netplay"`), vouches for them in the access layer ([`Issuer`]), learns when its
//! members' MoQ sessions open and close ([`Netplay::opened`]), and closes the MoQ sessions of a
//! room that ended or a participant that left (with the `unauthorized` code, which withdraws
//! their broadcasts).

pub mod api;
pub mod codes;
pub mod sessions;
mod sweep;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moq_lite::session::Session;

use crate::access::keys::Key;
use crate::access::policy::Issuer;
use crate::access::{token, Denial, Grant, Refusal};
use crate::telemetry::netplay::{ActiveSessions, NetplayStarted, ParticipantLeft, SessionEnded, Thinning};
use crate::Sessions;
use codes::{Entropy, SystemEntropy};
use sessions::{
    token_hash, CreateRefusal, CreateRequest, Created, Ended, JoinRefused, Joined, LeaveRefusal, Left, Now, Registry,
    Ticket, HOST,
};

pub use sessions::{Rate, Settings};

/// The `kid` of the relay's netplay tokens.
pub const KID: &str = "netplay";
/// The first path segment of every room.
pub const PREFIX: &str = "netplay";

/// The netplay service. Build it with [`Netplay::new`], serve [`Netplay::router`], run
/// [`Netplay::run`].
pub struct Netplay {
    registry: Mutex<Registry>,
    signing: EncodingKey,
    verifying: Key,
    entropy: SystemEntropy,
    /// The relay's live MoQ sessions, to close a room's.
    sessions: Sessions,
    /// Wakes `run` when a deadline may have moved (a host's last session closed).
    wake: tokio::sync::Notify,
    thinning: Mutex<Thinning>,
    started: Instant,
    /// How client addresses appear in refusal logs (`--peer-ip`).
    peer_ip: moq_telemetry::redact::PeerIp,
}

/// Why a delete was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveError {
    UnknownSession,
    Unauthorized(String),
}

impl Netplay {
    /// `client` as logs may show it.
    pub(crate) fn shown(&self, client: std::net::IpAddr) -> Option<String> {
        self.peer_ip.show(std::net::SocketAddr::new(client, 0))
    }

    /// The service with a fresh signing key; its gauges start at their values.
    pub fn new(settings: Settings, sessions: Sessions) -> anyhow::Result<Arc<Netplay>> {
        Self::with_peer_ip(settings, sessions, Default::default())
    }

    /// As [`new`](Self::new), showing client addresses in refusal logs as `--peer-ip` says.
    pub fn with_peer_ip(
        settings: Settings,
        sessions: Sessions,
        peer_ip: moq_telemetry::redact::PeerIp,
    ) -> anyhow::Result<Arc<Netplay>> {
        let entropy = SystemEntropy::default();
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret).map_err(|_| anyhow::anyhow!("netplay: the OS random source failed"))?;
        let jwk = serde_json::json!({"kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)}).to_string();
        let verifying = Key::parse(&jwk).map_err(|e| anyhow::anyhow!(e)).context("netplay token key")?;
        NetplayStarted { settings: &settings }.emit();
        Ok(Arc::new(Netplay {
            registry: Mutex::new(Registry::new(settings)),
            signing: EncodingKey::from_secret(&secret),
            verifying,
            entropy,
            sessions,
            wake: Default::default(),
            thinning: Default::default(),
            started: Instant::now(),
            peer_ip,
        }))
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> Settings {
        self.registry().settings().clone()
    }

    /// A signed token for `ticket`: root `netplay/<id>`, subject `netplay:<id>:<member>`; the host
    /// publishes `host`, a participant `p/<id>`; both subscribe to everything in the room.
    fn issue(&self, ticket: &Ticket) -> Option<String> {
        let publish = match ticket.member {
            HOST => HOST.to_string(),
            participant => format!("p/{participant}"),
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = serde_json::json!({
            "root": format!("{PREFIX}/{}", ticket.session),
            "sub": subject(ticket.session, ticket.member),
            "publish": [publish],
            "subscribe": ["**"],
            "exp": secs(ticket.expires),
            "iat": secs(ticket.issued),
        });
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.to_string());
        jsonwebtoken::encode(&header, &claims, &self.signing).ok()
    }

    /// Creates a room for `client`.
    pub fn create(&self, request: &CreateRequest, client: IpAddr) -> Result<Created, CreateRefusal> {
        let mut registry = self.registry();
        let created = registry.create(request, client, Now::real(), &self.entropy, &mut |t| self.issue(t));
        ActiveSessions(registry.len()).emit();
        // Its idle timer runs from now.
        self.wake.notify_one();
        created
    }

    /// Adds a participant to the room of `code`.
    pub fn join(&self, code: &str, participant: &str, client: IpAddr) -> Result<Joined, JoinRefused> {
        self.registry().join(code, participant, client, Now::real(), &mut |t| self.issue(t))
    }

    /// The bearer of `token` leaves room `id`: the host ends it, a participant is removed.
    pub fn leave(&self, id: &str, token: Option<&str>) -> Result<(), LeaveError> {
        if !self.registry().contains(id) {
            return Err(LeaveError::UnknownSession);
        }
        let unauthorized = |detail: &str| LeaveError::Unauthorized(detail.to_string());
        let token = token.ok_or_else(|| unauthorized("no bearer token"))?;
        let claims = token::verify_with(&self.verifying, token, SystemTime::now())
            .map_err(|r| LeaveError::Unauthorized(format!("the token does not verify: {r}")))?;
        let (room, member) =
            claims.subject.as_deref().and_then(parse_subject).ok_or_else(|| unauthorized("not a netplay token"))?;
        if room != id {
            return Err(unauthorized("the token is another session's"));
        }
        let left = self.registry().leave(id, member, &token_hash(token), Now::real());
        match left {
            Ok(Left::Ended(ended)) => self.finish(vec![ended]),
            Ok(Left::Removed) => {
                // The idle timer may have started.
                self.wake.notify_one();
                let closed = self.sessions.close_subjects(|s| s == subject(id, member));
                ParticipantLeft { id, participant: member, moq_sessions: closed }.emit();
            }
            Err(LeaveRefusal::UnknownSession) => return Err(LeaveError::UnknownSession),
            Err(LeaveRefusal::Unauthorized) => return Err(unauthorized("not a current member's token")),
        }
        Ok(())
    }

    /// Rooms that ended: counted and logged, and their MoQ sessions closed.
    fn finish(&self, ended: Vec<Ended>) {
        if ended.is_empty() {
            return;
        }
        ActiveSessions(self.registry().len()).emit();
        for room in &ended {
            let prefix = format!("{PREFIX}:{}:", room.id);
            let closed = self.sessions.close_subjects(|s| s.starts_with(&prefix));
            SessionEnded { ended: room, moq_sessions: closed }.emit();
        }
    }

    /// Whether a refusal from `client` gets a log line (the first few per address per minute).
    pub fn log_refusal(&self, client: IpAddr) -> bool {
        let minute = self.started.elapsed().as_secs() / 60;
        self.thinning.lock().unwrap_or_else(|e| e.into_inner()).log(client, minute)
    }

    /// A MoQ session was admitted with `token` (and its grant's `subject`) and is registered in
    /// [`Sessions`]: for a netplay token, its member is present until the returned guard drops.
    /// A room that ended (or a participant that left) since the access decision closes the
    /// session at once.
    pub fn opened(self: &Arc<Self>, token: Option<&str>, subject: Option<&str>, session: &Session) -> Option<Presence> {
        token::kid(token?).filter(|kid| kid == KID)?;
        let (id, member) = subject.and_then(parse_subject)?;
        let Some(serial) = self.registry().opened(id, member) else {
            session.close(&moq_lite::Error::Unauthorized);
            return None;
        };
        Some(Presence { netplay: self.clone(), id: id.to_string(), member: member.to_string(), serial })
    }
}

/// A member's MoQ session in its room, counted until dropped (host presence, idleness).
pub struct Presence {
    netplay: Arc<Netplay>,
    id: String,
    member: String,
    serial: u64,
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.netplay.registry().closed(&self.id, &self.member, self.serial, Now::real());
        // A host's grace or the idle timer may have started.
        self.netplay.wake.notify_one();
    }
}

impl Issuer for Netplay {
    fn kid(&self) -> &'static str {
        KID
    }

    fn grant(&self, token: &str, dialed: &str, now: SystemTime) -> Result<Grant, Refusal> {
        let claims = token::verify_with(&self.verifying, token, now)?;
        let malformed = || Refusal::new(Denial::Malformed, "not a netplay token: its subject or root is not a room's");
        let (id, member) = claims.subject.as_deref().and_then(parse_subject).ok_or_else(malformed)?;
        if claims.root != format!("{PREFIX}/{id}") {
            return Err(malformed());
        }
        self.registry().vouch(id, member, &token_hash(token)).map_err(|why| Refusal::new(Denial::Revoked, why))?;
        let mut grant = claims.grant_at(dialed)?;
        // The room's end closes its sessions, whatever the reason: left to the token's `exp` (the
        // room's TTL, in whole seconds), the access layer would close them first, at or just
        // before the TTL, and the room would then end `hostLeft` (the host's leave, or its grace
        // running out) before the cleanup sweep could end it `cleanupJob`. Past its `exp` the
        // token still admits no new session.
        grant.expires = None;
        Ok(grant)
    }
}

/// The subject of a room member's tokens: `netplay:<id>:<member>`.
pub fn subject(id: &str, member: &str) -> String {
    format!("{PREFIX}:{id}:{member}")
}

/// The room and member of a netplay subject.
pub fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix(':')?;
    let (id, member) = rest.split_once(':')?;
    (!id.is_empty() && !member.is_empty() && !member.contains(':')).then_some((id, member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::audit::{Audit, AuditContext};
    use crate::access::auth_server::AuthRequest;
    use crate::access::gate::Gatekeeper;
    use crate::access::limits::{Counter, Limits};
    use crate::access::policy::{Access, Policy, Public};
    use moq_lite::pattern::Patterns;

    pub(super) fn service() -> Arc<Netplay> {
        let plenty: Rate = "1000/s:1000".parse().unwrap();
        let settings = Settings { enabled: true, join_rate: plenty, create_rate: plenty, ..Default::default() };
        Netplay::new(settings, Sessions::default()).unwrap()
    }

    fn gate(netplay: &Arc<Netplay>, policy: Policy) -> Gatekeeper {
        Gatekeeper {
            policy,
            limits: Counter::new(Limits::default()),
            audit: Audit::disabled(),
            node: "test".into(),
            issuer: Some(netplay.clone() as Arc<dyn Issuer>),
        }
    }

    async fn decide(gate: &Gatekeeper, dialed: &str, token: &str) -> Result<Grant, Refusal> {
        let request = AuthRequest {
            id: "1".into(),
            node: "test".into(),
            transport: AuthRequest::QUIC,
            remote: None,
            local: None,
            server_name: None,
            alpn: None,
            path: dialed.into(),
            query: None,
            role: None,
        };
        let access = Access { dialed, token: Some(token), request: &request };
        gate.decide(&AuditContext::session(1), &access).await.map(|a| a.grant)
    }

    fn patterns(list: &[&str]) -> Patterns {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn client() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    #[test]
    fn subjects_round_trip() {
        assert_eq!(parse_subject(&subject("abc", "host")), Some(("abc", "host")));
        assert_eq!(parse_subject("netplay:abc:p-1"), Some(("abc", "p-1")));
        for bad in [
            "",
            "netplay",
            "netplay:",
            "netplay:abc",
            "netplay::host",
            "netplay:abc:",
            "other:abc:host",
            "netplay:a:b:c",
        ] {
            assert_eq!(parse_subject(bad), None, "{bad}");
        }
    }

    /// A host token from create verifies through the real access layer at `netplay/<id>`, whatever
    /// the policy, grants what docs/netplay.md says, and is revoked once the room ends.
    #[tokio::test]
    async fn tokens_round_trip_through_the_access_policy() {
        let netplay = service();
        let room = netplay.create(&CreateRequest::default(), client()).unwrap();
        let bob = netplay.join(&room.code.to_string(), "bob", client()).unwrap();
        let root = format!("netplay/{}", room.id);
        assert_eq!(token::kid(&room.host_token).as_deref(), Some(KID));

        // No keys, nothing public: netplay tokens are decided by their issuer all the same.
        let local = gate(&netplay, Policy::Local { keys: None, public: Public::default() });
        let grant = decide(&local, &root, &room.host_token).await.unwrap();
        assert_eq!(grant.publish, patterns(&[&format!("{root}/host")]));
        assert_eq!(grant.subscribe, patterns(&[&format!("{root}/**")]));
        assert_eq!(grant.subject.as_deref(), Some(subject(&room.id, HOST).as_str()));
        // The token expires with the room, but the room's end (the sweep, for a TTL) is what
        // closes the sessions: no expiry of their own.
        assert_eq!(grant.expires, None);
        let payload = URL_SAFE_NO_PAD.decode(room.host_token.split('.').nth(1).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["exp"], room.expires.duration_since(UNIX_EPOCH).unwrap().as_secs());
        let grant = decide(&local, "", &bob.token).await.unwrap();
        assert_eq!(grant.publish, patterns(&[&format!("{root}/p/bob")]));
        assert_eq!(decide(&local, "other", &bob.token).await.unwrap_err().denial, Denial::RootMismatch);

        // Public patterns configured: the same.
        let public = gate(&netplay, Policy::Local { keys: None, public: Public::parse(&["**".into()], &[]).unwrap() });
        assert!(decide(&public, &root, &room.host_token).await.is_ok());

        // Another process's key (a forged or stale token) does not verify.
        let other = service();
        let foreign = other.create(&CreateRequest::default(), client()).unwrap();
        let refusal = decide(&local, &format!("netplay/{}", foreign.id), &foreign.host_token).await.unwrap_err();
        assert_eq!(refusal.denial, Denial::BadSignature);

        // Bob leaves: his token is revoked, the host's is not.
        netplay.leave(&room.id, Some(&bob.token)).unwrap();
        let refusal = decide(&local, &root, &bob.token).await.unwrap_err();
        assert_eq!(
            (refusal.denial, refusal.detail.as_str()),
            (Denial::Revoked, "the participant left the netplay session")
        );
        assert!(decide(&local, &root, &room.host_token).await.is_ok());

        // The host ends the room: revoked.
        netplay.leave(&room.id, Some(&room.host_token)).unwrap();
        let refusal = decide(&local, &root, &room.host_token).await.unwrap_err();
        assert_eq!((refusal.denial, refusal.detail.as_str()), (Denial::Revoked, "the netplay session ended"));
    }

    /// The live-session gauge is set as rooms come and go, so a scrape reads it right.
    #[test]
    fn the_active_gauge_follows_creates_and_ends() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let active = || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(k, ..)| k.key().name() == crate::telemetry::catalog::NETPLAY_ACTIVE.name)
                .map(|(_, _, _, v)| match v {
                    DebugValue::Gauge(g) => g.into_inner(),
                    _ => panic!("a gauge"),
                })
        };
        let netplay = metrics::with_local_recorder(&recorder, service);
        assert_eq!(active(), Some(0.0));
        let rooms: Vec<_> = metrics::with_local_recorder(&recorder, || {
            (0..3).map(|_| netplay.create(&CreateRequest::default(), client()).unwrap()).collect()
        });
        assert_eq!(active(), Some(3.0));
        metrics::with_local_recorder(&recorder, || netplay.leave(&rooms[0].id, Some(&rooms[0].host_token)).unwrap());
        assert_eq!(active(), Some(2.0));
    }

    #[test]
    fn delete_needs_a_current_members_token_of_that_session() {
        let netplay = service();
        let room = netplay.create(&CreateRequest::default(), client()).unwrap();
        let other = netplay.create(&CreateRequest::default(), client()).unwrap();
        let bob = netplay.join(&room.code.to_string(), "bob", client()).unwrap();
        assert_eq!(netplay.leave("nope", Some(&room.host_token)), Err(LeaveError::UnknownSession));
        let unauthorized = |r: Result<(), LeaveError>| matches!(r, Err(LeaveError::Unauthorized(_)));
        assert!(unauthorized(netplay.leave(&room.id, None)));
        assert!(unauthorized(netplay.leave(&room.id, Some("not.a.jwt"))));
        assert!(unauthorized(netplay.leave(&room.id, Some(&other.host_token))));
        assert_eq!(netplay.leave(&room.id, Some(&bob.token)), Ok(()));
        assert!(unauthorized(netplay.leave(&room.id, Some(&bob.token))), "bob is gone");
        assert_eq!(netplay.leave(&room.id, Some(&room.host_token)), Ok(()));
        assert_eq!(netplay.leave(&room.id, Some(&room.host_token)), Err(LeaveError::UnknownSession));
        assert_eq!(netplay.registry().len(), 1);
    }
}
