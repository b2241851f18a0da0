#!/usr/bin/env bash
# Runs the relay, a demo publisher and a demo viewer until Ctrl-C, then stops all of them.
set -euo pipefail
port=${1:-4443}
bin=target/debug
mkdir -p .dev
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped"
  exit 0
}
trap cleanup INT TERM EXIT

# Metrics for the observability stack (`just stack`): Prometheus runs in Docker and reaches the
# host through the Docker bridge, so with Docker present the relay's ops listener and the viewer's
# metrics endpoint bind every interface (development only: unauthenticated, no secrets in them).
if command -v docker >/dev/null 2>&1; then metrics_host=0.0.0.0; else metrics_host=127.0.0.1; fi
telemetry=()
# With the stack up, Alloy takes OTLP on 4317: export traces, logs and client metrics there.
if (exec 3<>/dev/tcp/127.0.0.1/4317) 2>/dev/null; then
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_METRIC_EXPORT_INTERVAL=10000
  telemetry=(--otlp-endpoint "$OTEL_EXPORTER_OTLP_ENDPOINT")
fi

# Both loopbacks: browsers resolve localhost to ::1 only.
"$bin/moq-relay" --listen "127.0.0.1:$port" --listen "[::1]:$port" \
  --tls-generate localhost,127.0.0.1,::1 --drain-timeout 2s \
  --auth-public 'demo/**' --netplay \
  --ops-listen "$metrics_host:9101" "${telemetry[@]}" 2>&1 | sed -u 's/^/[relay] /' &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

"$bin/moq" publish --url "http://localhost:$port/" --broadcast demo/bbb --renditions 3 2>&1 | sed -u 's/^/[publish] /' &
pids+=($!)
sleep 1
"$bin/moq" watch --url "http://localhost:$port/" --broadcast demo/bbb --stats-interval 2s \
  --metrics-listen "$metrics_host:9102" 2>&1 | sed -u 's/^/[watch] /' &
pids+=($!)

cat <<INFO

  relay (QUIC + WebTransport, UDP)  https://localhost:$port/   moqt://localhost:$port/
  certificate fingerprint           http://localhost:$port/certificate.sha256
  health                            http://localhost:$port/health
  announced broadcasts              http://localhost:$port/announced
  demo broadcast                    demo/bbb  (moq watch --url http://localhost:$port/ --broadcast demo/bbb)
  relay metrics                     http://127.0.0.1:9101/metrics
  viewer metrics                    http://127.0.0.1:9102/metrics
  OTLP export                       ${OTEL_EXPORTER_OTLP_ENDPOINT:-off (start the stack first: just stack)}
  dashboards (with just stack)      http://localhost:3000/  (Grafana; alerts http://localhost:9093/)

  Ctrl-C stops everything.

INFO
wait
