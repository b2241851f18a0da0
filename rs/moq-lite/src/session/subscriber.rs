//! The subscriber half: learns the peer's broadcasts, publishes them into a scope, subscribes
//! upstream once per requested track and routes arriving group streams to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::stream::Reader;
use super::{Inner, CONTROL_PRIORITY};
use crate::message::*;
use crate::model::{BroadcastConsumer, BroadcastProducer, Publication, RouteCost, TrackProducer};
use crate::{code, path, telemetry, Error};

/// Default most broadcasts one peer may have announced at once.
pub const MAX_ANNOUNCED: usize = 4096;

/// Opens the Announce stream toward the peer and mirrors what it announces into the scope.
pub(super) async fn run_announces(inner: Arc<Inner>) -> Result<(), Error> {
    let Some(scope) = inner.config.subscribe.clone() else {
        return Ok(());
    };
    let (send, recv) = inner.conn.open_bi().await?;
    let mut writer = inner.writer(send);
    let mut reader = Reader::new(recv, inner.version);
    writer.set_priority(CONTROL_PRIORITY);
    writer.queue_raw(|b| BiStreamType::Announce.encode(b));
    writer.encode(&AnnounceRequest { prefix: String::new(), exclude_hop: inner.config.hop_id }).await?;

    // Per announced path: its publication and the task serving its track requests.
    let mut active = Announced::default();
    let mut tasks = JoinSet::new();
    let mut incoming = match IncomingAnnounces::start(&inner, &mut reader).await {
        Ok(incoming) => incoming,
        Err(Error::RemoteReset(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let event = |full: &str, event, hops: &[u64]| {
        telemetry::AnnounceReceived { broadcast: full, event, hops }.emit(inner.telemetry());
    };
    loop {
        let (suffix, route) = match incoming.next(&mut reader).await {
            Ok(Some(change)) => change,
            // A clean FIN (or a reset) withdraws everything announced on this stream.
            Ok(None) | Err(Error::RemoteReset(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !path::is_valid(&suffix) {
            return Err(Error::ProtocolViolation(format!("invalid broadcast path {suffix:?}")));
        }
        // A route that came back around a loop, or too long, is no route: withdraw it.
        let looped =
            route.as_ref().is_some_and(|(hops, _)| inner.config.hop_id != 0 && hops.contains(&inner.config.hop_id));
        let too_long = route.as_ref().is_some_and(|(hops, _)| hops.len() > inner.config.max_hops);
        let route = route.filter(|_| !looped && !too_long);
        if let (Some((hops, cost)), Some((publication, _, full))) = (&route, active.0.get(&suffix)) {
            // Re-announced in place: same broadcast, new chain or cost.
            publication.update(hops.clone(), *cost);
            event(full, telemetry::AnnounceEvent::Updated, hops);
            continue;
        }
        if let Some((publication, task, full)) = active.0.remove(&suffix) {
            if let Some(traffic) = &inner.config.traffic {
                traffic.routes.store(active.0.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // The route goes now; the publisher ends its tracks (SUBSCRIBE_END, FIN) just after
            // its announcement, so subscriptions already running get a moment to end cleanly.
            drop(publication);
            let (inner, suffix) = (inner.clone(), suffix.clone());
            tokio::spawn(async move {
                tokio::time::sleep(UNANNOUNCE_GRACE).await;
                // Its publisher withdrew it: tracks still open end there, cleanly.
                for upstream in inner.subscriptions.lock().unwrap().values() {
                    if upstream.path == suffix {
                        upstream.ended_cleanly.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                task.abort();
            });
            event(&full, telemetry::AnnounceEvent::Ended, &[]);
            if route.is_none() && !looped {
                tracing::info!(moq.broadcast = %full, reason = "publisher_left", "broadcast ended");
            }
        }
        if looped {
            event(&path::join(scope.root(), &suffix), telemetry::AnnounceEvent::Looped, &[]);
        }
        let Some((hops, cost)) = route else { continue };
        let Some(full) = scope.resolve(&suffix) else {
            event(&path::join(scope.root(), &suffix), telemetry::AnnounceEvent::Refused, &hops);
            inner.refused(super::Refused::Announce(&path::join(scope.root(), &suffix)));
            continue;
        };
        if active.0.len() >= inner.config.max_announces {
            event(&full, telemetry::AnnounceEvent::Refused, &hops);
            inner.refused(super::Refused::AnnounceLimit(&full));
            continue;
        }
        event(&full, telemetry::AnnounceEvent::Started, &hops);
        let broadcast = BroadcastProducer::dynamic();
        let publication = scope.origin().publish_route(&full, broadcast.consume(), hops, cost);
        tracing::info!(moq.broadcast = %full, "broadcast started");
        let task =
            tasks.spawn(serve_track_requests(inner.clone(), broadcast, suffix.clone(), full.clone()).in_current_span());
        active.0.insert(suffix, (publication, task, full));
        if let Some(traffic) = &inner.config.traffic {
            traffic.routes.store(active.0.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        while tasks.try_join_next().is_some() {}
    }
}

/// A route as announced: its hop chain as this node sees it, and its cost with the link's price
/// added.
type IncomingRoute = (Vec<u64>, RouteCost);

/// Decodes the announce stream of any version into changes: `(suffix, Some(route))` for a
/// broadcast (re)announced, `(suffix, None)` for one withdrawn.
struct IncomingAnnounces {
    version: crate::Version,
    link_cost: u64,
    /// The publisher's hop id from ANNOUNCE_OK (05+), appended to every chain it sends.
    peer_hop: u64,
    /// Live announce ids (06) and their paths.
    ids: HashMap<u64, String>,
    next_id: u64,
}

impl IncomingAnnounces {
    async fn start(inner: &Inner, reader: &mut Reader) -> Result<Self, Error> {
        let mut peer_hop = 0;
        if inner.version.has_announce_ok() {
            let ok: AnnounceOk = reader.decode().await?;
            peer_hop = ok.hop;
        }
        Ok(Self {
            version: inner.version,
            link_cost: inner.config.link_cost,
            peer_hop,
            ids: HashMap::new(),
            next_id: 0,
        })
    }

    async fn next(&mut self, reader: &mut Reader) -> Result<Option<(String, Option<IncomingRoute>)>, Error> {
        if !self.version.has_announce_ids() {
            let Some(announce) = reader.decode_maybe::<Announce>().await? else { return Ok(None) };
            // Before 06 no cost travels: each relay the chain passed counts as one link.
            let route = match announce.active {
                true => {
                    let hops = self.chain(announce.hops)?;
                    let base = hops.len().saturating_sub(1) as u64;
                    Some((hops, RouteCost { warm: base, cold: base }.plus(self.link_cost)))
                }
                false => None,
            };
            return Ok(Some((announce.suffix, route)));
        }
        loop {
            let Some(message) = reader.decode_maybe::<AnnounceMessage>().await? else { return Ok(None) };
            return match message {
                AnnounceMessage::Start { suffix, hops, cost } => {
                    if self.ids.values().any(|p| *p == suffix) {
                        return Err(Error::ProtocolViolation(format!("a second ANNOUNCE_START for {suffix:?}")));
                    }
                    if self.ids.len() >= MAX_ANNOUNCED {
                        return Err(Error::ProtocolViolation("too many announced broadcasts".into()));
                    }
                    self.ids.insert(self.next_id, suffix.clone());
                    self.next_id += 1;
                    Ok(Some((suffix, Some((self.chain(hops)?, self.cost(cost))))))
                }
                AnnounceMessage::End { id } => match self.ids.remove(&id) {
                    Some(suffix) => Ok(Some((suffix, None))),
                    None => Err(Error::ProtocolViolation(format!("ANNOUNCE_END for unknown id {id}"))),
                },
                AnnounceMessage::Update { id, hops, cost } => match self.ids.get(&id) {
                    Some(suffix) => Ok(Some((suffix.clone(), Some((self.chain(hops)?, self.cost(cost)))))),
                    None => Err(Error::ProtocolViolation(format!("ANNOUNCE_UPDATE for unknown id {id}"))),
                },
                AnnounceMessage::Unknown(_) => continue,
            };
        }
    }

    /// The route's cost here: what the sender announced plus the link's price.
    fn cost(&self, cost: Cost) -> RouteCost {
        RouteCost { warm: cost.warm, cold: cost.cold }.plus(self.link_cost)
    }

    /// The chain as this node sees it: the sender's own hop appended (05+).
    fn chain(&self, mut hops: Vec<u64>) -> Result<Vec<u64>, Error> {
        if self.peer_hop != 0 {
            if hops.contains(&self.peer_hop) {
                return Err(Error::ProtocolViolation(format!("hop {} repeats in the hop chain", self.peer_hop)));
            }
            hops.push(self.peer_hop);
        }
        Ok(hops)
    }
}

/// The broadcasts a peer has announced; when the session ends they all end with it.
#[derive(Default)]
struct Announced(HashMap<String, (Publication, tokio::task::AbortHandle, String)>);

impl Drop for Announced {
    fn drop(&mut self) {
        for (_, (_, task, full)) in self.0.drain() {
            task.abort();
            tracing::info!(moq.broadcast = %full, reason = "publisher_left", "broadcast ended");
        }
    }
}

/// A broadcast of the peer that nobody announced to us: subscribe by path directly.
pub(super) fn direct(inner: Arc<Inner>, path: &str) -> BroadcastConsumer {
    let broadcast = BroadcastProducer::dynamic();
    let consumer = broadcast.consume();
    let full = inner.config.subscribe.as_ref().and_then(|s| s.resolve(path)).unwrap_or_else(|| path.to_string());
    tokio::spawn(serve_track_requests(inner, broadcast, path.to_string(), full).in_current_span());
    consumer
}

/// `path` is the broadcast as the peer names it; `full` as this node names it (for labels).
async fn serve_track_requests(inner: Arc<Inner>, broadcast: BroadcastProducer, path: String, full: String) {
    let broadcast = Arc::new(broadcast);
    let labels = inner.telemetry().broadcast_labels(&full);
    let mut tasks = JoinSet::new();
    while let Some(request) = broadcast.requested_track().await {
        while tasks.try_join_next().is_some() {}
        let track = request.track;
        let ingress = telemetry::Ingress::new(inner.telemetry(), &labels, track.name());
        // A child of the subscriber that caused it (so one trace runs from a viewer through every
        // relay to the publisher), linked to this (publisher) session. Later subscribers that
        // join the track link to this span.
        let span = tracing::info_span!(
            parent: &request.requester,
            "moq.subscribe.upstream",
            moq.broadcast = %full,
            moq.track = %track.name(),
            moq.result = tracing::field::Empty,
        );
        span.follows_from(tracing::Span::current());
        track.set_span(span.clone());
        tasks.spawn(run_subscription(inner.clone(), broadcast.clone(), path.clone(), track, ingress).instrument(span));
    }
}

/// How long an upstream subscription that ended cleanly stays routable: the publisher FINs the
/// subscribe stream once its groups are written, and their streams may still be in flight.
const END_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long subscriptions to a broadcast its publisher withdrew may still end by themselves.
const UNANNOUNCE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// An upstream subscription as arriving group streams see it. The track closes when the last
/// holder lets go, so a group still being read completes before subscribers see the end.
pub(crate) struct Upstream {
    /// The broadcast as the peer names it.
    path: String,
    track: Mutex<Option<TrackProducer>>,
    ended: Mutex<Option<Result<(), Error>>>,
    /// The publisher ended the track (SUBSCRIBE_END on 05+, the subscribe stream's FIN): torn
    /// down before `ended` is set (session close, withdrawal), it still ends cleanly.
    ended_cleanly: std::sync::atomic::AtomicBool,
    /// To tell, when torn down with the session, whether the publisher closed it gracefully.
    conn: super::Connection,
    ingress: telemetry::Ingress,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let track = self.track.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        let ended = self.ended.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(track) = track {
            let clean = *self.ended_cleanly.get_mut() || self.conn.closed_cleanly();
            match ended.unwrap_or(if clean { Ok(()) } else { Err(Error::Cancel) }) {
                Ok(()) => track.finish(),
                Err(e) => track.abort(e),
            }
        }
    }
}

/// One upstream subscription, shared by every local consumer of the track.
async fn run_subscription(
    inner: Arc<Inner>,
    broadcast: Arc<BroadcastProducer>,
    path: String,
    track: TrackProducer,
    ingress: telemetry::Ingress,
) {
    let id = inner.next_subscribe_id();
    let name = track.name().to_string();
    let shared = track.shared().clone();
    // 03/04 carry no TRACK_INFO: defaults (ms timestamps). 05+ ask the publisher alongside the
    // SUBSCRIBE, so subscribers of this track can be told its timescale.
    let info = match inner.version.has_track_stream() {
        false => {
            track.set_info(TrackInfo::default());
            None
        }
        true => Some(fetch_track_info(&inner, &path, &name)),
    };
    let upstream = Arc::new(Upstream {
        path: path.clone(),
        track: Mutex::new(Some(track)),
        ended: Mutex::new(None),
        ended_cleanly: Default::default(),
        conn: inner.conn.clone(),
        ingress,
    });
    inner.subscriptions.lock().unwrap().insert(id, upstream.clone());
    // However this task ends, even aborted (its broadcast withdrawn), the subscription leaves the
    // map, so its track ends once the groups still arriving let go of it.
    let _registered = Registered { inner: &inner, id };

    let subscribe = subscribe_upstream(&inner, &broadcast, id, &path, &name, &upstream, &shared);
    let result = match info {
        None => subscribe.await,
        Some(info) => {
            let set_info = async {
                match info.await {
                    Ok(info) => {
                        if let Some(track) = upstream.track.lock().unwrap().as_ref() {
                            track.set_info(info);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "TRACK_INFO request failed"),
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                result = subscribe => result,
                _ = set_info => unreachable!("pending never resolves"),
            }
        }
    };
    let outcome = match &result {
        Ok(()) => "ended",
        Err(Error::Cancel) => "unused",
        Err(e) => e.kind(),
    };
    tracing::Span::current().record("moq.result", outcome);
    if result.is_ok() {
        tokio::time::sleep(END_GRACE).await;
    }
    *upstream.ended.lock().unwrap() = Some(result);
}

/// An upstream subscription's place in [`Inner::subscriptions`], removed on drop.
struct Registered<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.inner.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

async fn subscribe_upstream(
    inner: &Arc<Inner>,
    broadcast: &BroadcastProducer,
    id: u64,
    path: &str,
    name: &str,
    upstream: &Upstream,
    shared: &Arc<crate::model::TrackShared>,
) -> Result<(), Error> {
    let track = &upstream.track;
    let clean_end = || upstream.ended_cleanly.store(true, std::sync::atomic::Ordering::Relaxed);
    let (send, recv) = inner.conn.open_bi().await?;
    let mut writer = inner.writer(send);
    let mut reader = Reader::new(recv, inner.version);
    writer.set_priority(super::CONTROL_PRIORITY);
    open_stream(inner, &mut writer, BiStreamType::Subscribe);
    writer
        .encode(&Subscribe { id, broadcast: path.to_string(), track: name.to_string(), ..Default::default() })
        .await?;
    tracing::debug!(id, broadcast = %path, track = %name, "subscribed upstream");

    // Once the publisher said where the track ends (05+), the stream or session closing after
    // it is the end, not a failure: a publisher that exits right after its last group is done.
    let mut end_said = false;
    loop {
        tokio::select! {
            response = reader.decode_maybe::<SubscribeResponse>() => match response {
                Ok(Some(SubscribeResponse::Ok(_))) => {}
                Ok(Some(SubscribeResponse::Start { group })) => tracing::debug!(id, group, "upstream subscription starts"),
                Ok(Some(SubscribeResponse::End { group })) => {
                    tracing::debug!(id, group, "upstream track ends");
                    end_said = true;
                    clean_end();
                }
                Err(e) if end_said => {
                    tracing::debug!(id, error = %e, "upstream closed after its track's end");
                    return Ok(());
                }
                // A publisher that closes its session gracefully is done: its tracks end there
                // (03/04 have no SUBSCRIBE_END, and the FIN may not beat the close).
                Err(Error::Closed(_)) if inner.conn.closed_cleanly() => {
                    tracing::debug!(id, "upstream session closed gracefully: the track ends");
                    clean_end();
                    return Ok(());
                }
                Ok(Some(SubscribeResponse::Drop { start, end, error_code })) => {
                    tracing::debug!(id, start, end, error_code, "upstream dropped groups");
                }
                // The publisher FINs the subscribe stream when the track ended.
                Ok(None) => {
                    clean_end();
                    return Ok(());
                }
                Err(Error::RemoteReset(code::NOT_FOUND)) => return Err(Error::NotFound),
                Err(e) => return Err(e),
            },
            _ = shared.unused() => {
                let unused = track.lock().unwrap().as_ref().is_none_or(|t| broadcast.remove_if_unused(t));
                if unused {
                    // Last local consumer left: unsubscribe upstream.
                    writer.reset(code::CANCEL);
                    reader.stop(code::CANCEL);
                    return Err(Error::Cancel);
                }
                // A new consumer joined in between; keep serving it.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Writes the stream's type; to a peer of this implementation, preceded by the trace context of
/// the current span (a traced stream), so what the request starts there continues our trace.
fn open_stream(inner: &Inner, writer: &mut super::stream::Writer, kind: BiStreamType) {
    let peer_traces = inner.peer_setup.lock().as_ref().is_some_and(|s| s.trace_context);
    if let Some(traceparent) =
        inner.config.trace.filter(|_| peer_traces).and_then(|t| (t.inject)(&tracing::Span::current()))
    {
        writer.queue_raw(|b| BiStreamType::Traced.encode(b));
        writer.queue(&TraceContext { traceparent });
    }
    writer.queue_raw(|b| kind.encode(b));
}

/// Asks the publisher for a track's TRACK_INFO on a Track stream (05+).
async fn fetch_track_info(inner: &Arc<Inner>, path: &str, name: &str) -> Result<TrackInfo, Error> {
    let (send, recv) = inner.conn.open_bi().await.map_err(|e| Error::Closed(e.to_string()))?;
    let mut writer = inner.writer(send);
    let mut reader = Reader::new(recv, inner.version);
    writer.set_priority(CONTROL_PRIORITY);
    open_stream(inner, &mut writer, BiStreamType::Track);
    writer.encode(&TrackRequest { broadcast: path.to_string(), track: name.to_string() }).await?;
    // FIN only once answered: a TRACK stream whose requester finishes early is a cancelled
    // request to the reference publisher, which then never answers.
    let info = reader.decode().await;
    writer.finish();
    info
}

/// A group stream of an upstream subscription, after its type.
pub(super) async fn serve_group(inner: &Arc<Inner>, reader: &mut Reader) -> Result<(), Error> {
    let header: GroupHeader = reader.decode().await?;
    let upstream = inner.subscriptions.lock().unwrap().get(&header.subscribe_id).cloned();
    // A group for a subscription that already ended is routine, not a violation.
    let Some(upstream) = upstream else { return Err(Error::Cancel) };
    let mut group = match upstream.track.lock().unwrap().as_mut() {
        Some(track) => track.create_group(header.sequence)?,
        None => return Err(Error::Cancel),
    };
    if let Some(meter) = inner.telemetry().cache_meter() {
        group.meter_into(meter);
    }
    let counters = &upstream.ingress.counters;
    // A node that also publishes (a relay) may fan this group out: keep frames in wire form.
    let forwards = inner.config.publish.is_some();
    let timestamped = inner.version.has_timestamps();
    // 05+ timestamps are deltas from the previous frame (the first is absolute); 03/04 frames
    // are stamped on arrival.
    let mut timestamp: u64 = 0;
    loop {
        match reader.decode_maybe::<FrameHeader>().await {
            Ok(Some(frame)) => {
                counters.frame(frame.size as usize);
                if let Some(traffic) = &inner.config.traffic {
                    traffic.received(frame.size as usize);
                }
                timestamp = match timestamped {
                    true => timestamp
                        .checked_add_signed(frame.timestamp_delta)
                        .ok_or_else(|| Error::ProtocolViolation("frame timestamp delta goes below zero".into()))?,
                    false => crate::model::now_ms(),
                };
                if forwards {
                    let (wire, header) = reader.read_frame_wire(&frame).await?;
                    group.write_wire(wire, header, timestamp, timestamped)?;
                } else {
                    group.write_frame_at(reader.read_payload(frame.size as usize).await?, timestamp)?;
                }
            }
            Ok(None) => {
                counters.group();
                group.finish();
                return Ok(());
            }
            Err(e) => {
                if let Error::RemoteReset(code) = e {
                    telemetry::StreamReset { sent: false, code }.emit(inner.telemetry());
                }
                group.abort(e.clone());
                return Err(e);
            }
        }
    }
}
