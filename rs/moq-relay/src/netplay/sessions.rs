//! The netplay rooms as a pure state machine: create, join, leave, end, presence of their
//! members' MoQ sessions, and the timers (host grace, idle timeout, TTL). No I/O and no clock of
//! its own: every call is given [`Now`], so the tests drive time. The service around it
//! (`netplay/mod.rs`) signs the tokens, closes MoQ sessions and emits the events.
//!
//! Memory is bounded, map by map:
//! - `rooms` and `codes`: one entry per live room, at most `--netplay-max-sessions`;
//! - a room's `participants`: at most `--netplay-max-participants`;
//! - `tombstones` (codes of recently ended rooms, so a late joiner hears `expired` rather than
//!   `unknown_code`): at most [`MAX_TOMBSTONES`], each kept [`TOMBSTONE_KEEP`];
//! - the create and join rate buckets: at most [`MAX_BUCKETS`] addresses each.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::codes::{self, Entropy, JoinCode};
use crate::access::limits::client_key;

/// The member name of a room's host (participant ids may not take it).
pub const HOST: &str = "host";

/// Most addresses with a create (or join) rate bucket.
pub const MAX_BUCKETS: usize = 16_384;
/// Most codes of ended rooms remembered.
pub const MAX_TOMBSTONES: usize = 4_096;
/// How long the code of an ended room answers `expired`.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(600);
/// The longest `romId`, `initiatorUserId` and participant id.
pub const MAX_ID_LEN: usize = 64;

/// The configured rooms (`--netplay-*`). The defaults are the flags' documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Whether the relay serves netplay at all (`--netplay`).
    pub enabled: bool,
    pub min_ttl_minutes: u32,
    pub max_ttl_minutes: u32,
    pub default_ttl_minutes: u32,
    /// Participants a room takes, its host not counted.
    pub max_participants: usize,
    /// Live rooms at once.
    pub max_sessions: usize,
    /// Join attempts per client address.
    pub join_rate: Rate,
    /// Create requests per client address.
    pub create_rate: Rate,
    /// How often the cleanup sweep ends rooms past their TTL.
    pub sweep_interval: Duration,
    /// How long a host whose last MoQ session closed has to come back.
    pub host_grace: Duration,
    /// How long a room may go without any MoQ session in it.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            min_ttl_minutes: 5,
            max_ttl_minutes: 240,
            default_ttl_minutes: 60,
            max_participants: 8,
            max_sessions: 10_000,
            join_rate: Rate { count: 1.0, period: Duration::from_secs(1), burst: 5.0 },
            // A host creates one room per game. At 10 a minute, rooms nobody connects to end after
            // the idle timeout (5 min), so one address holds about 50 of them at most.
            create_rate: Rate { count: 10.0, period: Duration::from_secs(60), burst: 5.0 },
            sweep_interval: Duration::from_secs(30),
            host_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A token-bucket rate: `count` per `period` sustained, `burst` at once. Written
/// `COUNT/PERIOD[:BURST]`, e.g. `1/s:5` or `10/min:5` (`PERIOD` a duration such as `s`, `10s`,
/// `min`, `1h`; without `:BURST` the burst is `COUNT`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: f64,
    pub period: Duration,
    pub burst: f64,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.count / self.period.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{text:?}: expected COUNT/PERIOD[:BURST], e.g. 1/s:5 or 10/min:5");
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let (count, period) = rate.split_once('/').ok_or_else(usage)?;
        let count: f64 = count.trim().parse().map_err(|_| usage())?;
        let period = period.trim();
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(period)
        } else {
            humantime::parse_duration(&format!("1{period}"))
        }
        .map_err(|_| usage())?;
        let burst = match burst {
            Some(b) => b.trim().parse().map_err(|_| usage())?,
            None => count,
        };
        let valid = |v: f64| v.is_finite() && v > 0.0;
        if !valid(count) || period.is_zero() || !valid(burst) || burst < 1.0 {
            return Err(format!("{text:?}: the count and period must be positive and the burst at least 1"));
        }
        Ok(Rate { count, period, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.count, humantime::format_duration(self.period), self.burst)
    }
}

/// The time of a call: monotonic for the timers, wall-clock for expiry stamps.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn real() -> Now {
        Now { at: Instant::now(), wall: SystemTime::now() }
    }

    pub fn plus(self, d: Duration) -> Now {
        Now { at: self.at + d, wall: self.wall + d }
    }
}

/// Why a room ended: the `reason` label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The host deleted it, or its last MoQ session closed and it did not come back in time.
    HostLeft,
    /// Nobody had a MoQ session in it for the idle timeout.
    Timeout,
    /// Its TTL passed; ended by the cleanup sweep.
    CleanupJob,
}

impl EndReason {
    pub const ALL: &'static [EndReason] = &[EndReason::HostLeft, EndReason::Timeout, EndReason::CleanupJob];

    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::HostLeft => "hostLeft",
            EndReason::Timeout => "timeout",
            EndReason::CleanupJob => "cleanupJob",
        }
    }
}

/// A room that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub id: String,
    pub reason: EndReason,
    /// Participants (the host not counted) still in the room when it ended.
    pub active_participants: usize,
    pub lifetime: Duration,
}

/// What a token is issued for: the service signs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket<'a> {
    pub session: &'a str,
    /// [`HOST`] or the participant id.
    pub member: &'a str,
    pub expires: SystemTime,
    pub issued: SystemTime,
}

