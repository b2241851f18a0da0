//! Access control at work in this relay, beyond the decision matrix of tests/auth.rs: per-client
//! limits under a session flood, a session ending when its token expires, a request outside the
//! grant refused on its stream while the session goes on, the relay deciding through a reference
//! auth server (`moq auth serve`), the operator closing a session, and the audit trail of all of
//! it (JSON lines, no token anywhere).

use std::time::{Duration, Instant};

use moq_interop::auth::{now, AuthServer, Grant, TokenLab};
use moq_interop::*;

const RX: &str = "moq_relay_auth_decisions_total";

/// This relay trusting the lab's key directory, writing its audit log to `audit`.
fn relay(lab: &TokenLab, audit: &std::path::Path, extra: &[&str]) -> Relay {
    Relay::builder()
        .ops()
        .args(["--auth-key", lab.key_dir.to_str().unwrap(), "--audit-log", audit.to_str().unwrap()])
        .args(extra.iter().copied())
        .start()
}

fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

fn url(relay: &Relay, path: &str, token: &str) -> String {
    format!("http://localhost:{}/{path}?jwt={token}", relay.port)
}

/// A client opening sessions in a loop from [::1] is refused past its share, while a viewer on
/// 127.0.0.1 receives every frame of every group.
#[test]
fn a_client_opening_sessions_in_a_loop_is_refused_while_a_viewer_keeps_every_frame() {
    let _serial = serial();
    let lab = TokenLab::new();
    let audit = lab.dir.join("audit.jsonl");
    let mut relay = relay(
        &lab,
        &audit,
        &["--auth-public", "demo/**", "--limit-sessions-per-address", "8", "--limit-session-rate-per-address", "4"],
    );
    let port = relay.port;
    let viewer = Viewer::new(&format!("http://127.0.0.1:{port}/"), "demo/steady").summary().groups(6).background();
    std::thread::sleep(Duration::from_millis(500));
    let publisher = Publisher::new(&format!("http://127.0.0.1:{port}/"), "demo/steady").groups(6).spawn();

    // The abuser: processes of 30 sessions each from [::1], one after another, for ~5 s.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let abuser = Viewer::new(&format!("https://[::1]:{port}/"), "demo/steady")
            .viewers(30)
            .args(["--tls-insecure"])
            .background();
        std::thread::sleep(Duration::from_millis(700));
        drop(abuser);
        rounds += 1;
    }
    let summary = watch_summary(&viewer.finish_in_time(Duration::from_secs(40)));
    drop(publisher);
    let scrape = relay.scrape();
    let per_address = scrape.total("moq_relay_limit_hits_total", &[("limit", "sessions_per_address")]);
    let rate = scrape.total("moq_relay_limit_hits_total", &[("limit", "session_rate_per_address")]);
    let accepted = scrape.total("moq_relay_sessions_total", &[("result", "accepted")]);
    let refused = scrape.total("moq_relay_sessions_total", &[("result", "rejected"), ("reason", "limit")]);
    eprintln!(
        "LIMITS abuser_rounds={rounds} sessions_accepted={accepted} refused_by_limit={refused} \
         (per_address={per_address} rate={rate}) steady_viewer: video_frames={} audio_frames={} gaps={} corrupt={}",
        summary["tracks"]["video"]["frames_min_per_viewer"],
        summary["tracks"]["audio"]["frames_min_per_viewer"],
        summary["tracks"]["video"]["gaps"],
        summary["tracks"]["video"]["corrupt"],
    );
    assert_eq!(summary["ok"], true, "{summary:#}");
    for (track, frames) in [("video", 6 * 30), ("audio", 6 * 50)] {
        assert_eq!(summary["tracks"][track]["frames_min_per_viewer"], frames, "{summary:#}");
        assert_eq!(summary["tracks"][track]["gaps"], 0, "{summary:#}");
        assert_eq!(summary["tracks"][track]["corrupt"], 0, "{summary:#}");
    }
    assert!(refused >= 30.0, "the flood was refused: {refused} refusals");
    assert!(per_address + rate >= refused, "every refusal is a counted limit hit");
    assert!(scrape.total(RX, &[("result", "rejected"), ("reason", "limit")]) >= refused);
    let logs = relay.drain().join("\n");
    let limit_lines = logs.lines().filter(|l| l.contains("limit reached")).count();
    assert!(limit_lines >= 1 && (limit_lines as f64) < refused, "limit lines are thinned: {limit_lines}");
    let lines = audit_lines(&audit);
    let hits = lines.iter().filter(|l| l["event.name"] == "moq.auth.limit").count();
    assert!(hits as f64 >= refused, "every limit hit is audited: {hits} of {refused}");
}

