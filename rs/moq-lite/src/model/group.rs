//! A group: an ordered run of frames (a GOP for video) with one producer and many consumers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::watch::Watch;
use crate::Error;

/// Most frames one group may hold; a hostile publisher cannot grow a group without bound.
pub const MAX_FRAMES_PER_GROUP: usize = 16 * 1024;

/// One frame and when it was complete at this node (the receiver's clock; 03/04 carry no
/// timestamps on the wire).
#[derive(Debug, Clone)]
pub struct Frame {
    pub payload: Bytes,
    pub received: Instant,
    /// Media time in the track's timescale ([`crate::message::TrackInfo::timescale`]); frames
    /// from a wire without timestamps (03/04) are stamped with their arrival (ms since the epoch).
    pub timestamp: u64,
    /// `timestamp` minus the previous frame's in the group (the first frame's is its timestamp):
    /// what a lite-05+ FRAME header carries.
    pub(crate) delta: i64,
    /// The frame as sent on a group stream: its size varint, then the payload (which `payload`
    /// shares). A relay builds it once when the frame arrives, so fan-out writes one chunk per
    /// viewer instead of a header and a payload (half the segments in every stream's send
    /// buffer); frames that are not forwarded (an end viewer's, a local publisher's) skip the copy.
    pub(crate) wire: Option<Bytes>,
    /// Whether `wire` starts with the timestamp delta (a 05+ frame) or the size (03/04).
    pub(crate) wire_timestamped: bool,
}

/// Milliseconds since the Unix epoch: the timestamp of frames that came without one.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A consumer the producer writes each frame to as it appends it, so fanning a frame out to
/// many viewers wakes no task per viewer (the consumer's task sleeps while it keeps up).
pub(crate) trait FrameSink: Send + Sync {
    /// Frame `index` was just appended; `false` detaches the sink (it is blocked, failed or gone,
    /// and its owner reads on from where it stopped).
    fn offer(&self, index: usize, frame: &Frame) -> bool;
    /// The group ended: no more offers. `complete` when it was finished (not aborted), so a sink
    /// that took every frame may end its stream now, in the same packet as the last frame.
    fn release(&self, complete: bool);
}

#[derive(Default)]
struct Sinks(Vec<Arc<dyn FrameSink>>);

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sinks", self.0.len())
    }
}

#[derive(Debug)]
struct State {
    frames: Vec<Frame>,
    bytes: u64,
    closed: Option<Result<(), Error>>,
    sinks: Sinks,
}

/// Counts the payload bytes held by the groups attached to it, from their first frame until the
/// last reference to the group goes (what a relay's cache holds in memory). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ByteMeter(Arc<AtomicI64>);

impl ByteMeter {
    fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// Bytes held right now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Shared {
    sequence: u64,
    created: Instant,
    state: Watch<State>,
    meter: OnceLock<ByteMeter>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(meter) = self.meter.get() {
            meter.add(-(self.state.lock().bytes as i64));
        }
    }
}

/// Writes frames into a group. Dropping it without [`Self::finish`] aborts the group.
#[derive(Debug)]
pub struct GroupProducer {
    shared: Arc<Shared>,
}

impl GroupProducer {
    pub(crate) fn new(sequence: u64) -> (Self, GroupConsumer) {
        let shared = Arc::new(Shared {
            sequence,
            created: Instant::now(),
            state: Watch::new(State { frames: Vec::new(), bytes: 0, closed: None, sinks: Sinks::default() }),
            meter: OnceLock::new(),
        });
        (Self { shared: shared.clone() }, GroupConsumer { shared, index: 0 })
    }

    pub fn sequence(&self) -> u64 {
        self.shared.sequence
    }

    /// Counts this group's bytes in `meter` from now on (set it before the first frame).
    pub fn meter_into(&self, meter: &ByteMeter) {
        let _ = self.shared.meter.set(meter.clone());
    }

    /// Appends a frame stamped with the current time (ms since the epoch).
    pub fn write_frame(&mut self, payload: Bytes) -> Result<(), Error> {
        self.write_frame_at(payload, now_ms())
    }

    /// Appends a frame with its media timestamp (in the track's timescale).
    pub fn write_frame_at(&mut self, payload: Bytes, timestamp: u64) -> Result<(), Error> {
        let frame =
            Frame { payload, received: Instant::now(), timestamp, delta: 0, wire: None, wire_timestamped: false };
        self.push(frame)
    }

