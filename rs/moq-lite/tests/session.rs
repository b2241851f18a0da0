//! In-process sessions over real QUIC on loopback: a tiny relay (server) and clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moq_lite::model::{BroadcastProducer, Origin, Scope, TrackConsumer};
use moq_lite::session::{Session, SessionConfig};
use moq_lite::transport::{Client, ClientConfig, ClientTls, Connected, QuicOptions, Server};
use moq_lite::{code, Version};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn server_tls() -> rustls::ServerConfig {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap()
}

/// A minimal relay: every session may publish and subscribe anywhere under its root.
async fn relay(origin: Origin) -> SocketAddr {
    relay_with(origin, QuicOptions::default()).await
}

async fn relay_with(origin: Origin, quic: QuicOptions) -> SocketAddr {
    let max_streams = quic.max_streams;
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), server_tls(), Version::ALL.to_vec(), &quic).unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let origin = origin.clone();
            tokio::spawn(async move {
                let request = incoming.handshake().await.unwrap();
                let root = request.url().map(|u| moq_lite::path::normalize(u.path())).unwrap_or_default();
                let (conn, version) = request.accept().await.unwrap();
                let scope = Scope::everything(origin, &root);
                let config = SessionConfig {
                    publish: Some(scope.clone()),
                    subscribe: Some(scope),
                    hop_id: 7,
                    max_streams,
                    ..Default::default()
                };
                Session::new(conn, version, config).run().await;
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr, scheme: &str) -> Connected {
    connect_with(addr, scheme, &Version::ALL).await
}

/// Connects offering only `versions`, most preferred first.
async fn connect_with(addr: SocketAddr, scheme: &str, versions: &[Version]) -> Connected {
    let tls = ClientTls { insecure: true, ..Default::default() };
    let client = Client::new(ClientConfig { tls, versions: versions.to_vec(), ..Default::default() }).unwrap();
    let url = format!("{scheme}://localhost:{}/", addr.port()).parse().unwrap();
    let connected = client.connect(&url).await.unwrap();
    // The endpoint must outlive the connection; tests are short-lived processes.
    Box::leak(Box::new(client));
    connected
}

/// A client session publishing `publish` and/or mirroring the peer's broadcasts into `inbox`.
fn start(connected: Connected, publish: Option<&Origin>, inbox: Option<&Origin>) -> Session {
    let scope = |o: &Origin| Scope::everything(o.clone(), "");
    let session = Session::new(
        connected.conn,
        connected.version,
        SessionConfig { publish: publish.map(scope), subscribe: inbox.map(scope), ..Default::default() },
    );
    let run = session.clone();
    tokio::spawn(async move { run.run().await });
    session
}

async fn viewer(addr: SocketAddr, scheme: &str, path: &str, track: &str) -> (Session, TrackConsumer) {
    viewer_with(addr, scheme, &Version::ALL, path, track).await
}

async fn viewer_with(
    addr: SocketAddr,
    scheme: &str,
    versions: &[Version],
    path: &str,
    track: &str,
) -> (Session, TrackConsumer) {
    let inbox = Origin::new();
    let connected = connect_with(addr, scheme, versions).await;
    assert_eq!(connected.version, versions[0], "the relay picks the client's first choice");
    let session = start(connected, None, Some(&inbox));
    let route = timeout(WAIT, inbox.wait_route(path)).await.expect("announced");
    (session, route.broadcast.subscribe_track(track).unwrap())
}

/// A client publishing one broadcast with one track through the relay.
struct Publisher {
    track: moq_lite::model::TrackProducer,
    _broadcast: BroadcastProducer,
    _announced: moq_lite::model::Publication,
    _session: Session,
}

async fn publisher(addr: SocketAddr, scheme: &str, path: &str, track: &str) -> Publisher {
    publisher_with(addr, scheme, &Version::ALL, path, track).await
}

async fn publisher_with(addr: SocketAddr, scheme: &str, versions: &[Version], path: &str, track: &str) -> Publisher {
    let local = Origin::new();
    let broadcast = BroadcastProducer::new();
    let track = broadcast.create_track(track, 0);
    let announced = local.publish(path, broadcast.consume(), vec![]);
    let session = start(connect_with(addr, scheme, versions).await, Some(&local), None);
    Publisher { track, _broadcast: broadcast, _announced: announced, _session: session }
}

/// Publishes one complete group holding one frame.
fn send_group(track: &mut moq_lite::model::TrackProducer, payload: &'static [u8]) {
    let mut group = track.append_group();
    group.write_frame(Bytes::from_static(payload)).unwrap();
    group.finish();
}

async fn next_payload(track: &mut TrackConsumer) -> Bytes {
    let mut group = timeout(WAIT, track.next_group()).await.unwrap().unwrap().unwrap();
    timeout(WAIT, group.read_frame()).await.unwrap().unwrap().unwrap().payload
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every pair of versions, over both bindings: a publisher on one version, viewers on another,
/// frames intact, in order and with their timestamps carried across the 05+ wire (03/04 have
/// none, so the relay stamps arrival time there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_pair_interoperates_through_the_relay() {
    let addr = relay(Origin::new()).await;
    for (i, publish_version) in Version::ALL.into_iter().enumerate() {
        let path = format!("v{i}");
        let scheme = if i % 2 == 0 { "moqt" } else { "https" };
        let mut publisher = publisher_with(addr, scheme, &[publish_version], &path, "t").await;
        let mut viewers = Vec::new();
        for view_version in Version::ALL {
            for scheme in ["moqt", "https"] {
                viewers.push((view_version, viewer_with(addr, scheme, &[view_version], &path, "t").await));
            }
        }
        assert!(eventually(|| publisher.track.consumers() == 1).await, "one upstream subscription");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut group = publisher.track.append_group();
        for (n, ts) in [(b"key" as &[u8], 1_000u64), (b"p1", 1_033), (b"p0", 1_016)] {
            group.write_frame_at(Bytes::from_static(n), ts).unwrap();
        }
        group.finish();
        for (view_version, (_session, track)) in &mut viewers {
            let mut group = timeout(WAIT, track.next_group()).await.unwrap().unwrap().unwrap();
            for (payload, ts) in [("key", 1_000u64), ("p1", 1_033), ("p0", 1_016)] {
                let frame = timeout(WAIT, group.read_frame()).await.unwrap().unwrap().unwrap();
                assert_eq!(frame.payload, payload, "{publish_version} → {view_version}");
                if publish_version.has_timestamps() && view_version.has_timestamps() {
                    assert_eq!(frame.timestamp, ts, "{publish_version} → {view_version}: {payload}");
                }
            }
            assert!(timeout(WAIT, group.read_frame()).await.unwrap().unwrap().is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_subscription_fans_out_and_is_torn_down_with_the_last_viewer() {
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "https", "live", "video").await;
    let track = &mut publisher.track;

    let (_a, mut va) = viewer(addr, "https", "live", "video").await;
    let (_b, mut vb) = viewer(addr, "moqt", "live", "video").await;
    // Both viewers share one upstream subscription.
    assert!(eventually(|| track.consumers() == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(track.consumers(), 1);

    send_group(track, b"hello");
    assert_eq!(next_payload(&mut va).await, "hello");
    assert_eq!(next_payload(&mut vb).await, "hello");

    drop(va);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(track.consumers(), 1, "one viewer left: upstream stays");
    drop(vb);
    timeout(WAIT, track.unused()).await.expect("the last viewer leaving unsubscribes upstream");
}

/// Frames bigger than a stream's flow-control window (4 MiB) cannot be handed to QUIC in one
/// write: the relay's fan-out writes what the stream takes and its per-viewer task finishes the
/// frame. Every viewer still gets every byte, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_stream_window_reach_every_viewer_intact_and_in_order() {
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "moqt", "big", "t").await;
    let (_a, mut va) = viewer(addr, "moqt", "big", "t").await;
    let (_b, mut vb) = viewer(addr, "https", "big", "t").await;
    assert!(eventually(|| publisher.track.consumers() > 0).await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let sizes = [1_000, 3 << 20, 6 << 20, 10, 5 << 20, 100, 200, 300];
    let frames: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>()))
        .collect();
    let mut group = publisher.track.append_group();
    for frame in &frames {
        group.write_frame(frame.clone()).unwrap();
        tokio::task::yield_now().await;
    }
    group.finish();

    for track in [&mut va, &mut vb] {
        let mut group = timeout(WAIT, track.next_group()).await.unwrap().unwrap().unwrap();
        for (i, expected) in frames.iter().enumerate() {
            let frame = timeout(WAIT, group.read_frame()).await.unwrap().unwrap().unwrap();
            assert!(
                frame.payload == *expected,
                "frame {i}: {} bytes, expected {}",
                frame.payload.len(),
                expected.len()
            );
        }
        assert!(timeout(WAIT, group.read_frame()).await.unwrap().unwrap().is_none());
    }
}

/// A group finished with its last frame ends on the wire with that frame: the FIN shares the
/// frame's STREAM frame at every hop, instead of costing each viewer one more packet per group
/// (the relay's per-viewer task would send it alone once it woke up). Counted by the viewer's
/// QUIC stack. Single-threaded, so no connection driver packs a frame between its write and the
/// group's end.
#[tokio::test]
async fn a_finished_groups_end_travels_with_its_last_frame() {
    const GROUPS: u64 = 10;
    const FRAMES: u64 = 3;
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "moqt", "fin", "t").await;
    let (viewer_session, mut track) = viewer(addr, "moqt", "fin", "t").await;
    assert!(eventually(|| publisher.track.consumers() > 0).await);
    send_group(&mut publisher.track, b"warm-up");
    assert_eq!(next_payload(&mut track).await, "warm-up");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let quic: &quinn::Connection = viewer_session.connection().quic().unwrap();
    let stream_frames = || quic.stats().frame_rx.stream;
    let before = stream_frames();
    for g in 0..GROUPS {
        let mut group = publisher.track.append_group();
        for f in 0..FRAMES {
            group.write_frame(Bytes::from(format!("group {g} frame {f}"))).unwrap();
            if f + 1 < FRAMES {
                // Let each frame leave on its own, as a live source's frames do.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        group.finish();
        let mut received = timeout(WAIT, track.next_group()).await.unwrap().unwrap().unwrap();
        for f in 0..FRAMES {
            let frame = timeout(WAIT, received.read_frame()).await.unwrap().unwrap().unwrap();
            assert_eq!(frame.payload, format!("group {g} frame {f}"));
        }
        assert!(timeout(WAIT, received.read_frame()).await.unwrap().unwrap().is_none(), "group {g} ends");
    }
    // One STREAM frame per media frame; a lone FIN per group would make it GROUPS more. Two
    // spare for a rare retransmission.
    let received = stream_frames() - before;
    assert!(
        (GROUPS * FRAMES..=GROUPS * FRAMES + 2).contains(&received),
        "{received} STREAM frames for {} media frames in {GROUPS} groups",
        GROUPS * FRAMES
    );
}

/// Connecting must not switch on trace-level spans. quinn opens one per packet and per frame
/// received; under the subscriber the CLI and relay install (logs, traces and OTLP log export,
/// each filtered per layer) they must stay disabled callsites, not spans created and dropped on
/// every packet (a 200-viewer load generator spent 4–5 % of its CPU on them when connecting
/// installed a scoped dispatcher).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_leaves_trace_spans_disabled() {
    let config = moq_telemetry::Config::from_lookup("moq-lite-test", "0", "warn", |_| None);
    let _telemetry = moq_telemetry::init(&config).unwrap();
    let per_packet = || tracing::trace_span!(target: "quinn_proto::connection", "recv", pn = 1u64).is_disabled();
    assert!(per_packet(), "trace spans are off before connecting");

    let addr = relay(Origin::new()).await;
    let _quic = connect(addr, "moqt").await;
    let _webtransport = connect(addr, "https").await;
    assert!(per_packet(), "trace spans are still off after connecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_publisher_takes_over_the_path() {
    let addr = relay(Origin::new()).await;
    let mut first = publisher(addr, "https", "cam", "t").await;
    let (_v, mut viewer_track) = viewer(addr, "https", "cam", "t").await;
    send_group(&mut first.track, b"first");
    assert_eq!(next_payload(&mut viewer_track).await, "first");

    let mut second = publisher(addr, "https", "cam", "t").await;
    // The relay follows the new publisher for the existing subscription.
    assert!(eventually(|| second.track.consumers() > 0).await);
    send_group(&mut second.track, b"second");
    assert_eq!(next_payload(&mut viewer_track).await, "second");
}

/// Waits for the relay to close the connection and returns the application close code.
async fn close_code(conn: &web_transport_quinn::Session) -> Option<u32> {
    let err = timeout(WAIT, conn.closed()).await.expect("the relay closes the session");
    match err {
        web_transport_quinn::SessionError::WebTransportError(web_transport_quinn::WebTransportError::Closed(
            code,
            _,
        )) => Some(code),
        other => panic!("unexpected close: {other:?}"),
    }
}

/// Opens a group stream and writes only its type, so the relay's reader waits on it: a stream
/// the peer keeps open.
async fn open_group_stream(conn: &web_transport_quinn::Session) -> web_transport_quinn::SendStream {
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(&[0x00]).await.unwrap();
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_stream_credit_as_it_keeps_streams_open() {
    // A session starts with INITIAL_STREAMS of credit (64) so an idle one stays small; a peer
    // keeping more open gets more, up to max_streams (1 000 by default).
    let addr = relay(Origin::new()).await;
    let peer = connect_with(addr, "moqt", &[Version::Lite04]).await;
    let mut open = Vec::new();
    for _ in 0..300 {
        open.push(
            timeout(WAIT, open_group_stream(peer.conn.as_quic().unwrap())).await.expect("credit for 300 streams"),
        );
    }
    assert!(peer.conn.as_quic().unwrap().close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_credit_stops_at_max_streams() {
    let addr = relay_with(Origin::new(), QuicOptions { max_streams: 100, ..Default::default() }).await;
    let peer = connect_with(addr, "moqt", &[Version::Lite04]).await;
    let mut open = Vec::new();
    for _ in 0..100 {
        open.push(
            timeout(WAIT, open_group_stream(peer.conn.as_quic().unwrap())).await.expect("credit for 100 streams"),
        );
    }
    let mut extra = Box::pin(open_group_stream(peer.conn.as_quic().unwrap()));
    assert!(timeout(Duration::from_millis(500), &mut extra).await.is_err(), "a 101st stream was let open");
    // Streams that end return their credit (quinn announces it once an eighth is free).
    for mut send in open.drain(..20) {
        send.reset(0u32).unwrap();
    }
    timeout(WAIT, extra).await.expect("credit returned by the reset streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_closes_only_that_session() {
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "moqt", "b", "t").await;
    let (_v, mut healthy) = viewer(addr, "moqt", "b", "t").await;

    // SUBSCRIBE whose declared length (3) is shorter than its fields need.
    let hostile = connect_with(addr, "moqt", &[Version::Lite04]).await;
    let (mut send, _recv) = hostile.conn.as_quic().unwrap().open_bi().await.unwrap();
    send.write_all(&[0x02, 0x03, 0x00, 0x01, b'b']).await.unwrap();
    assert_eq!(close_code(hostile.conn.as_quic().unwrap()).await, Some(code::PROTOCOL_VIOLATION));

    send_group(&mut publisher.track, b"still here");
    assert_eq!(next_payload(&mut healthy).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_type_resets_only_that_stream() {
    let addr = relay(Origin::new()).await;
    let peer = connect_with(addr, "https", &[Version::Lite04]).await;
    let (mut send, mut recv) = peer.conn.as_quic().unwrap().open_bi().await.unwrap();
    send.write_all(&[0x3f]).await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(WAIT, recv.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Err(web_transport_quinn::ReadError::Reset(c)) if c == code::UNEXPECTED_STREAM), "{read:?}");
    // The session is still up: an ANNOUNCE_REQUEST is answered (no broadcasts, stream open).
    let (mut send, mut recv) = peer.conn.as_quic().unwrap().open_bi().await.unwrap();
    send.write_all(&[0x01, 0x02, 0x00, 0x00]).await.unwrap();
    let pending = timeout(Duration::from_millis(300), recv.read(&mut buf)).await;
    assert!(pending.is_err(), "no announcements and no reset: {pending:?}");
    assert!(peer.conn.as_quic().unwrap().close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_a_protocol_violation() {
    let addr = relay(Origin::new()).await;
    let local = Origin::new();
    let inbox = Origin::new();
    // A publisher with a broadcast so the relay subscribes to it: subscription id 0.
    let broadcast = BroadcastProducer::new();
    let track = broadcast.create_track("t", 0);
    let _announced = local.publish("b", broadcast.consume(), vec![]);
    let peer = connect_with(addr, "moqt", &[Version::Lite04]).await;
    let conn = peer.conn.as_quic().unwrap().clone();
    let _session = start(peer, Some(&local), Some(&inbox));
    let (_v, _viewer_track) = viewer(addr, "moqt", "b", "t").await;
    assert!(eventually(|| track.consumers() > 0).await, "the relay subscribed upstream");

    let mut send = conn.open_uni().await.unwrap();
    // Group stream for subscription 0, group 0, then a frame claiming 1 GiB.
    send.write_all(&[0x00, 0x02, 0x00, 0x00, 0xc0, 0, 0, 0, 0x40, 0, 0, 0]).await.unwrap();
    assert_eq!(close_code(&conn).await, Some(code::PROTOCOL_VIOLATION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_older_than_max_latency_is_skipped_once_a_newer_one_exists() {
    use moq_lite::coding::Encode;
    use moq_lite::message::{BiStreamType, Subscribe};

    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "moqt", "b", "t").await;
    let track = &mut publisher.track;

    // A raw subscriber asking for at most 100 ms of latency.
    let raw = connect_with(addr, "moqt", &[Version::Lite04]).await;
    let (mut send, mut recv) = raw.conn.as_quic().unwrap().open_bi().await.unwrap();
    let mut request = Vec::new();
    BiStreamType::Subscribe.encode(&mut request);
    Subscribe {
        id: 9,
        broadcast: "b".into(),
        track: "t".into(),
        priority: 0,
        ordered: false,
        max_latency_ms: 100,
        start_group: None,
        end_group: None,
        start_frame: 0,
        end_frame: None,
    }
    .encode(&mut request, Version::Lite04);
    send.write_all(&request).await.unwrap();
    let mut ok = [0u8; 16];
    let n = timeout(WAIT, recv.read(&mut ok)).await.unwrap().unwrap().unwrap();
    assert_eq!(ok[0], 0, "SUBSCRIBE_OK first ({:?})", &ok[..n]);
    assert!(eventually(|| track.consumers() > 0).await, "the relay subscribed upstream");

    let mut old = track.append_group();
    old.write_frame(Bytes::from_static(b"first")).unwrap();
    let mut old_stream = timeout(WAIT, raw.conn.as_quic().unwrap().accept_uni()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut new = track.append_group();
    new.write_frame(Bytes::from_static(b"live")).unwrap();
    new.finish();
    // The old group now exceeds the budget and a newer one exists: its next frame is not sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    old.write_frame(Bytes::from_static(b"stale")).unwrap();
    old.finish();

    let old_read = timeout(WAIT, old_stream.read_to_end(1 << 20)).await.unwrap();
    assert!(
        matches!(old_read, Err(web_transport_quinn::ReadToEndError::ReadError(web_transport_quinn::ReadError::Reset(c))) if c == code::OLD),
        "the stale group is reset with code OLD: {old_read:?}"
    );
    let mut new_stream = timeout(WAIT, raw.conn.as_quic().unwrap().accept_uni()).await.unwrap().unwrap();
    let bytes = timeout(WAIT, new_stream.read_to_end(1 << 20)).await.unwrap().unwrap();
    assert!(bytes.ends_with(b"live"), "the live group is delivered: {bytes:?}");
}

/// SETUP (lite-05+) is one well-formed stream per session, and carries a Path only on raw QUIC
/// (where the embedder reads it before the session starts): each breach closes that session
/// alone as a protocol violation, and other sessions keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_breaches_close_only_that_session() {
    use moq_lite::coding::{varint, Encode};
    use moq_lite::message::{Setup, UniStreamType};
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher_with(addr, "https", &[Version::Lite06], "b", "t").await;
    let (_v, mut healthy) = viewer_with(addr, "https", &[Version::Lite05], "b", "t").await;

    let setup = |setup: Setup, version: Version| {
        let mut bytes = Vec::new();
        varint::encode(&mut bytes, UniStreamType::Setup.code());
        setup.encode(&mut bytes, version);
        bytes
    };
    let plain = setup(Setup::default(), Version::Lite06);
    let with_path = setup(Setup { path: Some("/room?jwt=x".into()), ..Default::default() }, Version::Lite05);
    let oversized = setup(Setup { path: Some("a".repeat(9_000)), ..Default::default() }, Version::Lite06);
    // Type, length 7, two parameters, both PROBE (id 1, length 1, value 1).
    let repeated = vec![0x01, 0x07, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01];
    let cases = [
        ("a Path on WebTransport", Version::Lite05, vec![with_path]),
        ("a second SETUP", Version::Lite06, vec![plain.clone(), plain]),
        ("a repeated parameter", Version::Lite05, vec![repeated]),
        ("an oversized Path", Version::Lite06, vec![oversized]),
    ];
    for (case, version, streams) in cases {
        let hostile = connect_with(addr, "https", &[version]).await;
        let conn = hostile.conn.as_quic().unwrap();
        for bytes in streams {
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
        }
        assert_eq!(close_code(conn).await, Some(code::PROTOCOL_VIOLATION), "{case}");
    }

    send_group(&mut publisher.track, b"still here");
    assert_eq!(next_payload(&mut healthy).await, "still here");
}

/// A publisher that withdraws its broadcast and leaves a moment later: its viewers' subscriptions
/// end (within the relay's grace for a replacement), they are not kept open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_leaves_ends_its_viewers_subscriptions() {
    let addr = relay(Origin::new()).await;
    let mut publisher = publisher(addr, "https", "gone", "t").await;
    let (_v, mut viewer_track) = viewer(addr, "https", "gone", "t").await;
    send_group(&mut publisher.track, b"only");
    assert_eq!(next_payload(&mut viewer_track).await, "only");
    let Publisher { track, _broadcast, _announced, _session } = publisher;
    drop(_announced);
    tokio::time::sleep(Duration::from_secs(1)).await;
    _session.close(&moq_lite::Error::Cancel);
    drop((track, _broadcast));
    let ended = timeout(Duration::from_secs(6), async {
        loop {
            match viewer_track.next_group().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the viewer's track ended");
}