/// A session whose token expires is closed then, with one log line, a counter and an audit line.
#[test]
fn a_session_ends_when_its_token_expires() {
    let _serial = serial();
    let lab = TokenLab::new();
    let audit = lab.dir.join("audit.jsonl");
    let mut relay = relay(&lab, &audit, &[]);
    let admin = lab.sign(&lab.k1, &Grant::new("").publish(["**"]).subscribe(["**"]));
    let short = lab.sign(&lab.k1, &Grant::new("demo").subscribe(["**"]).expires(now() + 4));
    let publisher = Publisher::new(&url(&relay, "", &admin), "demo/clock").spawn();
    let started = Instant::now();
    let viewer = Viewer::new(&url(&relay, "demo", &short), "clock").summary().background();
    let out = viewer.finish_in_time(Duration::from_secs(20));
    let lasted = started.elapsed();
    drop(publisher);
    assert!(lasted >= Duration::from_secs(2) && lasted < Duration::from_secs(12), "the viewer lasted {lasted:?}");
    let summary = watch_summary(&out);
    assert!(summary["tracks"]["video"]["frames_min_per_viewer"].as_u64().unwrap_or(0) > 0, "it watched: {summary:#}");
    let logs = relay.drain().join("\n");
    let ended: Vec<&str> = logs.lines().filter(|l| l.contains("its access right ended")).collect();
    assert_eq!(ended.len(), 1, "one line for the close: {logs}");
    assert!(ended[0].contains("expired"), "{}", ended[0]);
    assert_eq!(relay.scrape().total(RX, &[("result", "rejected"), ("reason", "expired")]), 1.0);
    let lines = audit_lines(&audit);
    let revoked: Vec<_> = lines.iter().filter(|l| l["event.name"] == "moq.auth.session_ended").collect();
    assert_eq!(revoked.len(), 1, "{lines:#?}");
    assert_eq!(revoked[0]["reason"], "expired");
    for token in [&admin, &short] {
        assert!(!logs.contains(token.as_str()) && !std::fs::read_to_string(&audit).unwrap().contains(token.as_str()));
    }
}

/// In-process client sessions, to ask for several things on one session.
mod client {
    use super::*;
    use moq_lite::model::{Origin, Scope, TrackConsumer};
    use moq_lite::session::{Session, SessionConfig};
    use moq_lite::transport::{Client, ClientConfig, ClientTls};

    pub async fn session(url: &str) -> Session {
        let tls = ClientTls { insecure: true, ..Default::default() };
        let client = Client::new(ClientConfig { tls, ..Default::default() }).unwrap();
        let connected = client.connect(&url.parse().unwrap()).await.unwrap();
        Box::leak(Box::new(client));
        let inbox = Scope::everything(Origin::new(), "");
        let session = Session::new(
            connected.conn,
            connected.version,
            SessionConfig { subscribe: Some(inbox), ..Default::default() },
        );
        let run = session.clone();
        tokio::spawn(async move { run.run().await });
        session
    }

    /// The first group of `track`, or the error the subscription ended with.
    pub async fn first_group(session: &Session, broadcast: &str, track: &str) -> Result<u64, moq_lite::Error> {
        let mut track: TrackConsumer = session.subscribe_broadcast(broadcast).subscribe_track(track)?;
        match tokio::time::timeout(Duration::from_secs(8), track.next_group()).await {
            Ok(Ok(Some(group))) => Ok(group.sequence()),
            Ok(Ok(None)) => Err(moq_lite::Error::Cancel),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(moq_lite::Error::Closed("timed out".into())),
        }
    }
}

