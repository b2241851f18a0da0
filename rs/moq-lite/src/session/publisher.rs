//! The publisher half: serves the peer's ANNOUNCE_REQUEST and SUBSCRIBE streams from a scope.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::fanout::{write_group, Delivery};
use super::stream::{Reader, Writer};
use super::Inner;
use crate::message::*;
use crate::model::{Announcement, RouteChange, RouteCost, TrackConsumer};
use crate::{path, telemetry, Error, Version};

/// How long a SUBSCRIBE waits for its broadcast to be announced before it is refused.
const ROUTE_WAIT: Duration = Duration::from_secs(2);
/// Group streams in flight per subscription; beyond this the subscriber is too slow and its
/// oldest group is reset, which bounds the memory a stalled viewer can hold.
pub const MAX_INFLIGHT_GROUPS: usize = 16;

/// Default most SUBSCRIBE streams one peer may have running at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

pub(super) async fn serve_announce(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<(), Error> {
    let request: AnnounceRequest = reader.decode().await?;
    let prefix = path::normalize(&request.prefix);
    tracing::Span::current().record("moq.prefix", prefix.as_str());
    telemetry::AnnounceServed { prefix: &prefix, session: inner.id, error: None }.emit(inner.telemetry());
    let exclude = match inner.version.has_exclude_hop() {
        true => request.exclude_hop,
        false => peer_hop(inner).await,
    };
    let mut out = AnnounceWriter::new(inner, exclude);
    // Nothing to offer under this prefix: answer with an empty set, as a publisher with no
    // broadcasts does. Resetting instead makes some peers tear down the whole session.
    let Some(scope) = inner.config.publish.as_ref().filter(|s| s.overlaps(&prefix)) else {
        if inner.version.has_announce_ok() {
            writer.encode(&AnnounceOk { hop: inner.config.hop_id, active: 0 }).await?;
        }
        reader.finished().await?;
        writer.finish();
        return Ok(());
    };
    let mut announced = scope.announced(&prefix);
    if inner.version.has_announce_ok() {
        // The initial set is what the watcher has ready now; ANNOUNCE_OK counts it.
        let mut initial: Vec<(String, Vec<u64>, RouteCost)> = Vec::new();
        while let Some(change) = announced.next().now_or_never() {
            match change {
                Announcement::Active { path, hops, cost } | Announcement::Updated { path, hops, cost } => {
                    initial.retain(|(p, _, _)| *p != path);
                    if out.wanted(&hops) {
                        initial.push((path, hops, cost));
                    }
                }
                Announcement::Ended { path } => initial.retain(|(p, _, _)| *p != path),
            }
        }
        writer.queue(&AnnounceOk { hop: inner.config.hop_id, active: initial.len() as u64 });
        for (path, hops, cost) in initial {
            out.announce(writer, path, hops, cost);
        }
        writer.flush().await?;
    }
    loop {
        tokio::select! {
            change = announced.next() => {
                match change {
                    Announcement::Active { path, hops, cost } | Announcement::Updated { path, hops, cost } => {
                        match out.wanted(&hops) {
                            true => out.announce(writer, path, hops, cost),
                            // The served route now runs through the peer (or too far): withdraw.
                            false => out.ended(writer, path),
                        }
                    }
                    Announcement::Ended { path } => out.ended(writer, path),
                }
                writer.flush().await?;
            }
            // The requester closing its side ends the announce stream.
            res = reader.finished() => {
                res?;
                writer.finish();
                return Ok(());
            }
        }
    }
}

/// The peer's hop id from its SETUP (06 carries it there, not in the request); waits briefly
/// for the SETUP, which travels on its own stream.
async fn peer_hop(inner: &Inner) -> u64 {
    let setup = inner.peer_setup.wait(|s| s.as_ref().map(|s| s.hop));
    tokio::time::timeout(Duration::from_secs(2), setup).await.ok().flatten().unwrap_or(0)
}

/// Encodes announcements in the session's version: legacy status messages up to 05 (04 appends
/// our hop id to the chain), typed START/UPDATE/END with implicit ids on 06.
struct AnnounceWriter {
    version: Version,
    hop_id: u64,
    exclude: u64,
    max_hops: usize,
    /// Paths announced on this stream, with their announce id (06).
    sent: HashMap<String, u64>,
    next_id: u64,
}

impl AnnounceWriter {
    fn new(inner: &Inner, exclude: u64) -> Self {
        let max_hops = inner.config.max_hops.min(MAX_HOPS);
        Self {
            version: inner.version,
            hop_id: inner.config.hop_id,
            exclude,
            max_hops,
            sent: HashMap::new(),
            next_id: 0,
        }
    }

    /// Whether a broadcast with this chain goes to the peer: not back where it came from, and
    /// not past the hop limit (the chain grows by us on the way).
    fn wanted(&self, hops: &[u64]) -> bool {
        let looped = self.exclude != 0 && hops.contains(&self.exclude);
        !looped && hops.len() < self.max_hops
    }

    /// Announces `path`, or re-announces it in place when its chain or cost changed: 06 sends
    /// ANNOUNCE_UPDATE, 05 a repeated active (replace in place), 03/04 ended then active.
    fn announce(&mut self, writer: &mut Writer, path: String, mut hops: Vec<u64>, cost: RouteCost) {
        let cost = Cost { warm: cost.warm, cold: cost.cold };
        if self.version.has_announce_ids() {
            match self.sent.get(&path) {
                Some(&id) => writer.queue(&AnnounceMessage::Update { id, hops, cost }),
                None => {
                    writer.queue(&AnnounceMessage::Start { suffix: path.clone(), hops, cost });
                    self.sent.insert(path, self.next_id);
                    self.next_id += 1;
                }
            }
            return;
        }
        if self.version < Version::Lite05 && self.sent.contains_key(&path) {
            writer.queue(&Announce { active: false, suffix: path.clone(), hops: vec![] });
        }
        if self.version.sender_appends_hop() && self.hop_id != 0 {
            hops.push(self.hop_id);
        }
        writer.queue(&Announce { active: true, suffix: path.clone(), hops });
        self.sent.insert(path, 0);
    }

    fn ended(&mut self, writer: &mut Writer, path: String) {
        let Some(id) = self.sent.remove(&path) else { return };
        match self.version.has_announce_ids() {
            true => writer.queue(&AnnounceMessage::End { id }),
            false => writer.queue(&Announce { active: false, suffix: path, hops: vec![] }),
        }
    }
}

/// A TRACK stream (05+): the track's TRACK_INFO, then FIN; a track that cannot be resolved is
/// refused by resetting the stream.
pub(super) async fn serve_track(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<(), Error> {
    let request: TrackRequest = reader.decode().await?;
    let broadcast = path::normalize(&request.broadcast);
    let span = tracing::Span::current();
    span.record("moq.broadcast", broadcast.as_str());
    span.record("moq.track", request.track.as_str());
    let (_, _, _, track) = resolve(inner, &broadcast, &request.track).await?;
    let info = tokio::time::timeout(ROUTE_WAIT, track.info()).await.map_err(|_| Error::NotFound)??;
    writer.encode(&info).await?;
    writer.finish();
    Ok(())
}

/// A SUBSCRIBE stream. `span` (moq.subscribe) covers the request's setup and every log line of
/// the subscription, but the forwarding loop is not polled inside it: that loop wakes on every
/// group and track change, and entering a span (registry lookup, OpenTelemetry context attach) on
/// each poll was the largest part of the instrumentation's cost.
pub(super) async fn serve_subscribe(
    inner: &Arc<Inner>,
    reader: &mut Reader,
    writer: &mut Writer,
    span: tracing::Span,
) -> Result<(), Error> {
    let _serving = Serving::enter(inner)?;
    let accepted = accept_subscribe(inner, reader, writer).instrument(span.clone()).await?;
    forward_subscription(inner, reader, writer, accepted, &span).await
}

/// One running SUBSCRIBE stream, counted against the session's `max_subscriptions`.
struct Serving(Arc<std::sync::atomic::AtomicUsize>);

impl Serving {
    fn enter(inner: &Inner) -> Result<Self, Error> {
        use std::sync::atomic::Ordering;
        let serving = inner.serving.clone();
        if serving.fetch_add(1, Ordering::AcqRel) >= inner.config.max_subscriptions {
            serving.fetch_sub(1, Ordering::AcqRel);
            inner.refused(super::Refused::SubscriptionLimit);
            return Err(Error::TooManyTracks);
        }
        Ok(Self(serving))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What an accepted SUBSCRIBE forwards from.
struct Accepted {
    id: u64,
    broadcast: String,
    track_name: String,
    origin: crate::model::Origin,
    route: crate::model::Route,
    track: TrackConsumer,
    delivery: Arc<Delivery>,
    egress: Arc<telemetry::Egress>,
}

async fn accept_subscribe(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<Accepted, Error> {
    let subscribe: Subscribe = reader.decode().await?;
    let broadcast = path::normalize(&subscribe.broadcast);
    let span = tracing::Span::current();
    span.record("moq.subscribe.id", subscribe.id);
    span.record("moq.broadcast", broadcast.as_str());
    span.record("moq.track", subscribe.track.as_str());
    let (full, origin, route, track) = match resolve(inner, &broadcast, &subscribe.track).await {
        Ok(resolved) => resolved,
        Err(error) => {
            span.record("moq.result", error.kind());
            let session = inner.id;
            telemetry::SubscribeRejected { broadcast: &broadcast, track: &subscribe.track, session, error: &error }
                .emit(inner.telemetry());
            return Err(error);
        }
    };
    span.record("moq.result", "accepted");
    telemetry::SubscribeAccepted { broadcast: &full, track: &subscribe.track, session: inner.id }
        .emit(inner.telemetry());
    let labels = inner.telemetry().broadcast_labels(&full);
    let mut egress = telemetry::Egress::new(inner.telemetry(), &labels, &subscribe.track, inner.id);
    egress.traffic = inner.config.traffic.clone();
    let egress = Arc::new(egress);

    // 03/04 acknowledge at once; 05+ say SUBSCRIBE_START once the first group is known.
    if !inner.version.has_track_stream() {
        let ok = SubscribeParams { priority: subscribe.priority, ..Default::default() };
        writer.encode(&SubscribeResponse::Ok(ok)).await?;
    }

    let delivery = Arc::new(Delivery::new(subscribe.priority, subscribe.max_latency_ms));
    Ok(Accepted {
        id: subscribe.id,
        broadcast: full,
        track_name: subscribe.track,
        origin,
        route,
        track,
        delivery,
        egress,
    })
}

/// How long a subscription keeps forwarding after its publisher's announcement ended, waiting for
/// the track's own end (a bare FIN before SUBSCRIBE_END is a violation on 05+).
const PUBLISHER_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The track ended (or its publisher is gone): say where it ended (05+), deliver what is in
/// flight, then FIN the subscribe stream.
async fn end_subscription(
    inner: &Arc<Inner>,
    writer: &mut Writer,
    track: &TrackConsumer,
    groups: &mut JoinSet<()>,
) -> Result<(), Error> {
    if inner.version.has_track_stream() {
        let end = track.latest().map_or(0, |latest| latest + 1);
        writer.encode(&SubscribeResponse::End { group: end }).await?;
    }
    while groups.join_next().await.is_some() {}
    writer.finish();
    Ok(())
}

async fn forward_subscription(
    inner: &Arc<Inner>,
    reader: &mut Reader,
    writer: &mut Writer,
    accepted: Accepted,
    span: &tracing::Span,
) -> Result<(), Error> {
    let Accepted { id, broadcast, track_name, origin, mut route, mut track, delivery, egress } = accepted;
    let mut groups = JoinSet::new();
    let mut inflight: VecDeque<AbortHandle> = VecDeque::new();
    let mut started = !inner.version.has_track_stream();
    // Set once the served route is gone (its publisher left, or the peer it came through): the
    // track ends in step with its announcement (cleanly when the publisher ended it), so keep
    // forwarding until then, at most this long, and follow another route if one appears.
    let mut publisher_gone: Option<tokio::time::Instant> = None;
    let end_after_publisher = async |deadline: Option<tokio::time::Instant>| match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    };
    // The newest group sequence opened toward the subscriber: after a switch to another path to
    // the same publisher, groups up to it were already sent (or begun) and are skipped, so none
    // goes out twice.
    let mut newest_sent: Option<u64> = None;
    let mut dedupe = false;
    // The best route this subscription last considered (it may stay on an outranked route).
    let mut seen = route.id;
    loop {
        tokio::select! {
            update = reader.decode_maybe::<SubscribeUpdate>() => match update? {
                Some(update) => {
                    delivery.priority.store(update.priority, Ordering::Relaxed);
                    delivery.max_latency_ms.store(update.max_latency_ms, Ordering::Relaxed);
                }
                // The subscriber finished its side: unsubscribe.
                None => return Ok(()),
            },
            group = track.next_group() => match group {
                // The track failed (its upstream went away). If another route serves the
                // broadcast (now, or within the grace), follow it. If the broadcast has no route
                // left, its publisher left: the broadcast is over, and the viewer is told so the
                // same way whether the publisher's tracks failed before or after its withdrawal
                // arrived (publishers tearing down reset their streams in either order).
                // Otherwise the track itself failed while announced: let the groups being
                // written finish, then reset.
                Err(e) => match failover(&origin, &broadcast, route.id).await {
                    Some(next) => {
                        span.in_scope(|| tracing::info!(hops = ?next.hops, "subscription follows another route"));
                        dedupe = same_publisher(&route, &next);
                        track = next.broadcast.subscribe_track(&track_name)?;
                        (seen, route, publisher_gone) = (next.id, next, None);
                    }
                    None if origin.route(&broadcast).is_none() => {
                        return end_subscription(inner, writer, &track, &mut groups).await;
                    }
                    None => {
                        while groups.join_next().await.is_some() {}
                        return Err(e);
                    }
                },
                Ok(group) => match group {
                Some(group) => {
                    let sequence = group.sequence();
                    if dedupe && newest_sent.is_some_and(|newest| already_sent(sequence, newest)) {
                        continue;
                    }
                    newest_sent = Some(newest_sent.map_or(sequence, |n| n.max(sequence)));
                    if !started {
                        writer.encode(&SubscribeResponse::Start { group: sequence }).await?;
                        started = true;
                    }
                    while groups.try_join_next().is_some() {}
                    inflight.retain(|h| !h.is_finished());
                    if inflight.len() >= MAX_INFLIGHT_GROUPS {
                        if let Some(oldest) = inflight.pop_front() {
                            span.in_scope(|| {
                                telemetry::GroupDropped { error: &Error::TooSlow, frames_left: 0 }.emit(inner.telemetry());
                            });
                            oldest.abort();
                        }
                    }
                    let handle = groups.spawn(write_group(
                        inner.clone(),
                        id,
                        group,
                        track.clone(),
                        delivery.clone(),
                        egress.clone(),
                    ));
                    inflight.push_back(handle);
                }
                // The track ended. If its route went with it while another path to the broadcast
                // remains (a peer relay that closed gracefully) or appears in the grace (a
                // publisher that moved), follow that; otherwise the publisher ended it: say so.
                None => match after_end(&origin, &route, &broadcast).await {
                    Some(next) => {
                        span.in_scope(|| tracing::info!(hops = ?next.hops, "subscription follows another route"));
                        dedupe = same_publisher(&route, &next);
                        track = next.broadcast.subscribe_track(&track_name)?;
                        (seen, route, publisher_gone) = (next.id, next, None);
                    }
                    None => return end_subscription(inner, writer, &track, &mut groups).await,
                },
            }},
            _ = end_after_publisher(publisher_gone) => return end_subscription(inner, writer, &track, &mut groups).await,
            // The path's routes changed: follow a publisher that took over here, or the route
            // left when ours was withdrawn; stay on a healthy route a better one merely outranks
            // (switching paths to the same publisher gains little and risks a gap).
            change = origin.route_change(&broadcast, route.id, seen), if publisher_gone.is_none() => {
                let next = match change {
                    RouteChange::Better(next) if !next.hops.is_empty() => {
                        seen = next.id;
                        continue;
                    }
                    RouteChange::Better(next) => Some(next),
                    RouteChange::Lost(next) => next,
                };
                match next {
                    Some(next) => {
                        dedupe = same_publisher(&route, &next);
                        track = next.broadcast.subscribe_track(&track_name)?;
                        (seen, route) = (next.id, next);
                    }
                    None => publisher_gone = Some(tokio::time::Instant::now() + PUBLISHER_GONE_GRACE),
                }
            }
            // No route since the publisher (or the path to it) went: one appearing in the grace
            // takes over.
            next = origin.wait_route(&broadcast), if publisher_gone.is_some() => {
                dedupe = same_publisher(&route, &next);
                track = next.broadcast.subscribe_track(&track_name)?;
                (seen, route, publisher_gone) = (next.id, next, None);
            }
        }
    }
}

/// Whether two routes lead to the same publication through different paths of the mesh: both
/// entered it at the same relay (the first hop of their chains). Group sequences then continue
/// across the switch; a publisher that reconnected elsewhere (or here) may start them over.
fn same_publisher(old: &crate::model::Route, new: &crate::model::Route) -> bool {
    !old.hops.is_empty() && old.hops.first() == new.hops.first()
}

/// Whether a group of a new path to the same publisher went out already on the old one: at or
/// below the newest sent, and close to it (a publisher that restarted its numbering far below
/// is new media, not a repeat).
fn already_sent(sequence: u64, newest: u64) -> bool {
    sequence <= newest && newest - sequence < MAX_INFLIGHT_GROUPS as u64
}

/// After the served track failed: another route to the broadcast, if one serves it now or
/// appears soon — within [`PUBLISHER_GONE_GRACE`] when the path lost its route (a publisher
/// moving, a peer's withdrawal), within [`FAILOVER_WAIT`] while the failed route is still the one
/// announced (its withdrawal may trail its track's failure by a moment).
async fn failover(origin: &crate::model::Origin, broadcast: &str, failed: u64) -> Option<crate::model::Route> {
    let wait = match origin.route(broadcast) {
        Some(route) if route.id != failed => return Some(route),
        Some(_) => FAILOVER_WAIT,
        None => PUBLISHER_GONE_GRACE,
    };
    let other = async {
        loop {
            match origin.route(broadcast) {
                Some(route) if route.id != failed => return route,
                Some(_) => origin.route_changed(broadcast, failed).await,
                None => {
                    origin.wait_route(broadcast).await;
                }
            }
        }
    };
    tokio::time::timeout(wait, other).await.ok()
}

/// After the served track ended: another route, if the ended one came through a peer and is
/// withdrawn within [`FAILOVER_WAIT`] (the track ended because that path went away — a peer relay
/// that closed gracefully — not because its publisher ended it while announced).
async fn after_end(
    origin: &crate::model::Origin,
    ended: &crate::model::Route,
    broadcast: &str,
) -> Option<crate::model::Route> {
    // A publisher of this node that ended its track meant it.
    if ended.hops.is_empty() {
        return None;
    }
    tokio::time::timeout(FAILOVER_WAIT, origin.route_withdrawn(broadcast, ended.id)).await.ok()?;
    failover(origin, broadcast, ended.id).await
}

/// How long a failed track's subscription waits for its still-announced route to be replaced.
const FAILOVER_WAIT: Duration = Duration::from_millis(500);

/// Finds the broadcast (waiting briefly for its announcement) and subscribes to the track.
async fn resolve(
    inner: &Arc<Inner>,
    broadcast: &str,
    track: &str,
) -> Result<(String, crate::model::Origin, crate::model::Route, TrackConsumer), Error> {
    let Some(scope) = &inner.config.publish else {
        return Err(Error::Unauthorized);
    };
    let Some(full) = scope.resolve(broadcast) else {
        inner.refused(super::Refused::Subscribe(&path::join(scope.root(), broadcast)));
        return Err(Error::Unauthorized);
    };
    let origin = scope.origin().clone();
    let route = match origin.route(&full) {
        Some(route) => route,
        None => tokio::time::timeout(ROUTE_WAIT, origin.wait_route(&full)).await.map_err(|_| Error::NotFound)?,
    };
    let track = route.broadcast.subscribe_track(track)?;
    Ok((full, origin, route, track))
}
