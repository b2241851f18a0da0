//! The transport's observable events. Each is one struct whose `emit` writes its log line and
//! updates its metrics together; session code only says what happened.

use super::{catalog, Reason, Telemetry};
use crate::Error;

/// A SUBSCRIBE was accepted and is being served.
pub struct SubscribeAccepted<'a> {
    pub broadcast: &'a str,
    pub track: &'a str,
    pub session: u64,
}

impl SubscribeAccepted<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry
            .counter(&catalog::SUBSCRIBE_REQUESTS, &[("result", "accepted"), ("reason", Reason::Ok.as_str())])
            .increment(1);
        tracing::info!(session = self.session, broadcast = self.broadcast, track = self.track, "subscribe accepted");
    }
}

/// A SUBSCRIBE was refused (the stream is reset).
pub struct SubscribeRejected<'a> {
    pub broadcast: &'a str,
    pub track: &'a str,
    pub session: u64,
    pub error: &'a Error,
}

impl SubscribeRejected<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        let reason = self.error.kind();
        telemetry.counter(&catalog::SUBSCRIBE_REQUESTS, &[("result", "rejected"), ("reason", reason)]).increment(1);
        tracing::info!(
            session = self.session,
            broadcast = self.broadcast,
            track = self.track,
            reason,
            "subscribe rejected"
        );
    }
}

/// An ANNOUNCE_REQUEST was answered (`error` = None) or refused.
pub struct AnnounceServed<'a> {
    pub prefix: &'a str,
    pub session: u64,
    pub error: Option<&'a Error>,
}

impl AnnounceServed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        match self.error {
            None => {
                telemetry
                    .counter(&catalog::ANNOUNCE_REQUESTS, &[("result", "accepted"), ("reason", Reason::Ok.as_str())])
                    .increment(1);
                tracing::debug!(session = self.session, prefix = self.prefix, "announce request served");
            }
            Some(e) => {
                telemetry
                    .counter(&catalog::ANNOUNCE_REQUESTS, &[("result", "rejected"), ("reason", e.kind())])
                    .increment(1);
                tracing::info!(
                    session = self.session,
                    prefix = self.prefix,
                    reason = e.kind(),
                    "announce request rejected"
                );
            }
        }
    }
}

/// A group was not delivered in full to a subscriber.
pub struct GroupDropped<'a> {
    pub error: &'a Error,
    /// Frames of the group never written.
    pub frames_left: u64,
}

impl GroupDropped<'_> {
    /// The `reason` label: expired, slow_subscriber and cancel by name, anything else `reset`.
    pub fn reason(&self) -> Reason {
        match self.error {
            Error::Expired => Reason::Expired,
            Error::TooSlow => Reason::SlowSubscriber,
            Error::Cancel => Reason::Cancel,
            _ => Reason::Reset,
        }
    }

    pub fn emit(self, telemetry: &Telemetry) {
        let reason = self.reason().as_str();
        telemetry.counter(&catalog::GROUPS_DROPPED, &[("reason", reason)]).increment(1);
        if self.frames_left > 0 {
            telemetry.counter(&catalog::FRAMES_DROPPED, &[("reason", reason)]).increment(self.frames_left);
        }
        tracing::debug!(reason, frames_left = self.frames_left, "group dropped");
    }
}

/// The peer keeps many streams open: it may now open `limit` at once in that direction.
pub struct StreamCreditRaised {
    pub bidirectional: bool,
    pub limit: u64,
}

impl StreamCreditRaised {
    pub fn emit(self) {
        let direction = if self.bidirectional { "bidi" } else { "uni" };
        tracing::debug!(direction, limit = self.limit, "stream credit raised");
    }
}

/// A stream was reset by us (`sent`) or by the peer.
pub struct StreamReset {
    pub sent: bool,
    pub code: u32,
}

impl StreamReset {
    pub fn emit(self, telemetry: &Telemetry) {
        let side = if self.sent { "sent" } else { "received" };
        telemetry
            .counter(&catalog::STREAM_RESETS, &[("side", side), ("code", Reason::of_code(self.code).as_str())])
            .increment(1);
    }
}

/// A session ended on an error worth counting by type; normal closes (the peer closing or
/// cancelling) are not counted. The caller logs the close where it has context.
pub struct SessionFailed<'a> {
    pub error: &'a Error,
}

impl SessionFailed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        if !matches!(self.error, Error::Closed(_) | Error::Cancel) {
            telemetry.counter(&catalog::ERRORS, &[("error_type", self.error.kind())]).increment(1);
        }
    }
}

/// What happened to one announcement received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    Started,
    Updated,
    Ended,
    /// Our own hop id was in the chain: the announcement came back around a loop.
    Looped,
    /// Outside the session's publish rights, or past its announce limit.
    Refused,
}

impl AnnounceEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Updated => "updated",
            Self::Ended => "ended",
            Self::Looped => "looped",
            Self::Refused => "refused",
        }
    }
}

/// An announcement arrived from the peer (`hops` = its chain as this node sees it).
pub struct AnnounceReceived<'a> {
    pub broadcast: &'a str,
    pub event: AnnounceEvent,
    pub hops: &'a [u64],
}

impl AnnounceReceived<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.counter(&catalog::ANNOUNCEMENTS_RECEIVED, &[("event", self.event.as_str())]).increment(1);
        match self.event {
            AnnounceEvent::Started | AnnounceEvent::Updated => {
                telemetry.histogram(&catalog::ANNOUNCE_HOPS).record(self.hops.len() as f64);
                tracing::debug!(broadcast = self.broadcast, hops = ?self.hops, event = self.event.as_str(), "route announced");
            }
            AnnounceEvent::Looped => {
                tracing::debug!(broadcast = self.broadcast, hops = ?self.hops, "cluster route loop refused")
            }
            AnnounceEvent::Ended | AnnounceEvent::Refused => {}
        }
    }
}