/// A token for `demo/a` only: subscribing to `demo/b` is refused on that stream (unauthorized),
/// and the same session then receives `demo/a`.
#[test]
fn a_request_outside_the_grant_is_refused_on_its_stream_and_the_session_goes_on() {
    let _serial = serial();
    let lab = TokenLab::new();
    let audit = lab.dir.join("audit.jsonl");
    let mut relay = relay(&lab, &audit, &[]);
    let admin = lab.sign(&lab.k1, &Grant::new("").publish(["**"]).subscribe(["**"]));
    let only_a = lab.sign(&lab.k1, &Grant::new("demo").subscribe(["a"]));
    let _a = Publisher::new(&url(&relay, "", &admin), "demo/a").spawn();
    let _b = Publisher::new(&url(&relay, "", &admin), "demo/b").spawn();
    std::thread::sleep(Duration::from_millis(1000));
    let viewer_url = url(&relay, "", &only_a);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (denied, allowed) = rt.block_on(async {
        let session = client::session(&viewer_url).await;
        let denied = client::first_group(&session, "demo/b", "video").await;
        let allowed = client::first_group(&session, "demo/a", "video").await;
        (denied, allowed)
    });
    assert!(
        matches!(denied, Err(moq_lite::Error::RemoteReset(code)) if code == moq_lite::code::UNAUTHORIZED),
        "{denied:?}"
    );
    assert!(allowed.is_ok(), "the same session still serves what it may: {allowed:?}");
    // `GET /announced` lists what its caller may subscribe to: nothing public here, `a` for this
    // token, and a refused token is a 403 saying why.
    let listed = |query: &str| http::get(&relay.url(&format!("announced/demo{query}"))).unwrap();
    assert_eq!((listed("").status, listed("").body.as_str()), (200, ""));
    let with_token = listed(&format!("?jwt={only_a}"));
    assert_eq!((with_token.status, with_token.body.as_str()), (200, "a\n"));
    let tampered = listed(&format!("?jwt={}", moq_interop::auth::tamper(&only_a)));
    assert_eq!((tampered.status, tampered.body.as_str()), (403, "bad_signature\n"));
    // Refused requests are counted per stream (a lite-05+ client asks TRACK and SUBSCRIBE).
    let path_denied = relay.scrape().total(RX, &[("result", "rejected"), ("reason", "path_denied")]);
    assert!((1.0..=2.0).contains(&path_denied), "{path_denied}");
    let logs = relay.drain().join("\n");
    assert!(logs.contains("outside the session's grant") && logs.contains("demo/b"), "{logs}");
    let lines = audit_lines(&audit);
    let denied: Vec<_> = lines.iter().filter(|l| l["reason"] == "path_denied").collect();
    assert_eq!(denied.len() as f64, path_denied, "{lines:#?}");
    for line in denied {
        assert_eq!((line["moq.role"].as_str(), line["moq.broadcast"].as_str()), (Some("subscribe"), Some("demo/b")));
    }
}

/// `--auth-url` to the reference `moq auth serve`: a token session and a public one admitted, an
/// anonymous publisher outside the public rules refused with the server's reason; with the server
/// gone, new sessions are refused as `auth_server_unavailable` (and the alert's counter moves).
#[test]
fn the_relay_asks_a_reference_auth_server() {
    let _serial = serial();
    let lab = TokenLab::new();
    let server = AuthServer::start(&lab.key_dir, &[], &["anon/**"]);
    let audit = lab.dir.join("audit.jsonl");
    let mut relay = Relay::builder()
        .ops()
        .args(["--auth-url", &server.url(), "--auth-timeout", "2s", "--audit-log", audit.to_str().unwrap()])
        .start();
    let publish = lab.sign(&lab.k1, &Grant::new("anon").publish(["**"]));
    let publisher = Publisher::new(&url(&relay, "anon", &publish), "cam").spawn();
    let viewer = Viewer::new(&format!("http://localhost:{}/anon", relay.port), "cam").summary().groups(2);
    let summary = watch_summary(&viewer.run(Duration::from_secs(30)));
    assert_eq!(summary["ok"], true, "an anonymous viewer of anon/** through the auth server: {summary:#}");
    // Enough groups to outlast its connection retries, which then fail it.
    let refused = Publisher::new(&format!("http://localhost:{}/other", relay.port), "x").groups(30);
    let out = refused.run(Duration::from_secs(20));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("403"), "the refusal reaches the client as a 403: {said}");
    assert!(!out.status.success(), "an anonymous publisher outside the public rules is refused");
    drop(publisher);
    let scrape = relay.scrape();
    assert!(scrape.total("moq_relay_auth_server_requests_total", &[("event", "connect"), ("outcome", "ok")]) >= 2.0);
    assert!(
        scrape.total("moq_relay_auth_server_requests_total", &[("event", "connect"), ("outcome", "denied")]) >= 1.0
    );
    assert!(scrape.total(RX, &[("result", "accepted"), ("reason", "auth_server")]) >= 2.0);

    drop(server);
    let out =
        Viewer::new(&format!("http://localhost:{}/anon", relay.port), "cam").groups(1).run(Duration::from_secs(20));
    assert!(!out.status.success(), "no auth server, no session");
    let scrape = relay.scrape();
    assert!(scrape.total("moq_relay_auth_server_requests_total", &[("outcome", "unavailable")]) >= 1.0);
    assert!(scrape.total(RX, &[("result", "rejected"), ("reason", "auth_server_unavailable")]) >= 1.0);
    let logs = relay.drain().join("\n");
    assert!(logs.contains("auth server unavailable"), "{logs}");
    assert!(!logs.contains(&publish) && !std::fs::read_to_string(&audit).unwrap().contains(&publish));
    let lines = audit_lines(&audit);
    assert!(lines.iter().any(|l| l["reason"] == "auth_server_denied"), "{lines:#?}");
}

