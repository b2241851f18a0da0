//! The counting rules, driven in-process with a local recorder: no sockets, no exporter.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use super::*;
use crate::Error;

/// Every series as `name{k=v,...}` → value (counters and gauges; histograms as sample counts).
fn series(snapshotter: &Snapshotter) -> BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(v) => v as f64,
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Histogram(v) => v.len() as f64,
            };
            (name, value)
        })
        .collect()
}

fn recorded<T>(f: impl FnOnce() -> T) -> (T, Snapshotter, DebuggingRecorder) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = metrics::with_local_recorder(&recorder, f);
    (out, snapshotter, recorder)
}

fn limits(broadcasts: usize, linger: Duration) -> LabelLimits {
    LabelLimits { broadcasts, namespaces: 10, linger }
}

#[test]
fn a_disabled_handle_records_nothing() {
    let ((), snapshotter, _r) = recorded(|| {
        let telemetry = Telemetry::disabled();
        let labels = telemetry.broadcast_labels("room/cam");
        let egress = Egress::new(&telemetry, &labels, "video", 1);
        egress.frame_written(100, Instant::now());
        egress.group_opened(Instant::now());
        let _queued = egress.bytes_queued(10);
        Ingress::new(&telemetry, &labels, "audio").counters.frame(5);
        SubscribeAccepted { broadcast: "room/cam", track: "video", session: 1 }.emit(&telemetry);
        GroupDropped { error: &Error::Cancel, frames_left: 3 }.emit(&telemetry);
        StreamReset { sent: true, code: 0 }.emit(&telemetry);
        SessionFailed { error: &Error::Version }.emit(&telemetry);
        telemetry.refresh_gauges();
        assert!(telemetry.catalog().is_none());
        assert_eq!(telemetry.viewer_count("room/cam"), 0);
    });
    assert!(series(&snapshotter).is_empty(), "{:?}", series(&snapshotter));
}

#[test]
fn frames_count_under_the_embedders_prefix_with_bounded_labels() {
    let ((), snapshotter, _r) = recorded(|| {
        let telemetry = Telemetry::new("moq_test", LabelLimits::default());
        let labels = telemetry.broadcast_labels("room/cam");
        let egress = Egress::new(&telemetry, &labels, "Video0", 7);
        egress.frame_written(100, Instant::now());
        egress.frame_written(50, Instant::now());
        egress.counters.group();
        let ingress = Ingress::new(&telemetry, &labels, "catalog.json");
        ingress.counters.frame(9);
    });
    let s = series(&snapshotter);
    let sent = "broadcast=room/cam,direction=subscribe,track_type=video";
    assert_eq!(s[&format!("moq_test_bytes_sent_total{{{sent}}}")], 150.0);
    assert_eq!(s[&format!("moq_test_frames_sent_total{{{sent}}}")], 2.0);
    assert_eq!(s[&format!("moq_test_groups_sent_total{{{sent}}}")], 1.0);
    assert_eq!(s["moq_test_bytes_received_total{broadcast=room/cam,direction=publish,track_type=catalog}"], 9.0);
    assert_eq!(s["moq_test_forwarding_delay_seconds{}"], 2.0, "one delay sample per frame written");
    assert!(s.keys().all(|k| k.starts_with("moq_test_")), "{s:?}");
}

#[test]
fn broadcasts_past_the_cap_share_the_overflow_value_and_are_counted() {
    let ((), snapshotter, _r) = recorded(|| {
        let telemetry = Telemetry::new("t", limits(1, Duration::from_secs(60)));
        let a = telemetry.broadcast_labels("ns/a");
        let b = telemetry.broadcast_labels("ns/b");
        assert_eq!(&*a.broadcast, "ns/a");
        assert_eq!(&*b.broadcast, OVERFLOW);
        assert_eq!(&*telemetry.broadcast_labels("ns/a").broadcast, "ns/a", "a value in use is shared");
        TrackCounters::new(&telemetry, &b, "video", Direction::Subscribe, true).frame(1);
    });
    let s = series(&snapshotter);
    assert_eq!(s["t_metric_cardinality_overflow_total{label=broadcast}"], 1.0);
    assert_eq!(s["t_bytes_sent_total{broadcast=_other,direction=subscribe,track_type=video}"], 1.0);
}

#[test]
fn viewers_are_distinct_sessions_and_linger_at_zero_before_they_go() {
    let linger = Duration::from_millis(50);
    let (telemetry, snapshotter, recorder) = recorded(|| Telemetry::new("t", limits(10, linger)));
    let labels = telemetry.broadcast_labels("room/cam");
    let video = Egress::new(&telemetry, &labels, "video", 1);
    let audio = Egress::new(&telemetry, &labels, "audio", 1);
    let other = Egress::new(&telemetry, &labels, "video", 2);
    assert_eq!(telemetry.viewer_count("room/cam"), 2, "one session on two tracks is one viewer");
    let gauge = |s: &BTreeMap<String, f64>| s.get("t_active_subscribers{broadcast=room/cam,namespace=room}").copied();
    metrics::with_local_recorder(&recorder, || telemetry.refresh_gauges());
    let s = series(&snapshotter);
    assert_eq!(gauge(&s), Some(2.0));
    assert_eq!(s["t_active_subscriptions{side=downstream}"], 3.0);
    drop((video, audio, other));
    metrics::with_local_recorder(&recorder, || telemetry.refresh_gauges());
    let s = series(&snapshotter);
    assert_eq!(gauge(&s), Some(0.0), "reads 0 while it lingers");
    assert_eq!(s["t_active_subscriptions{side=downstream}"], 0.0);
    std::thread::sleep(linger * 2);
    drop(labels);
    assert!(telemetry.sweep() >= 1, "the viewer entry expired");
    assert_eq!(telemetry.viewer_count("room/cam"), 0);
}

