//! A track: a sequence of groups with one producer and any number of consumers. The latest group
//! is always cached so a late joiner starts at its first frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{GroupConsumer, GroupProducer};
use super::watch::Watch;
use crate::message::TrackInfo;
use crate::Error;

/// Groups kept for consumers that are behind. The latest group is kept regardless.
pub const MAX_CACHED_GROUPS: usize = 32;
/// A cached group older than this is dropped once a newer one exists.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Cached {
    arrival: u64,
    group: GroupConsumer,
}

#[derive(Debug)]
struct State {
    groups: VecDeque<Cached>,
    next_arrival: u64,
    latest: Option<u64>,
    closed: Option<Result<(), Error>>,
    consumers: usize,
    /// The publisher's TRACK_INFO; `None` while a relayed track waits for its upstream's.
    info: Option<TrackInfo>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    name: String,
    priority: u8,
    state: Watch<State>,
    /// The span of the work that produces this track (a relay's upstream subscription), so
    /// consumers that join it later can link to it.
    span: std::sync::Mutex<Option<tracing::Span>>,
}

impl Shared {
    pub(crate) fn consume(self: &Arc<Self>) -> TrackConsumer {
        self.state.modify(|s| s.consumers += 1);
        TrackConsumer { shared: self.clone(), cursor: None }
    }

    pub(crate) fn consumers(&self) -> usize {
        self.state.lock().consumers
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    pub(crate) async fn unused(&self) {
        self.state.wait(|s| (s.consumers == 0).then_some(())).await
    }

    pub(crate) fn span(&self) -> Option<tracing::Span> {
        self.span.lock().unwrap().clone()
    }
}

/// Creates groups. Dropping it without [`Self::finish`] aborts the track.
#[derive(Debug)]
pub struct TrackProducer {
    shared: Arc<Shared>,
}

impl TrackProducer {
    pub fn new(name: impl Into<String>, priority: u8) -> Self {
        let track = Self::pending(name, priority);
        track.set_info(TrackInfo { priority, ..TrackInfo::default() });
        track
    }