/// A create request, as decoded from its JSON (shapes already checked).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub session_id: Option<String>,
    /// The requested TTL as sent: any JSON number.
    pub ttl_minutes: Option<f64>,
    pub rom_id: Option<String>,
    pub initiator_user_id: Option<String>,
}

/// A created room.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub id: String,
    pub code: JoinCode,
    pub ttl_minutes: u32,
    pub expires: SystemTime,
    pub host_token: String,
}

/// Why a create was refused: the `result` label and the `error` code.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateRefusal {
    InvalidRequest(&'static str),
    InvalidTtl { min: u32, max: u32 },
    Conflict,
    RateLimited,
    Capacity,
    Error(&'static str),
}

impl CreateRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            CreateRefusal::InvalidRequest(_) => "invalid_request",
            CreateRefusal::InvalidTtl { .. } => "invalid_ttl",
            CreateRefusal::Conflict => "conflict",
            CreateRefusal::RateLimited => "rate_limited",
            CreateRefusal::Capacity => "capacity",
            CreateRefusal::Error(_) => "error",
        }
    }
}

impl fmt::Display for CreateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateRefusal::InvalidRequest(what) => f.write_str(what),
            CreateRefusal::InvalidTtl { min, max } => {
                write!(f, "ttlMinutes must be a whole number from {min} to {max}")
            }
            CreateRefusal::Conflict => f.write_str("a session with this sessionId exists"),
            CreateRefusal::RateLimited => f.write_str("too many sessions created from this address; try again later"),
            CreateRefusal::Capacity => f.write_str("the relay holds as many netplay sessions as it may"),
            CreateRefusal::Error(what) => f.write_str(what),
        }
    }
}

/// A joined participant.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub id: String,
    pub participant: String,
    pub token: String,
    pub expires: SystemTime,
}

/// Why a join was refused: the `result` label and the `reason` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    UnknownCode,
    Expired,
    Full,
    Duplicate,
    RateLimited,
    InvalidRequest,
    Error,
}

impl JoinRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::UnknownCode => "unknown_code",
            JoinRefusal::Expired => "expired",
            JoinRefusal::Full => "full",
            JoinRefusal::Duplicate => "duplicate",
            JoinRefusal::RateLimited => "rate_limited",
            JoinRefusal::InvalidRequest => "invalid_request",
            JoinRefusal::Error => "error",
        }
    }
}

/// A refused join, with the room it was for when the code named one.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRefused {
    pub reason: JoinRefusal,
    pub session: Option<String>,
}

/// What a valid delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// The host left: the room ended.
    Ended(Ended),
    /// A participant left; the room goes on.
    Removed,
}

/// Why a delete was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveRefusal {
    UnknownSession,
    /// The token is not the one issued to a current member of this room.
    Unauthorized,
}

/// A token's fingerprint, kept instead of the token.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// One member (host or participant) of a room.
#[derive(Debug)]
struct Member {
    token: TokenHash,
    /// Tells this membership from an earlier one of the same id (a participant who left and
    /// joined again), so the old one's sessions closing cannot count against the new one.
    serial: u64,
    /// Its live MoQ sessions.
    connections: u32,
}

#[derive(Debug)]
struct Room {
    code: JoinCode,
    created: Instant,
    /// When its TTL passes (monotonic, and as the tokens' `exp`).
    expires: Instant,
    expires_wall: SystemTime,
    host: Member,
    participants: BTreeMap<String, Member>,
    /// Live MoQ sessions of all its members.
    connections: u32,
    /// Since when the host, having been connected, has had no MoQ session.
    host_gone_since: Option<Instant>,
    /// Since when nobody has had a MoQ session in it (from creation until the first).
    idle_since: Option<Instant>,
}

impl Room {
    fn member_mut(&mut self, name: &str) -> Option<&mut Member> {
        match name {
            HOST => Some(&mut self.host),
            name => self.participants.get_mut(name),
        }
    }

    fn member(&self, name: &str) -> Option<&Member> {
        match name {
            HOST => Some(&self.host),
            name => self.participants.get(name),
        }
    }

    /// When the host's grace or the idle timeout runs out, whichever first.
    fn deadline(&self, settings: &Settings) -> Option<(Instant, EndReason)> {
        let host = self.host_gone_since.map(|t| (t + settings.host_grace, EndReason::HostLeft));
        let idle = self.idle_since.map(|t| (t + settings.idle_timeout, EndReason::Timeout));
        match (host, idle) {
            (Some(h), Some(i)) => Some(if i.0 < h.0 { i } else { h }),
            (h, i) => h.or(i),
        }
    }
}

/// The result of a cleanup sweep.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    /// Rooms it ended (reason `cleanupJob`).
    pub ended: Vec<Ended>,
    /// Rooms past their TTL still alive afterwards (0 unless cleanup fails).
    pub past_ttl: usize,
}

/// Every live room and the rate buckets.
pub struct Registry {
    settings: Settings,
    rooms: HashMap<String, Room>,
    codes: HashMap<JoinCode, String>,
    tombstones: HashMap<JoinCode, Instant>,
    /// Tombstones in the order they were made, to expire and evict the oldest.
    tombstone_order: VecDeque<(JoinCode, Instant)>,
    create_buckets: Buckets,
    join_buckets: Buckets,
    next_serial: u64,
}

