//! Netplay sessions through the real binaries (docs/netplay.md): a host and two participants
//! streaming both ways until the host leaves (`hostLeft`); wrong, expired, full and brute-forced
//! codes refused with the right reasons and counters; a room ended by the cleanup sweep when its
//! TTL passes (`cleanupJob`, ~65 s: the shortest TTL is one minute) and an abandoned one by the
//! idle timer (`timeout`); every documented metric and log field; no raw join code or token in
//! any output; and the client's signaling spans continued by the relay's, in one trace.

use std::time::{Duration, Instant};

use moq_interop::netplay::{
    self, assert_documented_metrics, assert_fields, body, field, json_lines, secret_hash, with_message, Api,
    HostSession, Join, Scratch,
};
use moq_interop::*;
use serde_json::{json, Value};

const CREATED: &str = "netplay_sessions_created_total";
const JOINED: &str = "netplay_participants_joined_total";
const ENDED: &str = "netplay_sessions_ended_total";
const ACTIVE: &str = "netplay_active_sessions";
const PROVIDER: (&str, &str) = ("provider", "moq-relay");

/// The relay's JSON lines so far.
fn relay_lines(relay: &mut Relay) -> Vec<Value> {
    json_lines(relay.drain().to_vec())
}

/// Waits for the relay's JSON line `message` that satisfies `pred`.
fn wait_relay_line(relay: &mut Relay, timeout: Duration, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let line = relay.wait_line(timeout, |l| {
        l.contains(message) && serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"] == message && pred(&v))
    });
    serde_json::from_str(&line).unwrap()
}

fn str_field<'a>(line: &'a Value, name: &str) -> &'a str {
    field(line, name).and_then(Value::as_str).unwrap_or_else(|| panic!("{name} is not a string in {line}"))
}

fn num_field(line: &Value, name: &str) -> f64 {
    field(line, name).and_then(Value::as_f64).unwrap_or_else(|| panic!("{name} is not a number in {line}"))
}

/// A scrape of a client's `--metrics-listen`, once it answers.
fn client_scrape(port: u16) -> Scrape {
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert!(
        eventually(Duration::from_secs(10), || http::get(&url).is_ok_and(|r| r.is_success())),
        "{url} never answered"
    );
    Scrape::fetch(&url)
}

/// No output of the run shows the raw join code (in its display or compact form, any case) or a
/// token (the ones given, or anything JWT-shaped: `eyJ`), except `allowed` lines.
fn assert_no_secrets(outputs: &[(String, String)], code: &str, tokens: &[&str], allowed: &[&str]) {
    let compact = code.replace('-', "");
    for (name, text) in outputs {
        for line in text.lines().filter(|l| !allowed.contains(l)) {
            let upper = line.to_ascii_uppercase();
            assert!(!upper.contains(code) && !upper.contains(&compact), "the raw join code in {name}: {line}");
            assert!(!line.contains("eyJ"), "a JWT in {name}: {line}");
            for token in tokens {
                assert!(!line.contains(token), "a token in {name}: {line}");
            }
        }
    }
}

