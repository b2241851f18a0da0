//! The audit trail: one JSON line per access decision, revalidation, limit hit, session ended by
//! auth and operator action, appended to `--audit-log FILE`, and the same record as a tracing
//! event (target `moq_relay::audit`) so it reaches the OTLP log pipeline with its trace id.
//!
//! - [`Audit`] is the cheap handle the relay passes around; [`Audit::record`] never blocks and
//!   never queues more than [`QUEUE`] records: beyond that a record is dropped and counted in
//!   `moq_relay_audit_records_dropped_total` (its tracing event is still emitted).
//! - [`AuditWriter::run`] is the service that appends queued records to the file (created `0600`),
//!   one write and flush per batch; a failed write counts its records as dropped and is logged at
//!   most once a minute. It returns once every [`Audit`] handle is gone.
//! - [`AuditRecord`] has one constructor per kind and no free-form fields: reasons and results
//!   come from [`Denial`] and [`Source`], a token only as its [`TokenHash`], and every text that
//!   a peer can influence (detail, subject, path, broadcast) is capped, stripped of control
//!   characters and of anything shaped like a JWT.
//!
//! Stable JSON field names (absent fields are omitted): `ts`, `event.name`, `result`, `reason`,
//! `detail`, `session.id`, `client.address`, `moq.transport`, `http.method`, `url.path`,
//! `moq.role`, `moq.broadcast`, `token.hash`, `auth.subject`, `limit`, `ops.action`, `trace_id`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use moq_lite::transport::Transport;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Denial, Source};
use crate::telemetry::catalog;

/// Records waiting for the writer; beyond this, [`Audit::record`] drops and counts.
pub const QUEUE: usize = 4096;
/// Records the writer takes from the queue per write.
const BATCH: usize = 256;
/// At most one log line per this long about a failing audit file.
const WARN_EVERY: Duration = Duration::from_secs(60);

const MAX_DETAIL: usize = 200;
const MAX_SUBJECT: usize = 128;
const MAX_PATH: usize = 256;
const MAX_CLIENT: usize = 64;
const MAX_METHOD: usize = 16;

/// The `event.name` of each kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A session admitted or refused, or one announce/subscribe refused outside its grant.
    Decision,
    /// A running session's grant checked again (auth server revalidation, key reload).
    Revalidation,
    /// A per-client limit refused something.
    Limit,
    /// A running session closed because its right ended (expired, revoked).
    SessionEnded,
    /// An operator request on the ops listener.
    OpsAction,
}

impl Kind {
    pub const fn event_name(self) -> &'static str {
        match self {
            Kind::Decision => "moq.auth.decision",
            Kind::Revalidation => "moq.auth.revalidation",
            Kind::Limit => "moq.auth.limit",
            Kind::SessionEnded => "moq.auth.session_ended",
            Kind::OpsAction => "moq.ops.action",
        }
    }
}

/// How a decision came out: accepted by its source, or rejected by its denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Source),
    Rejected(Denial),
}

impl Verdict {
    pub const fn result(self) -> &'static str {
        match self {
            Verdict::Accepted(_) => "accepted",
            Verdict::Rejected(_) => "rejected",
        }
    }

    /// The bounded reason: a value of `catalog::AUTH_REASONS`.
    pub const fn reason(self) -> &'static str {
        match self {
            Verdict::Accepted(source) => source.as_str(),
            Verdict::Rejected(denial) => denial.as_str(),
        }
    }
}

impl From<Source> for Verdict {
    fn from(source: Source) -> Self {
        Verdict::Accepted(source)
    }
}

impl From<Denial> for Verdict {
    fn from(denial: Denial) -> Self {
        Verdict::Rejected(denial)
    }
}

/// Which right a per-stream decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publish,
    Subscribe,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Subscribe => "subscribe",
        }
    }
}