impl Registry {
    pub fn new(settings: Settings) -> Registry {
        Registry {
            rooms: HashMap::new(),
            codes: HashMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            create_buckets: Buckets::new(settings.create_rate),
            join_buckets: Buckets::new(settings.join_rate),
            next_serial: 0,
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Live rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Creates a room for `client`; `issue` signs the host's token.
    pub fn create(
        &mut self,
        request: &CreateRequest,
        client: IpAddr,
        now: Now,
        entropy: &dyn Entropy,
        issue: &mut dyn FnMut(&Ticket) -> Option<String>,
    ) -> Result<Created, CreateRefusal> {
        if !self.create_buckets.take(client, now.at) {
            return Err(CreateRefusal::RateLimited);
        }
        for (value, problem) in [
            (&request.rom_id, "romId: at most 64 characters of A-Z a-z 0-9 . _ -"),
            (&request.initiator_user_id, "initiatorUserId: at most 64 characters of A-Z a-z 0-9 . _ -"),
        ] {
            if value.as_deref().is_some_and(|v| !plain_id(v, true)) {
                return Err(CreateRefusal::InvalidRequest(problem));
            }
        }
        let s = &self.settings;
        let ttl = match request.ttl_minutes {
            None => s.default_ttl_minutes,
            Some(t) if t.fract() == 0.0 && t >= s.min_ttl_minutes as f64 && t <= s.max_ttl_minutes as f64 => t as u32,
            Some(_) => return Err(CreateRefusal::InvalidTtl { min: s.min_ttl_minutes, max: s.max_ttl_minutes }),
        };
        let id = match &request.session_id {
            Some(text) => codes::parse_session_id(text)
                .ok_or(CreateRefusal::InvalidRequest("sessionId: not a version 4 UUID in text form"))?,
            None => codes::session_id(entropy).map_err(|_| CreateRefusal::Error("no random bytes"))?,
        };
        if self.rooms.contains_key(&id) {
            return Err(CreateRefusal::Conflict);
        }
        if self.rooms.len() >= self.settings.max_sessions {
            return Err(CreateRefusal::Capacity);
        }
        self.expire_tombstones(now.at);
        // Never a code in use, nor one that just ended. A clash is one in ~10^8 at capacity.
        let mut code = None;
        for _ in 0..16 {
            let c = JoinCode::generate(entropy).map_err(|_| CreateRefusal::Error("no random bytes"))?;
            if !self.codes.contains_key(&c) && !self.tombstones.contains_key(&c) {
                code = Some(c);
                break;
            }
        }
        let code = code.ok_or(CreateRefusal::Error("no unused join code found"))?;
        let lifetime = Duration::from_secs(u64::from(ttl) * 60);
        let expires_wall = now.wall + lifetime;
        let ticket = Ticket { session: &id, member: HOST, expires: expires_wall, issued: now.wall };
        let host_token = issue(&ticket).ok_or(CreateRefusal::Error("the host token could not be signed"))?;
        let host = Member { token: token_hash(&host_token), serial: self.serial(), connections: 0 };
        let room = Room {
            code,
            created: now.at,
            expires: now.at + lifetime,
            expires_wall,
            host,
            participants: BTreeMap::new(),
            connections: 0,
            host_gone_since: None,
            idle_since: Some(now.at),
        };
        self.codes.insert(code, id.clone());
        self.rooms.insert(id.clone(), room);
        Ok(Created { id, code, ttl_minutes: ttl, expires: expires_wall, host_token })
    }

    /// Adds `participant` to the room of `code` for `client`; `issue` signs its token.
    pub fn join(
        &mut self,
        code: &str,
        participant: &str,
        client: IpAddr,
        now: Now,
        issue: &mut dyn FnMut(&Ticket) -> Option<String>,
    ) -> Result<Joined, JoinRefused> {
        let refused = |reason, session: Option<&String>| JoinRefused { reason, session: session.cloned() };
        if !self.join_buckets.take(client, now.at) {
            return Err(refused(JoinRefusal::RateLimited, None));
        }
        let code = JoinCode::parse(code).ok_or_else(|| refused(JoinRefusal::InvalidRequest, None))?;
        if !plain_id(participant, false) || participant.is_empty() || participant == HOST {
            return Err(refused(JoinRefusal::InvalidRequest, None));
        }
        self.expire_tombstones(now.at);
        let Some(id) = self.codes.get(&code) else {
            let reason =
                if self.tombstones.contains_key(&code) { JoinRefusal::Expired } else { JoinRefusal::UnknownCode };
            return Err(refused(reason, None));
        };
        let room = self.rooms.get(id).expect("every code names a live room");
        if room.expires <= now.at {
            return Err(refused(JoinRefusal::Expired, Some(id)));
        }
        if room.participants.contains_key(participant) {
            return Err(refused(JoinRefusal::Duplicate, Some(id)));
        }
        if room.participants.len() >= self.settings.max_participants {
            return Err(refused(JoinRefusal::Full, Some(id)));
        }
        let ticket = Ticket { session: id, member: participant, expires: room.expires_wall, issued: now.wall };
        let Some(token) = issue(&ticket) else {
            return Err(refused(JoinRefusal::Error, Some(id)));
        };
        let (id, expires) = (id.clone(), room.expires_wall);
        let member = Member { token: token_hash(&token), serial: self.serial(), connections: 0 };
        self.rooms.get_mut(&id).expect("looked up above").participants.insert(participant.to_string(), member);
        Ok(Joined { id, participant: participant.to_string(), token, expires })
    }

    /// Whether `token` (by its hash) is the one issued to `member`, still in room `id`.
    pub fn vouch(&self, id: &str, member: &str, token: &TokenHash) -> Result<(), &'static str> {
        let room = self.rooms.get(id).ok_or("the netplay session ended")?;
        match room.member(member) {
            Some(m) if &m.token == token => Ok(()),
            Some(_) => Err("the token was replaced: the participant left and joined again"),
            None => Err("the participant left the netplay session"),
        }
    }

    /// Whether room `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        self.rooms.contains_key(id)
    }