/// The relay's lines about room `id` (or about no room: sweeps, refusals of unknown codes), as
/// `time level message {fields}` for the record.
fn lifecycle(lines: &[Value], id: &str) -> String {
    lines
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("netplay")))
        .filter(|l| field(l, "sessionId").is_none_or(|s| s == id))
        .map(|l| {
            let mut fields = l["fields"].clone();
            if let Some(f) = fields.as_object_mut() {
                // The span's copies of the same facts.
                f.retain(|k, _| !k.starts_with("netplay.") && !k.starts_with("http.") && k != "url.full");
            }
            format!(
                "{} {:5} {} {fields}",
                l["timestamp"].as_str().unwrap_or(""),
                l["level"].as_str().unwrap_or(""),
                l["message"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Scenario 1: a host and two participants; frames flow both ways (the host's stream complete and
/// intact at both participants, their input tracks through the relay to a subscriber), then the
/// host leaves: the room ends `hostLeft`, the relay closes the participants' sessions, they exit.
/// Also: every documented metric in the scrape, every documented field in the relay's and the
/// clients' lines, and no raw join code or token anywhere but the host's stdout.
#[test]
fn a_host_and_two_participants_stream_both_ways_until_the_host_leaves() {
    let _serial = serial();
    let started = Instant::now();
    let scratch = Scratch::new();
    let audit = scratch.path("audit.jsonl");
    let mut relay =
        netplay::relay().args(["--audit-log", audit.to_str().unwrap(), "--netplay-sweep-interval", "1s"]).start();
    let url = relay.url("");
    let ports: Vec<u16> = std::iter::repeat_with(free_port).take(2).collect();
    let (host_metrics, a_metrics) = (ports[0], if ports[1] == ports[0] { free_port() } else { ports[1] });

    let mut host = netplay::Host::new(&url)
        .groups(10)
        .json()
        .args(["--rom-id", "smb3", "--initiator-user-id", "alice", "--ttl-minutes", "30"])
        .args(["--video-bitrate", "500000"])
        .metrics_listen(host_metrics)
        .spawn(&scratch, "host");
    let session = HostSession::wait(&host, Duration::from_secs(20));
    let id = session.session_id.clone();
    assert_eq!(session.path, format!("netplay/{id}"));
    assert_eq!(session.json["hostBroadcast"], format!("netplay/{id}/host"));
    assert_eq!(session.json["provider"], "moq-relay");
    assert_eq!(session.json["ttlMinutes"], 30);

    let mut a = Join::new(&url, &session.code, "a").summary().metrics_listen(a_metrics).spawn(&scratch, "a");
    // Another spelling of the same code: case and the dash do not matter.
    let mut b =
        Join::new(&url, &session.code.to_ascii_lowercase().replace('-', ""), "b").summary().spawn(&scratch, "b");

    // The participants' input broadcasts reach the relay: a subscriber with a token of the room
    // (an observer joined over the API) receives both, every frame verified.
    let api = Api::of(&relay);
    let joined = api.join(&session.code, "observer");
    assert_eq!(joined.status, 200, "{joined}");
    let joined = body(&joined);
    assert_eq!(joined["participantBroadcast"], format!("netplay/{id}/p/observer"));
    let observer = joined["participantToken"].as_str().unwrap().to_string();
    let room = relay.url(&format!("{}?jwt={observer}", session.path));
    let inputs: Vec<(String, Background)> = ["p/a", "p/b"]
        .into_iter()
        .map(|p| (p.to_string(), Viewer::new(&room, p).groups(2).summary().background()))
        .collect();

    // The clients' own metrics, while they run.
    let host_scrape = client_scrape(host_metrics);
    assert_eq!(host_scrape.exact(CREATED, &[PROVIDER, ("result", "ok")]), Some(1.0), "{}", host_scrape.text);
    assert_eq!(
        host_scrape.exact("netplay_signaling_latency_ms_count", &[PROVIDER, ("operation", "create")]),
        Some(1.0)
    );
    // a serves its metrics before its join is answered.
    let joined_a = || client_scrape(a_metrics).exact(JOINED, &[("result", "accepted")]) == Some(1.0);
    assert!(eventually(Duration::from_secs(10), joined_a), "a counted its join");
    let a_scrape = client_scrape(a_metrics);
    assert_eq!(a_scrape.exact("netplay_signaling_latency_ms_count", &[PROVIDER, ("operation", "join")]), Some(1.0));

    let mut input_outputs = Vec::new();
    for (broadcast, viewer) in inputs {
        let out = viewer.finish_in_time(Duration::from_secs(30));
        let summary = watch_summary(&out);
        assert_eq!(summary["ok"], true, "{broadcast}: {summary:#}");
        let input = &summary["tracks"]["input"];
        assert!(input["groups_complete_min_per_viewer"].as_u64() >= Some(2), "{broadcast}: {summary:#}");
        assert_eq!((input["corrupt"].as_u64(), input["gaps"].as_u64()), (Some(0), Some(0)), "{broadcast}: {summary:#}");
        eprintln!(
            "input {broadcast}: {} frames in {} complete groups, 0 corrupt, 0 gaps",
            input["frames"], input["groups_complete_min_per_viewer"]
        );
        input_outputs
            .push((format!("moq watch {broadcast} stdout"), String::from_utf8_lossy(&out.stdout).into_owned()));
        input_outputs
            .push((format!("moq watch {broadcast} stderr"), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let left = api.delete(&id, &observer);
    assert_eq!(left.status, 204, "{left}");
    let relay_metrics = relay.scrape();
    for p in ["a", "b"] {
        let broadcast = format!("netplay/{id}/p/{p}");
        let frames = relay_metrics.total("moq_relay_frames_received_total", &[("broadcast", &broadcast)]);
        assert!(frames > 0.0, "the relay counted {broadcast}'s frames: {frames}");
    }

    // The host publishes its 10 groups, then leaves: the room ends.
    let status = host.exit_in_time(Duration::from_secs(40));
    assert!(status.success(), "host: {status}\n{}", host.output());
    let ended = wait_relay_line(&mut relay, Duration::from_secs(10), "netplay session ended", |l| {
        field(l, "sessionId").is_some_and(|s| s == id.as_str())
    });
    assert_fields(&ended);
    assert_eq!(str_field(&ended, "reason"), "hostLeft", "{ended}");
    assert_eq!(num_field(&ended, "activeParticipants"), 2.0, "a and b were still in it: {ended}");
    // The host's, and each participant's watch and input sessions.
    assert_eq!(num_field(&ended, "moqSessions"), 5.0, "the relay closed the room's sessions: {ended}");
    for (name, p) in [("a", &mut a), ("b", &mut b)] {
        let status = p.exit_in_time(Duration::from_secs(20));
        assert!(status.success(), "participant {name}: {status}\n{}", p.output());
        let summary = p.summary();
        // The relay closing the watch's session is how the room ends for a participant (exit 0),
        // but `moq watch`'s summary may still call it a lost session when the tracks did not end
        // within its drain: then that is its only error.
        let lost = |e: &Value| e.as_str().is_some_and(|e| e.contains("session lost") && e.contains("unauthorized"));
        assert!(
            summary["ok"] == true || summary["errors"].as_array().is_some_and(|e| !e.is_empty() && e.iter().all(lost)),
            "{name}: {summary:#}"
        );
        let video = &summary["tracks"]["video"];
        let groups = video["groups_complete_min_per_viewer"].as_u64().unwrap();
        assert!(groups >= 5, "{name} watched most of the host's 10 groups: {summary:#}");
        assert_eq!(video["frames_min_per_viewer"].as_u64(), Some(groups * 30), "whole groups: {summary:#}");
        assert_eq!((video["corrupt"].as_u64(), video["gaps"].as_u64()), (Some(0), Some(0)), "{summary:#}");
        assert_eq!((summary["tracks"]["audio"]["corrupt"].as_u64()), Some(0), "{summary:#}");
        eprintln!(
            "participant {name}: {} host video frames in {groups} complete groups, 0 corrupt, 0 gaps",
            video["frames"]
        );
    }

    // The relay's counters and gauges.
    let scrape = relay.scrape();
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "hostLeft")]), Some(1.0));
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "timeout")]), Some(0.0));
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "cleanupJob")]), Some(0.0));
    assert_eq!(scrape.exact(ACTIVE, &[PROVIDER]), Some(0.0));
    assert_eq!(scrape.exact(CREATED, &[PROVIDER, ("result", "ok")]), Some(1.0));
    assert_eq!(scrape.exact(JOINED, &[("result", "accepted")]), Some(3.0));
    assert_eq!(scrape.exact("netplay_session_duration_minutes_count", &[PROVIDER]), Some(1.0));
    assert_eq!(scrape.exact("netplay_requested_ttl_minutes_count", &[]), Some(1.0));
    assert_eq!(scrape.exact("netplay_requested_ttl_minutes_sum", &[]), Some(30.0));
    for (bound, minutes) in [("min", 5.0), ("max", 240.0), ("default", 60.0)] {
        assert_eq!(scrape.exact("netplay_ttl_limit_minutes", &[("bound", bound)]), Some(minutes));
    }
    assert!(scrape.exact("netplay_cleanup_sweeps_total", &[]) >= Some(1.0), "sweeps every second");
    assert_documented_metrics(&scrape);
    for s in scrape.samples.iter().filter(|s| s.name.starts_with("netplay_")) {
        assert!(s.label("provider").is_none_or(|p| p == "moq-relay"), "provider=\"moq-relay\": {s}");
    }

    // The relay's lines, with their documented fields.
    let lines = relay_lines(&mut relay);
    let created = with_message(&lines, "netplay session created");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_fields(created[0]);
    assert_eq!(str_field(created[0], "sessionId"), id);
    assert_eq!(str_field(created[0], "joinCode"), secret_hash(&session.code), "the code's hash");
    assert_eq!(num_field(created[0], "ttlMinutes"), 30.0);
    assert_eq!(str_field(created[0], "provider"), "moq-relay");
    assert!(num_field(created[0], "signalingLatencyMs") >= 0.0);
    let joins = with_message(&lines, "netplay participant join");
    let mut who: Vec<&str> = joins.iter().map(|l| str_field(l, "participantUserId")).collect();
    who.sort();
    assert_eq!(who, ["a", "b", "observer"]);
    for join in &joins {
        assert_fields(join);
        assert_eq!((str_field(join, "result"), str_field(join, "sessionId")), ("accepted", id.as_str()), "{join}");
        assert!(field(join, "reason").is_none(), "no reason when accepted: {join}");
    }
    let left = with_message(&lines, "netplay participant left");
    assert_eq!(left.len(), 1, "the observer left: {left:?}");
    assert_fields(left[0]);
    assert_eq!((str_field(left[0], "participantUserId"), str_field(left[0], "sessionId")), ("observer", id.as_str()));
    for line in &lines {
        assert_ne!(line["level"], "ERROR", "no error on the relay: {line}");
        // camelCase names for the netplay lines' own fields.
        if line["message"].as_str().is_some_and(|m| m.starts_with("netplay")) {
            for key in line["fields"].as_object().into_iter().flat_map(|f| f.keys()) {
                let own = !key.contains('.');
                assert!(!own || !key.contains('_'), "camelCase field names: {key} in {line}");
            }
        }
    }

    // The host's lines: the request announced before it is sent, then the creation, same trace.
    let host_lines = host.log_lines();
    let position = |message: &str| host_lines.iter().position(|l| l["message"] == message);
    let (sent, made) = (position("netplay session creation request sent"), position("netplay session created"));
    assert!(sent.is_some() && made.is_some() && sent < made, "request sent before created:\n{}", host.stderr());
    let (sent, made) = (&host_lines[sent.unwrap()], &host_lines[made.unwrap()]);
    assert_fields(sent);
    assert_fields(made);
    assert_eq!(str_field(sent, "sessionId"), id, "the pre-generated id is the session's");
    assert_eq!((str_field(sent, "romId"), str_field(sent, "initiatorUserId")), ("smb3", "alice"));
    assert_eq!(num_field(sent, "requestedTtlMinutes"), 30.0);
    assert_eq!(str_field(made, "sessionId"), id);
    assert_eq!(str_field(made, "joinCode"), str_field(created[0], "joinCode"), "client and relay show one hash");
    assert_eq!((num_field(made, "ttlMinutes"), str_field(made, "provider")), (30.0, "moq-relay"));
    assert!(num_field(made, "signalingLatencyMs") > 0.0);
    assert_eq!(made["trace_id"], created[0]["trace_id"], "the relay's handling is in the client's trace");
    for p in [&a, &b] {
        // A participant whose leave came after the room ended says so at warn (404).
        for error in p.log_lines().iter().filter(|l| l["message"] == "netplay signaling error") {
            assert_fields(error);
            assert_eq!(error["level"], "WARN", "{error}");
            assert_eq!((str_field(error, "errorCode"), num_field(error, "providerStatus")), ("unknown_session", 404.0));
        }
    }

    // Nothing shows the code but the host's stdout (its `JOIN CODE:` line and the `--json`
    // session line, both meant for the user), nothing shows a token.
    let stdout = host.stdout();
    let shown: Vec<&str> = stdout.lines().filter(|l| l.contains(&session.code)).collect();
    assert_eq!(shown.len(), 2, "the JOIN CODE line and the --json session line: {shown:?}");
    assert!(shown[0].starts_with("JOIN CODE: ") && shown[1].contains("\"joinCode\""), "{shown:?}");
    let mut outputs = vec![
        ("relay output".to_string(), relay.drain().join("\n")),
        ("audit log".to_string(), std::fs::read_to_string(&audit).unwrap_or_default()),
        ("host stdout".to_string(), stdout.clone()),
        ("host stderr".to_string(), host.stderr()),
    ];
    for (name, p) in [("a", &a), ("b", &b)] {
        outputs.push((format!("participant {name} stdout"), p.stdout()));
        outputs.push((format!("participant {name} stderr"), p.stderr()));
    }
    outputs.extend(input_outputs);
    assert!(!outputs[1].1.is_empty(), "the audit log was written");
    assert_no_secrets(&outputs, &session.code, &[&observer], &shown);

    eprintln!("=== netplay session {id}: the relay's lines ===\n{}", lifecycle(&lines, &id));
    eprintln!("=== its metrics (relay /metrics, buckets left out) ===\n{}", netplay::metrics_text(&scrape, false));
    eprintln!("scenario 1 took {:?}", started.elapsed());
}