    /// Appends a frame in wire form: a `header`-byte frame header (with the timestamp delta
    /// first when `timestamped`), then the payload.
    pub(crate) fn write_wire(
        &mut self,
        wire: Bytes,
        header: usize,
        timestamp: u64,
        timestamped: bool,
    ) -> Result<(), Error> {
        let payload = wire.slice(header..);
        let frame = Frame {
            payload,
            received: Instant::now(),
            timestamp,
            delta: 0,
            wire: Some(wire),
            wire_timestamped: timestamped,
        };
        self.push(frame)
    }

    /// The timestamp of the last frame written (0 before the first): the base a 05+ delta adds to.
    pub fn last_timestamp(&self) -> u64 {
        self.shared.state.lock().frames.last().map_or(0, |f| f.timestamp)
    }

    fn push(&mut self, mut frame: Frame) -> Result<(), Error> {
        let len = frame.payload.len();
        let (index, mut sinks, offered) = self.shared.state.modify(|s| {
            if s.frames.len() >= MAX_FRAMES_PER_GROUP {
                return Err(Error::ProtocolViolation("too many frames in one group".into()));
            }
            let previous = s.frames.last().map_or(0, |f| f.timestamp);
            frame.delta = (frame.timestamp as i128 - previous as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            s.bytes += len as u64;
            if let Some(meter) = self.shared.meter.get() {
                meter.add(len as i64);
            }
            // Sinks are written outside the lock: readers of the group must not wait on them.
            let sinks = std::mem::take(&mut s.sinks.0);
            let offered = (!sinks.is_empty()).then(|| frame.clone());
            s.frames.push(frame);
            Ok((s.frames.len() - 1, sinks, offered))
        })?;
        if let Some(frame) = offered {
            sinks.retain(|sink| sink.offer(index, &frame));
            if !sinks.is_empty() {
                // Sinks attached meanwhile came in after this frame; keep them too.
                let mut s = self.shared.state.lock();
                sinks.append(&mut s.sinks.0);
                s.sinks.0 = sinks;
            }
        }
        Ok(())
    }

    /// Marks the group complete: consumers read every frame, then the end.
    pub fn finish(self) {
        self.close(Ok(()));
    }

    pub fn abort(self, err: Error) {
        self.close(Err(err));
    }

    fn close(&self, result: Result<(), Error>) {
        let (complete, sinks) = self.shared.state.modify(|s| {
            let closed = s.closed.get_or_insert(result);
            (closed.is_ok(), std::mem::take(&mut s.sinks.0))
        });
        for sink in sinks {
            sink.release(complete);
        }
    }

    pub fn consume(&self) -> GroupConsumer {
        GroupConsumer { shared: self.shared.clone(), index: 0 }
    }
}

impl Drop for GroupProducer {
    fn drop(&mut self) {
        self.close(Err(Error::Cancel));
    }
}

/// Reads a group's frames from the first one, each consumer at its own pace.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    shared: Arc<Shared>,
    index: usize,
}

impl GroupConsumer {
    pub fn sequence(&self) -> u64 {
        self.shared.sequence
    }

    /// When this node created the group (its first byte arrived or it was produced locally).
    pub fn created(&self) -> Instant {
        self.shared.created
    }

