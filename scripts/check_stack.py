#!/usr/bin/env python3
"""Static consistency checks for the Docker observability stack (no Docker needed).

Grafana, Loki, Tempo and Alloy cannot run here, so this reads docker-compose.yml and every file it
mounts and checks that they agree with each other: images pinned, mounted files present, healthchecks
behind `service_healthy`, unique host ports, scrape targets / exporter endpoints / webhook URLs /
datasource URLs pointing at the port the target service really listens on, Alloy's pipeline wiring,
tail sampling and CORS, Loki structured metadata, Grafana datasource uids used by the dashboards,
the relay mesh of the `cluster` profile (every relay scraped, peer URLs naming a relay's QUIC port,
token and key files inside mounts, a peer able to verify the token), and a runbook for every alert.

Prints one line per check (`ok ...` or `FAIL ...`), then `N checks, M failed`; exits 1 on any failure.

    python3 scripts/check_stack.py [--root DIR] [--quiet]
"""

import os
import sys

# The checks live in the package scripts/check_stack/, next to this file; make it importable
# whatever the current directory (a package wins over this same-named script on import).
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from check_stack import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n\n")[0]))
