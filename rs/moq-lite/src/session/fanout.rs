//! The fan-out of one subscription's groups: one task per group stream, writing the group's
//! frames itself while catching up or blocked, and handing the stream to the group's producer
//! ([`DirectStream`]) while the viewer keeps up, so a frame reaches every caught-up viewer in one
//! pass without waking a task per viewer. Also the subscriber's delivery budget (priority and
//! max latency) that decides which groups are skipped.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::stream::Writer;
use super::{group_priority, Inner};
use crate::coding::Encode;
use crate::message::*;
use crate::model::{Frame, FrameSink, GroupConsumer, TrackConsumer};
use crate::{telemetry, Error, Version};

/// Subscriber-controlled delivery settings, updated by SUBSCRIBE_UPDATE.
pub(super) struct Delivery {
    pub priority: AtomicU8,
    pub max_latency_ms: AtomicU64,
}

impl Delivery {
    pub fn new(priority: u8, max_latency_ms: u64) -> Self {
        Self { priority: priority.into(), max_latency_ms: max_latency_ms.into() }
    }

    /// Whether a group of age `age()` is past the subscriber's latency budget; without a budget
    /// (0) the age is not even computed (a clock read per frame on the forwarding path).
    fn over_budget(&self, age: impl FnOnce() -> Duration) -> bool {
        let budget = self.max_latency_ms.load(Ordering::Relaxed);
        budget > 0 && age() > Duration::from_millis(budget)
    }
}

pub(super) async fn write_group(
    inner: Arc<Inner>,
    subscribe_id: u64,
    mut group: GroupConsumer,
    track: TrackConsumer,
    delivery: Arc<Delivery>,
    egress: Arc<telemetry::Egress>,
) {
    let _queued = egress.group_queued();
    let sequence = group.sequence();
    let send = match inner.conn.open_uni().await {
        Ok(send) => send,
        Err(_) => return,
    };
    egress.group_opened(group.created());
    let mut writer = inner.writer(send);
    writer.set_priority(group_priority(delivery.priority.load(Ordering::Relaxed), sequence));
    writer.queue_raw(|b| UniStreamType::Group.encode(b));
    writer.queue(&GroupHeader { subscribe_id, sequence, frame_start: 0 });

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
            telemetry::GroupDropped { error: &error, frames_left }.emit(inner.telemetry());
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
        let _waiting = egress.bytes_queued(len);
        let written = match wire_for(&frame, writer.version()) {
            // Frame header and payload, encoded once for every viewer of this wire format.
            Some(wire) => writer.write_bytes(wire.clone()).await,
            None => {
                writer.queue(&FrameHeader { timestamp_delta: frame.delta, size: len as u64 });
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
        let chunks: &mut [Bytes] = match wire_for(frame, self.version) {
            Some(wire) => {
                one = [wire.clone()];
                &mut one
            }
            None => {
                let mut header = BytesMut::with_capacity(16);
                FrameHeader { timestamp_delta: frame.delta, size: len as u64 }.encode(&mut header, self.version);
                two = [header.freeze(), frame.payload.clone()];
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

/// The frame's pre-encoded wire form, if it was built for this version's frame layout (with or
/// without the timestamp delta); otherwise the header is encoded per stream.
fn wire_for(frame: &Frame, version: Version) -> Option<&Bytes> {
    frame.wire.as_ref().filter(|_| frame.wire_timestamped == version.has_timestamps())
}

/// A group is skipped once a newer group exists and it is older than the subscriber's budget.
fn is_expired(group: &GroupConsumer, track: &TrackConsumer, delivery: &Delivery) -> bool {
    // Cheapest test first: the track's lock is shared by every viewer of it.
    delivery.over_budget(|| group.created().elapsed()) && track.latest().is_some_and(|latest| latest > group.sequence())
}
