//! The async session layer: runs one moq-lite session over a QUIC or WebTransport connection.
//!
//! A session has two halves, either of which may be absent:
//! - the *publisher* half serves the peer from a [`Scope`] of an origin: it answers the peer's
//!   ANNOUNCE_REQUEST and SUBSCRIBE streams and opens one group stream per group;
//! - the *subscriber* half asks the peer what it announces, publishes those broadcasts into a
//!   [`Scope`], and subscribes upstream once per requested track.

mod credit;
mod fanout;
mod probe;
mod publisher;
mod setup;
mod stream;
mod subscriber;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::message::{BiStreamType, Goaway, Setup, UniStreamType};
use crate::model::{BroadcastConsumer, Scope};
use crate::telemetry::Telemetry;
use crate::{Error, Version};
use credit::StreamCredit;
use stream::{Reader, Writer};

pub use crate::transport::Connection;
pub use probe::send_rate_estimate;
pub use publisher::MAX_SUBSCRIPTIONS;
pub use setup::read_setup;
pub use subscriber::MAX_ANNOUNCED;

/// QUIC send priority of control streams: above every group stream.
const CONTROL_PRIORITY: i32 = i32::MAX;

/// What a session may do for its peer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Broadcasts the peer may discover and subscribe to.
    pub publish: Option<Scope>,
    /// Where broadcasts the peer announces are published.
    pub subscribe: Option<Scope>,
    /// This node's id in announcement hop chains (0 = none).
    pub hop_id: u64,
    /// Most streams the peer may keep open at once, per direction (the connection's
    /// [`crate::transport::QuicOptions::max_streams`]): the session raises the peer's credit up
    /// to this as the peer uses it.
    pub max_streams: u64,
    /// Where the session's metrics go; disabled (records nothing) by default.
    pub telemetry: Telemetry,
    /// The session's id in logs and metrics bookkeeping, when the embedder minted it already
    /// (with [`next_id`], so its own spans and logs carry the same id); `None` mints one.
    pub id: Option<u64>,
    /// The SETUP Path (`path?query`) a client sends on raw QUIC lite-05+; never on WebTransport
    /// or WebSocket, where the URL carries it.
    pub setup_path: Option<String>,
    /// The peer's SETUP when the embedder read it already ([`read_setup`]: a server on raw QUIC
    /// needs its Path before admitting the session); another SETUP is then a violation.
    pub peer_setup: Option<Setup>,
    /// Most broadcasts the peer may have announced at once; more are ignored (and reported to
    /// the gate), the session goes on.
    pub max_announces: usize,
    /// Most SUBSCRIBE streams the peer may have running at once; more are refused on their stream
    /// (`too_many_tracks`) and reported to the gate.
    pub max_subscriptions: usize,
    /// Told of every request refused for access or limit reasons, so the embedder can count, log
    /// and audit it; the session itself only refuses.
    pub gate: Option<Gate>,
    /// What this node charges for routes learned from this peer: added to both halves of every
    /// route cost the peer announces (lite-06; older peers announce none, counted as zero), so
    /// routing prefers cheap links. 1 by default, which makes cost count hops.
    pub link_cost: u64,
    /// Longest hop chain accepted from or forwarded to this peer (at most
    /// [`crate::message::MAX_HOPS`]).
    pub max_hops: usize,
    /// Frames and payload bytes this session moved each way, for an embedder that watches one
    /// session as a whole (a cluster link); `None` counts nothing.
    pub traffic: Option<Arc<Traffic>>,
    /// How to carry trace context across a subscription (the embedder's tracing backend); with
    /// it, the session advertises and serves traced subscribe streams and sends them to peers
    /// that advertise them too.
    pub trace: Option<TracePropagation>,
}

/// Moves W3C trace context between a span and the wire; moq-lite itself has no tracing backend.
#[derive(Clone, Copy)]
pub struct TracePropagation {
    /// The `traceparent` naming `span`, if it is sampled into a trace.
    pub inject: fn(&tracing::Span) -> Option<String>,
    /// Makes `span` a child of the remote span named by a `traceparent`.
    pub extract: fn(&tracing::Span, &str) -> bool,
}

impl std::fmt::Debug for TracePropagation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracePropagation")
    }
}

/// Frames and payload bytes one session (or a succession of sessions to the same peer, sharing
/// one `Traffic`) sent and received. Relaxed atomics: read at scrape time, never on the hot path.
#[derive(Debug, Default)]
pub struct Traffic {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Broadcasts the peer announces to us right now (its routes into our origin).
    pub routes: AtomicU64,
}