/// The operator closes a session on the ops listener; the action (and a bad-token attempt) are
/// audited.
#[test]
fn the_operator_closes_a_session_and_it_is_audited() {
    let _serial = serial();
    let lab = TokenLab::new();
    let audit = lab.dir.join("audit.jsonl");
    let mut relay = Relay::builder()
        .ops()
        .args(["--auth-public", "demo/**", "--audit-log", audit.to_str().unwrap()])
        .env("MOQ_OPS_TOKEN", "ops-secret-1234")
        .start();
    let publisher = Publisher::new(&format!("http://localhost:{}/", relay.port), "demo/kick").spawn();
    let viewer = Viewer::new(&format!("http://localhost:{}/", relay.port), "demo/kick").background();
    let id = {
        let mut id = None;
        let found = eventually(Duration::from_secs(10), || {
            id = relay
                .drain()
                .iter()
                .filter(|l| l.contains("session opened"))
                .filter_map(|l| l.split("moq.session.id=").nth(1))
                .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
                .next_back()
                .or(id);
            id.is_some()
        });
        assert!(found, "no session id in the log");
        id.unwrap()
    };
    let close = |token: &str| {
        http::Request::new("POST", &relay.ops_url(&format!("sessions/{id}/close"))).bearer(token).send().unwrap()
    };
    assert_eq!(close("wrong").status, 401);
    assert_eq!(close("ops-secret-1234").status, 200);
    // Without --groups the viewer runs until its session ends: it must be gone within 10 s.
    viewer.finish_in_time(Duration::from_secs(10));
    drop(publisher);
    let lines = audit_lines(&audit);
    let actions: Vec<_> = lines.iter().filter(|l| l["event.name"] == "moq.ops.action").collect();
    assert_eq!(actions.len(), 2, "{lines:#?}");
    assert_eq!(actions[0]["result"], "rejected");
    assert_eq!(actions[1]["result"], "accepted");
    assert!(!std::fs::read_to_string(&audit).unwrap().contains("ops-secret-1234"));
}