/// A token as the audit log may show it: `sha256:` and 12 hex digits of its digest
/// (`moq_telemetry::redact::secret`). The only way to build one is to hash a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes `token`; the token itself is not kept.
    pub fn of(token: &str) -> Self {
        Self(moq_telemetry::redact::secret(token))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who a record is about: built once per session (or per connection before there is a session)
/// and reused for each of its records. Every field is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// The session id (as in the `moq.session` span).
    pub session: Option<u64>,
    /// The peer's address as logs may show it (already redacted per `--peer-ip`).
    pub client: Option<String>,
    pub transport: Option<Transport>,
    /// The dialed URL path. Anything from a `?` on is cut off (the query carries `jwt=`).
    pub path: Option<String>,
    /// The presented token, hashed.
    pub token: Option<TokenHash>,
    /// The grant's subject (the token's `sub`, or the auth server's).
    pub subject: Option<String>,
}

impl AuditContext {
    pub fn session(id: u64) -> Self {
        Self { session: Some(id), ..Default::default() }
    }

    pub fn client(mut self, client: Option<&str>) -> Self {
        self.client = client.map(str::to_string);
        self
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    pub fn token(mut self, token: Option<TokenHash>) -> Self {
        self.token = token;
        self
    }

    pub fn subject(mut self, subject: Option<&str>) -> Self {
        self.subject = subject.map(str::to_string);
        self
    }
}

/// One audit record: a JSON line in the audit file and a tracing event. Build it with the
/// constructor of its kind, add a [`detail`](Self::detail) or a [`stream`](Self::stream), and
/// pass it to [`Audit::record`].
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    #[serde(skip)]
    kind: Kind,
    ts: String,
    #[serde(rename = "event.name")]
    event: &'static str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(rename = "session.id", skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
    #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(rename = "moq.transport", skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
    #[serde(rename = "http.method", skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(rename = "url.path", skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(rename = "moq.role", skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(rename = "moq.broadcast", skip_serializing_if = "Option::is_none")]
    broadcast: Option<String>,
    #[serde(rename = "token.hash", skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(rename = "auth.subject", skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    #[serde(rename = "ops.action", skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

impl AuditRecord {
    fn new(kind: Kind, ctx: &AuditContext, result: &'static str, reason: Option<&'static str>) -> Self {
        Self {
            kind,
            ts: rfc3339_millis(SystemTime::now()),
            event: kind.event_name(),
            result,
            reason,
            detail: None,
            session: ctx.session,
            client: ctx.client.as_deref().map(|c| clean(c, MAX_CLIENT)),
            transport: ctx.transport.map(Transport::as_str),
            method: None,
            path: ctx.path.as_deref().map(clean_path),
            role: None,
            broadcast: None,
            token: ctx.token.as_ref().map(|t| t.as_str().to_string()),
            subject: ctx.subject.as_deref().map(|s| clean(s, MAX_SUBJECT)),
            limit: None,
            action: None,
            trace_id: moq_telemetry::trace_id(&tracing::Span::current()),
        }
    }

    /// A session admitted (by its grant's source) or refused (by its denial); with
    /// [`stream`](Self::stream), one announce or subscribe refused outside the grant.
    pub fn decision(ctx: &AuditContext, verdict: impl Into<Verdict>) -> Self {
        let verdict = verdict.into();
        Self::new(Kind::Decision, ctx, verdict.result(), Some(verdict.reason()))
    }

    /// A running session's grant checked again: accepted (still valid, by its source) or
    /// rejected (narrowed or withdrawn: `revoked`, `expired`, `auth_server_denied`, ...).
    pub fn revalidation(ctx: &AuditContext, verdict: impl Into<Verdict>) -> Self {
        let verdict = verdict.into();
        Self::new(Kind::Revalidation, ctx, verdict.result(), Some(verdict.reason()))
    }

