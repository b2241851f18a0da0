//! The publisher half: serves the peer's ANNOUNCE_REQUEST and SUBSCRIBE streams from a scope.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::stream::{Reader, Writer};
use super::{group_priority, Inner};
use crate::coding::Encode;
use crate::message::*;
use crate::model::{Announcement, Frame, FrameSink, GroupConsumer, TrackConsumer};
use crate::{path, telemetry, Error, Version};

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

impl Delivery {
    /// Whether a group of age `age()` is past the subscriber's latency budget; without a budget
    /// (0) the age is not even computed (a clock read per frame on the forwarding path).
    fn over_budget(&self, age: impl FnOnce() -> Duration) -> bool {
        let budget = self.max_latency_ms.load(Ordering::Relaxed);
        budget > 0 && age() > Duration::from_millis(budget)
    }
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
    let accepted = accept_subscribe(inner, reader, writer).instrument(span.clone()).await?;
    forward_subscription(inner, reader, writer, accepted, &span).await
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
                            span.in_scope(|| {
                                tracing::debug!(broadcast = %broadcast, track = %track_name, "slow subscriber: resetting oldest group");
                                telemetry::GroupDropped { error: &Error::TooSlow, frames_left: 0 }.emit();
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
                None => {
                    // Track finished: deliver what is in flight, then FIN the subscribe stream.
                    while groups.join_next().await.is_some() {}
                    writer.finish();
                    return Ok(());
                }
            },
            // A replacing publisher takes over the path: follow it.
            _ = origin.route_changed(&broadcast, route.id) => {
                match origin.route(&broadcast) {
                    Some(next) => {
                        track = next.broadcast.subscribe_track(&track_name)?;
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

    let direct = Arc::new(DirectStream::new(group.created(), inner.version, delivery.clone(), egress.clone()));
    let _reclaim = Reclaim(direct.clone());
    let (mut writer, result) = forward(writer, &mut group, &track, &delivery, &egress, &direct).await;
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

/// Writes the group's frames to the stream: itself while catching up or blocked, and through
/// the group's producer (see [`DirectStream`]) while it keeps up. Returns the writer whatever
/// happened, to finish or reset it.
async fn forward(
    mut writer: Writer,
    group: &mut GroupConsumer,
    track: &TrackConsumer,
    delivery: &Delivery,
    egress: &telemetry::Egress,
    direct: &Arc<DirectStream>,
) -> (Writer, Result<(), Error>) {
    loop {
        writer = match direct.attach(group, writer) {
            Err(writer) => writer,
            Ok(()) => {
                let back = direct.handed_back().await;
                group.skip_to(back.next);
                let mut writer = back.writer;
                if let Some(error) = back.error {
                    return (writer, Err(error));
                }
                if back.finished {
                    return (writer, Ok(()));
                }
                for chunk in back.unwritten {
                    if let Err(error) = writer.write_bytes(chunk).await {
                        return (writer, Err(error));
                    }
                }
                writer
            }
        };
        let frame = match group.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => return (writer, Err(error)),
        };
        if is_expired(group, track, delivery) {
            return (writer, Err(Error::Expired));
        }
        let len = frame.payload.len();
        let _waiting = telemetry::QueuedBytes::new(len);
        let written = match frame.wire {
            // Size varint and payload, encoded once for every viewer.
            Some(wire) => writer.write_bytes(wire).await,
            None => {
                writer.queue(&FrameHeader { size: len as u64 });
                writer.write_bytes(frame.payload).await
            }
        };
        if let Err(error) = written {
            return (writer, Err(error));
        }
        egress.frame_written(len, frame.received);
    }
    let flushed = writer.flush().await;
    (writer, flushed)
}

/// A viewer's group stream while the viewer keeps up: the group's producer writes each new
/// frame to it as the frame arrives (one pass over the viewers per frame, as a bare QUIC sender
/// would do) instead of waking the viewer's task per frame. The first write that would wait, or
/// fail, hands the stream back to the task ([`forward`]), which finishes that frame and reads
/// on at its own pace.
struct DirectStream {
    state: Mutex<Direct>,
    handed_back: Notify,
    created: Instant,
    version: Version,
    delivery: Arc<Delivery>,
    egress: Arc<telemetry::Egress>,
}

#[derive(Default)]
struct Direct {
    /// Held here while attached; the task holds it otherwise.
    writer: Option<Writer>,
    attached: bool,
    /// Index of the next frame to write.
    next: usize,
    /// The rest of a frame the stream took only part of.
    unwritten: Vec<Bytes>,
    error: Option<Error>,
    /// The group was finished while attached, and so was the stream.
    finished: bool,
}

/// What the producer hands back to the task.
struct HandedBack {
    writer: Writer,
    next: usize,
    unwritten: Vec<Bytes>,
    error: Option<Error>,
    finished: bool,
}

impl DirectStream {
    fn new(created: Instant, version: Version, delivery: Arc<Delivery>, egress: Arc<telemetry::Egress>) -> Self {
        Self { state: Mutex::default(), handed_back: Notify::new(), created, version, delivery, egress }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Direct> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the stream to the group's producer if the task is caught up with nothing queued.
    fn attach(self: &Arc<Self>, group: &GroupConsumer, writer: Writer) -> Result<(), Writer> {
        if !writer.is_flushed() {
            return Err(writer);
        }
        {
            let mut direct = self.lock();
            direct.writer = Some(writer);
            direct.attached = true;
            direct.next = group.position();
        }
        if group.attach(self.clone()) {
            return Ok(());
        }
        // Not in the group's list, so nothing else touched it.
        let mut direct = self.lock();
        direct.attached = false;
        Err(direct.writer.take().expect("writer just stored"))
    }

    /// Waits until the producer detaches the stream, and takes it back.
    async fn handed_back(&self) -> HandedBack {
        loop {
            self.handed_back.notified().await;
            let mut direct = self.lock();
            if direct.attached {
                continue;
            }
            let writer = direct.writer.take().expect("attached streams hold their writer");
            return HandedBack {
                writer,
                next: direct.next,
                unwritten: std::mem::take(&mut direct.unwritten),
                error: direct.error.take(),
                finished: direct.finished,
            };
        }
    }

    fn detach(&self, mut direct: std::sync::MutexGuard<'_, Direct>) -> bool {
        direct.attached = false;
        drop(direct);
        self.handed_back.notify_one();
        false
    }
}

impl FrameSink for DirectStream {
    fn offer(&self, index: usize, frame: &Frame) -> bool {
        let mut direct = self.lock();
        if !direct.attached || direct.writer.is_none() {
            return false;
        }
        // A late group may have to be skipped: the task decides, it may take the track's lock.
        let late = self.delivery.over_budget(|| frame.received.saturating_duration_since(self.created));
        if index != direct.next || late {
            return self.detach(direct);
        }
        let len = frame.payload.len();
        // On the stack: this runs once per viewer and frame.
        let mut one;
        let mut two;
        let chunks: &mut [Bytes] = match &frame.wire {
            Some(wire) => {
                one = [wire.clone()];
                &mut one
            }
            None => {
                let mut size = BytesMut::with_capacity(8);
                FrameHeader { size: len as u64 }.encode(&mut size, self.version);
                two = [size.freeze(), frame.payload.clone()];
                &mut two
            }
        };
        let writer = direct.writer.as_mut().expect("checked above");
        match writer.try_write(chunks) {
            Ok(false) => self.detach(direct),
            Ok(true) => {
                direct.next += 1;
                self.egress.frame_written(len, frame.received);
                if chunks.iter().all(Bytes::is_empty) {
                    return true;
                }
                direct.unwritten = chunks.iter().filter(|c| !c.is_empty()).cloned().collect();
                self.detach(direct)
            }
            Err(error) => {
                direct.error = Some(error);
                self.detach(direct)
            }
        }
    }

    fn release(&self, complete: bool) {
        let mut direct = self.lock();
        if !direct.attached {
            return;
        }
        // Attached means every frame was taken whole, so a complete group's stream ends here:
        // the FIN leaves with the last frame instead of in a packet of its own once the task
        // wakes up (one datagram per group and viewer).
        if complete {
            if let Some(writer) = direct.writer.as_mut() {
                writer.finish();
                direct.finished = true;
            }
        }
        self.detach(direct);
    }
}

/// Takes the stream back from the producer when the task is dropped (its subscription ended or
/// it was reset as too slow), so the stream is reset and the producer stops writing to it.
struct Reclaim(Arc<DirectStream>);

impl Drop for Reclaim {
    fn drop(&mut self) {
        let writer = {
            let mut direct = self.0.lock();
            direct.attached = false;
            direct.writer.take()
        };
        drop(writer);
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
    // Cheapest test first: the track's lock is shared by every viewer of it.
    delivery.over_budget(|| group.created().elapsed()) && track.latest().is_some_and(|latest| latest > group.sequence())
}
