//! The netplay client against an in-process mock of the relay's API (no relay needed).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tracing_subscriber::layer::SubscriberExt;

use super::signaling::*;
use super::*;

// ---- JSON shapes -------------------------------------------------------------------------

#[test]
fn create_request_is_camel_case_and_omits_what_is_not_given() {
    let full = CreateRequest {
        session_id: Some("0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e".into()),
        ttl_minutes: Some(30),
        rom_id: Some("smb3".into()),
        initiator_user_id: Some("alice".into()),
    };
    assert_eq!(
        serde_json::to_value(&full).unwrap(),
        serde_json::json!({
            "sessionId": "0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e",
            "ttlMinutes": 30,
            "romId": "smb3",
            "initiatorUserId": "alice",
        })
    );
    assert_eq!(serde_json::to_string(&CreateRequest::default()).unwrap(), "{}");
}

const CREATED: &str = r#"{"sessionId":"0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e","joinCode":"ABCD-EFGH","ttlMinutes":30,
    "expiresAt":"2030-01-01T00:30:00Z","path":"netplay/0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e","hostToken":"host.jwt.token",
    "hostBroadcast":"netplay/0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e/host","provider":"moq-relay"}"#;

const JOINED: &str = r#"{"accepted":true,"sessionId":"0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e","participantToken":"part.jwt.token",
    "expiresAt":"2030-01-01T00:30:00Z","path":"netplay/0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e",
    "hostBroadcast":"netplay/0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e/host",
    "participantBroadcast":"netplay/0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e/p/bob"}"#;

#[test]
fn responses_parse_and_their_debug_shows_no_secret() {
    let created: CreateResponse = serde_json::from_str(CREATED).unwrap();
    assert_eq!(created.join_code.expose(), "ABCD-EFGH");
    assert_eq!(created.host_token.expose(), "host.jwt.token");
    assert_eq!(created.ttl_minutes, 30);
    assert_eq!(created.provider, "moq-relay");
    let shown = format!("{created:?}");
    assert!(!shown.contains("ABCD-EFGH") && !shown.contains("host.jwt.token"), "{shown}");
    assert!(shown.contains(&moq_telemetry::redact::secret("ABCD-EFGH")), "{shown}");

    let joined: JoinResponse = serde_json::from_str(JOINED).unwrap();
    assert!(joined.accepted);
    assert_eq!(joined.participant_token.expose(), "part.jwt.token");
    assert!(joined.participant_broadcast.ends_with("/p/bob"));
    assert!(!format!("{joined:?}").contains("part.jwt.token"));

    let request = JoinRequest { join_code: Secret::new("ABCD-EFGH"), participant_user_id: "bob".into() };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        serde_json::json!({"joinCode": "ABCD-EFGH", "participantUserId": "bob"})
    );
    assert!(!format!("{request:?}").contains("ABCD-EFGH"));
}

// ---- retry policy ------------------------------------------------------------------------

#[test]
fn only_connection_failures_5xx_and_429_are_retried() {
    for status in [429, 500, 502, 503, 504] {
        assert!(retryable_status(status), "{status}");
    }
    for status in [200, 201, 204, 400, 401, 403, 404, 409, 410, 422] {
        assert!(!retryable_status(status), "{status}");
    }
    let unreachable = Failure::Unreachable { code: "connect_failed", detail: "refused".into() };
    assert!(unreachable.retryable());
    assert_eq!(unreachable.provider_status(), None);
    let full = Failure::Status { status: 409, code: "full".into(), message: None, retry_after: None };
    assert!(!full.retryable());
    assert_eq!((full.error_code(), full.provider_status()), ("full", Some(409)));
    assert!(!Failure::Malformed { status: 201, detail: String::new() }.retryable());
}