impl Traffic {
    #[inline]
    pub(crate) fn sent(&self, payload_len: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(payload_len as u64, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn received(&self, payload_len: usize) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(payload_len as u64, Ordering::Relaxed);
    }
}

/// What the session refused its peer, for the embedder's [`Gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused<'a> {
    /// The peer announced a broadcast outside its publish scope (the full path).
    Announce(&'a str),
    /// The peer subscribed to a broadcast outside its subscribe scope (the full path).
    Subscribe(&'a str),
    /// The peer announced more broadcasts than [`SessionConfig::max_announces`].
    AnnounceLimit(&'a str),
    /// The peer ran more subscriptions than [`SessionConfig::max_subscriptions`].
    SubscriptionLimit,
}

/// The embedder's callback for [`Refused`] requests. Called on the session's task: keep it cheap.
#[derive(Clone)]
pub struct Gate(pub Arc<dyn Fn(Refused<'_>) + Send + Sync>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            publish: None,
            subscribe: None,
            hop_id: 0,
            max_streams: crate::transport::DEFAULT_MAX_STREAMS,
            telemetry: Telemetry::disabled(),
            id: None,
            setup_path: None,
            peer_setup: None,
            max_announces: subscriber::MAX_ANNOUNCED,
            max_subscriptions: publisher::MAX_SUBSCRIPTIONS,
            gate: None,
            link_cost: 1,
            max_hops: crate::message::MAX_HOPS,
            traffic: None,
            trace: None,
        }
    }
}

/// A process-unique session id, never 0 and never reused: one counter for every session of the
/// process, so an id names one session in every log line, span and metric registry.
pub fn next_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// One running moq-lite session. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    /// Process-unique session id (never a metric label; used to count distinct viewers).
    id: u64,
    conn: Connection,
    version: Version,
    config: SessionConfig,
    /// Upstream subscriptions by id, so arriving group streams find their track.
    subscriptions: Mutex<HashMap<u64, Arc<subscriber::Upstream>>>,
    /// SUBSCRIBE streams of the peer being served now (against `max_subscriptions`).
    serving: Arc<AtomicUsize>,
    next_subscribe_id: AtomicU64,
    /// The first fatal error ends the session.
    fatal: mpsc::Sender<Error>,
    fatal_rx: Mutex<Option<mpsc::Receiver<Error>>>,
    goaway: Notify,
    goaway_received: std::sync::atomic::AtomicBool,
    /// The peer's SETUP (05+), once read: its hop id scopes announcements on 06.
    peer_setup: crate::model::watch::Watch<Option<Setup>>,
    /// Set by the first SETUP stream (or a SETUP the embedder read), so a second is refused.
    setup_seen: std::sync::atomic::AtomicBool,
}

impl Session {
    pub fn new(conn: Connection, version: Version, config: SessionConfig) -> Self {
        let (fatal, fatal_rx) = mpsc::channel(1);
        let peer_setup = crate::model::watch::Watch::new(config.peer_setup.clone());
        let setup_seen = config.peer_setup.is_some().into();
        Self {
            inner: Arc::new(Inner {
                id: config.id.unwrap_or_else(next_id),
                conn,
                version,
                config,
                subscriptions: Mutex::new(HashMap::new()),
                serving: Default::default(),
                next_subscribe_id: AtomicU64::new(0),
                fatal,
                fatal_rx: Mutex::new(Some(fatal_rx)),
                goaway: Notify::new(),
                goaway_received: false.into(),
                peer_setup,
                setup_seen,
            }),
        }
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn version(&self) -> Version {
        self.inner.version
    }

    pub fn connection(&self) -> &Connection {
        &self.inner.conn
    }

    /// The peer's hop id, once its SETUP (05+) said one: another relay's identity in hop chains.
    pub fn peer_hop(&self) -> Option<u64> {
        self.inner.peer_setup.lock().as_ref().and_then(|s| s.hop)
    }

    /// Runs the session until it ends and returns why. A protocol violation by the peer closes
    /// the connection with [`crate::code::PROTOCOL_VIOLATION`]; nothing here panics on peer input.
    pub async fn run(&self) -> Error {
        let Some(mut fatal) = self.inner.fatal_rx.lock().unwrap().take() else {
            return Error::ProtocolViolation("session already running".into());
        };
        let mut tasks = JoinSet::new();
        if self.inner.version.has_setup() {
            let inner = self.inner.clone();
            tasks.spawn(
                async move {
                    if let Err(e) = setup::send_setup(&inner).await {
                        inner.fail(e);
                    }
                }
                .in_current_span(),
            );
        }
        if self.inner.config.subscribe.is_some() {
            let inner = self.inner.clone();
            tasks.spawn(
                async move {
                    if let Err(e) = subscriber::run_announces(inner.clone()).await {
                        inner.fail(e);
                    }
                }
                .in_current_span(),
            );
        }
        let err = tokio::select! {
            err = fatal.recv() => err.unwrap_or(Error::Cancel),
            err = self.accept_bi() => err,
            err = self.accept_uni() => err,
        };
        tasks.shutdown().await;
        crate::telemetry::SessionFailed { error: &err }.emit(&self.inner.config.telemetry);
        if !matches!(err, Error::Closed(_)) {
            self.inner.conn.close(err.code(), err.to_string().as_bytes());
        }
        err
    }

    async fn accept_bi(&self) -> Error {
        let mut tasks = JoinSet::new();
        let mut credit = StreamCredit::new(self.inner.config.max_streams, true);
        loop {
            let (send, recv) = match self.inner.conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => return e,
            };
            let inner = self.inner.clone();
            // Finished tasks are reaped so the set holds only live streams.
            while tasks.try_join_next().is_some() {}
            credit.update(&self.inner.conn, tasks.len() + 1);
            // Not `.in_current_span()`: a subscription's task is polled on every group, and
            // entering spans per poll is costly; `serve_bi` enters the session's span where it
            // logs or sets up.
            let session = tracing::Span::current();
            tasks.spawn(async move {
                let mut reader = Reader::new(recv, inner.version);
                let mut writer = inner.writer(send);
                writer.set_priority(CONTROL_PRIORITY);
                if let Err(e) = inner.clone().serve_bi(&mut reader, &mut writer, &session).await {
                    let _entered = session.enter();
                    if e.is_protocol_violation() {
                        inner.fail(e);
                    } else {
                        writer.reset(e.code());
                        reader.stop(e.code());
                    }
                }
            });
        }
    }