/// Scenario 2: refusals, each with its status, reason and counter: a wrong code (404
/// `unknown_code`), a taken id (409 `duplicate`), a full room (409 `full`), a code of a room
/// that ended (410 `expired`), a bad id (400 `invalid_request`), refused creates (`invalid_ttl`,
/// `conflict`, `invalid_request`); `moq netplay join` with a wrong code exits non-zero saying
/// why; and a guesser trying random codes from one address is rate-limited after the burst.
#[test]
fn wrong_expired_full_and_brute_forced_codes_are_refused_with_reasons_and_counted() {
    let _serial = serial();
    let started = Instant::now();
    let scratch = Scratch::new();
    let mut relay = netplay::relay().args(["--netplay-max-participants", "1"]).start();
    let api = Api::of(&relay);

    // Creates: one room, three refusals.
    let id = "5b0c8f1e-3a52-4d7e-9f0a-2c4b6d8e1f30";
    let made = api.create(&json!({"sessionId": id, "ttlMinutes": 10, "romId": "smb3", "initiatorUserId": "alice"}));
    assert_eq!(made.status, 201, "{made}");
    let made = body(&made);
    assert_eq!((made["sessionId"].as_str(), made["ttlMinutes"].as_u64()), (Some(id), Some(10)));
    let (code, host_token) =
        (made["joinCode"].as_str().unwrap().to_string(), made["hostToken"].as_str().unwrap().to_string());
    for (request, status, error) in [
        (json!({"ttlMinutes": 999}), 400, "invalid_ttl"),
        (json!({"sessionId": id}), 409, "conflict"),
        (json!({"romId": "no spaces allowed"}), 400, "invalid_request"),
    ] {
        let refused = api.create(&request);
        assert_eq!((refused.status, body(&refused)["error"].as_str()), (status, Some(error)), "{request}: {refused}");
    }

    // Joins from 127.0.0.1 (five: the burst).
    let wrong = netplay::random_code();
    let expect_join = |code: &str, participant: &str, status: u16, reason: &str| {
        let reply = api.join(code, participant);
        let answer = body(&reply);
        assert_eq!(reply.status, status, "{participant}: {reply}");
        match reason {
            "accepted" => assert_eq!(answer["accepted"], true, "{reply}"),
            reason => {
                assert_eq!((answer["accepted"].as_bool(), answer["reason"].as_str()), (Some(false), Some(reason)))
            }
        }
        answer
    };
    expect_join(&wrong, "bob", 404, "unknown_code");
    let bob = expect_join(&code, "bob", 200, "accepted");
    expect_join(&code, "bob", 409, "duplicate");
    expect_join(&code, "carol", 409, "full");
    // The host ends the room: its code is now `expired`.
    let ended = api.delete(id, &host_token);
    assert_eq!(ended.status, 204, "{ended}");
    expect_join(&code, "carol", 410, "expired");

    // From [::1], another address: the CLI with a wrong code, a bad participant id, then a guesser.
    let v6 = Api::v6(&relay);
    let guess = netplay::random_code();
    let mut cli = Join::new(&format!("http://[::1]:{}/", relay.port), &guess, "dave")
        .summary()
        .args(["--signaling-retries", "0"])
        .spawn(&scratch, "refused");
    let status = cli.exit_in_time(Duration::from_secs(20));
    assert_eq!(status.code(), Some(6), "refused for good: exit 6\n{}", cli.output());
    assert!(cli.stderr().contains("join refused: unknown_code (HTTP 404)"), "it says why:\n{}", cli.stderr());
    let errors: Vec<Value> =
        cli.log_lines().into_iter().filter(|l| l["message"] == "netplay signaling error").collect();
    assert_eq!(errors.len(), 1, "{}", cli.stderr());
    assert_fields(&errors[0]);
    assert_eq!(
        (
            str_field(&errors[0], "errorCode"),
            num_field(&errors[0], "providerStatus"),
            num_field(&errors[0], "retryCount")
        ),
        ("unknown_code", 404.0, 0.0)
    );
    assert_eq!(errors[0]["level"], "WARN", "a refusal is not retried: warn, not error");
    let invalid = v6.join(&netplay::random_code(), "host");
    assert_eq!((invalid.status, body(&invalid)["reason"].as_str()), (400, Some("invalid_request")), "{invalid}");

    let guessed = Instant::now();
    let statuses: Vec<u16> = (0..20)
        .map(|i| {
            let reply = v6.join(&netplay::random_code(), &format!("guesser{i}"));
            let reason = body(&reply)["reason"].as_str().unwrap_or("").to_string();
            match reply.status {
                404 => assert_eq!(reason, "unknown_code"),
                429 => assert_eq!(reason, "rate_limited"),
                other => panic!("a random code answered {other}: {reply}"),
            }
            reply.status
        })
        .collect();
    let guessing = guessed.elapsed();
    let unknown = statuses.iter().filter(|s| **s == 404).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let first_limited = statuses.iter().position(|s| *s == 429);
    eprintln!(
        "brute force: 20 random codes in {guessing:?}: {unknown} unknown_code, {limited} rate_limited: {statuses:?}"
    );
    // Five a burst, and this address already spent two (the CLI, the bad id); one a second after.
    assert!(
        first_limited.is_some_and(|i| i <= 3 + guessing.as_secs() as usize),
        "rate-limited after the burst: {statuses:?}"
    );
    assert!(limited >= 15, "{statuses:?}");

    // The counters match what was sent.
    let scrape = relay.scrape();
    for (result, count) in [
        ("accepted", 1),
        ("unknown_code", 2 + unknown),
        ("duplicate", 1),
        ("full", 1),
        ("expired", 1),
        ("invalid_request", 1),
        ("rate_limited", limited),
        ("error", 0),
    ] {
        assert_eq!(scrape.exact(JOINED, &[("result", result)]), Some(count as f64), "{JOINED}{{result={result}}}");
    }
    for (result, count) in
        [("ok", 1.0), ("invalid_ttl", 1.0), ("conflict", 1.0), ("invalid_request", 1.0), ("rate_limited", 0.0)]
    {
        assert_eq!(scrape.exact(CREATED, &[PROVIDER, ("result", result)]), Some(count), "{CREATED}{{result={result}}}");
    }
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "hostLeft")]), Some(1.0));
    assert_eq!(scrape.exact(ACTIVE, &[PROVIDER]), Some(0.0));
    // TTLs asked for, valid or not: 10, 999 and the default (60) of the two that named none
    // (the conflicting one and the bad romId one).
    assert_eq!(scrape.exact("netplay_requested_ttl_minutes_count", &[]).map(|c| c >= 2.0), Some(true));

    // Refusal lines, with their reasons: the first five refusals (creates and joins alike) per
    // address per minute get one, all are counted.
    let lines = relay_lines(&mut relay);
    let refusals: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"] == "netplay session creation refused"
                || (l["message"] == "netplay participant join" && field(l, "result").is_some_and(|r| r == "refused"))
        })
        .collect();
    let logged: Vec<(&str, &str)> = refusals
        .iter()
        .map(|l| match l["message"].as_str() {
            Some("netplay session creation refused") => ("create", str_field(l, "result")),
            _ => ("join", str_field(l, "reason")),
        })
        .collect();
    let reason = |status: &u16| if *status == 404 { "unknown_code" } else { "rate_limited" };
    let mut expected = vec![
        // 127.0.0.1: three refused creates, then the joins' unknown_code and duplicate; its full
        // and expired are counted only.
        ("create", "invalid_ttl"),
        ("create", "conflict"),
        ("create", "invalid_request"),
        ("join", "unknown_code"),
        ("join", "duplicate"),
        // [::1]: the CLI's guess, the bad id, the first three guesses.
        ("join", "unknown_code"),
        ("join", "invalid_request"),
    ];
    expected.extend(statuses[..3].iter().map(|s| ("join", reason(s))));
    assert_eq!(logged, expected, "refusal lines, thinned per address");
    for refusal in &refusals {
        assert_fields(refusal);
        if let Some(client) = field(refusal, "client.address") {
            assert!(client == "127.0.0.1" || client == "::1", "{refusal}");
        }
        if refusal["message"] != "netplay participant join" {
            continue;
        }
        let reason = str_field(refusal, "reason");
        if reason != "invalid_request" {
            assert!(field(refusal, "participantUserId").is_some(), "{refusal}");
        }
        if ["duplicate", "full"].contains(&reason) {
            assert_eq!(str_field(refusal, "sessionId"), id, "{refusal}");
        }
    }
    let ended = with_message(&lines, "netplay session ended");
    assert_eq!(ended.len(), 1);
    assert_fields(ended[0]);
    assert_eq!(
        (str_field(ended[0], "reason"), num_field(ended[0], "activeParticipants")),
        ("hostLeft", 1.0),
        "bob was in it"
    );

    // Neither the room's code nor the guesses are echoed; no token anywhere.
    let outputs = vec![
        ("relay output".to_string(), relay.drain().join("\n")),
        ("moq netplay join stdout".to_string(), cli.stdout()),
        ("moq netplay join stderr".to_string(), cli.stderr()),
    ];
    let bob_token = bob["participantToken"].as_str().unwrap();
    for secret in [&code, &guess, &wrong] {
        assert_no_secrets(&outputs, secret, &[&host_token, bob_token], &[]);
    }
    eprintln!("scenario 2 took {:?}", started.elapsed());
}