#[test]
fn backoff_doubles_within_jittered_bounds_up_to_the_cap() {
    let policy = RetryPolicy::new(3);
    let ms = Duration::from_millis;
    assert_eq!((1..=7).map(|r| policy.bound(r)).collect::<Vec<_>>(), [250, 500, 1000, 2000, 4000, 5000, 5000].map(ms));
    assert_eq!(policy.bound(u32::MAX), ms(5000));
    for retry in 1..10 {
        let bound = policy.bound(retry);
        assert_eq!(policy.delay(retry, 0.0, None), bound / 2);
        assert_eq!(policy.delay(retry, 1.0, None), bound);
        for unit in [0.1, 0.5, 0.9] {
            let d = policy.delay(retry, unit, None);
            assert!(d >= bound / 2 && d <= bound, "retry {retry}: {d:?} outside {bound:?}");
        }
    }
    // Retry-After is a floor, itself capped.
    assert_eq!(policy.delay(1, 0.0, Some(Duration::from_secs(2))), ms(2000));
    assert_eq!(policy.delay(1, 0.0, Some(Duration::from_secs(60))), ms(5000));
}

// ---- codes, ids, URLs --------------------------------------------------------------------

#[test]
fn join_codes_are_hashed_like_every_secret_and_normalized_before() {
    let code = Secret::new("ABCD-EFGH");
    let hash = code.hash();
    assert_eq!(hash, moq_telemetry::redact::secret("ABCD-EFGH"));
    assert!(hash.starts_with("sha256:") && hash.len() == 7 + 12, "{hash}");
    assert!(hash[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(hash, Secret::new("ABCD-EFGJ").hash());
    for typed in ["ABCD-EFGH", "abcd-efgh", "abcdefgh", " AbCdEfGh "] {
        assert_eq!(normalize_join_code(typed), "ABCD-EFGH", "{typed}");
    }
    assert_eq!(normalize_join_code("short"), "short");
}

#[test]
fn session_ids_are_v4_uuids_and_flags_must_be_uuids() {
    let id = new_session_id();
    assert_eq!(parse_uuid(&id), Ok(id.clone()));
    assert_eq!(&id[14..15], "4");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    assert_ne!(id, new_session_id());
    assert_eq!(parse_uuid("0B6C5B8E-3F0A-4C5E-9D6E-2F1A3B4C5D6E").unwrap(), "0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e");
    for bad in ["", "not-a-uuid", "0b6c5b8e3f0a4c5e9d6e2f1a3b4c5d6e", "0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6g"] {
        assert!(parse_uuid(bad).is_err(), "{bad}");
    }
}

#[test]
fn urls_of_the_api_and_of_the_session() {
    let base = |url: &str, api: Option<&str>| {
        let api = api.map(|a| Url::parse(a).unwrap());
        Signaling::base_url(&Url::parse(url).unwrap(), api.as_ref()).map(|u| u.to_string())
    };
    assert_eq!(base("http://localhost:4443/", None).unwrap(), "http://localhost:4443/");
    assert_eq!(base("https://relay.example/room?jwt=x", None).unwrap(), "https://relay.example/");
    assert_eq!(base("ws://[::1]:4443/", None).unwrap(), "http://[::1]:4443/");
    assert_eq!(base("moqt://relay:4443", None).unwrap(), "https://relay:4443/");
    assert_eq!(base("moqt://relay:4443", Some("http://api:8080/prefix")).unwrap(), "http://api:8080/prefix/");

    let token = Secret::new("a.b+c/d=");
    let url = session_url(&Url::parse("http://localhost:4443/ignored?x=1").unwrap(), "netplay/abc", &token);
    assert_eq!(url.path(), "/netplay/abc");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs, [("jwt".to_string(), "a.b+c/d=".to_string())]);
    let connect = ConnectArgs {
        url,
        tls_insecure: false,
        tls_fingerprint: vec![],
        versions: moq_lite::Version::ALL.to_vec(),
        idle_timeout: Duration::from_secs(10),
    };
    assert!(!connect.url_for_logs().contains("jwt"));
}

#[test]
fn the_input_track_is_one_small_frame_per_interval() {
    let shape = input_shape(Duration::from_millis(16), 32, 60).unwrap();
    let clock = &shape.clocks[0];
    assert_eq!(clock.fps, 62.5);
    assert_eq!(clock.tracks, [("input".to_string(), 16_000)]);
    assert!(input_shape(Duration::ZERO, 32, 60).is_err());
}

#[test]
fn the_command_line_parses() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: NetplayCommand,
    }
    let cli = Cli::try_parse_from([
        "moq",
        "host",
        "--url",
        "http://localhost:4443/",
        "--ttl-minutes",
        "30",
        "--rom-id",
        "smb3",
        "--groups",
        "2",
        "--json",
    ])
    .unwrap();
    let NetplayCommand::Host(host) = cli.command else { panic!("host") };
    assert_eq!((host.ttl_minutes, host.stream.groups, host.stream.json), (Some(30), Some(2), true));
    assert!(host.session_id.is_none());

    let cli = Cli::try_parse_from(["moq", "join", "abcd-efgh", "--participant-id", "bob", "--groups", "3"]).unwrap();
    let NetplayCommand::Join(join) = cli.command else { panic!("join") };
    assert_eq!(join.code.expose(), "ABCD-EFGH");
    assert_eq!(join.watch.broadcast, "host");
    assert_eq!(join.watch.groups, Some(3));
    assert!(!format!("{join:?}").contains("ABCD-EFGH"));
    assert!(Cli::try_parse_from(["moq", "join", "ABCD-EFGH"]).is_err(), "--participant-id is required");
    assert!(Cli::try_parse_from(["moq", "host", "--session-id", "nope"]).is_err());
}

