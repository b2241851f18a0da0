//! A broadcast: a bag of named tracks owned by one publisher.
//!
//! Tracks are not announced; subscribers ask for them by name. A *static* broadcast (a local
//! publisher) answers only for tracks it created. A *dynamic* broadcast (one learned from a
//! remote peer) creates a track on first request and hands its producer to the session, which
//! subscribes upstream once and fans the track out to every consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::track::{Shared as TrackShared, TrackConsumer, TrackProducer};
use super::watch::Watch;
use crate::Error;

/// Most tracks one broadcast may have open, so a subscriber cannot request names without bound.
pub const MAX_TRACKS: usize = 256;

#[derive(Debug, Default)]
struct State {
    tracks: HashMap<String, Arc<TrackShared>>,
    requests: VecDeque<TrackRequest>,
    dynamic: bool,
    closed: bool,
}

/// A consumer asked for a track nobody produces yet. `requester` is the span it asked in, so the
/// work done to serve it (an upstream subscription) can link back to it.
#[derive(Debug)]
pub struct TrackRequest {
    pub track: TrackProducer,
    pub requester: tracing::Span,
}

/// Owns a broadcast. Dropping it ends the broadcast for every consumer.
#[derive(Debug)]
pub struct BroadcastProducer {
    state: Arc<Watch<State>>,
}

impl BroadcastProducer {
    /// A broadcast whose tracks are created up front with [`Self::create_track`].
    pub fn new() -> Self {
        Self { state: Arc::new(Watch::new(State::default())) }
    }

    /// A broadcast whose tracks are created on request; see [`Self::requested_track`].
    pub fn dynamic() -> Self {
        Self { state: Arc::new(Watch::new(State { dynamic: true, ..Default::default() })) }
    }

    /// Adds (or replaces) a track.
    pub fn create_track(&self, name: &str, priority: u8) -> TrackProducer {
        let track = TrackProducer::new(name, priority);
        self.state.modify(|s| s.tracks.insert(name.to_string(), track.shared().clone()));
        track
    }

    /// The next track a consumer asked for that nobody produces yet; `None` once closed.
    pub async fn requested_track(&self) -> Option<TrackRequest> {
        self.state
            .wait(|s| match s.requests.pop_front() {
                Some(track) => Some(Some(track)),
                None if s.closed => Some(None),
                None => None,
            })
            .await
    }

    /// Forgets `track` if no consumer is left, atomically with respect to new subscriptions, so
    /// a subscriber never joins a track that is being torn down.
    pub fn remove_if_unused(&self, track: &TrackProducer) -> bool {
        self.state.modify(|s| {
            let current = s.tracks.get(track.name());
            if !current.is_some_and(|c| Arc::ptr_eq(c, track.shared())) {
                return true;
            }
            if track.shared().consumers() > 0 {
                return false;
            }
            s.tracks.remove(track.name());
            true
        })
    }

    pub fn consume(&self) -> BroadcastConsumer {
        BroadcastConsumer { state: self.state.clone() }
    }
}

impl Default for BroadcastProducer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BroadcastProducer {
    fn drop(&mut self) {
        self.state.modify(|s| {
            s.closed = true;
            s.requests.clear();
        });
    }
}

/// Subscribes to tracks of a broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastConsumer {
    state: Arc<Watch<State>>,
}

impl BroadcastConsumer {
    pub fn subscribe_track(&self, name: &str) -> Result<TrackConsumer, Error> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(Error::NotFound);
        }
        if let Some(track) = s.tracks.get(name) {
            if !track.is_closed() || !s.dynamic {
                // Joining a track someone else's request started: link to the work serving it.
                if let Some(span) = track.span() {
                    tracing::Span::current().follows_from(&span);
                }
                return Ok(track.consume());
            }
        }
        if !s.dynamic {
            return Err(Error::NotFound);
        }
        if s.tracks.len() >= MAX_TRACKS {
            return Err(Error::TooManyTracks);
        }
        let producer = TrackProducer::pending(name, 0);
        let consumer = producer.consume();
        s.tracks.insert(name.to_string(), producer.shared().clone());
        s.requests.push_back(TrackRequest { track: producer, requester: tracing::Span::current() });
        drop(s);
        self.state.modify(|_| ());
        Ok(consumer)
    }

    /// Resolves once the producer is gone.
    pub async fn closed(&self) {
        self.state.wait(|s| s.closed.then_some(())).await
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Whether two handles name the same broadcast instance.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dynamic_tracks_are_requested_once() {
        let broadcast = BroadcastProducer::dynamic();
        let consumer = broadcast.consume();
        let a = consumer.subscribe_track("video").unwrap();
        let b = consumer.subscribe_track("video").unwrap();
        let requested = broadcast.requested_track().await.unwrap().track;
        assert_eq!(requested.name(), "video");
        assert!(!broadcast.remove_if_unused(&requested));
        drop((a, b));
        requested.unused().await;
        assert!(broadcast.remove_if_unused(&requested));
        drop(broadcast);
        assert!(consumer.subscribe_track("video").is_err());
    }

    #[test]
    fn static_broadcast_knows_only_its_tracks() {
        let broadcast = BroadcastProducer::new();
        let _video = broadcast.create_track("video", 1);
        let consumer = broadcast.consume();
        assert!(consumer.subscribe_track("video").is_ok());
        assert_eq!(consumer.subscribe_track("nope").unwrap_err(), Error::NotFound);
    }
}
