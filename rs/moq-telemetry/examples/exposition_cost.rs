//! Cost of the relay's metrics path in this crate's recorder and in `metrics-exporter-prometheus`
//! (which the relay used before): one scrape (render) of a relay-like set of series, and one
//! histogram sample (the per-frame, per-viewer forwarding delay).
//!
//! Run: `cargo run --release -p moq-telemetry --example exposition_cost` (part of `just bench`).
//! Prints one JSON line. Timed over many iterations on one thread; compare the two recorders
//! within one run.

use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Recorder};

const DELAY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The series a relay with `broadcasts` live broadcasts exposes (per broadcast: byte, frame and
/// group counters by track type and direction, a viewer gauge; plus fixed families and histograms).
fn populate(broadcasts: usize) {
    for name in ["bytes_sent_total", "frames_sent_total", "groups_sent_total"] {
        describe_counter!(format!("moq_relay_{name}"), "Some help text that describes the metric; labels broadcast.");
    }
    describe_gauge!("moq_relay_viewers", "Some help text that describes the metric; labels broadcast.");
    describe_gauge!("moq_relay_active_connections", "Sessions currently open.");
    describe_histogram!("moq_relay_forwarding_delay_seconds", "Forwarding delay.");
    for b in 0..broadcasts {
        let broadcast = format!("demo/broadcast-{b}");
        for track in ["video", "audio", "catalog"] {
            for direction in ["publish", "subscribe"] {
                for name in ["moq_relay_bytes_sent_total", "moq_relay_frames_sent_total", "moq_relay_groups_sent_total"]
                {
                    counter!(name, "broadcast" => broadcast.clone(), "track_type" => track, "direction" => direction)
                        .increment(123_456_789);
                }
            }
        }
        gauge!("moq_relay_viewers", "namespace" => "demo", "broadcast" => broadcast.clone()).set(42.0);
    }
    for (transport, version) in [("quic", "moq-lite-04"), ("webtransport", "moq-lite-04")] {
        gauge!("moq_relay_active_connections", "transport" => transport, "version" => version).set(17.0);
    }
    for name in ["moq_relay_forwarding_delay_seconds", "moq_relay_group_age_seconds", "moq_relay_first_group_seconds"] {
        for i in 0..1000 {
            histogram!(name).record(i as f64 * 0.0007);
        }
    }
}

/// Mean time of `f` over `iterations`.
fn time(iterations: u32, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

struct Figures {
    render: Duration,
    render_bytes: usize,
    record_ns: f64,
}

fn measure(recorder: &dyn Recorder, render: impl Fn() -> String, broadcasts: usize) -> Figures {
    metrics::with_local_recorder(recorder, || populate(broadcasts));
    let delay = metrics::with_local_recorder(recorder, || histogram!("moq_relay_forwarding_delay_seconds"));
    const SAMPLES: u32 = 1_000_000;
    let record = time(1, || {
        for i in 0..SAMPLES {
            delay.record(f64::from(i % 1000) * 0.00001);
        }
    });
    let render_bytes = render().len();
    Figures {
        render: time(200, || drop(render())),
        render_bytes,
        record_ns: record.as_secs_f64() * 1e9 / f64::from(SAMPLES),
    }
}

fn main() -> anyhow::Result<()> {
    let broadcasts = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let (ours, handle) = moq_telemetry::prometheus::Builder::new()
        .buckets(DELAY_BUCKETS)?
        .expire_idle(&["broadcast", "namespace"], Duration::from_secs(300))
        .build();
    let a = measure(&ours, || handle.render(), broadcasts);

    let theirs = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(DELAY_BUCKETS)?
        .idle_timeout(metrics_util::MetricKindMask::ALL, Some(Duration::from_secs(300)))
        .build_recorder();
    let their_handle = theirs.handle();
    // The relay ran upkeep before each render (it drains histogram buffers); count it in the scrape.
    let b = measure(
        &theirs,
        || {
            their_handle.run_upkeep();
            their_handle.render()
        },
        broadcasts,
    );

    println!(
        "{}",
        serde_json::json!({
            "broadcasts": broadcasts,
            "series": handle.series(),
            "ours": {"render_us": a.render.as_secs_f64() * 1e6, "render_bytes": a.render_bytes, "record_ns": a.record_ns},
            "metrics_exporter_prometheus": {"render_us": b.render.as_secs_f64() * 1e6, "render_bytes": b.render_bytes, "record_ns": b.record_ns},
            "render_ratio": b.render.as_secs_f64() / a.render.as_secs_f64(),
            "record_ratio": b.record_ns / a.record_ns,
        })
    );
    Ok(())
}