// ---- against a mock of the API ---------------------------------------------------------------

/// One request the mock received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    traceparent: Option<String>,
    body: String,
}

/// The mock relay API: answers with the scripted (status, body) in order, the last one forever;
/// records each request, and notes its arrival in the shared event list the log capture writes to.
struct Mock {
    script: Mutex<VecDeque<(u16, String)>>,
    seen: Mutex<Vec<Seen>>,
    events: Events,
}

type Events = Arc<Mutex<Vec<String>>>;

async fn answer(State(mock): State<Arc<Mock>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (authorization, traceparent) = (header("authorization"), header("traceparent"));
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_string());
    let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    mock.events.lock().unwrap().push(format!("server: {method} {path}"));
    mock.seen.lock().unwrap().push(Seen {
        method,
        path,
        authorization,
        traceparent,
        body: String::from_utf8_lossy(&body).into(),
    });
    let (status, body) = {
        let mut script = mock.script.lock().unwrap();
        match script.len() {
            0 => (500, String::new()),
            1 => script[0].clone(),
            _ => script.pop_front().unwrap(),
        }
    };
    let mut response = (http::StatusCode::from_u16(status).unwrap(), body).into_response();
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Starts the mock; its base URL.
async fn mock(script: &[(u16, &str)], events: Events) -> (Url, Arc<Mock>) {
    let mock = Arc::new(Mock {
        script: Mutex::new(script.iter().map(|(s, b)| (*s, b.to_string())).collect()),
        seen: Mutex::default(),
        events,
    });
    let router = axum::Router::new().fallback(answer).with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, mock)
}

fn client(base: Url, retries: u32) -> Signaling {
    let connect = ConnectArgs {
        url: base.clone(),
        tls_insecure: false,
        tls_fingerprint: vec![],
        versions: vec![],
        idle_timeout: Duration::from_secs(10),
    };
    let mut api = Signaling::new(base, &connect, RetryPolicy::new(retries), Duration::from_secs(5)).unwrap();
    api.policy.base = Duration::from_millis(1);
    api.policy.max = Duration::from_millis(4);
    api
}

/// Records every log event as `LEVEL message k=v ...` into the shared list.
struct Capture(Events);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = format!("{value:?}"),
                    name => self.1.push_str(&format!(" {name}={value:?}")),
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                match field.name() {
                    "message" => self.0 = value.to_string(),
                    name => self.1.push_str(&format!(" {name}={value}")),
                }
            }
        }
        let mut fields = Fields(String::new(), String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(format!("{} {}{}", event.metadata().level(), fields.0, fields.1));
    }
}

fn capture() -> (Events, tracing::subscriber::DefaultGuard) {
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    (events.clone(), tracing::subscriber::set_default(subscriber))
}