    /// A per-client limit refused something. `limit` is a value of `catalog::LIMIT_NAMES`
    /// (`access::limits::Limit::as_str`).
    pub fn limit_hit(ctx: &AuditContext, limit: &'static str) -> Self {
        debug_assert!(catalog::LIMIT_NAMES.contains(&limit), "unknown limit {limit}");
        let mut record = Self::new(Kind::Limit, ctx, "rejected", Some(Denial::Limit.as_str()));
        record.limit = Some(limit);
        record
    }

    /// A running session was closed because its right ended: `expired`, `revoked`,
    /// `auth_server_denied`, ...
    pub fn session_revoked(ctx: &AuditContext, denial: Denial) -> Self {
        Self::new(Kind::SessionEnded, ctx, "rejected", Some(denial.as_str()))
    }

    /// An operator request on the ops listener: `action` names it (`drain`, `reload_keys`, ...),
    /// `method` and `path` are the HTTP request's (the query is cut off); accepted, or rejected
    /// with why (a missing or wrong ops token).
    pub fn operator_action(action: &'static str, method: &str, path: &str, verdict: impl Into<Verdict>) -> Self {
        let verdict = verdict.into();
        let ctx = AuditContext { path: Some(path.to_string()), ..Default::default() };
        let mut record = Self::new(Kind::OpsAction, &ctx, verdict.result(), Some(verdict.reason()));
        record.action = Some(action);
        record.method = Some(clean(method, MAX_METHOD));
        record
    }

    /// A short human explanation: at most 200 characters, control characters turned into spaces,
    /// anything shaped like a bearer token replaced by `[redacted]`.
    pub fn detail(mut self, detail: &str) -> Self {
        let detail = clean(detail, MAX_DETAIL);
        self.detail = (!detail.is_empty()).then_some(detail);
        self
    }

    /// The stream a per-stream decision was about: the right asked for and the broadcast path.
    pub fn stream(mut self, role: Role, broadcast: &str) -> Self {
        self.role = Some(role.as_str());
        self.broadcast = Some(clean(broadcast, MAX_PATH));
        self
    }

    /// The peer's address as logs may show it (already redacted), for records built without a
    /// session context (operator actions).
    #[allow(dead_code)] // ops.rs does not pass the peer address yet.
    pub fn client(mut self, client: Option<&str>) -> Self {
        self.client = client.map(|c| clean(c, MAX_CLIENT));
        self
    }

    /// The record as one JSON line, without the newline.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and options of them: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The tracing event of this record (target `moq_relay::audit`, message `audit`). The
    /// event's name is the record's `event.name`, which the OTLP bridge exports as the log
    /// record's event name; the field `event.name` is exported as an attribute as well.
    fn emit(&self) {
        macro_rules! emit {
            ($name:literal) => {
                tracing::info!(
                    name: $name,
                    target: "moq_relay::audit",
                    {
                        // A string key: `name` cannot be a path segment in tracing's macros.
                        "event.name" = self.event,
                        result = self.result,
                        reason = self.reason,
                        detail = self.detail.as_deref(),
                        session.id = self.session,
                        client.address = self.client.as_deref(),
                        moq.transport = self.transport,
                        http.method = self.method.as_deref(),
                        url.path = self.path.as_deref(),
                        moq.role = self.role,
                        moq.broadcast = self.broadcast.as_deref(),
                        token.hash = self.token.as_deref(),
                        auth.subject = self.subject.as_deref(),
                        limit = self.limit,
                        ops.action = self.action,
                    },
                    "audit"
                )
            };
        }
        // The event name must be a literal: tracing keeps it in static metadata.
        match self.kind {
            Kind::Decision => emit!("moq.auth.decision"),
            Kind::Revalidation => emit!("moq.auth.revalidation"),
            Kind::Limit => emit!("moq.auth.limit"),
            Kind::SessionEnded => emit!("moq.auth.session_ended"),
            Kind::OpsAction => emit!("moq.ops.action"),
        }
    }
}

/// The audit handle: clone it freely. [`Audit::disabled`] (no `--audit-log`) writes no file but
/// still emits every record's tracing event.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    queue: Option<mpsc::Sender<AuditRecord>>,
}

