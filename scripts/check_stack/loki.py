"""Loki: the schema and limits that structured metadata (trace_id) needs."""

import json
import re

from .util import dig


def check_loki(st):
    r = st.r
    cfg = st.checked_config("loki", st.loki_path(), st.loki)
    if cfg is None:
        return
    configs = dig(cfg, "schema_config", "configs", default=[]) or []
    latest = max(configs, key=lambda c: str(c.get("from", ""))) if configs else {}
    r.check(latest.get("schema") == "v13" and latest.get("store") == "tsdb",
            "loki: current schema is v13 with the tsdb store (needed for structured metadata)",
            f"schema={latest.get('schema')} store={latest.get('store')}")
    r.check(dig(cfg, "limits_config", "allow_structured_metadata") is True, "loki: limits_config.allow_structured_metadata is true")
    r.check(cfg.get("auth_enabled") is False, "loki: auth_enabled is false (single tenant, no X-Scope-OrgID)")
    r.check(3100 in st.listen_ports("loki"), "loki: HTTP listens on 3100")
    otlp = dig(cfg, "limits_config", "otlp_config") or {}
    promoted = json.dumps(dig(otlp, "resource_attributes") or {}) + json.dumps(dig(otlp, "log_attributes") or {})
    r.check(not re.search(r"trace_?id", promoted, re.I) or "index_label" not in promoted,
            "loki: otlp_config does not index trace_id as a label")