    /// A member leaves with its token: the host ends the room, a participant is removed.
    pub fn leave(&mut self, id: &str, member: &str, token: &TokenHash, now: Now) -> Result<Left, LeaveRefusal> {
        if !self.rooms.contains_key(id) {
            return Err(LeaveRefusal::UnknownSession);
        }
        self.vouch(id, member, token).map_err(|_| LeaveRefusal::Unauthorized)?;
        if member == HOST {
            return Ok(Left::Ended(self.end(id, EndReason::HostLeft, now).expect("checked above")));
        }
        let room = self.rooms.get_mut(id).expect("checked above");
        if let Some(gone) = room.participants.remove(member) {
            room.connections -= gone.connections;
            if room.connections == 0 && room.idle_since.is_none() {
                room.idle_since = Some(now.at);
            }
        }
        Ok(Left::Removed)
    }

    /// Ends room `id` now.
    pub fn end(&mut self, id: &str, reason: EndReason, now: Now) -> Option<Ended> {
        let room = self.rooms.remove(id)?;
        self.codes.remove(&room.code);
        self.tombstone(room.code, now.at);
        Some(Ended {
            id: id.to_string(),
            reason,
            active_participants: room.participants.len(),
            lifetime: now.at.saturating_duration_since(room.created),
        })
    }

    /// A MoQ session of `member` of room `id` opened: its serial, or `None` when the room or
    /// the member is gone (the session must be closed).
    pub fn opened(&mut self, id: &str, member: &str) -> Option<u64> {
        let room = self.rooms.get_mut(id)?;
        let m = room.member_mut(member)?;
        m.connections += 1;
        let serial = m.serial;
        room.connections += 1;
        room.idle_since = None;
        if member == HOST {
            room.host_gone_since = None;
        }
        Some(serial)
    }

    /// A MoQ session [`opened`](Self::opened) with `serial` closed.
    pub fn closed(&mut self, id: &str, member: &str, serial: u64, now: Now) {
        let Some(room) = self.rooms.get_mut(id) else { return };
        let Some(m) = room.member_mut(member).filter(|m| m.serial == serial && m.connections > 0) else { return };
        m.connections -= 1;
        let host_gone = member == HOST && m.connections == 0;
        room.connections -= 1;
        if host_gone {
            room.host_gone_since = Some(now.at);
        }
        if room.connections == 0 {
            room.idle_since = Some(now.at);
        }
    }

    /// The next time [`reap`](Self::reap) has something to end.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rooms.values().filter_map(|r| r.deadline(&self.settings)).map(|(at, _)| at).min()
    }

    /// Ends the rooms whose host grace (`hostLeft`) or idle timeout (`timeout`) ran out.
    pub fn reap(&mut self, now: Now) -> Vec<Ended> {
        let due: Vec<(String, EndReason)> = self
            .rooms
            .iter()
            .filter_map(|(id, r)| {
                r.deadline(&self.settings).filter(|(at, _)| *at <= now.at).map(|(_, why)| (id.clone(), why))
            })
            .collect();
        due.into_iter().filter_map(|(id, why)| self.end(&id, why, now)).collect()
    }

    /// The cleanup sweep: ends every room past its TTL (`cleanupJob`).
    pub fn sweep(&mut self, now: Now) -> Swept {
        let due: Vec<String> =
            self.rooms.iter().filter(|(_, r)| r.expires <= now.at).map(|(id, _)| id.clone()).collect();
        let ended = due.into_iter().filter_map(|id| self.end(&id, EndReason::CleanupJob, now)).collect();
        self.expire_tombstones(now.at);
        let past_ttl = self.rooms.values().filter(|r| r.expires <= now.at).count();
        Swept { ended, past_ttl }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    fn tombstone(&mut self, code: JoinCode, at: Instant) {
        while self.tombstone_order.len() >= MAX_TOMBSTONES {
            self.pop_tombstone();
        }
        self.tombstones.insert(code, at);
        self.tombstone_order.push_back((code, at));
    }

    fn expire_tombstones(&mut self, now: Instant) {
        while self.tombstone_order.front().is_some_and(|(_, at)| now.saturating_duration_since(*at) >= TOMBSTONE_KEEP) {
            self.pop_tombstone();
        }
    }

    fn pop_tombstone(&mut self) {
        if let Some((code, at)) = self.tombstone_order.pop_front() {
            // A code is tombstoned once per room; a later tombstone of the same code stays.
            if self.tombstones.get(&code) == Some(&at) {
                self.tombstones.remove(&code);
            }
        }
    }

    #[cfg(test)]
    fn entries(&self) -> [usize; 5] {
        [self.rooms.len(), self.codes.len(), self.tombstones.len(), self.create_buckets.len(), self.join_buckets.len()]
    }
}

/// At most [`MAX_ID_LEN`] plain characters, for ids that end up in paths and logs: `[A-Za-z0-9_-]`,
/// and `.` too with `dots` (`romId`, `initiatorUserId`).
fn plain_id(text: &str, dots: bool) -> bool {
    text.len() <= MAX_ID_LEN
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'))
}

/// Token buckets per client address (IPv6 by its /64), at most [`MAX_BUCKETS`] of them.
struct Buckets {
    rate: Rate,
    map: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    fn new(rate: Rate) -> Buckets {
        Buckets { rate, map: HashMap::new() }
    }

    fn refill(&self, b: &Bucket, now: Instant) -> f64 {
        (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate.per_second()).min(self.rate.burst)
    }