/// `--auth-url` with revalidation: the reference server re-checks each grant every 2 s; once the
/// viewer's key is withdrawn from its key directory the revalidation is refused and this relay
/// closes that session (revoked, one line, audited) while the publisher's session goes on.
#[test]
fn a_revalidation_that_withdraws_the_grant_closes_the_session() {
    let _serial = serial();
    let lab = TokenLab::new();
    let port = free_port();
    let mut server = Proc::spawn(
        "reference moq auth serve",
        std::process::Command::new(moq_interop::auth::reference_moq())
            .args(["auth", "serve", "--listen", &format!("127.0.0.1:{port}"), "--key-dir"])
            .arg(&lab.key_dir)
            .args(["--revalidate", "2s", "--expires", "1h"]),
    );
    let up = eventually(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "moq auth serve never listened: {:?}", server.drain());
    let audit = lab.dir.join("audit.jsonl");
    let auth_url = format!("http://127.0.0.1:{port}");
    let mut relay =
        Relay::builder().ops().args(["--auth-url", &auth_url, "--audit-log", audit.to_str().unwrap()]).start();
    let publish = lab.sign(&lab.k1, &Grant::new("demo").publish(["**"]).expires(now() + 3600));
    let watch = lab.sign(&lab.es256, &Grant::new("demo").subscribe(["**"]).expires(now() + 3600));
    let mut publisher = Publisher::new(&url(&relay, "demo", &publish), "cam").spawn();
    let viewer = Viewer::new(&url(&relay, "demo", &watch), "cam").summary().background();
    std::thread::sleep(Duration::from_millis(3000));
    std::fs::remove_file(lab.key_dir.join("e1.jwk")).unwrap();
    let removed = Instant::now();
    let out = viewer.finish_in_time(Duration::from_secs(20));
    let after = removed.elapsed();
    assert!(after < Duration::from_secs(6), "closed within a revalidation period or two: {after:?}");
    let summary = watch_summary(&out);
    assert!(summary["tracks"]["video"]["frames_min_per_viewer"].as_u64().unwrap_or(0) > 0, "it watched: {summary:#}");
    assert!(publisher.wait_exit(Duration::from_millis(200)).is_none(), "the publisher's session goes on");
    let scrape = relay.scrape();
    assert_eq!(scrape.total(RX, &[("result", "rejected"), ("reason", "revoked")]), 1.0);
    assert!(scrape.total("moq_relay_auth_server_requests_total", &[("event", "revalidate"), ("outcome", "ok")]) >= 1.0);
    assert!(
        scrape.total("moq_relay_auth_server_requests_total", &[("event", "revalidate"), ("outcome", "denied")]) >= 1.0
    );
    let logs = relay.drain().join("\n");
    let ended: Vec<&str> = logs.lines().filter(|l| l.contains("its access right ended")).collect();
    assert_eq!(ended.len(), 1, "{logs}");
    assert!(ended[0].contains("revoked"), "{}", ended[0]);
    let lines = audit_lines(&audit);
    assert!(lines.iter().any(|l| l["event.name"] == "moq.auth.revalidation" && l["result"] == "accepted"));
    assert!(lines.iter().any(|l| l["event.name"] == "moq.auth.session_ended" && l["reason"] == "revoked"));
}

/// A raw-QUIC lite-05 client that completes QUIC but never sends its SETUP (the slowloris of this
/// protocol) is cut at `--handshake-timeout`, counted and audited; a prompt client is not.
#[test]
fn a_client_that_never_sends_its_setup_is_cut_at_the_handshake_deadline() {
    use moq_lite::transport::{Client, ClientConfig, ClientTls};
    let _serial = serial();
    let lab = TokenLab::new();
    let audit = lab.dir.join("audit.jsonl");
    let relay = Relay::builder()
        .ops()
        .args(["--auth-public", "**", "--handshake-timeout", "1s", "--audit-log", audit.to_str().unwrap()])
        .start();
    let url = format!("moqt://localhost:{}/", relay.port);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lasted = rt.block_on(async {
        let tls = ClientTls { insecure: true, ..Default::default() };
        let versions = vec![moq_lite::Version::Lite05];
        let client = Client::new(ClientConfig { tls, versions, ..Default::default() }).unwrap();
        let connected = client.connect(&url.parse().unwrap()).await.unwrap();
        let started = Instant::now();
        // No session: nothing is ever sent on this connection.
        let closed = tokio::time::timeout(Duration::from_secs(8), connected.conn.closed()).await;
        assert!(closed.is_ok(), "the relay kept a silent connection open");
        started.elapsed()
    });
    assert!(lasted >= Duration::from_millis(500) && lasted < Duration::from_secs(4), "cut after {lasted:?}");
    // A prompt client is unaffected.
    let summary = {
        let _publisher = Publisher::new(&format!("http://localhost:{}/", relay.port), "demo/ok").spawn();
        watch_summary(
            &Viewer::new(&url, "demo/ok").summary().groups(1).args(["--tls-insecure"]).run(Duration::from_secs(20)),
        )
    };
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(relay.scrape().total("moq_relay_limit_hits_total", &[("limit", "handshake_timeout")]), 1.0);
    let lines = audit_lines(&audit);
    assert!(lines.iter().any(|l| l["limit"] == "handshake_timeout"), "{lines:#?}");
}
