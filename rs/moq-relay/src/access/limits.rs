//! Per-client limits: what one client may take, so it cannot hurt the rest. Hitting a limit refuses
//! that client (its session, its stream), never the relay.
//!
//! A client is its address: IPv4 as is, IPv6 by its /64 (one subscriber line usually holds a whole
//! /64, so counting single v6 addresses would let one host take 2^64 slots). Memory is bounded:
//! the session counts hold one entry per address or subject with a live session (at most
//! `--max-sessions` of them), and the rate buckets at most [`MAX_RATE_ENTRIES`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which limit refused a client: the `limit` label of `moq_relay_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    SessionsPerAddress,
    SessionsPerSubject,
    SessionRatePerAddress,
    AnnouncesPerSession,
    SubscriptionsPerSession,
    HandshakeTimeout,
    WebSocketUpgradeSize,
}

impl Limit {
    #[cfg_attr(not(test), allow(dead_code))] // the catalog test holds the label set to it
    pub const ALL: &'static [Limit] = &[
        Limit::SessionsPerAddress,
        Limit::SessionsPerSubject,
        Limit::SessionRatePerAddress,
        Limit::AnnouncesPerSession,
        Limit::SubscriptionsPerSession,
        Limit::HandshakeTimeout,
        Limit::WebSocketUpgradeSize,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::SessionsPerAddress => "sessions_per_address",
            Limit::SessionsPerSubject => "sessions_per_subject",
            Limit::SessionRatePerAddress => "session_rate_per_address",
            Limit::AnnouncesPerSession => "announces_per_session",
            Limit::SubscriptionsPerSession => "subscriptions_per_session",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::WebSocketUpgradeSize => "websocket_upgrade_size",
        }
    }
}

/// The configured limits (`--limit-*`, `--handshake-timeout`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Live sessions from one address (IPv6: one /64).
    pub sessions_per_address: usize,
    /// Live sessions presenting tokens of one subject (`sub` claim).
    pub sessions_per_subject: usize,
    /// New sessions per second from one address, sustained; bursts of twice this pass.
    pub session_rate_per_address: f64,
    /// Broadcasts one session may have announced at once.
    pub announces_per_session: usize,
    /// SUBSCRIBE streams one session may run at once.
    pub subscriptions_per_session: usize,
    /// From the first packet to the session's request being known (QUIC + TLS + WebTransport
    /// CONNECT, or the raw-QUIC SETUP).
    pub handshake_timeout: Duration,
    /// Most bytes of a WebSocket upgrade request's head (request line and headers).
    pub websocket_upgrade_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_address: 100,
            sessions_per_subject: 1000,
            session_rate_per_address: 20.0,
            announces_per_session: 1024,
            subscriptions_per_session: 1024,
            handshake_timeout: Duration::from_secs(10),
            websocket_upgrade_bytes: 16 * 1024,
        }
    }
}

/// Most addresses with a rate bucket. Past it, full buckets are pruned; when none is full, a new
/// address is admitted without a bucket (counted by the caller as an overflow) rather than
/// refusing every newcomer because of someone else's flood.
pub const MAX_RATE_ENTRIES: usize = 65_536;

/// The live state behind the session limits. Cheap to clone.
#[derive(Clone)]
pub struct Counter {
    limits: Arc<Limits>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    by_address: HashMap<IpAddr, usize>,
    by_subject: HashMap<String, usize>,
    buckets: HashMap<IpAddr, Bucket>,
}

/// A token bucket: `tokens` left at `at`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Counter {
    pub fn new(limits: Limits) -> Self {
        Self { limits: Arc::new(limits), state: Default::default() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new connection from `ip`: checks the rate and the live-session count of its address and
    /// takes one place, held until the returned slot is dropped.
    pub fn admit_address(&self, ip: IpAddr, now: Instant) -> Result<AddressSlot, Limit> {
        let key = client_key(ip);
        let mut state = self.state.lock().unwrap();
        if state.by_address.get(&key).copied().unwrap_or(0) >= self.limits.sessions_per_address {
            return Err(Limit::SessionsPerAddress);
        }
        if !self.take_token(&mut state, key, now) {
            return Err(Limit::SessionRatePerAddress);
        }
        *state.by_address.entry(key).or_default() += 1;
        Ok(AddressSlot { counter: self.clone(), key })
    }

    /// A session whose token names `subject`: takes one place of that subject.
    pub fn admit_subject(&self, subject: &str) -> Result<SubjectSlot, Limit> {
        let mut state = self.state.lock().unwrap();
        let count = state.by_subject.entry(subject.to_string()).or_default();
        if *count >= self.limits.sessions_per_subject {
            if *count == 0 {
                state.by_subject.remove(subject);
            }
            return Err(Limit::SessionsPerSubject);
        }
        *count += 1;
        Ok(SubjectSlot { counter: self.clone(), subject: subject.to_string() })
    }

    fn take_token(&self, state: &mut State, key: IpAddr, now: Instant) -> bool {
        let rate = self.limits.session_rate_per_address;
        let burst = (rate * 2.0).max(1.0);
        let refill = |b: &Bucket| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        if !state.buckets.contains_key(&key) && state.buckets.len() >= MAX_RATE_ENTRIES {
            // Full buckets carry no information: drop them.
            state.buckets.retain(|_, b| refill(b) < burst);
            if state.buckets.len() >= MAX_RATE_ENTRIES {
                return true;
            }
        }
        let bucket = state.buckets.entry(key).or_insert(Bucket { tokens: burst, at: now });
        let tokens = refill(bucket);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at: now };
            return false;
        }
        *bucket = Bucket { tokens: tokens - 1.0, at: now };
        true
    }

    #[cfg(test)]
    fn entries(&self) -> (usize, usize, usize) {
        let s = self.state.lock().unwrap();
        (s.by_address.len(), s.by_subject.len(), s.buckets.len())
    }
}