    /// Takes one token of `ip`'s bucket; false when it is empty.
    fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = client_key(ip);
        if !self.map.contains_key(&key) && self.map.len() >= MAX_BUCKETS {
            // Full buckets carry no information.
            let burst = self.rate.burst;
            let full: Vec<IpAddr> =
                self.map.iter().filter(|(_, b)| self.refill(b, now) >= burst).map(|(ip, _)| *ip).collect();
            for ip in full {
                self.map.remove(&ip);
            }
            // Still full (a flood from many addresses): forget the fullest eighth, which gives the
            // least away, in one go so the next inserts are cheap. Failing open instead would let
            // such a flood guess freely.
            if self.map.len() >= MAX_BUCKETS {
                let mut by_fullness: Vec<(f64, IpAddr)> =
                    self.map.iter().map(|(ip, b)| (self.refill(b, now), *ip)).collect();
                by_fullness.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (_, ip) in by_fullness.into_iter().take(MAX_BUCKETS / 8) {
                    self.map.remove(&ip);
                }
            }
        }
        let fresh = Bucket { tokens: self.rate.burst, at: now };
        let tokens = self.map.get(&key).map_or(fresh.tokens, |b| self.refill(b, now));
        let allowed = tokens >= 1.0;
        let left = if allowed { tokens - 1.0 } else { tokens };
        self.map.insert(key, Bucket { tokens: left, at: now });
        allowed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netplay::codes::tests::Fixed;
    use crate::netplay::codes::SystemEntropy;

    const ALICE: &str = "192.0.2.1";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Rates out of the way; the rate tests use the defaults.
    fn settings() -> Settings {
        let plenty: Rate = "1000/s:1000".parse().unwrap();
        Settings { enabled: true, join_rate: plenty, create_rate: plenty, ..Default::default() }
    }

    /// Tokens that name what they were issued for.
    fn issue(ticket: &Ticket) -> Option<String> {
        Some(format!("token:{}:{}", ticket.session, ticket.member))
    }

    fn create(reg: &mut Registry, now: Now) -> Created {
        reg.create(&CreateRequest::default(), ip(ALICE), now, &SystemEntropy::default(), &mut issue).unwrap()
    }

    fn join(reg: &mut Registry, code: &JoinCode, who: &str, now: Now) -> Result<Joined, JoinRefusal> {
        reg.join(&code.to_string(), who, ip("198.51.100.1"), now, &mut issue).map_err(|r| r.reason)
    }

    #[test]
    fn rates_parse_from_text() {
        let rate: Rate = "1/s:5".parse().unwrap();
        assert_eq!(rate, Rate { count: 1.0, period: Duration::from_secs(1), burst: 5.0 });
        assert_eq!(rate, Settings::default().join_rate);
        assert_eq!("10/min:5".parse::<Rate>().unwrap(), Settings::default().create_rate);
        assert_eq!("1/10s".parse::<Rate>().unwrap(), Rate { count: 1.0, period: Duration::from_secs(10), burst: 1.0 });
        assert_eq!("0.5/s:2".parse::<Rate>().unwrap().per_second(), 0.5);
        for bad in ["", "1", "1/", "x/s", "1/s:0", "0/s", "-1/s", "1/0s", "1/s:x", "inf/s", "1/s:0.5"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let shown = Settings::default().create_rate.to_string();
        assert_eq!(shown.parse::<Rate>().unwrap(), Settings::default().create_rate, "{shown}");
    }

    #[test]
    fn create_takes_or_makes_the_id_and_bounds_the_ttl() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let entropy = SystemEntropy::default();
        let make =
            |reg: &mut Registry, request: CreateRequest| reg.create(&request, ip(ALICE), now, &entropy, &mut issue);
        let created = make(&mut reg, CreateRequest::default()).unwrap();
        assert!(codes::parse_session_id(&created.id).is_some());
        assert_eq!(created.ttl_minutes, 60);
        assert_eq!(created.expires, now.wall + Duration::from_secs(3600));
        assert_eq!(created.host_token, format!("token:{}:host", created.id));

        let id = "0E4A1C2B-9F3D-4A5B-8C6D-7E8F9A0B1C2D".to_string();
        let request = CreateRequest { session_id: Some(id.clone()), ttl_minutes: Some(5.0), ..Default::default() };
        let created = make(&mut reg, request.clone()).unwrap();
        assert_eq!((created.id.as_str(), created.ttl_minutes), ("0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c2d", 5));
        assert_eq!(make(&mut reg, request).unwrap_err(), CreateRefusal::Conflict);

        for ttl in [4.0, 241.0, 30.5, -1.0, f64::NAN, 1e300] {
            let request = CreateRequest { ttl_minutes: Some(ttl), ..Default::default() };
            let err = make(&mut reg, request).unwrap_err();
            assert_eq!(err, CreateRefusal::InvalidTtl { min: 5, max: 240 }, "{ttl}");
            assert_eq!(err.as_str(), "invalid_ttl");
        }
        let request = CreateRequest { ttl_minutes: Some(240.0), ..Default::default() };
        assert_eq!(make(&mut reg, request).unwrap().ttl_minutes, 240);

        for bad in [
            CreateRequest { session_id: Some("not-a-uuid".into()), ..Default::default() },
            CreateRequest { rom_id: Some("smb3 deluxe".into()), ..Default::default() },
            CreateRequest { initiator_user_id: Some("a".repeat(65)), ..Default::default() },
        ] {
            assert_eq!(make(&mut reg, bad).unwrap_err().as_str(), "invalid_request");
        }
        let fine = CreateRequest {
            rom_id: Some("smb3.v1_2-x".into()),
            initiator_user_id: Some("a".repeat(64)),
            ..Default::default()
        };
        assert!(make(&mut reg, fine).is_ok());
    }