    /// The next frame, `Ok(None)` at the end of a finished group, or why the group was aborted.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        let index = self.index;
        let frame = self
            .shared
            .state
            .wait(|s| match s.frames.get(index) {
                Some(frame) => Some(Ok(Some(frame.clone()))),
                None => s.closed.clone().map(|c| c.map(|()| None)),
            })
            .await?;
        if frame.is_some() {
            self.index += 1;
        }
        Ok(frame)
    }

    /// Hands `sink` every frame appended from now on, if this consumer has read every frame so
    /// far and the group is still open; `false` otherwise (read on, then try again).
    pub(crate) fn attach(&self, sink: Arc<dyn FrameSink>) -> bool {
        let mut s = self.shared.state.lock();
        if s.frames.len() != self.index || s.closed.is_some() {
            return false;
        }
        s.sinks.0.push(sink);
        true
    }

    /// Continues after the frames a detached sink took.
    pub(crate) fn skip_to(&mut self, index: usize) {
        self.index = self.index.max(index);
    }

    /// Frames in the group so far.
    pub fn frames(&self) -> usize {
        self.shared.state.lock().frames.len()
    }

    /// Frames this consumer has read.
    pub fn position(&self) -> usize {
        self.index
    }

    /// Payload bytes held by the group so far.
    pub fn size(&self) -> u64 {
        self.shared.state.lock().bytes
    }

    /// Whether the group has ended, successfully or not.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn consumers_read_all_frames_then_end() {
        let (mut producer, mut a) = GroupProducer::new(7);
        producer.write_frame(Bytes::from_static(b"one")).unwrap();
        let mut b = producer.consume();
        producer.write_frame(Bytes::from_static(b"two")).unwrap();
        producer.finish();
        for consumer in [&mut a, &mut b] {
            assert_eq!(consumer.read_frame().await.unwrap().unwrap().payload, "one");
            assert_eq!(consumer.read_frame().await.unwrap().unwrap().payload, "two");
            assert!(consumer.read_frame().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn wire_form_frames_share_one_buffer_with_their_payload() {
        let (mut producer, mut consumer) = GroupProducer::new(0);
        let wire = Bytes::from_static(b"\x05hello");
        producer.write_wire(wire.clone(), 1, 0, false).unwrap();
        producer.write_frame(Bytes::from_static(b"bye")).unwrap();
        producer.finish();
        let relayed = consumer.read_frame().await.unwrap().unwrap();
        assert_eq!(relayed.payload, "hello");
        assert_eq!(relayed.wire.as_deref(), Some(&wire[..]));
        assert_eq!(relayed.payload.as_ptr(), wire[1..].as_ptr(), "the payload is a view, not a copy");
        let local = consumer.read_frame().await.unwrap().unwrap();
        assert_eq!((local.payload, local.wire), (Bytes::from_static(b"bye"), None));
        assert_eq!(consumer.size(), 8);
    }

    /// Records what the producer hands it; refuses offers after `accept` of them.
    #[derive(Default)]
    struct Recorder {
        offered: std::sync::Mutex<Vec<(usize, Bytes)>>,
        accept: usize,
        /// 0: not released; 1: released aborted; 2: released complete.
        released: std::sync::atomic::AtomicU8,
    }

    impl FrameSink for Recorder {
        fn offer(&self, index: usize, frame: &Frame) -> bool {
            let mut offered = self.offered.lock().unwrap();
            offered.push((index, frame.payload.clone()));
            offered.len() < self.accept
        }
        fn release(&self, complete: bool) {
            self.released.store(1 + complete as u8, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_attached_sink_gets_each_new_frame_until_it_detaches() {
        let (mut producer, mut consumer) = GroupProducer::new(0);
        producer.write_frame(Bytes::from_static(b"a")).unwrap();
        let sink = Arc::new(Recorder { accept: 2, ..Default::default() });
        assert!(!consumer.attach(sink.clone()), "a consumer behind the producer reads on first");
        consumer.read_frame().await.unwrap();
        assert!(consumer.attach(sink.clone()));
        for payload in [&b"b"[..], b"c", b"d"] {
            producer.write_frame(Bytes::from_static(payload)).unwrap();
        }
        // The second offer was refused: the sink was detached and saw no third.
        let offered = sink.offered.lock().unwrap().clone();
        assert_eq!(offered, vec![(1, Bytes::from_static(b"b")), (2, Bytes::from_static(b"c"))]);
        // Its owner reads on from where the sink stopped.
        consumer.skip_to(2);
        assert_eq!(consumer.read_frame().await.unwrap().unwrap().payload, "c");
        assert_eq!(consumer.read_frame().await.unwrap().unwrap().payload, "d");
        producer.finish();
        assert_eq!(sink.released.load(std::sync::atomic::Ordering::SeqCst), 0, "a detached sink is not released");
    }

    #[tokio::test]
    async fn ending_a_group_releases_its_sinks_and_refuses_new_ones() {
        let (producer, consumer) = GroupProducer::new(0);
        let sink = Arc::new(Recorder { accept: usize::MAX, ..Default::default() });
        assert!(consumer.attach(sink.clone()));
        drop(producer);
        assert_eq!(sink.released.load(std::sync::atomic::Ordering::SeqCst), 1, "released as aborted");
        assert!(!consumer.attach(Arc::new(Recorder::default())), "no sink on an ended group");
    }

    #[tokio::test]
    async fn finishing_a_group_releases_its_sinks_as_complete() {
        let (mut producer, consumer) = GroupProducer::new(0);
        let sink = Arc::new(Recorder { accept: usize::MAX, ..Default::default() });
        assert!(consumer.attach(sink.clone()));
        producer.write_frame(Bytes::from_static(b"a")).unwrap();
        producer.finish();
        assert_eq!(sink.released.load(std::sync::atomic::Ordering::SeqCst), 2, "released as complete");
    }

    #[tokio::test]
    async fn dropped_producer_aborts() {
        let (producer, mut consumer) = GroupProducer::new(1);
        drop(producer);
        assert_eq!(consumer.read_frame().await.unwrap_err(), Error::Cancel);
    }
}