fn position(events: &[String], needle: &str) -> usize {
    events.iter().position(|e| e.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in {events:#?}"))
}

#[tokio::test]
async fn the_creation_request_is_logged_before_the_call_and_no_secret_is_logged() {
    let (events, _guard) = capture();
    let (base, mock) = mock(&[(201, CREATED)], events.clone()).await;
    let request = CreateRequest {
        session_id: Some("0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e".into()),
        ttl_minutes: Some(30),
        rom_id: Some("smb3".into()),
        initiator_user_id: Some("alice".into()),
    };
    let created = client(base, 3).create(&request).await.unwrap();
    assert_eq!(created.session.join_code.expose(), "ABCD-EFGH");

    let events = events.lock().unwrap().clone();
    let sent = position(&events, "netplay session creation request sent");
    let served = position(&events, "server: POST /api/netplay/sessions");
    let done = position(&events, "netplay session created");
    assert!(sent < served && served < done, "{events:#?}");
    assert!(events[sent].starts_with("INFO"));
    for field in [
        "sessionId=0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e",
        "romId=smb3",
        "requestedTtlMinutes=30",
        "initiatorUserId=alice",
    ] {
        assert!(events[sent].contains(field), "{field}: {}", events[sent]);
    }
    let hash = moq_telemetry::redact::secret("ABCD-EFGH");
    for field in [
        "sessionId=0b6c5b8e",
        &format!("joinCode={hash}"),
        "ttlMinutes=30",
        "signalingLatencyMs=",
        "provider=moq-relay",
    ] {
        assert!(events[done].contains(field), "{field}: {}", events[done]);
    }
    for e in &events {
        assert!(!e.contains("ABCD-EFGH") && !e.contains("host.jwt.token"), "a secret in {e}");
    }
    let seen = mock.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
        serde_json::to_value(&request).unwrap()
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_and_counted() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let (events, _guard) = capture();
    let busy = r#"{"error":"capacity","message":"too many sessions"}"#;
    let limited = r#"{"error":"rate_limited","message":"slow down"}"#;
    let (base, mock) = mock(&[(503, busy), (429, limited), (201, CREATED)], events.clone()).await;
    let created = client(base, 3).create(&CreateRequest::default()).await.unwrap();
    assert_eq!(created.session.session_id, "0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e");
    assert_eq!(mock.seen.lock().unwrap().len(), 3);

    let events = events.lock().unwrap().clone();
    let errors: Vec<&String> = events.iter().filter(|e| e.contains("netplay signaling error")).collect();
    assert_eq!(errors.len(), 2, "{events:#?}");
    assert!(errors[0].starts_with("WARN") && errors[0].contains("errorCode=capacity"), "{}", errors[0]);
    assert!(errors[0].contains("providerStatus=503") && errors[0].contains("retryCount=0"), "{}", errors[0]);
    assert!(errors[1].contains("errorCode=rate_limited") && errors[1].contains("retryCount=1"), "{}", errors[1]);

    let mut counted = std::collections::BTreeMap::new();
    let mut latencies = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                counted.insert(format!("{} {}", key.key().name(), labels.join(",")), n);
            }
            metrics_util::debugging::DebugValue::Histogram(samples) => {
                assert_eq!(key.key().name(), "netplay_signaling_latency_ms");
                assert_eq!(labels, ["provider=moq-relay", "operation=create"]);
                latencies += samples.len();
            }
            _ => {}
        }
    }
    assert_eq!(latencies, 3);
    for result in ["capacity", "rate_limited", "ok"] {
        let key = format!("netplay_sessions_created_total provider=moq-relay,result={result}");
        assert_eq!(counted.get(&key), Some(&1), "{key}: {counted:?}");
    }
}