impl Audit {
    pub fn disabled() -> Self {
        Self { queue: None }
    }

    /// Opens (creates `0600`, or appends to) the audit file at `path`, now, so a bad path fails
    /// at start-up. `None`, `off` or `none` (like `--ops-listen off`) give a disabled handle and a
    /// writer whose `run` returns at once.
    pub fn open(path: Option<&Path>) -> anyhow::Result<(Audit, AuditWriter)> {
        let Some(path) = path.filter(|p| !matches!(p.to_str(), Some("off" | "none" | ""))) else {
            return Ok((Audit::disabled(), AuditWriter { sink: None }));
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).with_context(|| format!("opening the audit log {}", path.display()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = Sink { queue: rx, file: tokio::fs::File::from_std(file), path: path.to_path_buf() };
        Ok((Audit { queue: Some(tx) }, AuditWriter { sink: Some(sink) }))
    }

    /// Emits the record's tracing event and queues it for the file. Never blocks: with the
    /// queue full (or the writer gone) the record is dropped from the file and counted.
    pub fn record(&self, record: AuditRecord) {
        record.emit();
        if let Some(queue) = &self.queue {
            if queue.try_send(record).is_err() {
                metrics::counter!(catalog::AUDIT_DROPPED.name).increment(1);
            }
        }
    }
}

/// The service that appends queued records to the audit file; see [`AuditWriter::run`].
#[derive(Debug)]
pub struct AuditWriter {
    sink: Option<Sink>,
}

#[derive(Debug)]
struct Sink {
    queue: mpsc::Receiver<AuditRecord>,
    file: tokio::fs::File,
    path: PathBuf,
}

impl AuditWriter {
    /// Appends records as they come, up to 256 per write, flushing after each write. A failed
    /// write counts its records as dropped and is logged at most once a minute; the next batch
    /// tries again. Returns once every [`Audit`] handle has been dropped and the queue is
    /// drained (at once for a disabled audit).
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// As [`run`](Self::run), but once `stop` resolves (the relay shutting down) it writes what
    /// is queued then and returns, so the last records of a run reach the file.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Some(Sink { mut queue, mut file, path }) = self.sink else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut warned: Option<Instant> = None;
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        loop {
            let received = match stopping {
                false => tokio::select! {
                    n = queue.recv_many(&mut batch, BATCH) => n,
                    _ = &mut stop => {
                        stopping = true;
                        continue;
                    }
                },
                true => {
                    while batch.len() < BATCH {
                        match queue.try_recv() {
                            Ok(record) => batch.push(record),
                            Err(_) => break,
                        }
                    }
                    batch.len()
                }
            };
            if received == 0 {
                break;
            }
            buf.clear();
            for record in batch.drain(..) {
                buf.extend_from_slice(record.to_json().as_bytes());
                buf.push(b'\n');
            }
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            let written = async {
                file.write_all(&buf).await?;
                file.flush().await
            }
            .await;
            if let Err(err) = written {
                metrics::counter!(catalog::AUDIT_DROPPED.name).increment(lines);
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(path = %path.display(), error = %err, dropped = lines, "audit log write failed; records dropped (logged at most once a minute)");
                }
            }
            // Give the buffer back if one huge batch grew it.
            buf.shrink_to(64 * 1024);
        }
        Ok(())
    }
}

/// `2026-11-05T14:03:07.123Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A URL path as the audit log may show it: no query or fragment, cleaned like any text.
fn clean_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    clean(path, MAX_PATH)
}

