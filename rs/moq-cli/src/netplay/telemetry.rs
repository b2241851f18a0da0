//! What the netplay client tells operators (docs/netplay.md, "Telemetry"): the client's log lines
//! with their camelCase fields, the `netplay.signaling.*` spans and the signaling metrics of
//! [`crate::catalog::NETPLAY`]. Join codes appear only hashed, tokens never.

use std::time::Duration;

use super::signaling::{CreateRequest, CreateResponse, Failure};
use crate::catalog::{
    NETPLAY_PARTICIPANTS_JOINED, NETPLAY_PROVIDER, NETPLAY_SESSIONS_CREATED, NETPLAY_SIGNALING_LATENCY,
};

/// A signaling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Join,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Join => "join",
            Operation::Delete => "delete",
        }
    }
}

/// The span around one call (all its attempts), named as the relay's handling span is.
pub fn span(op: Operation, api: &str) -> tracing::Span {
    use tracing::field::Empty;
    macro_rules! signaling_span {
        ($name:literal, $method:literal) => {
            tracing::info_span!(
                $name,
                otel.kind = "client",
                netplay.provider = NETPLAY_PROVIDER,
                netplay.session.id = Empty,
                netplay.join_code.hash = Empty,
                netplay.participant.id = Empty,
                netplay.retry_count = Empty,
                http.request.method = $method,
                http.response.status_code = Empty,
                url.full = %api,
            )
        };
    }
    match op {
        Operation::Create => signaling_span!("netplay.signaling.create", "POST"),
        Operation::Join => signaling_span!("netplay.signaling.join", "POST"),
        Operation::Delete => signaling_span!("netplay.signaling.delete", "DELETE"),
    }
}

/// Logged before the create request goes out, so the session is named even if no answer comes.
pub fn creation_request_sent(request: &CreateRequest) {
    tracing::info!(
        sessionId = request.session_id.as_deref(),
        romId = request.rom_id.as_deref(),
        requestedTtlMinutes = request.ttl_minutes,
        initiatorUserId = request.initiator_user_id.as_deref(),
        "netplay session creation request sent"
    );
}

/// Logged once the relay created the session (the join code hashed).
pub fn session_created(session: &CreateResponse, latency: Duration) {
    tracing::info!(
        sessionId = %session.session_id,
        joinCode = %session.join_code.hash(),
        ttlMinutes = session.ttl_minutes,
        signalingLatencyMs = millis(latency),
        provider = %session.provider,
        "netplay session created"
    );
}

/// A failed attempt: warn while it will be retried (or was refused outright), error once the
/// retries are exhausted.
pub fn signaling_error(op: Operation, failure: &Failure, retry_count: u32, exhausted: bool) {
    let (code, status, retryable) = (failure.error_code(), failure.provider_status(), failure.retryable());
    if exhausted {
        tracing::error!(
            operation = op.as_str(),
            errorCode = code,
            providerStatus = status,
            retryCount = retry_count,
            retryable,
            error = %failure,
            "netplay signaling error"
        );
    } else {
        tracing::warn!(
            operation = op.as_str(),
            errorCode = code,
            providerStatus = status,
            retryCount = retry_count,
            retryable,
            error = %failure,
            "netplay signaling error"
        );
    }
}

/// Milliseconds with microsecond precision.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn record_latency(op: Operation, latency: Duration) {
    metrics::histogram!(NETPLAY_SIGNALING_LATENCY.name, "provider" => NETPLAY_PROVIDER, "operation" => op.as_str())
        .record(millis(latency));
}

/// The metric's value for `code`, or `error` for a code its label does not know.
fn known(metric: &moq_metrics::Metric, label: &str, code: &str) -> &'static str {
    let values = metric.labels.iter().find(|l| l.name == label).map(|l| l.values);
    match values {
        Some(moq_metrics::Values::Known(values)) => values.iter().find(|v| **v == code).copied().unwrap_or("error"),
        _ => "error",
    }
}

/// The `result` of a create attempt: `ok`, the API's error code, or `error` (no answer, or a code
/// the spec does not list).
pub fn created_result<T>(result: &Result<T, Failure>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Failure::Status { code, .. }) => known(&NETPLAY_SESSIONS_CREATED, "result", code),
        Err(_) => "error",
    }
}

/// The `result` of a join attempt: `accepted`, the API's reason, or `error`.
pub fn joined_result<T>(result: &Result<T, Failure>) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(Failure::Status { code, .. }) => known(&NETPLAY_PARTICIPANTS_JOINED, "result", code),
        Err(_) => "error",
    }
}

pub fn count_created<T>(result: &Result<T, Failure>) {
    metrics::counter!(NETPLAY_SESSIONS_CREATED.name, "provider" => NETPLAY_PROVIDER, "result" => created_result(result))
        .increment(1);
}

pub fn count_joined<T>(result: &Result<T, Failure>) {
    metrics::counter!(NETPLAY_PARTICIPANTS_JOINED.name, "result" => joined_result(result)).increment(1);
}