/// One live session's place in its address's count.
pub struct AddressSlot {
    counter: Counter,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut state = self.counter.state.lock().unwrap();
        if let Some(count) = state.by_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.by_address.remove(&self.key);
            }
        }
    }
}

/// One live session's place in its subject's count.
pub struct SubjectSlot {
    counter: Counter,
    subject: String,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        let mut state = self.counter.state.lock().unwrap();
        if let Some(count) = state.by_subject.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                state.by_subject.remove(&self.subject);
            }
        }
    }
}

/// The client an address belongs to: IPv4 (and v4-mapped v6) as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, rate: f64) -> Limits {
        Limits { sessions_per_address: per_address, session_rate_per_address: rate, ..Default::default() }
    }

    #[test]
    fn live_sessions_per_address_are_capped_and_freed() {
        let counter = Counter::new(limits(2, 1000.0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let a = counter.admit_address(ip, now).unwrap();
        let _b = counter.admit_address(ip, now).unwrap();
        assert_eq!(counter.admit_address(ip, now).err(), Some(Limit::SessionsPerAddress));
        // Another client is not affected.
        assert!(counter.admit_address("192.0.2.2".parse().unwrap(), now).is_ok());
        drop(a);
        assert!(counter.admit_address(ip, now).is_ok());
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let counter = Counter::new(limits(1, 1000.0));
        let now = Instant::now();
        let _a = counter.admit_address("2001:db8::1".parse().unwrap(), now).unwrap();
        assert_eq!(
            counter.admit_address("2001:db8::ffff:2".parse().unwrap(), now).err(),
            Some(Limit::SessionsPerAddress)
        );
        assert!(counter.admit_address("2001:db8:0:1::1".parse().unwrap(), now).is_ok());
        let _v4 = counter.admit_address("192.0.2.9".parse().unwrap(), now).unwrap();
        assert!(counter.admit_address("::ffff:192.0.2.9".parse().unwrap(), now).is_err());
    }

    #[test]
    fn the_rate_allows_a_burst_then_the_sustained_rate() {
        let counter = Counter::new(limits(1000, 5.0));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(counter.admit_address(ip, t0).unwrap());
        }
        assert_eq!(counter.admit_address(ip, t0).err(), Some(Limit::SessionRatePerAddress));
        // 1 s later five more tokens.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            held.push(counter.admit_address(ip, t1).unwrap());
        }
        assert!(counter.admit_address(ip, t1).is_err());
        assert!(counter.admit_address("198.51.100.8".parse().unwrap(), t1).is_ok());
    }

    #[test]
    fn subjects_are_capped_and_entries_go_when_sessions_do() {
        let counter = Counter::new(Limits { sessions_per_subject: 1, ..Default::default() });
        let a = counter.admit_subject("alice").unwrap();
        assert_eq!(counter.admit_subject("alice").err(), Some(Limit::SessionsPerSubject));
        let b = counter.admit_subject("bob").unwrap();
        drop((a, b));
        let slot = counter.admit_address("192.0.2.1".parse().unwrap(), Instant::now()).unwrap();
        drop(slot);
        let (addresses, subjects, buckets) = counter.entries();
        assert_eq!((addresses, subjects), (0, 0));
        assert_eq!(buckets, 1, "the bucket stays until pruned");
    }

    #[test]
    fn rate_buckets_stay_bounded_under_an_address_flood() {
        let counter = Counter::new(limits(1000, 1.0));
        let now = Instant::now();
        for i in 0..(MAX_RATE_ENTRIES as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(counter.admit_address(ip, now));
        }
        assert!(counter.entries().2 <= MAX_RATE_ENTRIES);
    }
}
