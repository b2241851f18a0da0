"""Static consistency checks for the Docker observability stack, one module per component.

The command line is scripts/check_stack.py, which calls `main`.

- report: counts the checks and prints `ok` / `FAIL` lines
- util: compose interpolation, command-line flags, addresses, YAML
- compose: the compose model (mounts, ports, config files) and the checks of docker-compose.yml
- alloy_syntax: a small reader for Alloy configuration files
- prometheus, alloy, loki, tempo, alertmanager, grafana: the checks of each component's files
- cluster: relay services and the mesh between them (peer URLs, tokens, scraping)
- rules: alert rules and their runbooks
"""

import sys

# Checked before any module of the package imports yaml, so a missing PyYAML gets a hint
# instead of a traceback.
try:
    import yaml  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "check_stack.py needs PyYAML: install it with `pip install pyyaml` "
        "or `apt-get install python3-yaml`\n"
    )
    sys.exit(2)

from .cli import main  # noqa: E402

__all__ = ["main"]
