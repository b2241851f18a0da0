//! The publisher half: serves the peer's ANNOUNCE_REQUEST and SUBSCRIBE streams from a scope.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};

use super::stream::{Reader, Writer};
use super::{group_priority, Inner};
use crate::message::*;
use crate::model::{Announcement, GroupConsumer, TrackConsumer};
use crate::{path, telemetry, Error};

/// How long a SUBSCRIBE waits for its broadcast to be announced before it is refused.
const ROUTE_WAIT: Duration = Duration::from_secs(2);
/// Group streams in flight per subscription; beyond this the subscriber is too slow and its
/// oldest group is reset, which bounds the memory a stalled viewer can hold.
pub const MAX_INFLIGHT_GROUPS: usize = 16;

pub(super) async fn serve_announce(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<(), Error> {
    let request: AnnounceRequest = reader.decode().await?;
    let prefix = path::normalize(&request.prefix);
    tracing::Span::current().record("moq.prefix", prefix.as_str());
    telemetry::AnnounceServed { prefix: &prefix, session: inner.id, error: None }.emit();
    // Nothing to offer under this prefix: answer with an empty set, as a publisher with no
    // broadcasts does. Resetting instead makes some peers tear down the whole session.
    let Some(scope) = inner.config.publish.as_ref().filter(|s| s.overlaps(&prefix)) else {
        reader.finished().await?;
        writer.finish();
        return Ok(());
    };
    let mut announced = scope.announced(&prefix);
    let mut sent = HashSet::new();
    loop {
        tokio::select! {
            change = announced.next() => match change {
                Announcement::Active { path, mut hops } => {
                    let looped = request.exclude_hop != 0 && hops.contains(&request.exclude_hop);
                    if looped || hops.len() >= MAX_HOPS {
                        continue;
                    }
                    if inner.version.has_hop_ids() && inner.config.hop_id != 0 {
                        hops.push(inner.config.hop_id);
                    }
                    writer.encode(&Announce { active: true, suffix: path.clone(), hops }).await?;
                    sent.insert(path);
                }
                Announcement::Ended { path } => {
                    if sent.remove(&path) {
                        writer.encode(&Announce { active: false, suffix: path, hops: vec![] }).await?;
                    }
                }
            },
            // The requester closing its side ends the announce stream.
            res = reader.finished() => {
                res?;
                writer.finish();
                return Ok(());
            }
        }
    }
}

/// Subscriber-controlled delivery settings, updated by SUBSCRIBE_UPDATE.
struct Delivery {
    priority: AtomicU8,
    max_latency_ms: AtomicU64,
}

pub(super) async fn serve_subscribe(inner: &Arc<Inner>, reader: &mut Reader, writer: &mut Writer) -> Result<(), Error> {
    let subscribe: Subscribe = reader.decode().await?;
    let broadcast = path::normalize(&subscribe.broadcast);
    let span = tracing::Span::current();
    span.record("moq.subscribe.id", subscribe.id);
    span.record("moq.broadcast", broadcast.as_str());
    span.record("moq.track", subscribe.track.as_str());
    let (full, origin, mut route, mut track) = match resolve(inner, &broadcast, &subscribe.track).await {
        Ok(resolved) => resolved,
        Err(error) => {
            span.record("moq.result", error.kind());
            let session = inner.id;
            telemetry::SubscribeRejected { broadcast: &broadcast, track: &subscribe.track, session, error: &error }
                .emit();
            return Err(error);
        }
    };
    span.record("moq.result", "accepted");
    telemetry::SubscribeAccepted { broadcast: &full, track: &subscribe.track, session: inner.id }.emit();
    let labels = telemetry::BroadcastLabels::acquire(&full);
    let egress = Arc::new(telemetry::Egress::new(&labels, &subscribe.track, inner.id));

    writer
        .encode(&SubscribeResponse::Ok(SubscribeParams { priority: subscribe.priority, ..Default::default() }))
        .await?;

    let delivery =
        Arc::new(Delivery { priority: subscribe.priority.into(), max_latency_ms: subscribe.max_latency_ms.into() });
    let mut groups = JoinSet::new();
    let mut inflight: VecDeque<AbortHandle> = VecDeque::new();
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
            group = track.next_group() => match group? {
                Some(group) => {
                    while groups.try_join_next().is_some() {}
                    inflight.retain(|h| !h.is_finished());
                    if inflight.len() >= MAX_INFLIGHT_GROUPS {
                        if let Some(oldest) = inflight.pop_front() {
                            tracing::debug!(broadcast = %full, track = %subscribe.track, "slow subscriber: resetting oldest group");
                            oldest.abort();
                            telemetry::GroupDropped { error: &Error::TooSlow, frames_left: 0 }.emit();
                        }
                    }
                    let handle = groups.spawn(write_group(
                        inner.clone(),
                        subscribe.id,
                        group,
                        track.clone(),
                        delivery.clone(),
                        egress.clone(),
                    ));
                    inflight.push_back(handle);
                }
                None => {
                    // Track finished: deliver what is in flight, then FIN the subscribe stream.
                    while groups.join_next().await.is_some() {}
                    writer.finish();
                    return Ok(());
                }
            },
            // A replacing publisher takes over the path: follow it.
            _ = origin.route_changed(&full, route.id) => {
                match origin.route(&full) {
                    Some(next) => {
                        track = next.broadcast.subscribe_track(&subscribe.track)?;
                        route = next;
                    }
                    None => {
                        while groups.join_next().await.is_some() {}
                        writer.finish();
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn write_group(
    inner: Arc<Inner>,
    subscribe_id: u64,
    mut group: GroupConsumer,
    track: TrackConsumer,
    delivery: Arc<Delivery>,
    egress: Arc<telemetry::Egress>,
) {
    let _queued = telemetry::Active::queued_group();
    let sequence = group.sequence();
    let send = match inner.conn.open_uni().await {
        Ok(send) => send,
        Err(_) => return,
    };
    egress.group_opened(group.created());
    let mut writer = Writer::new(send, inner.version);
    writer.set_priority(group_priority(delivery.priority.load(Ordering::Relaxed), sequence));
    writer.queue_raw(|b| UniStreamType::Group.encode(b));
    writer.queue(&GroupHeader { subscribe_id, sequence });

    let result: Result<(), Error> = async {
        while let Some(frame) = group.read_frame().await? {
            if is_expired(&group, &track, &delivery) {
                return Err(Error::Expired);
            }
            let len = frame.payload.len();
            let _waiting = telemetry::QueuedBytes::new(len);
            match frame.wire {
                // Size varint and payload, encoded once for every viewer.
                Some(wire) => writer.write_bytes(wire).await?,
                None => {
                    writer.queue(&FrameHeader { size: len as u64 });
                    writer.write_bytes(frame.payload).await?;
                }
            }
            egress.frame_written(len, frame.received);
        }
        writer.flush().await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            writer.finish();
            egress.counters.group();
        }
        Err(error) => {
            let frames_left = group.frames().saturating_sub(group.position()) as u64;
            telemetry::GroupDropped { error: &error, frames_left }.emit();
            writer.reset(error.code());
        }
    }
}

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

/// A group is skipped once a newer group exists and it is older than the subscriber's budget.
fn is_expired(group: &GroupConsumer, track: &TrackConsumer, delivery: &Delivery) -> bool {
    let budget = delivery.max_latency_ms.load(Ordering::Relaxed);
    // Cheapest test first: the track's lock is shared by every viewer of it.
    budget > 0
        && group.created().elapsed() > Duration::from_millis(budget)
        && track.latest().is_some_and(|latest| latest > group.sequence())
}