#[tokio::test]
async fn a_refused_join_is_not_retried() {
    let (events, _guard) = capture();
    let (base, mock) = mock(&[(409, r#"{"accepted":false,"reason":"full"}"#)], events.clone()).await;
    let request = JoinRequest { join_code: Secret::new("ABCD-EFGH"), participant_user_id: "bob".into() };
    let failure = client(base, 3).join(&request).await.unwrap_err();
    assert_eq!(failure, Failure::Status { status: 409, code: "full".into(), message: None, retry_after: None });
    assert_eq!(failure_code(&failure), exit::REFUSED);
    let seen = mock.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
        serde_json::json!({"joinCode": "ABCD-EFGH", "participantUserId": "bob"})
    );
    let events = events.lock().unwrap().clone();
    let error = &events[position(&events, "netplay signaling error")];
    assert!(error.starts_with("WARN") && error.contains("errorCode=full"), "{error}");
    assert!(events.iter().all(|e| !e.contains("ABCD-EFGH")), "{events:#?}");
}

#[tokio::test]
async fn a_join_after_a_rate_limit_is_accepted() {
    let (events, _guard) = capture();
    let limited = r#"{"accepted":false,"reason":"rate_limited"}"#;
    let (base, mock) = mock(&[(429, limited), (200, JOINED)], events).await;
    let request = JoinRequest { join_code: Secret::new("ABCD-EFGH"), participant_user_id: "bob".into() };
    let joined = client(base, 1).join(&request).await.unwrap();
    assert_eq!(joined.participant_token.expose(), "part.jwt.token");
    assert_eq!(mock.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn exhausted_retries_end_in_an_error_line() {
    let (events, _guard) = capture();
    let (base, mock) = mock(&[(502, "")], events.clone()).await;
    let failure = client(base, 2).create(&CreateRequest::default()).await.unwrap_err();
    assert_eq!(failure.provider_status(), Some(502));
    assert_eq!(failure.error_code(), "http_502");
    assert_eq!(mock.seen.lock().unwrap().len(), 3, "the first attempt and 2 retries");
    let events = events.lock().unwrap().clone();
    let errors: Vec<&String> = events.iter().filter(|e| e.contains("netplay signaling error")).collect();
    assert_eq!(errors.len(), 3);
    assert!(errors[..2].iter().all(|e| e.starts_with("WARN")));
    assert!(errors[2].starts_with("ERROR") && errors[2].contains("retryCount=2"), "{}", errors[2]);
}

#[tokio::test]
async fn an_unreachable_api_is_retried_then_given_up() {
    let (events, _guard) = capture();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let failure = client(base, 1).create(&CreateRequest::default()).await.unwrap_err();
    assert!(matches!(failure, Failure::Unreachable { code: "connect_failed", .. }), "{failure:?}");
    assert_eq!(failure_code(&failure), watch::exit::CONNECT);
    let events = events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.starts_with("ERROR") && e.contains("errorCode=connect_failed")), "{events:#?}");
}

#[tokio::test]
async fn delete_sends_the_token_as_bearer_and_the_trace_context() {
    static TELEMETRY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    // The real subscriber (with its OpenTelemetry layer, no exporter) so spans have trace ids.
    TELEMETRY.get_or_init(|| {
        let config = moq_telemetry::Config::from_lookup("moq-netplay-test", "0", "off", |_| None);
        std::mem::forget(moq_telemetry::init(&config).unwrap());
    });
    let (base, mock) = mock(&[(204, "")], Events::default()).await;
    let id = "0b6c5b8e-3f0a-4c5e-9d6e-2f1a3b4c5d6e";
    client(base, 0).delete(id, &Secret::new("host.jwt.token")).await.unwrap();
    let seen = mock.seen.lock().unwrap();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("DELETE", &*format!("/api/netplay/sessions/{id}")));
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer host.jwt.token"));
    let tp = seen[0].traceparent.as_deref().expect("a traceparent header");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2].len()), (4, "00", 32, 16), "{tp}");
}

#[tokio::test]
async fn a_delete_of_an_ended_session_is_a_final_not_found() {
    let (base, mock) = mock(&[(404, r#"{"error":"not_found","message":"unknown session"}"#)], Events::default()).await;
    let failure = client(base, 3).delete("x", &Secret::new("t")).await.unwrap_err();
    assert!(matches!(failure, Failure::Status { status: 404, .. }));
    assert_eq!(mock.seen.lock().unwrap().len(), 1);
}
