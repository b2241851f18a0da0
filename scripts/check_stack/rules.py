"""Alert rules: every alert has a severity and a runbook that exists."""

import os

import yaml

from .util import dig, load_yaml


def check_rules(st):
    r = st.r
    rules = os.path.join(st.root, "observability/prometheus-alerts.yml")
    if not r.check(os.path.isfile(rules), "observability/prometheus-alerts.yml exists"):
        return
    try:
        doc = load_yaml(rules)
    except yaml.YAMLError as e:
        r.check(False, "observability/prometheus-alerts.yml parses", str(e).replace("\n", " "))
        return
    alerts = [rule for g in (doc or {}).get("groups") or [] for rule in g.get("rules") or [] if "alert" in rule]
    r.check(bool(alerts), "prometheus-alerts.yml defines alerts")
    done = set()
    for rule in alerts:
        name = rule["alert"]
        url = str(dig(rule, "annotations", "runbook_url", default="") or "")
        key = (name, url)
        if key in done:
            continue
        done.add(key)
        runbook = os.path.join(st.root, "observability", "runbooks", f"{name}.md")
        r.check(bool(url), f"alert {name}: has a runbook_url")
        if url:
            base = url.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            r.check(base == f"{name}.md", f"alert {name}: runbook_url points at {name}.md", url)
        r.check(os.path.isfile(runbook), f"alert {name}: runbook {st.rel(runbook)} exists")
        sev = dig(rule, "labels", "severity")
        r.check(sev in ("critical", "warning"), f"alert {name}: severity is critical or warning", f"severity {sev}")
