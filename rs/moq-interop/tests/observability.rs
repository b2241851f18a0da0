//! The observability stack, proven rather than assumed: the shipped rules, Alertmanager config,
//! compose files and dashboards pass promtool/amtool and the static checks, and a real Prometheus
//! and Alertmanager on loopback scrape the real relay and `moq` clients: every dashboard
//! expression returns data, and alerts reach the shipped alert sink through Alertmanager when a
//! publisher stops (and resolve when it comes back), when a viewer is throttled, and when the
//! relay goes down.
//!
//! Grafana, Loki, Tempo and Alloy cannot run here (no registry ships them): their configs are
//! checked statically by scripts/check_stack.py only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moq_interop::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs a checker from the repository root; it must exit 0. Returns its stdout.
fn check(name: &str, program: &str, args: &[&str]) -> String {
    let out = run(name, Command::new(program).args(args).current_dir(repo()), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let out = check("promtool check rules", "promtool", &["check", "rules", "observability/prometheus-alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = check("promtool test rules", "promtool", &["test", "rules", "observability/prometheus-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // The netplay outage alert's 7-day baseline, from eight days of counters (~30 s).
    let history = "observability/prometheus-alerts.netplay-history.test.yml";
    let out = check("promtool test rules (netplay history)", "promtool", &["test", "rules", history]);
    assert!(out.contains("SUCCESS"), "{out}");
    // PeerDown and BroadcastUnreachable (docs/CLUSTER.md).
    let cluster = "observability/prometheus-alerts.cluster.test.yml";
    let out = check("promtool test rules (cluster)", "promtool", &["test", "rules", cluster]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out =
        check("promtool check config", "promtool", &["check", "config", "observability/prometheus/prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = check("amtool check-config", "amtool", &["check-config", "observability/alertmanager/alertmanager.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn stack_configs_and_dashboards_pass_static_checks() {
    let stack = check("check_stack.py", "python3", &["scripts/check_stack.py", "--quiet"]);
    assert!(last_line(&stack).ends_with(", 0 failed"), "{stack}");
    let dashboards = dashboards();
    let mut args = vec!["scripts/check_dashboards.py"];
    args.extend(dashboards.iter().map(String::as_str));
    let out = check("check_dashboards.py (static)", "python3", &args);
    assert!(last_line(&out).ends_with(" 0 failed"), "{out}");
    eprintln!("static: {} / {}", last_line(&stack), last_line(&out));
}

fn dashboards() -> Vec<String> {
    let dir = repo().join("observability/grafana/dashboards");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    files
}

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("moq-{tag}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shipped rules with every `for:` shortened to `for`: the expressions are what ships, only
/// the waiting is compressed so the test takes seconds, not minutes.
fn rules_with_short_for(shipped: &Path, hold: &str) -> String {
    let text = std::fs::read_to_string(shipped).unwrap();
    let mut rewritten = 0;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for:") {
                rewritten += 1;
                format!("{}for: {hold}", &line[..line.len() - trimmed.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(rewritten >= 12, "expected a for: per alert, found {rewritten}");
    out.join("\n")
}

/// The shipped Alertmanager config, pointed at the loopback sink and with timers in seconds.
fn alertmanager_config(shipped: &Path, sink: u16) -> String {
    let text = std::fs::read_to_string(shipped).unwrap();
    assert!(text.contains("http://alert-sink:8080/"), "{text}");
    text.replace("http://alert-sink:8080/", &format!("http://127.0.0.1:{sink}/"))
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("group_wait:") {
                format!("{indent}group_wait: 1s")
            } else if trimmed.starts_with("group_interval:") {
                format!("{indent}group_interval: 2s")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The relay's gauges of announced broadcasts, sessions and subscriptions, for failure messages.
fn live_state(relay: &Relay) -> String {
    let scrape = Scrape::parse(&http::text(&relay.ops_url("metrics")));
    let prefixes = ["moq_relay_active_", "moq_relay_session_closes_total", "moq_relay_queued_"];
    let live = scrape.samples.iter().filter(|s| prefixes.iter().any(|p| s.name.starts_with(p)));
    live.map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Notifications the sink received: (receiver path, status, alertname, labels).
fn notifications(sink: u16) -> Vec<(String, String, String, serde_json::Value)> {
    let body = http::text(&format!("http://127.0.0.1:{sink}/"));
    let payloads: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    let mut out = Vec::new();
    for p in payloads {
        let receiver = p["receiver"].as_str().unwrap_or_default().to_string();
        for a in p["alerts"].as_array().into_iter().flatten() {
            out.push((
                receiver.clone(),
                a["status"].as_str().unwrap_or_default().to_string(),
                a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                a["labels"].clone(),
            ));
        }
    }
    out
}

fn received(sink: u16, receiver: &str, status: &str, alert: &str) -> bool {
    notifications(sink).iter().any(|(r, s, a, _)| r == receiver && s == status && a == alert)
}

/// Alerts Prometheus holds in the firing state right now.
fn firing(prom: u16) -> Vec<String> {
    let body = http::text(&format!("http://127.0.0.1:{prom}/api/v1/alerts"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn live_prometheus_and_alertmanager_see_the_relay_and_deliver_alerts() {
    let _serial = serial();
    let scratch = Scratch::new("obs");
    let root = repo();

    // The relay and clients: a 3-rendition ladder watched by one viewer, and a 1 Mbit/s stream
    // watched by a viewer throttled to 400 kbit/s (it falls further behind every second).
    // Netplay on (its gauges exist only then), sweeping every second so the cleanup alert's
    // "sweeps stopped" cause (held 3 s here) never sees a pause; one room created so its
    // histograms have data.
    let mut relay =
        Relay::builder().ops().args(["--metrics-linger", "20s", "--netplay", "--netplay-sweep-interval", "1s"]).start();
    let ops = relay.ops.unwrap();
    let created = http::Request::new("POST", &relay.url("api/netplay/sessions"))
        .json(&serde_json::json!({ "ttlMinutes": 30, "romId": "obs" }))
        .send()
        .unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    let url = relay.url("demo");
    let mut cam = Publisher::new(&url, "cam").args(["--renditions", "3", "--video-bitrate", "1600000"]).spawn();
    let mut slow = Publisher::new(&url, "slow").args(["--video-bitrate", "1000000"]).spawn();
    let (m1, m2) = (free_port(), free_port());
    // Viewers that keep watching (up to 10 minutes) and serve their player metrics.
    let watching = |broadcast: &str, metrics: u16| {
        Viewer::new(&url, broadcast)
            .stats_interval("0s")
            .args(["--timeout", "60s", "--duration", "600s"])
            .metrics_listen(metrics)
    };
    let _viewer = watching("cam", m1).spawn();
    let _throttled = watching("slow", m2).args(["--throttle-kbps", "400"]).spawn();

    // The shipped webhook receiver, Alertmanager and Prometheus.
    let sink = free_port();
    let _sink = Proc::spawn(
        "alert sink",
        Command::new("python3")
            .arg(root.join("observability/alert-sink/sink.py"))
            .args(["--listen", &format!("127.0.0.1:{sink}"), "--out"])
            .arg(scratch.path("alerts.jsonl")),
    );
    let am = free_port();
    std::fs::write(
        scratch.path("alertmanager.yml"),
        alertmanager_config(&root.join("observability/alertmanager/alertmanager.yml"), sink),
    )
    .unwrap();
    let _alertmanager = Proc::spawn(
        "alertmanager",
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", scratch.path("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", scratch.path("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am}"))
            .arg("--cluster.listen-address="),
    );
    std::fs::write(
        scratch.path("alerts.yml"),
        rules_with_short_for(&root.join("observability/prometheus-alerts.yml"), "3s"),
    )
    .unwrap();
    let prom = free_port();
    // Same jobs as observability/prometheus/prometheus.yml, on loopback and at 1 s intervals.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules}]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am}']\n\
         scrape_configs:\n  - job_name: moq-relay\n    metrics_path: /metrics\n    static_configs:\n\
         \x20     - targets: ['127.0.0.1:{ops}']\n  - job_name: moq-client\n    metrics_path: /metrics\n\
         \x20   static_configs:\n      - targets: ['127.0.0.1:{m1}', '127.0.0.1:{m2}']\n",
        rules = scratch.path("alerts.yml").display(),
    );
    std::fs::write(scratch.path("prometheus.yml"), config).unwrap();
    let out = check(
        "promtool check config",
        "promtool",
        &["check", "config", scratch.path("prometheus.yml").to_str().unwrap()],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", scratch.path("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", scratch.path("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .arg("--rules.alert.resend-delay=1s"),
    );
    assert!(
        eventually(Duration::from_secs(30), || http::text(&format!("http://127.0.0.1:{prom}/-/ready"))
            .contains("Ready")),
        "prometheus not ready"
    );

    // Every target up, then enough samples for rates over a minute.
    let targets_up = || {
        let body = http::text(&format!("http://127.0.0.1:{prom}/api/v1/targets"));
        body.matches("\"health\":\"up\"").count() == 3
    };
    assert!(
        eventually(Duration::from_secs(30), targets_up),
        "{}",
        http::text(&format!("http://127.0.0.1:{prom}/api/v1/targets"))
    );
    std::thread::sleep(Duration::from_secs(20));

    // 1. Every PromQL expression of every dashboard returns data from the live scrape.
    let prom_url = format!("http://127.0.0.1:{prom}");
    // The catalogs as the binaries list them: a query naming a metric none defines fails.
    let relay_catalog = scratch.path("relay-metrics.json");
    let client_catalog = scratch.path("client-metrics.json");
    for (program, args, path) in
        [("moq-relay", &["--list-metrics"][..], &relay_catalog), ("moq", &["metrics"][..], &client_catalog)]
    {
        let out = run(program, Command::new(bin(program)).args(args), Duration::from_secs(20));
        assert!(out.status.success(), "{program} {args:?}");
        std::fs::write(path, &out.stdout).unwrap();
    }
    let (relay_catalog, client_catalog) = (relay_catalog.display().to_string(), client_catalog.display().to_string());
    let mut args = vec!["scripts/check_dashboards.py", "--prom", &prom_url, "--require-data", "--known-metrics"];
    args.extend(["--catalog", relay_catalog.as_str(), "--catalog", client_catalog.as_str()]);
    let files = dashboards();
    args.extend(files.iter().map(String::as_str));
    let out = check("check_dashboards.py (live)", "python3", &args);
    let summary = last_line(&out).to_string();
    assert!(summary.ends_with(" 0 failed"), "{out}");

    // 2. A throttled viewer's latency fires HighClientLatency for its broadcast, to the warning receiver.
    assert!(
        eventually(Duration::from_secs(90), || received(sink, "warning", "firing", "HighClientLatency")),
        "no HighClientLatency notification; firing: {:?}; received: {:?}",
        firing(prom),
        notifications(sink)
    );
    let latency = notifications(sink).into_iter().find(|n| n.2 == "HighClientLatency").unwrap();
    assert_eq!(latency.3["broadcast"], "demo/slow", "{latency:?}");
    assert!(!firing(prom).contains(&"NoActiveStreams".to_string()), "{:?}", firing(prom));

    // 3. Publishers stop: NoActiveStreams fires; one comes back: it resolves.
    cam.signal("INT");
    slow.signal("INT");
    // A publisher still running would keep its stream announced and the alert silent.
    assert!(cam.wait_exit(Duration::from_secs(10)).is_some(), "the cam publisher did not exit on SIGINT");
    assert!(slow.wait_exit(Duration::from_secs(10)).is_some(), "the slow publisher did not exit on SIGINT");
    assert!(
        eventually(Duration::from_secs(60), || received(sink, "warning", "firing", "NoActiveStreams")),
        "no NoActiveStreams notification; firing: {:?}; the relay's live-state series: {}",
        firing(prom),
        live_state(&relay)
    );
    let _cam_again = Publisher::new(&url, "cam").spawn();
    assert!(
        eventually(Duration::from_secs(60), || received(sink, "warning", "resolved", "NoActiveStreams")),
        "NoActiveStreams never resolved; firing: {:?}",
        firing(prom)
    );

    // 4. The relay goes down: RelayDown reaches the critical receiver.
    relay.signal("KILL");
    relay.wait_exit(Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(60), || received(sink, "critical", "firing", "RelayDown")),
        "no RelayDown notification; firing: {:?}",
        firing(prom)
    );
    let log: Vec<String> = notifications(sink).iter().map(|(r, s, a, _)| format!("{r}:{s}:{a}")).collect();
    eprintln!("dashboards: {summary}\nnotifications in order: {log:?}");
}
