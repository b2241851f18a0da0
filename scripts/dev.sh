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

# Both loopbacks: browsers resolve localhost to ::1 only.
"$bin/moq-relay" --listen "127.0.0.1:$port" --listen "[::1]:$port" \
  --tls-generate localhost,127.0.0.1,::1 --drain-timeout 2s 2>&1 | sed -u 's/^/[relay] /' &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

"$bin/moq" publish --url "http://localhost:$port/" --broadcast demo/bbb 2>&1 | sed -u 's/^/[publish] /' &
pids+=($!)
sleep 1
"$bin/moq" watch --url "http://localhost:$port/" --broadcast demo/bbb --stats-interval 2s 2>&1 | sed -u 's/^/[watch] /' &
pids+=($!)

cat <<INFO

  relay (QUIC + WebTransport, UDP)  https://localhost:$port/   moqt://localhost:$port/
  certificate fingerprint           http://localhost:$port/certificate.sha256
  health                            http://localhost:$port/health
  announced broadcasts              http://localhost:$port/announced
  demo broadcast                    demo/bbb  (moq watch --url http://localhost:$port/ --broadcast demo/bbb)

  Ctrl-C stops everything.

INFO
wait