#[test]
fn drops_resets_and_failures_are_counted_by_one_reason_set() {
    let ((), snapshotter, _r) = recorded(|| {
        let telemetry = Telemetry::new("t", LabelLimits::default());
        GroupDropped { error: &Error::Cancel, frames_left: 3 }.emit(&telemetry);
        GroupDropped { error: &Error::TooSlow, frames_left: 0 }.emit(&telemetry);
        GroupDropped { error: &Error::RemoteReset(9), frames_left: 1 }.emit(&telemetry);
        StreamReset { sent: true, code: crate::code::UNAUTHORIZED }.emit(&telemetry);
        StreamReset { sent: false, code: crate::code::OLD }.emit(&telemetry);
        SessionFailed { error: &Error::ProtocolViolation("x".into()) }.emit(&telemetry);
        SessionFailed { error: &Error::Closed("bye".into()) }.emit(&telemetry);
        SessionFailed { error: &Error::Cancel }.emit(&telemetry);
    });
    let s = series(&snapshotter);
    assert_eq!(s["t_groups_dropped_total{reason=cancel}"], 1.0);
    assert_eq!(s["t_frames_dropped_total{reason=cancel}"], 3.0);
    assert_eq!(s["t_groups_dropped_total{reason=slow_subscriber}"], 1.0);
    assert!(!s.contains_key("t_frames_dropped_total{reason=slow_subscriber}"), "no frames left, no increment");
    assert_eq!(s["t_groups_dropped_total{reason=reset}"], 1.0);
    assert_eq!(s["t_stream_resets_total{code=auth_failed,side=sent}"], 1.0);
    assert_eq!(s["t_stream_resets_total{code=expired,side=received}"], 1.0);
    assert_eq!(s["t_errors_total{error_type=protocol_violation}"], 1.0);
    assert_eq!(s.keys().filter(|k| k.starts_with("t_errors_total")).count(), 1, "normal closes are not errors");
}

#[test]
fn known_label_sets_start_at_zero() {
    let ((), snapshotter, _r) = recorded(|| {
        let telemetry = Telemetry::new("t", LabelLimits::default());
        telemetry.catalog().unwrap().zero_counters();
    });
    let s = series(&snapshotter);
    assert_eq!(s.keys().filter(|k| k.starts_with("t_stream_resets_total")).count(), 2 * CODE_NAMES.len());
    assert_eq!(s.keys().filter(|k| k.starts_with("t_errors_total")).count(), ERROR_TYPES.len());
    assert_eq!(s["t_groups_dropped_total{reason=cancel}"], 0.0);
    assert_eq!(s["t_subscribe_requests_total{reason=not_found,result=rejected}"], 0.0);
    assert!(!s.keys().any(|k| k.contains("broadcast=")), "per-broadcast series appear with their broadcast");
    assert!(s.values().all(|v| *v == 0.0));
}

#[test]
fn queued_and_cached_bytes_are_live_state() {
    let (telemetry, snapshotter, recorder) = recorded(|| Telemetry::new("t", LabelLimits::default()));
    let labels = telemetry.broadcast_labels("a/b");
    let egress = Egress::new(&telemetry, &labels, "video", 1);
    let queued = egress.bytes_queued(1000);
    let group = egress.group_queued();
    let mut track = crate::model::TrackProducer::new("video", 0);
    let mut g = track.append_group();
    g.meter_into(telemetry.cache_meter().unwrap());
    g.write_frame(bytes::Bytes::from_static(&[0; 300])).unwrap();
    metrics::with_local_recorder(&recorder, || telemetry.refresh_gauges());
    let s = series(&snapshotter);
    assert_eq!(s["t_queued_bytes{}"], 1000.0);
    assert_eq!(s["t_queued_group_streams{}"], 1.0);
    assert_eq!(s["t_cached_bytes{}"], 300.0);
    drop((queued, group, g, track));
    metrics::with_local_recorder(&recorder, || telemetry.refresh_gauges());
    let s = series(&snapshotter);
    assert_eq!((s["t_queued_bytes{}"], s["t_queued_group_streams{}"], s["t_cached_bytes{}"]), (0.0, 0.0, 0.0));
}

#[test]
fn track_types_follow_the_name_rule() {
    assert_eq!(track_type("video"), "video");
    assert_eq!(track_type("Video0"), "video");
    assert_eq!(track_type("audio/en"), "audio");
    assert_eq!(track_type("catalog.json"), "catalog");
    assert_eq!(track_type("seconds"), "data");
}
