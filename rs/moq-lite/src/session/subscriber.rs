//! The subscriber half: learns the peer's broadcasts, publishes them into a scope, subscribes
//! upstream once per requested track and routes arriving group streams to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::stream::{Reader, Writer};
use super::{Inner, UniKind, CONTROL_PRIORITY};
use crate::message::*;
use crate::model::{BroadcastConsumer, BroadcastProducer, Publication, TrackProducer};
use crate::{code, path, Error};

/// Most broadcasts one peer may have announced at once.
pub const MAX_ANNOUNCED: usize = 4096;

/// Opens the Announce stream toward the peer and mirrors what it announces into the scope.
pub(super) async fn run_announces(inner: Arc<Inner>) -> Result<(), Error> {
    let Some(scope) = inner.config.subscribe.clone() else {
        return Ok(());
    };
    let (send, recv) = inner
        .conn
        .open_bi()
        .await
        .map_err(|e| Error::Closed(e.to_string()))?;
    let mut writer = Writer::new(send, inner.version);
    let mut reader = Reader::new(recv, inner.version);
    writer.set_priority(CONTROL_PRIORITY);
    writer.queue_raw(|b| BiStreamType::Announce.encode(b));
    writer
        .encode(&AnnounceRequest {
            prefix: String::new(),
            exclude_hop: inner.config.hop_id,
        })
        .await?;

    // Per announced path: its publication and the task serving its track requests.
    let mut active: HashMap<String, (Publication, tokio::task::AbortHandle)> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let announce = match reader.decode_maybe::<Announce>().await {
            Ok(Some(a)) => a,
            // A clean FIN (or a reset) withdraws everything announced on this stream.
            Ok(None) | Err(Error::RemoteReset(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let suffix = announce.suffix;
        if !path::is_valid(&suffix) {
            return Err(Error::ProtocolViolation(format!(
                "invalid broadcast path {suffix:?}"
            )));
        }
        if let Some((_, task)) = active.remove(&suffix) {
            task.abort();
        }
        if !announce.active {
            tracing::debug!(path = %suffix, "peer unannounced");
            continue;
        }
        if inner.config.hop_id != 0 && announce.hops.contains(&inner.config.hop_id) {
            continue; // our own announcement came back: a loop
        }
        let Some(full) = scope.resolve(&suffix) else {
            tracing::debug!(path = %suffix, "peer announced a path it may not publish");
            continue;
        };
        if active.len() >= MAX_ANNOUNCED {
            return Err(Error::ProtocolViolation(
                "too many announced broadcasts".into(),
            ));
        }
        let broadcast = BroadcastProducer::dynamic();
        let publication = scope
            .origin()
            .publish(&full, broadcast.consume(), announce.hops);
        let task = tasks.spawn(serve_track_requests(
            inner.clone(),
            broadcast,
            suffix.clone(),
        ));
        active.insert(suffix, (publication, task));
        while tasks.try_join_next().is_some() {}
    }
}

/// A broadcast of the peer that nobody announced to us: subscribe by path directly.
pub(super) fn direct(inner: Arc<Inner>, path: &str) -> BroadcastConsumer {
    let broadcast = BroadcastProducer::dynamic();
    let consumer = broadcast.consume();
    tokio::spawn(serve_track_requests(inner, broadcast, path.to_string()));
    consumer
}

async fn serve_track_requests(inner: Arc<Inner>, broadcast: BroadcastProducer, path: String) {
    let broadcast = Arc::new(broadcast);
    let mut tasks = JoinSet::new();
    while let Some(track) = broadcast.requested_track().await {
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run_subscription(
            inner.clone(),
            broadcast.clone(),
            path.clone(),
            track,
        ));
    }
}

/// One upstream subscription, shared by every local consumer of the track.
async fn run_subscription(
    inner: Arc<Inner>,
    broadcast: Arc<BroadcastProducer>,
    path: String,
    track: TrackProducer,
) {
    let id = inner.next_subscribe_id();
    let name = track.name().to_string();
    let shared = track.shared().clone();
    let track = Arc::new(Mutex::new(track));
    inner
        .subscriptions
        .lock()
        .unwrap()
        .insert(id, track.clone());

    let result = subscribe_upstream(&inner, &broadcast, id, &path, &name, &track, &shared).await;
    inner.subscriptions.lock().unwrap().remove(&id);

    // Whoever still holds the track sees how it ended.
    if let Ok(track) = Arc::try_unwrap(track).map(|m| m.into_inner().unwrap()) {
        match result {
            Ok(()) => track.finish(),
            Err(e) => track.abort(e),
        }
    }
}

async fn subscribe_upstream(
    inner: &Arc<Inner>,
    broadcast: &BroadcastProducer,
    id: u64,
    path: &str,
    name: &str,
    track: &Arc<Mutex<TrackProducer>>,
    shared: &Arc<crate::model::TrackShared>,
) -> Result<(), Error> {
    let (send, recv) = inner
        .conn
        .open_bi()
        .await
        .map_err(|e| Error::Closed(e.to_string()))?;
    let mut writer = Writer::new(send, inner.version);
    let mut reader = Reader::new(recv, inner.version);
    writer.set_priority(super::CONTROL_PRIORITY);
    writer.queue_raw(|b| BiStreamType::Subscribe.encode(b));
    writer
        .encode(&Subscribe {
            id,
            broadcast: path.to_string(),
            track: name.to_string(),
            priority: 0,
            ordered: false,
            max_latency_ms: 0,
            start_group: None,
            end_group: None,
        })
        .await?;
    tracing::debug!(id, broadcast = %path, track = %name, "subscribed upstream");

    loop {
        tokio::select! {
            response = reader.decode_maybe::<SubscribeResponse>() => match response {
                Ok(Some(SubscribeResponse::Ok(_))) => {}
                Ok(Some(SubscribeResponse::Drop { start, end, error_code })) => {
                    tracing::debug!(id, start, end, error_code, "upstream dropped groups");
                }
                // The publisher FINs the subscribe stream when the track ended.
                Ok(None) => return Ok(()),
                Err(Error::RemoteReset(code::NOT_FOUND)) => return Err(Error::NotFound),
                Err(e) => return Err(e),
            },
            _ = shared.unused() => {
                if broadcast.remove_if_unused(&track.lock().unwrap()) {
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

/// Handles one incoming unidirectional stream: a group of an upstream subscription.
pub(super) async fn serve_uni(inner: &Arc<Inner>, reader: &mut Reader) -> Result<(), Error> {
    let kind: UniKind = reader.decode().await?;
    match kind.0 {
        Ok(UniStreamType::Group) => {}
        Err(unknown) => return Err(Error::UnexpectedStream(unknown)),
    }
    let header: GroupHeader = reader.decode().await?;
    let track = inner
        .subscriptions
        .lock()
        .unwrap()
        .get(&header.subscribe_id)
        .cloned();
    // A group for a subscription that already ended is routine, not a violation.
    let Some(track) = track else {
        return Err(Error::Cancel);
    };
    let mut group = track.lock().unwrap().create_group(header.sequence)?;
    drop(track);
    loop {
        match reader.decode_maybe::<FrameHeader>().await {
            Ok(Some(frame)) => {
                let payload = reader.read_payload(frame.size as usize).await?;
                group.write_frame(payload)?;
            }
            Ok(None) => {
                group.finish();
                return Ok(());
            }
            Err(e) => {
                group.abort(e.clone());
                return Err(e);
            }
        }
    }
}