    /// A track whose [`TrackInfo`] is not known yet (a relayed track, until its upstream says).
    pub fn pending(name: impl Into<String>, priority: u8) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                priority,
                state: Watch::new(State {
                    groups: VecDeque::new(),
                    next_arrival: 0,
                    latest: None,
                    closed: None,
                    consumers: 0,
                    info: None,
                }),
                span: Default::default(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Sets (or replaces) what TRACK_INFO reports for this track.
    pub fn set_info(&self, info: TrackInfo) {
        self.shared.state.modify(|s| s.info = Some(info));
    }

    pub fn info(&self) -> Option<TrackInfo> {
        self.shared.state.lock().info
    }

    /// Records the span producing this track; consumers joining later link to it.
    pub fn set_span(&self, span: tracing::Span) {
        *self.shared.span.lock().unwrap() = Some(span);
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts the group after the latest one.
    pub fn append_group(&mut self) -> GroupProducer {
        let sequence = self.shared.state.lock().latest.map_or(0, |l| l + 1);
        self.create_group(sequence).expect("a fresh sequence cannot be a duplicate")
    }

    /// Starts a group with a given sequence; groups may arrive out of order. A sequence seen
    /// before replaces the old group once that one is complete (a replacing publisher restarts
    /// its numbering); while the old one is still being written it is a duplicate.
    pub fn create_group(&mut self, sequence: u64) -> Result<GroupProducer, Error> {
        self.shared.state.modify(|s| {
            if let Some(pos) = s.groups.iter().position(|c| c.group.sequence() == sequence) {
                if !s.groups[pos].group.is_closed() {
                    return Err(Error::Duplicate(sequence));
                }
                s.groups.remove(pos);
            }
            let (producer, consumer) = GroupProducer::new(sequence);
            let arrival = s.next_arrival;
            s.next_arrival += 1;
            s.latest = Some(s.latest.map_or(sequence, |l| l.max(sequence)));
            s.groups.push_back(Cached { arrival, group: consumer });
            evict(s);
            Ok(producer)
        })
    }

    pub fn finish(self) {
        self.close(Ok(()));
    }

    pub fn abort(self, err: Error) {
        self.close(Err(err));
    }

    fn close(&self, result: Result<(), Error>) {
        self.shared.state.modify(|s| {
            s.closed.get_or_insert(result);
        });
    }

    pub fn consume(&self) -> TrackConsumer {
        self.shared.consume()
    }

    /// How many consumers hold this track now.
    pub fn consumers(&self) -> usize {
        self.shared.consumers()
    }

    /// Resolves once no consumer is left (the relay then unsubscribes upstream).
    pub async fn unused(&self) {
        self.shared.unused().await
    }

    /// Resolves once the track is closed by anyone.
    pub async fn closed(&self) {
        self.shared.state.wait(|s| s.closed.as_ref().map(|_| ())).await
    }
}

impl Drop for TrackProducer {
    fn drop(&mut self) {
        self.close(Err(Error::Cancel));
    }
}

/// Drops cached groups that are too many or too old, never the latest.
fn evict(s: &mut State) {
    let latest = s.latest;
    let now = Instant::now();
    let mut excess = s.groups.len().saturating_sub(MAX_CACHED_GROUPS);
    s.groups.retain(|c| {
        let is_latest = Some(c.group.sequence()) == latest;
        let too_old = now.duration_since(c.group.created()) > MAX_CACHE_AGE;
        if !is_latest && (excess > 0 || too_old) {
            excess = excess.saturating_sub(1);
            return false;
        }
        true
    });
}

/// Reads groups: first the latest cached one, then every group in arrival order.
#[derive(Debug)]
pub struct TrackConsumer {
    shared: Arc<Shared>,
    cursor: Option<u64>,
}

impl TrackConsumer {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn priority(&self) -> u8 {
        self.shared.priority
    }

    /// The next group to deliver, `Ok(None)` once the track finished, or why it was aborted.
    pub async fn next_group(&mut self) -> Result<Option<GroupConsumer>, Error> {
        let cursor = self.cursor;
        let next = self
            .shared
            .state
            .wait(|s| {
                let next = match cursor {
                    // A late joiner starts at the newest group, from its first frame.
                    None => s.groups.iter().max_by_key(|c| c.group.sequence()),
                    Some(cursor) => s.groups.iter().find(|c| c.arrival > cursor),
                };
                match (next, &s.closed) {
                    (Some(c), _) => Some(Ok(Some((c.arrival, c.group.clone())))),
                    (None, Some(Ok(()))) => Some(Ok(None)),
                    (None, Some(Err(e))) => Some(Err(e.clone())),
                    (None, None) => None,
                }
            })
            .await?;
        Ok(next.map(|(arrival, group)| {
            self.cursor = Some(arrival);
            group
        }))
    }

    /// The publisher's TRACK_INFO, waiting until it is known; `Err` if the track closes first.
    pub async fn info(&self) -> Result<TrackInfo, Error> {
        self.shared
            .state
            .wait(|s| match (&s.info, &s.closed) {
                (Some(info), _) => Some(Ok(*info)),
                (None, Some(Err(e))) => Some(Err(e.clone())),
                (None, Some(Ok(()))) => Some(Err(Error::NotFound)),
                (None, None) => None,
            })
            .await
    }

    /// The highest group sequence seen so far.
    pub fn latest(&self) -> Option<u64> {
        self.shared.state.lock().latest
    }

    /// Resolves once the track is closed, with how it closed.
    pub async fn closed(&self) -> Result<(), Error> {
        self.shared.state.wait(|s| s.closed.clone()).await
    }
}

impl Clone for TrackConsumer {
    fn clone(&self) -> Self {
        self.shared.state.modify(|s| s.consumers += 1);
        Self { shared: self.shared.clone(), cursor: self.cursor }
    }
}

impl Drop for TrackConsumer {
    fn drop(&mut self) {
        self.shared.state.modify(|s| s.consumers -= 1);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn late_joiner_starts_at_latest_group_first_frame() {
        let mut track = TrackProducer::new("video", 0);
        let mut g0 = track.append_group();
        g0.write_frame(Bytes::from_static(b"a")).unwrap();
        g0.finish();
        let mut g1 = track.append_group();
        g1.write_frame(Bytes::from_static(b"key")).unwrap();
        g1.write_frame(Bytes::from_static(b"delta")).unwrap();

        let mut late = track.consume();
        let mut group = late.next_group().await.unwrap().unwrap();
        assert_eq!(group.sequence(), 1);
        assert_eq!(group.read_frame().await.unwrap().unwrap().payload, "key");

        let g2 = track.append_group();
        assert_eq!(late.next_group().await.unwrap().unwrap().sequence(), 2);
        drop(g2);
        track.finish();
        assert!(late.next_group().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn counts_consumers_and_rejects_duplicates() {
        let mut track = TrackProducer::new("t", 0);
        let a = track.consume();
        let b = a.clone();
        assert_eq!(track.shared().consumers(), 2);
        drop(a);
        drop(b);
        track.unused().await;
        let g = track.create_group(5).unwrap();
        assert_eq!(track.create_group(5).unwrap_err(), Error::Duplicate(5));
        g.finish();
        assert!(track.create_group(5).is_ok(), "a completed group may be restarted");
    }

    #[test]
    fn cache_is_bounded_and_keeps_latest() {
        let mut track = TrackProducer::new("t", 0);
        for _ in 0..100 {
            track.append_group().finish();
        }
        let s = track.shared.state.lock();
        assert_eq!(s.groups.len(), MAX_CACHED_GROUPS);
        assert_eq!(s.groups.back().unwrap().group.sequence(), 99);
    }
}