/// Scenario 3 (~65 s: the shortest TTL the relay takes is one minute): a room whose TTL passes
/// is ended by the cleanup sweep (`cleanupJob`) with its host's and participant's MoQ sessions;
/// meanwhile a room nobody connects to ends at the idle timeout (`timeout`).
#[test]
fn the_cleanup_sweep_ends_a_room_whose_ttl_passed_and_closes_its_sessions() {
    let _serial = serial();
    let started = Instant::now();
    let scratch = Scratch::new();
    let mut relay = netplay::relay()
        .args(["--netplay-min-ttl-minutes", "1", "--netplay-default-ttl-minutes", "1"])
        .args(["--netplay-sweep-interval", "1s", "--netplay-idle-timeout", "5s"])
        .start();
    let url = relay.url("");
    let api = Api::of(&relay);

    let mut host = netplay::Host::new(&url)
        .json()
        .args(["--video-bitrate", "200000", "--audio-bitrate", "16000"])
        .spawn(&scratch, "host");
    let session = HostSession::wait(&host, Duration::from_secs(20));
    let created = Instant::now();
    let id = session.session_id.clone();
    assert_eq!(session.json["ttlMinutes"], 1, "the default TTL");
    let mut a = Join::new(&url, &session.code, "a").summary().spawn(&scratch, "a");

    // An abandoned room: created, never connected to.
    let abandoned = body(&api.create(&json!({"ttlMinutes": 1})));
    let abandoned_id = abandoned["sessionId"].as_str().unwrap().to_string();
    let timed_out = wait_relay_line(&mut relay, Duration::from_secs(20), "netplay session ended", |l| {
        field(l, "sessionId").is_some_and(|s| s == abandoned_id.as_str())
    });
    assert_fields(&timed_out);
    assert_eq!(
        (
            str_field(&timed_out, "reason"),
            num_field(&timed_out, "activeParticipants"),
            num_field(&timed_out, "moqSessions")
        ),
        ("timeout", 0.0, 0.0)
    );

    // The TTL passes: the next sweep (every second) ends the room.
    let ended = wait_relay_line(&mut relay, Duration::from_secs(80), "netplay session ended", |l| {
        field(l, "sessionId").is_some_and(|s| s == id.as_str())
    });
    let lasted = created.elapsed();
    assert_fields(&ended);
    assert_eq!(str_field(&ended, "reason"), "cleanupJob", "{ended}");
    assert_eq!(num_field(&ended, "activeParticipants"), 1.0, "{ended}");
    // The host's publication, a's watch and a's input.
    assert_eq!(num_field(&ended, "moqSessions"), 3.0, "the relay closed the room's sessions: {ended}");
    assert!(lasted >= Duration::from_secs(59) && lasted < Duration::from_secs(65), "ended after {lasted:?}");

    // The clients see their sessions closed and stop.
    let a_status = a.exit_in_time(Duration::from_secs(20));
    assert!(a_status.success(), "the room ended, which is how a participant's watch ends: {a_status}\n{}", a.output());
    let summary = a.summary();
    assert!(summary["tracks"]["video"]["frames"].as_u64() > Some(0), "{summary:#}");
    assert_eq!(summary["tracks"]["video"]["corrupt"].as_u64(), Some(0), "{summary:#}");
    let host_status = host.exit_in_time(Duration::from_secs(30));
    eprintln!("after the sweep: participant exited {a_status}, host exited {host_status}");
    assert!(host.stderr().contains("unauthorized"), "the relay closed the host's session:\n{}", host.stderr());
    // Its code is now expired.
    let late = api.join(&session.code, "b");
    assert_eq!((late.status, body(&late)["reason"].as_str()), (410, Some("expired")), "{late}");

    let scrape = relay.scrape();
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "cleanupJob")]), Some(1.0));
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "timeout")]), Some(1.0));
    assert_eq!(scrape.exact(ENDED, &[PROVIDER, ("reason", "hostLeft")]), Some(0.0));
    assert_eq!(scrape.exact(ACTIVE, &[PROVIDER]), Some(0.0));
    assert_eq!(scrape.exact("netplay_sessions_past_ttl", &[]), Some(0.0));
    let sweeps = scrape.exact("netplay_cleanup_sweeps_total", &[]).unwrap();
    assert!(sweeps >= 55.0, "a sweep a second: {sweeps}");
    assert_eq!(scrape.exact("netplay_cleanup_duration_ms_count", &[]), Some(sweeps));
    assert!(
        eventually(Duration::from_secs(5), || relay.scrape().exact("netplay_cleanup_sweeps_total", &[]) > Some(sweeps)),
        "the sweeps go on"
    );
    assert_documented_metrics(&scrape);

    // The sweep that ended it says so at info (the others, at debug, are not printed).
    let lines = relay_lines(&mut relay);
    let sweeps: Vec<&Value> = with_message(&lines, "netplay cleanup sweep");
    assert_eq!(sweeps.len(), 1, "one sweep expired something: {sweeps:?}");
    assert_fields(sweeps[0]);
    assert_eq!(sweeps[0]["level"], "INFO");
    assert_eq!(num_field(sweeps[0], "expiredSessions"), 1.0);
    assert!(num_field(sweeps[0], "durationMs") >= 0.0);
    assert!(str_field(sweeps[0], "processedAt").ends_with('Z'), "RFC 3339: {}", sweeps[0]);
    assert!(
        !lines.iter().any(|l| l["message"] == "netplay sessions past their TTL survived the cleanup sweep"),
        "nothing survived its TTL"
    );
    let outputs = vec![
        ("relay output".to_string(), relay.drain().join("\n")),
        ("host stderr".to_string(), host.stderr()),
        ("participant stdout".to_string(), a.stdout()),
        ("participant stderr".to_string(), a.stderr()),
    ];
    assert_no_secrets(&outputs, &session.code, &[], &[]);
    eprintln!("=== netplay session {id} (TTL 1 min): the relay's lines ===\n{}", lifecycle(&lines, &id));
    eprintln!("scenario 3 took {:?}", started.elapsed());
}

