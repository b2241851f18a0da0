//! Routing across a mesh of nodes, in process over real QUIC on loopback: three origins that
//! peer the way relays do (each dials the next with publish and subscribe, each with its own hop
//! id), for every version with hop chains. Checks loop refusal, the best route chosen, failover to
//! the remaining path when a link dies (no group delivered twice), and withdrawal converging with
//! no route kept alive by the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moq_lite::model::{BroadcastProducer, Origin, Scope, TrackConsumer, TrackProducer};
use moq_lite::session::{Session, SessionConfig};
use moq_lite::transport::{Client, ClientConfig, ClientTls, QuicOptions, Server};
use moq_lite::Version;
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

fn config(origin: &Origin, hop_id: u64) -> SessionConfig {
    let scope = Scope::everything(origin.clone(), "");
    SessionConfig { publish: Some(scope.clone()), subscribe: Some(scope), hop_id, ..Default::default() }
}

/// One node: an origin, its hop id, and a listener accepting peers into it.
struct Node {
    origin: Origin,
    hop: u64,
    addr: SocketAddr,
}

async fn node(hop: u64) -> Node {
    let origin = Origin::new();
    let server =
        Server::bind("127.0.0.1:0".parse().unwrap(), server_tls(), Version::ALL.to_vec(), &QuicOptions::default())
            .unwrap();
    let addr = server.local_addr().unwrap();
    let accepting = origin.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let origin = accepting.clone();
            tokio::spawn(async move {
                let Ok(request) = incoming.handshake().await else { return };
                let Ok((conn, version)) = request.accept().await else { return };
                Session::new(conn, version, config(&origin, hop)).run().await;
            });
        }
    });
    Node { origin, hop, addr }
}