    async fn accept_uni(&self) -> Error {
        let mut tasks = JoinSet::new();
        let mut credit = StreamCredit::new(self.inner.config.max_streams, false);
        loop {
            let recv = match self.inner.conn.accept_uni().await {
                Ok(s) => s,
                Err(e) => return e,
            };
            let inner = self.inner.clone();
            while tasks.try_join_next().is_some() {}
            credit.update(&self.inner.conn, tasks.len() + 1);
            let session = tracing::Span::current();
            tasks.spawn(async move {
                let mut reader = Reader::new(recv, inner.version);
                if let Err(e) = inner.serve_uni(&mut reader, &session).await {
                    if e.is_protocol_violation() {
                        inner.fail(e);
                    } else {
                        reader.stop(e.code());
                    }
                }
            });
        }
    }

    /// Asks the peer to go away (GOAWAY with an empty URI: reconnect to the same place).
    /// lite-03 has no GOAWAY; the caller then simply closes after its drain window.
    pub async fn goaway(&self) -> Result<(), Error> {
        if !self.inner.version.has_goaway() {
            return Ok(());
        }
        let (send, recv) = self.inner.conn.open_bi().await?;
        let mut writer = self.inner.writer(send);
        writer.set_priority(CONTROL_PRIORITY);
        writer.queue_raw(|b| BiStreamType::Goaway.encode(b));
        writer.encode(&Goaway::default()).await?;
        writer.finish();
        drop(recv);
        Ok(())
    }