/// One span as exported over OTLP.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Spans received over OTLP/HTTP (protobuf), and every exported byte; logs and metrics are
/// accepted and only kept as bytes.
#[derive(Clone, Default)]
struct Collector(std::sync::Arc<std::sync::Mutex<(Vec<Span>, Vec<u8>)>>);

impl Collector {
    fn spans(&self, service: &str, name: &str) -> Vec<Span> {
        self.0.lock().unwrap().0.iter().filter(|s| s.service == service && s.name == name).cloned().collect()
    }

    fn raw(&self) -> Vec<u8> {
        self.0.lock().unwrap().1.clone()
    }

    fn traces(&self, body: &[u8]) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use prost::Message;
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(Any::StringValue(s)) => s.clone(),
            Some(Any::IntValue(i)) => i.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut store = self.0.lock().unwrap();
        store.1.extend_from_slice(body);
        for rs in request.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service =
                resource.iter().find(|kv| kv.key == "service.name").map(|kv| text(&kv.value)).unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                store.0.push(Span {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attrs: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                });
            }
        }
    }
}

/// An OTLP/HTTP receiver on loopback: its collector and `http://ADDR`.
async fn collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (traces, others) = (collector.clone(), collector.clone());
    let keep = move |body: bytes::Bytes| {
        let others = others.clone();
        async move {
            others.0.lock().unwrap().1.extend_from_slice(&body);
            Vec::<u8>::new()
        }
    };
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| async move {
                traces.traces(&body);
                Vec::<u8>::new()
            }),
        )
        .route("/v1/logs", axum::routing::post(keep.clone()))
        .route("/v1/metrics", axum::routing::post(keep));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (collector, format!("http://{addr}"))
}