/// `from` dials `to` as a peer on `version` (raw QUIC); the returned session is the link.
async fn link(from: &Node, to: &Node, version: Version) -> Session {
    let tls = ClientTls { insecure: true, ..Default::default() };
    let client = Client::new(ClientConfig { tls, versions: vec![version], ..Default::default() }).unwrap();
    let url = format!("moqt://localhost:{}/", to.addr.port()).parse().unwrap();
    let connected = client.connect(&url).await.unwrap();
    Box::leak(Box::new(client));
    let session = Session::new(connected.conn, connected.version, config(&from.origin, from.hop));
    let run = session.clone();
    tokio::spawn(async move { run.run().await });
    session
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

fn send_group(track: &mut TrackProducer, payload: String) {
    let mut group = track.append_group();
    group.write_frame(Bytes::from(payload)).unwrap();
    group.finish();
}

async fn next_payload(track: &mut TrackConsumer) -> String {
    let mut group = timeout(WAIT, track.next_group()).await.unwrap().unwrap().unwrap();
    let frame = timeout(WAIT, group.read_frame()).await.unwrap().unwrap().unwrap();
    String::from_utf8(frame.payload.to_vec()).unwrap()
}

/// A viewer on `at`: a client session (no hop id) subscribed to `path`/`track`.
async fn viewer(at: &Node, path: &str) -> (Session, TrackConsumer) {
    viewer_on(at, path, Version::ALL.to_vec()).await
}

/// [`viewer`] offering only `versions`.
async fn viewer_on(at: &Node, path: &str, versions: Vec<Version>) -> (Session, TrackConsumer) {
    let inbox = Origin::new();
    let tls = ClientTls { insecure: true, ..Default::default() };
    let client = Client::new(ClientConfig { tls, versions, ..Default::default() }).unwrap();
    let url = format!("https://localhost:{}/", at.addr.port()).parse().unwrap();
    let connected = client.connect(&url).await.unwrap();
    Box::leak(Box::new(client));
    let scope = Scope::everything(inbox.clone(), "");
    let session =
        Session::new(connected.conn, connected.version, SessionConfig { subscribe: Some(scope), ..Default::default() });
    let run = session.clone();
    tokio::spawn(async move { run.run().await });
    let route = timeout(WAIT, inbox.wait_route(path)).await.expect("announced to the viewer");
    (session, route.broadcast.subscribe_track("t").unwrap())
}

async fn triangle(version: Version) {
    if std::env::var("MESH_LOG").is_ok() {
        let _ = moq_telemetry::init(&moq_telemetry::Config::from_env("mesh", "0", "moq_lite=debug"));
    }
    let (a, b, c) = (node(101).await, node(202).await, node(303).await);
    // A ↔ B ↔ C ↔ A: each dials the next.
    let ab = link(&a, &b, version).await;
    let _bc = link(&b, &c, version).await;
    let _ca = link(&c, &a, version).await;

    let broadcast = BroadcastProducer::new();
    let mut track = broadcast.create_track("t", 0);
    let publication = a.origin.publish("cam", broadcast.consume(), vec![]);

    // B and C each learn it directly from A and through the third node; A never takes its own
    // announcement back.
    let both = |n: &Node| n.origin.route_count("cam") == 2;
    assert!(eventually(|| both(&b) && both(&c)).await, "{version}: two routes on B and C");
    assert_eq!(b.origin.route("cam").unwrap().hops, vec![a.hop], "{version}: B serves the direct route");
    assert_eq!(c.origin.route("cam").unwrap().hops, vec![a.hop], "{version}: C serves the direct route");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.origin.route_count("cam"), 1, "{version}: A refuses its own announcement back");

    let (_vb, mut on_b) = viewer(&b, "cam").await;
    let (_vc, mut on_c) = viewer(&c, "cam").await;
    assert!(eventually(|| track.consumers() > 0).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..3 {
        send_group(&mut track, format!("g{n}"));
        assert_eq!(next_payload(&mut on_b).await, format!("g{n}"), "{version}");
        assert_eq!(next_payload(&mut on_c).await, format!("g{n}"), "{version}");
    }

    // The A–B link dies: B fails over to the path through C and its viewer goes on, with the
    // next group and no repeat of one it had.
    ab.close(&moq_lite::Error::Cancel);
    assert!(
        eventually(|| b.origin.route("cam").is_some_and(|r| r.hops == vec![a.hop, c.hop])).await,
        "{version}: B routes through C, has {:?}",
        b.origin.route("cam").map(|r| r.hops)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = Vec::new();
    for n in 3..8 {
        send_group(&mut track, format!("g{n}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while received.len() < 5 {
        match timeout(Duration::from_secs(3), next_payload(&mut on_b)).await {
            Ok(payload) => received.push(payload),
            Err(_) => break,
        }
    }
    assert!(!received.is_empty(), "{version}: B's viewer resumed through C");
    assert!(received.iter().all(|p| p != "g0" && p != "g1" && p != "g2"), "{version}: nothing repeated: {received:?}");
    let mut sorted = received.clone();
    sorted.dedup();
    assert_eq!(sorted, received, "{version}: no group twice: {received:?}");
    assert_eq!(received.last().map(String::as_str), Some("g7"), "{version}: up to the newest: {received:?}");
    for n in 3..8 {
        assert_eq!(next_payload(&mut on_c).await, format!("g{n}"), "{version}: C's viewer unaffected");
    }

    // The publisher leaves: every node withdraws; the loop keeps nothing alive.
    drop(publication);
    drop(track);
    drop(broadcast);
    let gone = |n: &Node| n.origin.route_count("cam") == 0;
    assert!(eventually(|| gone(&a) && gone(&b) && gone(&c)).await, "{version}: withdrawn everywhere");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gone(&b) && gone(&c), "{version}: no route resurrected by the loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_converges_fails_over_and_withdraws_on_06() {
    triangle(Version::Lite06).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_converges_fails_over_and_withdraws_on_05() {
    triangle(Version::Lite05).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_converges_fails_over_and_withdraws_on_04() {
    triangle(Version::Lite04).await;
}

/// Link prices (lite-06): a cheap two-hop path beats an expensive direct one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_costs_choose_the_cheaper_path_on_06() {
    let (a, b, c) = (node(11).await, node(22).await, node(33).await);
    // B hears A directly over a link it prices at 10, and through C over links priced 1.
    let tls = ClientTls { insecure: true, ..Default::default() };
    let client = Client::new(ClientConfig { tls, versions: vec![Version::Lite06], ..Default::default() }).unwrap();
    let url = format!("moqt://localhost:{}/", a.addr.port()).parse().unwrap();
    let connected = client.connect(&url).await.unwrap();
    Box::leak(Box::new(client));
    let expensive =
        Session::new(connected.conn, connected.version, SessionConfig { link_cost: 10, ..config(&b.origin, b.hop) });
    let run = expensive.clone();
    tokio::spawn(async move { run.run().await });
    let _ca = link(&c, &a, Version::Lite06).await;
    let _bc = link(&b, &c, Version::Lite06).await;

    let broadcast = BroadcastProducer::new();
    let _track = broadcast.create_track("t", 0);
    let _publication = a.origin.publish("cam", broadcast.consume(), vec![]);
    assert!(eventually(|| b.origin.route_count("cam") == 2).await);
    let route = b.origin.route("cam").unwrap();
    assert_eq!(route.hops, vec![a.hop, c.hop], "the cheaper path through C");
    assert_eq!(route.cost.warm, 2, "two links at 1");
}

/// How a publisher that leaves reaches a viewer one hop away: as the track's end, whether its
/// tracks fail before its withdrawal arrives, after it, or not at all (they are only dropped);
/// a track that fails while its publisher stays announced reaches the viewer as an error.
async fn publisher_leaving(version: Version) {
    #[derive(Debug, Clone, Copy)]
    enum Leave {
        WithdrawThenFail,
        FailThenWithdraw,
        FailOnly,
    }
    let relay = node(7).await;
    for (n, leave) in [Leave::WithdrawThenFail, Leave::FailThenWithdraw, Leave::FailOnly].into_iter().enumerate() {
        let path = format!("cam{n}");
        let broadcast = BroadcastProducer::new();
        let mut track = broadcast.create_track("t", 0);
        let publication = relay.origin.publish(&path, broadcast.consume(), vec![]);
        let (_session, mut watching) = viewer_on(&relay, &path, vec![version]).await;
        assert!(eventually(|| track.consumers() > 0).await);
        send_group(&mut track, "g0".into());
        assert_eq!(next_payload(&mut watching).await, "g0");

        let fail = |track: TrackProducer| track.abort(moq_lite::Error::RemoteReset(1));
        match leave {
            Leave::WithdrawThenFail => {
                drop(publication);
                tokio::time::sleep(Duration::from_millis(50)).await;
                fail(track);
            }
            Leave::FailThenWithdraw => {
                fail(track);
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(publication);
            }
            Leave::FailOnly => fail(track),
        }
        let ended = timeout(Duration::from_secs(5), watching.next_group()).await.expect("the track settles");
        match leave {
            Leave::FailOnly => assert!(ended.is_err(), "{version} {leave:?}: a failed track is an error"),
            _ => assert!(
                matches!(ended, Ok(None)),
                "{version} {leave:?}: a publisher that left ends the track, got {:?}",
                ended.map(|g| g.map(|g| g.sequence()))
            ),
        }
        drop(broadcast);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_leaving_ends_its_viewers_tracks_on_04() {
    publisher_leaving(Version::Lite04).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_leaving_ends_its_viewers_tracks_on_06() {
    publisher_leaving(Version::Lite06).await;
}
