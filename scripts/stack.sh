#!/usr/bin/env bash
# Starts or stops the observability stack of docker-compose.yml, or explains what to do without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-up}
if ! command -v docker >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
  cat >&2 <<'MSG'
just stack: Docker with the compose plugin is not available here.

  Install Docker Engine and the compose plugin (https://docs.docker.com/engine/install/), then run
  `just stack` and `just dev` in another terminal: Grafana on http://localhost:3000/.

  Without Docker you still have:
    - the relay's metrics:     just dev, then curl http://127.0.0.1:9101/metrics
    - the stack's checks:      cargo test -p moq-interop --test observability
      (promtool/amtool, alert unit tests, a live Prometheus + Alertmanager against the relay,
       and the static checks of the Grafana/Loki/Tempo/Alloy configs)
MSG
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "just stack: the Docker daemon is not reachable (is it running, and may this user use it?)" >&2
  exit 1
fi
case "$action" in
  up)
    docker compose up -d --wait
    cat <<'MSG'

  Grafana         http://localhost:3000/   (anonymous viewer; admin login admin, password from GRAFANA_ADMIN_PASSWORD (default admin))
  Prometheus      http://localhost:9090/
  Alertmanager    http://localhost:9093/   (notifications: docker compose logs -f alert-sink)
  OTLP (Alloy)    grpc localhost:4317, http localhost:4318

  Now run `just dev`: it exports to the stack and serves metrics where Prometheus scrapes them.
MSG
    ;;
  down) docker compose down ;;
  *) echo "usage: stack.sh up|down" >&2; exit 2 ;;
esac
