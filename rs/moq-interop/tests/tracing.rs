//! Traces and logs over OTLP, received in-process over gRPC and HTTP/protobuf: one trace from the
//! viewer through the relay, log records carrying its trace id, the upstream subscription linking
//! the viewer's trace to the publisher's, no token in any exported or printed byte, a flush on
//! shutdown, and a relay that keeps streaming (and counts the loss) when the collector is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moq_interop::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    links: Vec<(String, String)>,
    attrs: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Log {
    service: String,
    body: String,
    trace_id: String,
}

#[derive(Default)]
struct Store {
    spans: Vec<Span>,
    logs: Vec<Log>,
    /// (service, metric name, cumulative value: sum for counters, count for histograms).
    metrics: Vec<(String, String, f64)>,
    /// Every exported request, re-encoded: what crossed the wire.
    raw: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Store>>);

fn service_of(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

impl Receiver {
    fn traces(&self, req: ExportTraceServiceRequest) {
        let mut store = self.0.lock().unwrap();
        store.raw.extend(req.encode_to_vec());
        for rs in req.resource_spans {
            let service = service_of(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    store.spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        links: s.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                        attrs: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                    });
                }
            }
        }
    }

    fn metrics(&self, req: ExportMetricsServiceRequest) {
        let mut store = self.0.lock().unwrap();
        store.raw.extend(req.encode_to_vec());
        for rm in req.resource_metrics {
            let service = service_of(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let value = match &m.data {
                        Some(Data::Sum(sum)) => sum
                            .data_points
                            .iter()
                            .map(|p| match p.value {
                                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => {
                                    i as f64
                                }
                                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                                    d,
                                )) => d,
                                None => 0.0,
                            })
                            .sum(),
                        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count as f64).sum(),
                        _ => continue,
                    };
                    store.metrics.push((service.clone(), m.name, value));
                }
            }
        }
    }

    fn logs(&self, req: ExportLogsServiceRequest) {
        let mut store = self.0.lock().unwrap();
        store.raw.extend(req.encode_to_vec());
        for rl in req.resource_logs {
            let service = service_of(&rl.resource.map(|r| r.attributes).unwrap_or_default());
            for sl in rl.scope_logs {
                for l in sl.log_records {
                    store.logs.push(Log { service: service.clone(), body: text(&l.body), trace_id: hex(&l.trace_id) });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts gRPC and HTTP/protobuf OTLP endpoints on loopback.
async fn receiver() -> (Receiver, SocketAddr, SocketAddr) {
    let receiver = Receiver::default();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let service = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(service.clone()))
            .add_service(LogsServiceServer::new(service.clone()))
            .add_service(MetricsServiceServer::new(service))
            .serve_with_incoming(tokio_stream(grpc))
            .await
            .unwrap();
    });
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (t, l, m) = (receiver.clone(), receiver.clone(), receiver.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| async move {
                t.traces(ExportTraceServiceRequest::decode(body).unwrap());
                ExportTraceServiceResponse::default().encode_to_vec()
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: bytes::Bytes| async move {
                m.metrics(ExportMetricsServiceRequest::decode(body).unwrap());
                ExportMetricsServiceResponse::default().encode_to_vec()
            }),
        )
        .route(
            "/v1/logs",
            axum::routing::post(move |body: bytes::Bytes| async move {
                l.logs(ExportLogsServiceRequest::decode(body).unwrap());
                ExportLogsServiceResponse::default().encode_to_vec()
            }),
        );
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    (receiver, grpc_addr, http_addr)
}

fn tokio_stream(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// The relay exporting to `otlp` over gRPC and logging JSON lines.
fn traced_relay(otlp: &str) -> RelayBuilder {
    Relay::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("LOG_FORMAT", "json")
}

/// The environment that makes a `moq` client export to `otlp_http` over HTTP/protobuf.
fn cli_otlp(otlp_http: &str) -> [(&'static str, &str); 3] {
    [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_http), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("RUST_LOG", "info")]
}

#[test]
fn one_trace_from_viewer_through_relay_with_logs_links_and_no_token() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (store, grpc, http) = rt.block_on(receiver());
    // A real token, verified by the relay: the one secret that must never leave in telemetry.
    let lab = auth::TokenLab::new();
    let token = lab.sign(&lab.k1, &auth::Grant::new("").publish(["trace/**"]).subscribe(["trace/**"]));
    let mut relay = traced_relay(&format!("http://{grpc}")).args(["--auth-key", lab.key_dir.to_str().unwrap()]).start();
    let url = relay.url(&format!("?jwt={token}"));
    let otlp_http = format!("http://{http}");

    let viewer = Viewer::new(&url, "trace/cam").groups(2).summary().envs(cli_otlp(&otlp_http)).background();
    std::thread::sleep(Duration::from_millis(1000));
    let publisher = Publisher::new(&url, "trace/cam").groups(2).envs(cli_otlp(&otlp_http)).run(Duration::from_secs(30));
    let watched = viewer.finish(Duration::from_secs(30));
    assert_eq!(watch_summary(&watched)["ok"], true);

    // The relay flushes what it still holds when it stops.
    relay.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    let relay_lines = relay.drain().to_vec();

    let spans = |service: &str, name: &str| -> Vec<Span> {
        store.0.lock().unwrap().spans.iter().filter(|s| s.service == service && s.name == name).cloned().collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || !spans("moq-relay", "moq.session").is_empty()
            && !spans("moq-watch", "moq.watch").is_empty()),
        "timed out waiting for spans"
    );
    let watch = spans("moq-watch", "moq.watch").remove(0);
    let publish = spans("moq-publish", "moq.publish").remove(0);

    // The relay's session span is the viewer's child: one trace from client to relay.
    let sessions = spans("moq-relay", "moq.session");
    let viewer_session =
        sessions.iter().find(|s| s.trace_id == watch.trace_id).expect("relay session in the viewer's trace");
    assert_eq!(viewer_session.parent, watch.span_id, "session span is a child of the client's span");
    let attr = |s: &Span, k: &str| s.attrs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    // Both sides offer every version by default: the newest is chosen.
    assert_eq!(attr(viewer_session, "network.protocol.version").as_deref(), Some("moq-lite-06"));
    assert_eq!(attr(viewer_session, "moq.transport").as_deref(), Some("webtransport"));
    assert!(sessions.iter().any(|s| s.trace_id == publish.trace_id), "publisher session in the publisher's trace");

    // Subscribes are children of the viewer's session; the upstream subscription they caused is
    // a child of the first one (one trace from the viewer to the publisher) and links to the
    // publisher's session, in the publisher's trace.
    // A relay serves a viewer's SUBSCRIBE and TRACK streams alike; whichever reaches a track first
    // starts its upstream subscription.
    let mut subscribes = spans("moq-relay", "moq.subscribe");
    subscribes.extend(spans("moq-relay", "moq.track_info"));
    let viewer_subscribes: Vec<&Span> =
        subscribes.iter().filter(|s| s.trace_id == watch.trace_id && s.parent == viewer_session.span_id).collect();
    assert!(!viewer_subscribes.is_empty(), "the viewer's subscribes in its trace: {subscribes:#?}");
    let upstream = spans("moq-relay", "moq.subscribe.upstream");
    let viewer_upstream = upstream
        .iter()
        .find(|s| s.trace_id == watch.trace_id && viewer_subscribes.iter().any(|v| v.span_id == s.parent))
        .unwrap_or_else(|| panic!("upstream subscription a child of the viewer's subscribe: {upstream:#?}"));
    assert!(
        viewer_upstream.links.iter().any(|(t, _)| *t == publish.trace_id),
        "upstream subscription links the publisher's trace: {viewer_upstream:#?}"
    );
    // The relay carried the trace context to the publisher on its subscription (the traced
    // subscribe both ends advertise): the publisher's side of it continues the viewer's trace.
    let served = spans("moq-publish", "moq.subscribe");
    assert!(
        served.iter().any(|s| s.trace_id == watch.trace_id && upstream.iter().any(|u| u.span_id == s.parent)),
        "the publisher's moq.subscribe continues the viewer's trace: {served:#?}"
    );

    // Log records carry the trace id, in OTLP and on stdout.
    let logs = store.0.lock().unwrap().logs.clone();
    assert!(
        logs.iter().any(|l| l.service == "moq-relay" && l.trace_id == watch.trace_id && l.body == "session opened"),
        "relay log record in the viewer's trace"
    );
    let opened = relay_lines
        .iter()
        .filter(|l| l.contains("\"session opened\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["trace_id"] == watch.trace_id.as_str())
        .expect("JSON log line with the viewer's trace id");
    for key in ["timestamp", "level", "target", "span_id", "service", "instance"] {
        assert!(opened.get(key).is_some(), "{key} in {opened}");
    }

    // The token never leaves in any exported or printed byte.
    let raw = store.0.lock().unwrap().raw.clone();
    for secret in [token.as_str(), auth::signature(&token)] {
        assert!(!contains(&raw, secret.as_bytes()), "token in exported telemetry");
        for output in [&publisher.stdout, &publisher.stderr, &watched.stdout, &watched.stderr] {
            assert!(!contains(output, secret.as_bytes()), "token printed by the CLI");
        }
        assert!(!relay_lines.iter().any(|l| l.contains(secret)), "token in relay logs");
    }
    // The access decisions went out as OTLP log records too (the audit trail's events), in the
    // sessions' traces, and the moq.auth span says how each was decided.
    assert!(
        logs.iter().any(|l| l.service == "moq-relay" && l.body == "audit" && l.trace_id == watch.trace_id),
        "an audit record in the viewer's trace"
    );
    let auth = spans("moq-relay", "moq.auth");
    let viewer_auth = auth.iter().find(|s| s.parent == viewer_session.span_id).expect("moq.auth under the session");
    assert_eq!(attr(viewer_auth, "moq.auth.reason").as_deref(), Some("token"));
    assert!(attr(viewer_auth, "moq.auth.token").is_some_and(|h| h.starts_with("sha256:")));
    eprintln!(
        "trace {}: {} spans, {} log records exported",
        watch.trace_id,
        store.0.lock().unwrap().spans.len(),
        logs.len()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn relay_keeps_streaming_when_the_collector_is_down_and_counts_the_loss() {
    let _serial = serial();
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = traced_relay(&format!("http://{dead}"))
        .ops()
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
        .env_remove("LOG_FORMAT")
        .start();
    let url = relay.url("");
    let viewer = Viewer::new(&url, "down/cam").groups(3).summary().background();
    std::thread::sleep(Duration::from_millis(1000));
    let _publisher = Publisher::new(&url, "down/cam").groups(3).spawn();
    let summary = watch_summary(&viewer.finish(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "streaming is unaffected: {summary:#}");
    let dropped = || relay.scrape().total("moq_telemetry_dropped_total", &[]);
    assert!(
        eventually(Duration::from_secs(10), || dropped() > 0.0),
        "timed out waiting for moq_telemetry_dropped_total to rise"
    );
    eprintln!("collector down: {} spans/logs dropped and counted", dropped());
}

#[test]
fn the_viewer_exports_its_player_metrics_over_otlp() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (store, _grpc, http) = rt.block_on(receiver());
    let relay = Relay::start();
    let url = relay.url("");
    let viewer = Viewer::new(&url, "otlp/cam")
        .groups(3)
        .summary()
        .envs(cli_otlp(&format!("http://{http}")))
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .background();
    std::thread::sleep(Duration::from_millis(800));
    let _publisher = Publisher::new(&url, "otlp/cam").groups(4).spawn();
    let summary = watch_summary(&viewer.finish_in_time(Duration::from_secs(40)));
    assert_eq!(summary["ok"], true, "{summary:#}");
    let played = summary["player"]["played"].as_f64().unwrap();
    // Cumulative values: the last export (at shutdown) carries the totals.
    let latest = |name: &str| {
        store
            .0
            .lock()
            .unwrap()
            .metrics
            .iter()
            .filter(|(s, n, _)| s == "moq-watch" && n == name)
            .map(|m| m.2)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    };
    assert_eq!(latest("moq_client_latency_seconds"), Some(played), "latency histogram count = frames played");
    assert_eq!(latest("moq_client_startup_time_seconds"), Some(1.0));
    let frames: f64 = summary["tracks"].as_object().unwrap().values().map(|t| t["frames"].as_f64().unwrap()).sum();
    assert_eq!(latest("moq_client_frames_received_total"), Some(frames), "frames received, all renditions");
    // Counters start at zero over OTLP too: exported whether or not the event happened.
    assert_eq!(latest("moq_client_rebuffer_count_total"), summary["player"]["rebuffers"].as_f64(), "rebuffers");
    let switches =
        summary["player"]["switches_down"].as_f64().unwrap() + summary["player"]["switches_up"].as_f64().unwrap();
    assert_eq!(latest("moq_client_quality_switches_total"), Some(switches), "quality switches, both directions");
    eprintln!("OTLP metrics: {played} frames played, {frames} received");
}

/// Traces across relays (docs/CLUSTER.md): a viewer on an edge, the publisher on the origin the
/// edge dials. One trace runs viewer → edge (its subscribe, then the upstream subscription it
/// caused) → origin (its subscribe, continuing the edge's upstream span through the traced
/// subscribe) → origin's upstream subscription → the publisher's side of it; a second viewer that
/// joins the edge's upstream subscription links to it.
#[test]
fn one_trace_from_a_viewer_through_two_relays_to_the_publisher() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (store, grpc, http) = rt.block_on(receiver());
    let otlp = format!("http://{grpc}");
    // Both relays export to the receiver, each under its own service name.
    let named = |name: &'static str| {
        let otlp = otlp.clone();
        move |b: RelayBuilder| {
            b.env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("LOG_FORMAT", "json")
                .env("OTEL_SERVICE_NAME", name)
        }
    };
    let origin = moq_interop::cluster::Node::new("origin").with(named("relay-origin"));
    let edge = moq_interop::cluster::Node::new("edge").dial(&origin.url()).with(named("relay-edge"));
    let (mut o, mut e) = (origin.start(), edge.start());
    e.wait_peer(&origin.label(), "outbound", true, Duration::from_secs(15));
    let otlp_http = format!("http://{http}");

    let first = Viewer::new(&e.url(""), "trace/mesh").groups(3).summary().envs(cli_otlp(&otlp_http)).background();
    std::thread::sleep(Duration::from_millis(1000));
    let publisher = Publisher::new(&o.url(""), "trace/mesh").groups(3).envs(cli_otlp(&otlp_http)).background();
    std::thread::sleep(Duration::from_millis(1500));
    // Joins the edge's running upstream subscription.
    let second = Viewer::new(&e.url(""), "trace/mesh").groups(1).summary().envs(cli_otlp(&otlp_http)).background();
    assert_eq!(watch_summary(&first.finish(Duration::from_secs(30)))["ok"], true);
    assert_eq!(watch_summary(&second.finish(Duration::from_secs(30)))["ok"], true);
    publisher.finish(Duration::from_secs(30));
    for relay in [&mut e, &mut o] {
        relay.signal("TERM");
        assert!(relay.wait_exit(Duration::from_secs(15)).is_some());
    }

    let spans = |service: &str, name: &str| -> Vec<Span> {
        store.0.lock().unwrap().spans.iter().filter(|s| s.service == service && s.name == name).cloned().collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || spans("moq-watch", "moq.watch").len() >= 2
            && !spans("relay-origin", "moq.subscribe").is_empty()),
        "timed out waiting for spans"
    );
    let watches = spans("moq-watch", "moq.watch");
    // A relay serves a viewer's SUBSCRIBE and TRACK streams alike; whichever reaches a track first
    // starts its upstream subscription, so both count as the request an upstream span continues.
    let mut edge_subscribes = spans("relay-edge", "moq.subscribe");
    edge_subscribes.extend(spans("relay-edge", "moq.track_info"));
    let edge_upstreams = spans("relay-edge", "moq.subscribe.upstream");
    // The edge asks the origin on a SUBSCRIBE and a TRACK stream at once; both continue the edge's
    // trace through the traced stream.
    let mut origin_subscribes = spans("relay-origin", "moq.subscribe");
    origin_subscribes.extend(spans("relay-origin", "moq.track_info"));
    let origin_upstreams = spans("relay-origin", "moq.subscribe.upstream");
    let published = spans("moq-publish", "moq.subscribe");
    assert!(
        origin_subscribes
            .iter()
            .all(|s| edge_upstreams.iter().any(|u| u.span_id == s.parent && u.trace_id == s.trace_id)),
        "every request the edge sent the origin continues one of the edge's upstream spans: {origin_subscribes:#?}"
    );
    let children = |parent: &Span, of: &[Span]| -> Vec<Span> {
        of.iter().filter(|c| c.parent == parent.span_id && c.trace_id == parent.trace_id).cloned().collect()
    };
    // Follow one viewer's trace hop by hop: its request on the edge → the edge's upstream
    // subscription → the origin's request → the origin's upstream subscription → the publisher.
    let chain = watches.iter().find_map(|w| {
        edge_subscribes.iter().filter(|r| r.trace_id == w.trace_id).find_map(|request| {
            children(request, &edge_upstreams).into_iter().find_map(|edge_up| {
                let at_publisher = children(&edge_up, &origin_subscribes)
                    .iter()
                    .flat_map(|r| children(r, &origin_upstreams))
                    .find_map(|origin_up| children(&origin_up, &published).into_iter().next())?;
                Some((w.clone(), edge_up, at_publisher))
            })
        })
    });
    let (watch, edge_up, at_publisher) = chain.unwrap_or_else(|| {
        panic!(
            "no trace viewer → edge → origin → publisher:\nviewers {watches:#?}\nedge subscribes {edge_subscribes:#?}\n\
             edge upstream {edge_upstreams:#?}\norigin subscribes {origin_subscribes:#?}\norigin upstream \
             {origin_upstreams:#?}\npublisher {published:#?}"
        )
    });
    // The other viewer's subscribe on the edge, in its own trace, links to the shared upstream.
    let other = watches.iter().find(|w| w.trace_id != watch.trace_id).expect("the second viewer's trace");
    assert!(
        edge_subscribes.iter().any(|s| s.trace_id == other.trace_id
            && s.links.iter().any(|(t, sp)| edge_upstreams.iter().any(|u| u.trace_id == *t && u.span_id == *sp))),
        "the joining viewer's requests link to the upstream subscriptions they share: {edge_subscribes:#?}"
    );
    eprintln!(
        "TRACE one trace {} across viewer → edge (upstream span {}) → origin → publisher (span {}); the joining \
         viewer's trace {} links to it",
        watch.trace_id, edge_up.span_id, at_publisher.span_id, other.trace_id
    );
}