    #[test]
    fn create_refuses_at_capacity_on_signing_failure_and_without_entropy() {
        let mut reg = Registry::new(Settings { max_sessions: 2, ..settings() });
        let now = Now::real();
        create(&mut reg, now);
        create(&mut reg, now);
        let refused = reg.create(&CreateRequest::default(), ip(ALICE), now, &SystemEntropy::default(), &mut issue);
        assert_eq!(refused.unwrap_err(), CreateRefusal::Capacity);

        let mut reg = Registry::new(settings());
        let refused = reg.create(&CreateRequest::default(), ip(ALICE), now, &SystemEntropy::default(), &mut |_| None);
        assert_eq!(refused.unwrap_err().as_str(), "error");
        let refused = reg.create(&CreateRequest::default(), ip(ALICE), now, &codes::tests::Broken, &mut issue);
        assert_eq!(refused.unwrap_err().as_str(), "error");
        assert_eq!(reg.len(), 0);
    }

    #[test]
    fn codes_in_use_are_never_handed_out_again() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        // The same bytes every time: the second room cannot get a code.
        let same = Fixed::new(&[7]);
        let request = |n: u8| CreateRequest {
            session_id: Some(format!("0e4a1c2b-9f3d-4a5b-8c6d-7e8f9a0b1c{n:02x}")),
            ..Default::default()
        };
        let first = reg.create(&request(1), ip(ALICE), now, &same, &mut issue).unwrap();
        assert_eq!(first.code.to_string(), "HHHH-HHHH");
        let again = reg.create(&request(2), ip(ALICE), now, &same, &mut issue);
        assert_eq!(again.unwrap_err(), CreateRefusal::Error("no unused join code found"));
        // Nor while the code of an ended room still answers `expired`.
        reg.end(&first.id, EndReason::HostLeft, now).unwrap();
        let again = reg.create(&request(3), ip(ALICE), now, &same, &mut issue);
        assert!(again.is_err());
        let later = now.plus(TOMBSTONE_KEEP);
        assert!(reg.create(&request(4), ip(ALICE), later, &same, &mut issue).is_ok());
    }

    #[test]
    fn creates_are_rate_limited_per_address() {
        let mut reg = Registry::new(Settings::default());
        let now = Now::real();
        let entropy = SystemEntropy::default();
        let mut from = |who: &str, now: Now| {
            reg.create(&CreateRequest::default(), ip(who), now, &entropy, &mut issue)
                .map(|_| ())
                .map_err(|e| e.as_str())
        };
        for _ in 0..5 {
            assert_eq!(from(ALICE, now), Ok(()));
        }
        assert_eq!(from(ALICE, now), Err("rate_limited"));
        // The same /64 is the same client; another address is not affected.
        assert_eq!(from("2001:db8::1", now), Ok(()));
        for _ in 0..4 {
            assert_eq!(from("2001:db8::2", now), Ok(()));
        }
        assert_eq!(from("2001:db8::3", now), Err("rate_limited"));
        // 10 a minute: one more after 6 s.
        assert_eq!(from(ALICE, now.plus(Duration::from_secs(6))), Ok(()));
        assert_eq!(from(ALICE, now.plus(Duration::from_secs(6))), Err("rate_limited"));
    }

    #[test]
    fn join_refuses_each_way_and_accepts_up_to_the_limit() {
        let mut reg = Registry::new(Settings { max_participants: 2, ..settings() });
        let now = Now::real();
        let room = create(&mut reg, now);
        let code = room.code;

        let bob = join(&mut reg, &code, "bob", now).unwrap();
        assert_eq!((bob.id.as_str(), bob.expires), (room.id.as_str(), room.expires));
        assert_eq!(bob.token, format!("token:{}:bob", room.id));
        assert_eq!(join(&mut reg, &code, "bob", now), Err(JoinRefusal::Duplicate));
        assert!(join(&mut reg, &code, "carol", now).is_ok());
        assert_eq!(join(&mut reg, &code, "dave", now), Err(JoinRefusal::Full));

        // The code as people type it.
        let lower = code.to_string().to_lowercase().replace('-', "");
        let refused = reg.join(&lower, "bob", ip("198.51.100.9"), now, &mut issue).unwrap_err();
        assert_eq!(refused, JoinRefused { reason: JoinRefusal::Duplicate, session: Some(room.id.clone()) });

        for who in ["", "host", "a b", "é", &"x".repeat(65), "a.b"] {
            assert_eq!(join(&mut reg, &code, who, now), Err(JoinRefusal::InvalidRequest), "{who:?}");
        }
        let refused = reg.join("ABCD-EFG0", "erin", ip("198.51.100.2"), now, &mut issue).unwrap_err();
        assert_eq!(refused.reason, JoinRefusal::InvalidRequest);
        let unused = JoinCode::parse("2345-6789").unwrap();
        assert_ne!(unused, code);
        assert_eq!(join(&mut reg, &unused, "erin", now), Err(JoinRefusal::UnknownCode));

        let other = create(&mut reg, now);
        let refused = reg.join(&other.code.to_string(), "erin", ip("198.51.100.3"), now, &mut |_| None).unwrap_err();
        assert_eq!(refused, JoinRefused { reason: JoinRefusal::Error, session: Some(other.id) });
    }

    #[test]
    fn a_room_past_its_ttl_or_just_ended_answers_expired() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let room = create(&mut reg, now);
        let late = now.plus(Duration::from_secs(3600));
        assert_eq!(join(&mut reg, &room.code, "bob", late), Err(JoinRefusal::Expired));
        reg.sweep(late);
        assert_eq!(join(&mut reg, &room.code, "bob", late), Err(JoinRefusal::Expired));
        assert_eq!(join(&mut reg, &room.code, "bob", late.plus(TOMBSTONE_KEEP)), Err(JoinRefusal::UnknownCode));
    }

    #[test]
    fn joins_are_rate_limited_per_address() {
        let mut reg = Registry::new(Settings { create_rate: "1000/s:1000".parse().unwrap(), ..Settings::default() });
        let now = Now::real();
        let room = create(&mut reg, now);
        let guess = |reg: &mut Registry, who: &str, now: Now| {
            reg.join("2345-6789", "mallory", ip(who), now, &mut issue).unwrap_err().reason
        };
        for _ in 0..5 {
            assert_eq!(guess(&mut reg, "203.0.113.5", now), JoinRefusal::UnknownCode);
        }
        assert_eq!(guess(&mut reg, "203.0.113.5", now), JoinRefusal::RateLimited);
        // Even the right code, while rate limited.
        let refused = reg.join(&room.code.to_string(), "mallory", ip("203.0.113.5"), now, &mut issue);
        assert_eq!(refused.unwrap_err().reason, JoinRefusal::RateLimited);
        let later = now.plus(Duration::from_secs(1));
        assert_eq!(guess(&mut reg, "203.0.113.5", later), JoinRefusal::UnknownCode);
        assert_eq!(guess(&mut reg, "203.0.113.5", later), JoinRefusal::RateLimited);
        assert!(join(&mut reg, &room.code, "bob", now).is_ok(), "another address");
    }

    #[test]
    fn tokens_are_vouched_for_while_their_member_is_in() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let room = create(&mut reg, now);
        let bob = join(&mut reg, &room.code, "bob", now).unwrap();
        let (host_hash, bob_hash) = (token_hash(&room.host_token), token_hash(&bob.token));
        assert_eq!(reg.vouch(&room.id, HOST, &host_hash), Ok(()));
        assert_eq!(reg.vouch(&room.id, "bob", &bob_hash), Ok(()));
        assert!(reg.vouch(&room.id, "bob", &host_hash).is_err(), "a token is its member's only");
        assert!(reg.vouch(&room.id, "carol", &bob_hash).is_err());

        // A participant leaves: its token stops working; the room goes on.
        assert_eq!(reg.leave(&room.id, "bob", &host_hash, now), Err(LeaveRefusal::Unauthorized));
        assert_eq!(reg.leave(&room.id, "bob", &bob_hash, now), Ok(Left::Removed));
        assert_eq!(reg.vouch(&room.id, "bob", &bob_hash), Err("the participant left the netplay session"));
        // Joining again gets a new token; the old one stays refused.
        let again = reg.join(&room.code.to_string(), "bob", ip("198.51.100.1"), now, &mut |_| Some("new".into()));
        assert!(again.is_ok());
        assert!(reg.vouch(&room.id, "bob", &bob_hash).is_err());

        // The host leaves: the room ends.
        assert_eq!(reg.leave("nope", HOST, &host_hash, now), Err(LeaveRefusal::UnknownSession));
        let Ok(Left::Ended(ended)) = reg.leave(&room.id, HOST, &host_hash, now) else { panic!("ended") };
        assert_eq!((ended.reason, ended.active_participants), (EndReason::HostLeft, 1));
        assert_eq!(reg.vouch(&room.id, HOST, &host_hash), Err("the netplay session ended"));
        assert_eq!(reg.leave(&room.id, HOST, &host_hash, now), Err(LeaveRefusal::UnknownSession));
    }

    #[test]
    fn the_sweep_ends_rooms_past_their_ttl() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let short = reg
            .create(
                &CreateRequest { ttl_minutes: Some(5.0), ..Default::default() },
                ip(ALICE),
                now,
                &SystemEntropy::default(),
                &mut issue,
            )
            .unwrap();
        let long = create(&mut reg, now);
        // Keep both rooms busy so the idle timeout stays out of it.
        reg.opened(&short.id, HOST).unwrap();
        reg.opened(&long.id, HOST).unwrap();
        assert_eq!(reg.sweep(now.plus(Duration::from_secs(299))), Swept::default());
        let swept = reg.sweep(now.plus(Duration::from_secs(300)));
        assert_eq!(swept.past_ttl, 0);
        assert_eq!(swept.ended.len(), 1);
        let ended = &swept.ended[0];
        assert_eq!((ended.id.as_str(), ended.reason), (short.id.as_str(), EndReason::CleanupJob));
        assert_eq!(ended.lifetime, Duration::from_secs(300));
        assert_eq!(ended.reason.as_str(), "cleanupJob");
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn the_host_has_a_grace_period_to_come_back() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let room = create(&mut reg, now);
        let bob = join(&mut reg, &room.code, "bob", now).unwrap();
        let host = reg.opened(&room.id, HOST).unwrap();
        let b = reg.opened(&bob.id, "bob").unwrap();
        assert_eq!(reg.next_deadline(), None, "everyone is here");

        let t1 = now.plus(Duration::from_secs(60));
        reg.closed(&room.id, HOST, host, t1);
        assert_eq!(reg.next_deadline(), Some(t1.at + Duration::from_secs(10)));
        assert!(reg.reap(t1.plus(Duration::from_secs(9))).is_empty());
        // Back in time: no end.
        let host = reg.opened(&room.id, HOST).unwrap();
        assert!(reg.reap(t1.plus(Duration::from_secs(11))).is_empty());

        let t2 = now.plus(Duration::from_secs(120));
        reg.closed(&room.id, HOST, host, t2);
        let ended = reg.reap(t2.plus(Duration::from_secs(10)));
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].reason, ended[0].active_participants), (EndReason::HostLeft, 1));
        // Its members' sessions closing later change nothing.
        reg.closed(&room.id, "bob", b, t2.plus(Duration::from_secs(11)));
        assert_eq!(reg.opened(&room.id, "bob"), None, "the room is gone");
    }

    #[test]
    fn an_abandoned_room_times_out() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        // Nobody ever connects: 5 minutes from creation.
        let room = create(&mut reg, now);
        assert_eq!(reg.next_deadline(), Some(now.at + Duration::from_secs(300)));
        assert!(reg.reap(now.plus(Duration::from_secs(299))).is_empty());
        let ended = reg.reap(now.plus(Duration::from_secs(300)));
        assert_eq!(
            ended.iter().map(|e| (e.id.as_str(), e.reason)).collect::<Vec<_>>(),
            [(room.id.as_str(), EndReason::Timeout)]
        );

        // A participant alone, then nobody: the idle timer starts when the last one leaves.
        let room = create(&mut reg, now);
        let bob = join(&mut reg, &room.code, "bob", now).unwrap();
        let b = reg.opened(&bob.id, "bob").unwrap();
        let t1 = now.plus(Duration::from_secs(600));
        assert!(reg.reap(t1).is_empty());
        reg.closed(&bob.id, "bob", b, t1);
        assert!(reg.reap(t1.plus(Duration::from_secs(299))).is_empty());
        assert_eq!(reg.reap(t1.plus(Duration::from_secs(300)))[0].reason, EndReason::Timeout);

        // A participant who leaves (DELETE) while connected takes its sessions' count along.
        let room = create(&mut reg, now);
        let bob = join(&mut reg, &room.code, "bob", now).unwrap();
        let b = reg.opened(&bob.id, "bob").unwrap();
        reg.leave(&bob.id, "bob", &token_hash(&bob.token), t1).unwrap();
        reg.closed(&bob.id, "bob", b, t1);
        assert_eq!(reg.next_deadline(), Some(t1.at + Duration::from_secs(300)));
    }

    #[test]
    fn a_rejoined_participant_is_not_counted_down_by_its_old_sessions() {
        let mut reg = Registry::new(settings());
        let now = Now::real();
        let room = create(&mut reg, now);
        let bob = join(&mut reg, &room.code, "bob", now).unwrap();
        let old = reg.opened(&room.id, "bob").unwrap();
        reg.leave(&room.id, "bob", &token_hash(&bob.token), now).unwrap();
        reg.join(&room.code.to_string(), "bob", ip("198.51.100.1"), now, &mut |_| Some("new".into())).unwrap();
        let new = reg.opened(&room.id, "bob").unwrap();
        assert_ne!(old, new);
        reg.closed(&room.id, "bob", old, now);
        assert_eq!(reg.next_deadline(), None, "bob's new session still counts");
        reg.closed(&room.id, "bob", new, now);
        assert!(reg.next_deadline().is_some());
    }

    #[test]
    fn maps_stay_bounded() {
        let mut reg = Registry::new(Settings { max_sessions: 50, ..settings() });
        let now = Now::real();
        let entropy = SystemEntropy::default();
        // A flood of creates and guesses from many addresses.
        for i in 0..(MAX_BUCKETS as u32 + 500) {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = reg.create(&CreateRequest::default(), client, now, &entropy, &mut issue);
            let _ = reg.join("2345-6789", "x", client, now, &mut issue);
        }
        let [rooms, codes, _, creates, joins] = reg.entries();
        assert_eq!((rooms, codes), (50, 50));
        assert!(creates <= MAX_BUCKETS && joins <= MAX_BUCKETS, "{creates} {joins}");

        // Ended rooms leave a bounded trail.
        let mut reg = Registry::new(Settings { create_rate: "1000/s:1000000".parse().unwrap(), ..settings() });
        for _ in 0..(MAX_TOMBSTONES + 100) {
            let room = create(&mut reg, now);
            reg.end(&room.id, EndReason::HostLeft, now);
        }
        let [rooms, codes, tombstones, ..] = reg.entries();
        assert_eq!((rooms, codes, tombstones), (0, 0, MAX_TOMBSTONES));
        assert_eq!(reg.tombstone_order.len(), MAX_TOMBSTONES);
        reg.sweep(now.plus(TOMBSTONE_KEEP));
        assert_eq!(reg.entries()[2], 0);
        assert!(reg.tombstone_order.is_empty());
    }

    #[test]
    fn a_bucket_flood_evicts_the_fullest_and_keeps_an_attacker_limited() {
        let mut buckets = Buckets::new("1/s:5".parse().unwrap());
        let now = Instant::now();
        let attacker = ip("203.0.113.5");
        for _ in 0..5 {
            assert!(buckets.take(attacker, now));
        }
        assert!(!buckets.take(attacker, now));
        // Many other addresses, each taking one token: they are all fuller than the attacker.
        for i in 0..(MAX_BUCKETS as u32 * 2) {
            buckets.take(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), now);
        }
        assert!(buckets.len() <= MAX_BUCKETS);
        assert!(!buckets.take(attacker, now), "the empty bucket was kept");
    }
}