/// Scenario 6: the client's `netplay.signaling.create|join|delete` spans are continued by the
/// relay's handling spans of the same names (`traceparent`): one trace per call; the join code
/// shows only as `netplay.join_code.hash`; the sweeps have their `netplay.cleanup.run` spans; no
/// raw code or token in any exported byte.
#[test]
fn the_signaling_spans_of_client_and_relay_share_one_trace() {
    let _serial = serial();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (store, otlp) = rt.block_on(collector());
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
    ];
    let scratch = Scratch::new();
    let mut relay = netplay::relay().envs(otel).args(["--netplay-sweep-interval", "1s"]).start();
    let url = relay.url("");
    let mut host = netplay::Host::new(&url)
        .groups(4)
        .json()
        .args(["--video-bitrate", "300000"])
        .envs(otel)
        .spawn(&scratch, "host");
    let session = HostSession::wait(&host, Duration::from_secs(20));
    let mut a = Join::new(&url, &session.code, "a").summary().groups(2).envs(otel).spawn(&scratch, "a");
    assert!(a.exit_in_time(Duration::from_secs(30)).success(), "{}", a.output());
    assert!(host.exit_in_time(Duration::from_secs(30)).success(), "{}", host.output());
    relay.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "the relay flushed and stopped");

    let hash = secret_hash(&session.code);
    for (operation, calls) in [("create", 1), ("join", 1), ("delete", 2)] {
        let name = format!("netplay.signaling.{operation}");
        assert!(
            eventually(Duration::from_secs(10), || store.spans("moq-relay", &name).len() >= calls
                && store.spans("moq-netplay", &name).len() >= calls),
            "{name} spans on both sides"
        );
        let clients = store.spans("moq-netplay", &name);
        let relays = store.spans("moq-relay", &name);
        assert_eq!((clients.len(), relays.len()), (calls, calls), "{name}: {clients:#?}\n{relays:#?}");
        for client in &clients {
            let handling = relays.iter().find(|r| r.trace_id == client.trace_id).unwrap_or_else(|| {
                panic!("{name}: the relay's span in the client's trace {}: {relays:#?}", client.trace_id)
            });
            assert_eq!(handling.parent, client.span_id, "{name}: the relay's span is the client's child");
            assert_eq!(handling.attr("netplay.session.id"), Some(session.session_id.as_str()), "{handling:#?}");
            assert_eq!(client.attr("netplay.session.id"), Some(session.session_id.as_str()), "{client:#?}");
            if operation != "delete" {
                assert_eq!(client.attr("netplay.join_code.hash"), Some(hash.as_str()), "{client:#?}");
                assert_eq!(handling.attr("netplay.join_code.hash"), Some(hash.as_str()), "{handling:#?}");
            }
            eprintln!(
                "{name}: trace {} client span {} → relay span {}",
                client.trace_id, client.span_id, handling.span_id
            );
        }
    }
    let sweeps = store.spans("moq-relay", "netplay.cleanup.run");
    assert!(!sweeps.is_empty(), "a span per sweep");
    assert!(sweeps.iter().all(|s| s.attr("netplay.cleanup.expired_sessions") == Some("0")), "{sweeps:#?}");

    let raw = store.raw();
    let contains = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&session.code) && !contains(&session.code.replace('-', "")), "the raw code was exported");
    assert!(!contains("eyJ"), "a token was exported");
    let outputs = vec![
        ("relay output".to_string(), relay.drain().join("\n")),
        ("host stderr".to_string(), host.stderr()),
        ("participant stderr".to_string(), a.stderr()),
    ];
    assert_no_secrets(&outputs, &session.code, &[], &[]);
    eprintln!("scenario 6 took {:?}", started.elapsed());
}