/// `text` without control characters (each run of them becomes one space), without words shaped
/// like a JWT (replaced by `[redacted]`), trimmed and cut to `max` characters (the last one `…`
/// when cut).
fn clean(text: &str, max: usize) -> String {
    let mut spaced = String::with_capacity(text.len().min(max * 4));
    let mut in_control = false;
    for c in text.chars() {
        if c.is_control() {
            if !in_control {
                spaced.push(' ');
            }
            in_control = true;
        } else {
            spaced.push(c);
            in_control = false;
        }
    }
    let redacted = redact_tokens(spaced.trim());
    if redacted.chars().count() <= max {
        return redacted;
    }
    let mut cut: String = redacted.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Replaces every word that looks like a bearer token by `[redacted]`: a JWT (three base64url
/// parts joined by dots, the first and last at least 16 characters), a base64url run starting
/// with `eyJ` (the encoding of `{"`), or a long opaque secret (32 or more base64url characters
/// mixing upper case, lower case and digits; hex ids and UUIDs are left alone).
fn redact_tokens(text: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let len = rest[start..].find(|c: char| !is_word(c)).unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        out.push_str(if looks_like_token(word) { "[redacted]" } else { word });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

fn looks_like_token(word: &str) -> bool {
    let base64url = |p: &str| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let parts: Vec<&str> = word.split('.').collect();
    let jwt = parts.len() == 3 && parts[0].len() >= 16 && parts[1].len() >= 2 && parts[2].len() >= 16;
    let header = word.len() >= 10 && word.starts_with("eyJ");
    let opaque = word.len() >= 32
        && base64url(word)
        && word.bytes().any(|b| b.is_ascii_uppercase())
        && word.bytes().any(|b| b.is_ascii_lowercase())
        && word.bytes().any(|b| b.is_ascii_digit());
    (jwt && parts.iter().all(|p| base64url(p))) || header || opaque
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInJvb3QiOiJsaXZlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    fn ctx() -> AuditContext {
        AuditContext::session(42)
            .client(Some("203.0.113.0/24"))
            .transport(Transport::WebTransport)
            .path("/live/room?jwt=secret")
            .token(Some(TokenHash::of(JWT)))
            .subject(Some("alice"))
    }

    fn json(record: &AuditRecord) -> serde_json::Map<String, serde_json::Value> {
        let line = record.to_json();
        assert!(!line.contains('\n'), "{line}");
        serde_json::from_str::<serde_json::Value>(&line).unwrap().as_object().unwrap().clone()
    }

    /// The keys of a record's line in the order written.
    fn keys(record: &AuditRecord) -> Vec<String> {
        let line = record.to_json();
        let map = json(record);
        let mut keys: Vec<(usize, String)> =
            map.keys().map(|k| (line.find(&format!("\"{k}\":")).unwrap(), k.clone())).collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn each_kind_is_one_json_object_with_stable_fields() {
        let record = AuditRecord::decision(&ctx(), Denial::Expired).detail("token expired 3s ago");
        let decision = json(&record);
        assert_eq!(decision["event.name"], "moq.auth.decision");
        assert_eq!(decision["result"], "rejected");
        assert_eq!(decision["reason"], "expired");
        assert_eq!(decision["detail"], "token expired 3s ago");
        assert_eq!(decision["session.id"], 42);
        assert_eq!(decision["client.address"], "203.0.113.0/24");
        assert_eq!(decision["moq.transport"], "webtransport");
        assert_eq!(decision["url.path"], "/live/room", "the query never reaches the log");
        assert_eq!(decision["token.hash"], TokenHash::of(JWT).as_str());
        assert_eq!(decision["auth.subject"], "alice");
        let ts = decision["ts"].as_str().unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.', "{ts}");
        assert!(time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(), "{ts}");
        assert_eq!(
            keys(&record),
            [
                "ts",
                "event.name",
                "result",
                "reason",
                "detail",
                "session.id",
                "client.address",
                "moq.transport",
                "url.path",
                "token.hash",
                "auth.subject"
            ]
        );

        let accepted = json(&AuditRecord::decision(&ctx(), Source::Token));
        assert_eq!((accepted["result"].as_str(), accepted["reason"].as_str()), (Some("accepted"), Some("token")));
        assert!(!accepted.contains_key("detail"));

        let stream = json(
            &AuditRecord::decision(&ctx(), Denial::PathDenied)
                .stream(Role::Subscribe, "live/other")
                .detail("outside the subscribe grant"),
        );
        assert_eq!(
            (stream["moq.role"].as_str(), stream["moq.broadcast"].as_str()),
            (Some("subscribe"), Some("live/other"))
        );

        let revalidation = json(&AuditRecord::revalidation(&ctx(), Denial::Revoked).detail("publish withdrawn"));
        assert_eq!(revalidation["event.name"], "moq.auth.revalidation");
        assert_eq!(revalidation["reason"], "revoked");
        let still = json(&AuditRecord::revalidation(&ctx(), Source::AuthServer));
        assert_eq!((still["result"].as_str(), still["reason"].as_str()), (Some("accepted"), Some("auth_server")));

        let record =
            AuditRecord::limit_hit(&AuditContext::default().client(Some("198.51.100.7")), "sessions_per_address");
        let limit = json(&record);
        assert_eq!(limit["event.name"], "moq.auth.limit");
        assert_eq!((limit["result"].as_str(), limit["reason"].as_str()), (Some("rejected"), Some("limit")));
        assert_eq!(limit["limit"], "sessions_per_address");
        assert_eq!(keys(&record), ["ts", "event.name", "result", "reason", "client.address", "limit"]);

        let ended = json(&AuditRecord::session_revoked(&ctx(), Denial::Expired));
        assert_eq!(ended["event.name"], "moq.auth.session_ended");
        assert_eq!((ended["result"].as_str(), ended["reason"].as_str()), (Some("rejected"), Some("expired")));

        let ops = json(
            &AuditRecord::operator_action("drain", "POST", "/drain?token=x", Denial::NoCredentials)
                .client(Some("127.0.0.1")),
        );
        assert_eq!(ops["event.name"], "moq.ops.action");
        assert_eq!(ops["ops.action"], "drain");
        assert_eq!(ops["http.method"], "POST");
        assert_eq!(ops["url.path"], "/drain");
        assert_eq!((ops["result"].as_str(), ops["reason"].as_str()), (Some("rejected"), Some("no_credentials")));
    }

    #[test]
    fn every_reason_is_a_catalog_value() {
        for &d in Denial::ALL {
            assert!(catalog::AUTH_REASONS.contains(&Verdict::from(d).reason()), "{d}");
        }
        for &s in Source::ALL {
            assert!(catalog::AUTH_REASONS.contains(&Verdict::from(s).reason()), "{s:?}");
        }
        for limit in catalog::LIMIT_NAMES {
            assert_eq!(json(&AuditRecord::limit_hit(&AuditContext::default(), limit))["limit"], *limit);
        }
    }

    #[test]
    fn detail_is_capped_cleaned_and_never_carries_a_token() {
        let long = "x".repeat(500);
        let detail = json(&AuditRecord::decision(&ctx(), Denial::Malformed).detail(&long))["detail"].clone();
        let detail = detail.as_str().unwrap();
        assert_eq!(detail.chars().count(), 200);
        assert!(detail.ends_with('…'));

        let nasty = "bad\r\n{\"forged\":true}\u{1b}[31m\tend\u{0}";
        let detail = json(&AuditRecord::decision(&ctx(), Denial::Malformed).detail(nasty))["detail"].clone();
        let detail = detail.as_str().unwrap();
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
        assert_eq!(detail, "bad {\"forged\":true} [31m end");

        // A token pasted into any free text: the detail, the subject, the path, the broadcast.
        let ctx = AuditContext { subject: Some(JWT.to_string()), path: Some(format!("/live/{JWT}")), ..ctx() };
        let record = AuditRecord::decision(&ctx, Denial::BadSignature)
            .detail(&format!("auth server said: token {JWT} is bad; jwt={JWT}"))
            .stream(Role::Publish, &format!("live/{JWT}"));
        let line = record.to_json();
        assert!(!line.contains("eyJhbGci") && !line.contains("c2lnbmF0dXJl"), "{line}");
        assert!(line.contains("auth server said: token [redacted] is bad; jwt=[redacted]"), "{line}");
        // Ordinary paths and names are left alone.
        let plain = AuditRecord::decision(&AuditContext::default().path("/live/cam.v1/hd"), Denial::PathDenied)
            .stream(Role::Publish, "demo/bbb.mp4")
            .detail("kid key-2024.rotated unknown at auth.internal.example, trace 4bf92f3577b34da6a3ce929d0e0e4736");
        let plain = json(&plain);
        assert_eq!(plain["url.path"], "/live/cam.v1/hd");
        assert_eq!(plain["moq.broadcast"], "demo/bbb.mp4");
        assert_eq!(
            plain["detail"],
            "kid key-2024.rotated unknown at auth.internal.example, trace 4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // An opaque bearer secret (an auth server's) is caught by its shape too.
        let opaque = AuditRecord::decision(&AuditContext::default(), Denial::AuthServerDenied)
            .detail("unknown bearer Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg");
        assert_eq!(json(&opaque)["detail"], "unknown bearer [redacted]");
    }

    #[test]
    fn token_hashes_cannot_carry_a_token() {
        let hash = TokenHash::of(JWT);
        assert!(hash.as_str().starts_with("sha256:") && hash.as_str().len() == 19);
        assert!(!hash.as_str().contains(&JWT[..12]));
        assert_ne!(TokenHash::of("another token"), hash);
    }

    /// The records a test writer produced, one parsed line each.
    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moq-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("audit.log")
    }

    #[tokio::test]
    async fn the_file_is_created_private_and_appended() {
        let path = scratch("append");
        for round in 0..2u64 {
            let (audit, writer) = Audit::open(Some(&path)).unwrap();
            let task = tokio::spawn(writer.run());
            audit.record(AuditRecord::decision(&AuditContext::session(round), Source::Public));
            audit.record(AuditRecord::limit_hit(&AuditContext::session(round), "announces_per_session"));
            drop(audit);
            task.await.unwrap().unwrap();
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), 4, "{lines:?}");
        let ids: Vec<u64> = lines.iter().map(|l| l["session.id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [0, 0, 1, 1]);
        assert_eq!(lines[1]["limit"], "announces_per_session");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{mode:o}");
        }
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// At shutdown the writer stops while handles still exist, writing what was queued first.
    #[tokio::test]
    async fn stopping_writes_what_is_queued_then_returns() {
        let path = scratch("stop");
        let (audit, writer) = Audit::open(Some(&path)).unwrap();
        for id in 0..300 {
            audit.record(AuditRecord::decision(&AuditContext::session(id), Source::Public));
        }
        // `audit` is still alive: only the stop signal can end the writer.
        tokio::time::timeout(std::time::Duration::from_secs(5), writer.run_until(async {})).await.unwrap().unwrap();
        assert_eq!(lines(&path).len(), 300);
        drop(audit);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_bad_path_fails_at_open_and_off_writes_nothing() {
        let err = Audit::open(Some(Path::new("/nonexistent-dir/audit.log"))).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir/audit.log"), "{err:#}");
        for off in [None, Some(Path::new("off")), Some(Path::new("none")), Some(Path::new(""))] {
            let (audit, writer) = Audit::open(off).unwrap();
            assert!(audit.queue.is_none() && writer.sink.is_none(), "{off:?}");
        }
    }

    fn dropped(snapshotter: &metrics_util::debugging::Snapshotter) -> u64 {
        use metrics_util::debugging::DebugValue;
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == catalog::AUDIT_DROPPED.name)
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => n,
                other => panic!("a counter, got {other:?}"),
            })
            .sum()
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let path = scratch("full");
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // No runtime and no writer running: nothing drains the queue.
        let (audit, writer) = Audit::open(Some(&path)).unwrap();
        metrics::with_local_recorder(&recorder, || {
            let clone = audit.clone();
            for i in 0..(QUEUE as u64 + 10) {
                clone.record(AuditRecord::decision(&AuditContext::session(i), Denial::NoCredentials));
            }
            // A disabled audit has no file to drop from.
            Audit::disabled().record(AuditRecord::decision(&AuditContext::default(), Source::Public));
        });
        assert_eq!(dropped(&snapshotter), 10);
        // The queued records are all written once the writer runs: the first 4096, in order.
        drop(audit);
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(writer.run()).unwrap();
        let lines = lines(&path);
        assert_eq!(lines.len(), QUEUE);
        assert_eq!(lines[QUEUE - 1]["session.id"], QUEUE as u64 - 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_failed_write_counts_its_records_as_dropped() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (audit, writer) = Audit::open(Some(path)).unwrap();
        for i in 0..3 {
            audit.record(AuditRecord::decision(&AuditContext::session(i), Source::Token));
        }
        drop(audit);
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(writer.run())
        })
        .unwrap();
        assert_eq!(dropped(&snapshotter), 3);
    }

    /// The tracing event: its metadata name (the OTLP log record's event name), target, and an
    /// `event.name` field (an OTLP attribute), with the record's fields and nothing else.
    #[test]
    fn each_record_is_a_tracing_event_named_like_its_record() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        /// Each event's metadata name, target and fields.
        type Events = Vec<(String, String, Vec<(String, String)>)>;
        #[derive(Default, Clone)]
        struct Seen(Arc<Mutex<Events>>);
        struct Fields(Vec<(String, String)>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_string(), format!("{value:?}")));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push((field.name().to_string(), value.to_string()));
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                let mut fields = Fields(Vec::new());
                event.record(&mut fields);
                let meta = event.metadata();
                self.0.lock().unwrap().push((meta.name().to_string(), meta.target().to_string(), fields.0));
            }
        }

        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        let emit_all = || {
            let audit = Audit::disabled();
            audit.record(AuditRecord::decision(&ctx(), Denial::PathDenied).stream(Role::Publish, "live/x"));
            audit.record(AuditRecord::revalidation(&ctx(), Source::AuthServer));
            audit.record(AuditRecord::limit_hit(&ctx(), "subscriptions_per_session"));
            audit.record(AuditRecord::session_revoked(&ctx(), Denial::Revoked));
            audit.record(AuditRecord::operator_action("drain", "POST", "/drain", Source::Token));
        };
        tracing::subscriber::with_default(subscriber, || {
            // A callsite registered by another test's thread at the same moment can miss this
            // subscriber once: register them all first, then look.
            emit_all();
            tracing::callsite::rebuild_interest_cache();
            seen.0.lock().unwrap().clear();
            emit_all();
        });
        let seen = seen.0.lock().unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "moq.auth.decision",
                "moq.auth.revalidation",
                "moq.auth.limit",
                "moq.auth.session_ended",
                "moq.ops.action"
            ]
        );
        for (name, target, fields) in seen.iter() {
            assert_eq!(target, "moq_relay::audit");
            let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
            assert_eq!(field("event.name"), Some(name.as_str()));
            assert_eq!(field("message"), Some("audit"));
            assert!(!fields.iter().any(|(_, v)| v.contains("eyJ")), "{fields:?}");
        }
        let decision = &seen[0].2;
        let field = |k: &str| decision.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        assert_eq!(field("reason"), Some("path_denied"));
        assert_eq!(field("moq.role"), Some("publish"));
        assert_eq!(field("session.id"), Some("42"));
        assert_eq!(field("token.hash"), Some(TokenHash::of(JWT).as_str()));
        assert_eq!(field("limit"), None, "absent fields are not recorded");
    }
}
