# moq relay: `just dev` streams locally end to end, `just test` runs every test, `just bench` measures.

set shell := ["bash", "-euo", "pipefail", "-c"]

port := env_var_or_default("MOQ_PORT", "4443")

# List recipes.
default:
    @just --list

# Build everything, start the relay on port 4443 with a dev certificate, a demo publisher and a demo viewer; Ctrl-C stops all.
dev: build
    scripts/dev.sh {{port}}

# Build every binary (debug).
build:
    cargo build --workspace --bins

# Run every test: installs missing test dependencies, then lints, unit, golden, hostile-input and end-to-end/interop tests.
test: deps build
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    scripts/test-summary.sh cargo test --workspace --no-fail-fast

# Long reliability runs (docs/RELIABILITY.md), release build in target/soak: 10,000 churn cycles, bad networks and slow viewers against clean viewers' p99, overload at twice the session cap, then SOAK_MINUTES (default 30) at moderate load reporting RSS and p99 drift. Each case prints `RELIABILITY case=...` lines (also in target/soak/soak.log). Extra arguments narrow the cases (e.g. `just soak soak_churn`).
soak *filter="soak_":
    CARGO_TARGET_DIR="{{justfile_directory()}}/target/soak" cargo build --release --workspace --bins
    CARGO_TARGET_DIR="{{justfile_directory()}}/target/soak" cargo test --release --no-fail-fast -p moq-interop --tests -- --ignored --nocapture --test-threads 1 {{filter}} 2>&1 | tee target/soak/soak.log

# Install what the tests need when missing (reference moq-relay/moq-clock, apt packages).
deps:
    scripts/install-test-deps.sh

# Measure: fan-out sweep (2 Mbit/s and 250 kbit/s profiles) of this relay instrumented and not, single-threaded, the reference moq-relay and the bare-quinn floor (docs/bench.json); then instructions per frame counted by callgrind (docs/bench-instructions.json), then the cost of one scrape and one histogram sample in the relay's recorder (docs/bench-exposition.json), then WebSocket vs WebTransport and time to first frame per transport (docs/bench-transports.json), then the cluster case (docs/bench-cluster.json). Extra flags go to scripts/bench.py (e.g. --repeats 3, --sweep-250kbps 500,1000).
bench *flags:
    WITH_BENCH=1 scripts/install-test-deps.sh
    python3 scripts/bench.py {{flags}}
    python3 scripts/bench_instructions.py --no-build
    cargo run --release -q -p moq-telemetry --example exposition_cost > docs/bench-exposition.json
    python3 scripts/bench_transports.py --no-build
    python3 scripts/bench_cluster.py --no-build

# Measure the WebSocket fallback against WebTransport (CPU per frame, p99 at a 2 Mbit/s and a 250 kbit/s point) and the time to first frame of 100 joining viewers per transport, this relay vs the reference (docs/bench-transports.json).
bench-transports *flags:
    WITH_BENCH=1 scripts/install-test-deps.sh
    python3 scripts/bench_transports.py {{flags}}

# Measure the cluster (docs/CLUSTER.md): 200 viewers at 2 Mbit/s on one relay vs split over two edges fed by one origin (origin CPU and egress), and the latency one hop adds, without and with 20 ms each way on the origin-edge link (docs/bench-cluster.json). Flags go to scripts/bench_cluster.py (e.g. --viewers 100 --seconds 10).
bench-cluster *flags:
    python3 scripts/bench_cluster.py {{flags}}

# Measure only the instruction counts (valgrind/callgrind): instrumentation on vs off, single-threaded, bare-quinn floor.
bench-instructions *flags:
    WITH_BENCH=1 scripts/install-test-deps.sh
    python3 scripts/bench_instructions.py {{flags}}

# Measure: instrumentation overhead alone (relay CPU, metrics on vs off, at one load).
bench-overhead viewers="50" seconds="20" repeats="3":
    python3 scripts/bench_overhead.py --viewers {{viewers}} --seconds {{seconds}} --repeats {{repeats}}

# Fuzz every decoder of hostile input for N seconds each: the moq-lite messages (`decode`), a qmux session fed hostile peer bytes, under every WebSocket session (`qmux_session`), and the relay's access input: tokens, key files, auth-server answers, path patterns (`access`); installs cargo-fuzz when missing, builds on stable via RUSTC_BOOTSTRAP.
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd fuzz && for target in decode qmux_session access; do CARGO_TARGET_DIR="$PWD/target" RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz run "$target" -- -max_total_time={{seconds}} -print_final_stats=1; done

# Format the code.
fmt:
    cargo fmt --all

# Start the observability stack (Grafana :3000, Prometheus :9090, Alertmanager :9093, Loki, Tempo, Alloy OTLP :4317/:4318) in Docker; then `just dev`.
stack:
    scripts/stack.sh up

# Stop the observability stack (data volumes are kept).
stack-down:
    scripts/stack.sh down