    /// Resolves when the peer sent GOAWAY.
    pub async fn goaway_received(&self) {
        loop {
            let notified = self.inner.goaway.notified();
            if self.inner.goaway_received.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn close(&self, err: &Error) {
        self.inner.conn.close(err.code(), err.to_string().as_bytes());
    }

    /// Subscribes to a broadcast of the peer by path without waiting for its announcement.
    pub fn subscribe_broadcast(&self, path: &str) -> BroadcastConsumer {
        subscriber::direct(self.inner.clone(), path)
    }
}

impl Inner {
    fn writer(&self, send: crate::transport::SendStream) -> Writer {
        Writer::new(send, self.version, &self.config.telemetry)
    }

    fn telemetry(&self) -> &Telemetry {
        &self.config.telemetry
    }

    /// Tells the embedder's gate what was refused.
    fn refused(&self, what: Refused<'_>) {
        if let Some(gate) = &self.config.gate {
            (gate.0)(what);
        }
    }

    fn fail(&self, err: Error) {
        let _ = self.fatal.try_send(err);
    }

    async fn serve_bi(
        self: Arc<Self>,
        reader: &mut Reader,
        writer: &mut Writer,
        session: &tracing::Span,
    ) -> Result<(), Error> {
        let kind = reader.decode::<StreamKind>().instrument(session.clone()).await?;
        match kind.0 {
            Ok(BiStreamType::Announce) => {
                let span = tracing::info_span!(parent: session, "moq.announce", moq.prefix = tracing::field::Empty);
                publisher::serve_announce(&self, reader, writer).instrument(span).await
            }
            Ok(BiStreamType::Subscribe) => {
                let span = subscribe_span(session);
                publisher::serve_subscribe(&self, reader, writer, span).await
            }
            // Only served where advertised: to anyone else it is an unknown stream.
            Ok(BiStreamType::Traced) if self.config.trace.is_some() => {
                let trace = self.config.trace.expect("checked");
                let (context, inner) = async {
                    let context: crate::message::TraceContext = reader.decode().await?;
                    Ok::<_, Error>((context, reader.decode::<StreamKind>().await?.0))
                }
                .instrument(session.clone())
                .await?;
                // The request continues the peer's trace (the relay hop that asked).
                match inner {
                    Ok(BiStreamType::Subscribe) => {
                        let span = subscribe_span(session);
                        (trace.extract)(&span, &context.traceparent);
                        publisher::serve_subscribe(&self, reader, writer, span).await
                    }
                    Ok(BiStreamType::Track) if self.version.has_track_stream() => {
                        let span = track_info_span(session);
                        (trace.extract)(&span, &context.traceparent);
                        publisher::serve_track(&self, reader, writer).instrument(span).await
                    }
                    Ok(other) => Err(Error::UnexpectedStream(other.code())),
                    Err(unknown) => Err(Error::UnexpectedStream(unknown)),
                }
            }
            Ok(BiStreamType::Goaway) if self.version.has_goaway() => {
                async {
                    let msg: Goaway = reader.decode().await?;
                    tracing::info!(uri = %msg.uri, "peer sent GOAWAY");
                    self.goaway_received.store(true, Ordering::Release);
                    self.goaway.notify_waiters();
                    reader.finished().await.ok();
                    Ok(())
                }
                .instrument(session.clone())
                .await
            }
            Ok(BiStreamType::Probe) => probe::serve(&self, reader, writer).instrument(session.clone()).await,
            Ok(BiStreamType::Track) if self.version.has_track_stream() => {
                let span = track_info_span(session);
                publisher::serve_track(&self, reader, writer).instrument(span).await
            }
            Ok(other) => Err(Error::UnexpectedStream(other.code())),
            Err(unknown) => Err(Error::UnexpectedStream(unknown)),
        }
    }

    /// One incoming unidirectional stream: the peer's SETUP (05+) or a group.
    async fn serve_uni(self: &Arc<Self>, reader: &mut Reader, session: &tracing::Span) -> Result<(), Error> {
        let kind: UniKind = reader.decode().await?;
        match kind.0 {
            Ok(UniStreamType::Group) => subscriber::serve_group(self, reader).await,
            Ok(UniStreamType::Setup) if self.version.has_setup() => {
                setup::receive_setup(self, reader).instrument(session.clone()).await
            }
            Ok(UniStreamType::Setup) => Err(Error::UnexpectedStream(UniStreamType::Setup.code())),
            Err(unknown) => Err(Error::UnexpectedStream(unknown)),
        }
    }

    fn next_subscribe_id(&self) -> u64 {
        self.next_subscribe_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The span of a SUBSCRIBE stream served to the peer.
fn subscribe_span(session: &tracing::Span) -> tracing::Span {
    tracing::info_span!(
        parent: session,
        "moq.subscribe",
        moq.subscribe.id = tracing::field::Empty,
        moq.broadcast = tracing::field::Empty,
        moq.track = tracing::field::Empty,
        moq.result = tracing::field::Empty,
    )
}

/// The span of a TRACK stream served to the peer.
fn track_info_span(session: &tracing::Span) -> tracing::Span {
    tracing::info_span!(
        parent: session,
        "moq.track_info",
        moq.broadcast = tracing::field::Empty,
        moq.track = tracing::field::Empty,
    )
}

/// A bidirectional stream's type; unknown codes are kept so only that stream is reset.
struct StreamKind(Result<BiStreamType, u64>);

impl crate::coding::Decode for StreamKind {
    fn decode<B: bytes::Buf>(buf: &mut B, _: Version) -> Result<Self, crate::coding::DecodeError> {
        BiStreamType::decode(buf).map(StreamKind)
    }
}

struct UniKind(Result<UniStreamType, u64>);

impl crate::coding::Decode for UniKind {
    fn decode<B: bytes::Buf>(buf: &mut B, _: Version) -> Result<Self, crate::coding::DecodeError> {
        UniStreamType::decode(buf).map(UniKind)
    }
}

/// QUIC send priority for a group stream: subscriber priority first, then newest group first.
fn group_priority(subscriber_priority: u8, sequence: u64) -> i32 {
    ((subscriber_priority as i32) << 22) | (sequence & 0x3f_ffff) as i32
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_priority_orders_by_subscriber_then_newest() {
        use super::group_priority as p;
        assert!(p(1, 0) > p(0, 1000));
        assert!(p(0, 11) > p(0, 10));
        assert!(p(255, 0x3f_ffff) < super::CONTROL_PRIORITY);
    }
}
