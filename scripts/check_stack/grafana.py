"""Grafana: anonymous access, provisioned datasources and their cross-links, the dashboard
provider, and the datasources the dashboards reference."""

import glob
import json
import os
import re
from urllib.parse import urlsplit

import yaml

from .util import as_env, dig, load_yaml

REQUIRED_DATASOURCE_UIDS = {"prometheus", "loki", "tempo"}
OPTIONAL_DATASOURCE_UIDS = {"alertmanager"}
# Datasource references in dashboards that are not provisioned datasources.
BUILTIN_DATASOURCES = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana", "dashboard"}


def check_grafana_anonymous_access(st):
    """Anonymous visitors are never Admin, neither through compose env nor grafana.ini."""
    r = st.r
    env = as_env(st.services.get("grafana", {}).get("environment"))
    role = env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer")
    r.check(role.lower() != "admin", "grafana: anonymous role is not Admin", f"GF_AUTH_ANONYMOUS_ORG_ROLE={role}")
    ini = os.path.join(st.root, "observability/grafana/grafana.ini")
    if os.path.isfile(ini):
        text = open(ini, encoding="utf-8").read()
        m = re.search(r"^\s*\[auth\.anonymous\](.*?)(?=^\s*\[|\Z)", text, re.S | re.M)
        ini_role = re.search(r"^\s*org_role\s*=\s*(\S+)", m.group(1), re.M) if m else None
        r.check(not (ini_role and ini_role.group(1).lower() == "admin"), "grafana.ini: anonymous role is not Admin")


def check_grafana(st):
    r = st.r
    grafana = st.services.get("grafana", {})
    env = as_env(grafana.get("environment"))
    prov_target = env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    prov_dir = st.mount_source("grafana", prov_target)
    r.check(prov_dir is not None, f"grafana: provisioning mounted at {prov_target}")
    prov_dir = prov_dir or os.path.join(st.root, "observability/grafana/provisioning")

    ds_path = os.path.join(prov_dir, "datasources", "datasources.yaml")
    if not r.check(os.path.isfile(ds_path), f"grafana: {st.rel(ds_path)} exists"):
        return
    raw = open(ds_path, encoding="utf-8").read()
    r.check(not re.search(r"(?<!\$)\$\{__", raw), "grafana: Grafana variables in datasources.yaml are escaped as $${...}",
            "an unescaped ${__...} is expanded as an environment variable by the provisioner")
    try:
        ds_doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        r.check(False, "grafana: datasources.yaml parses", str(e).replace("\n", " "))
        return
    datasources = (ds_doc or {}).get("datasources") or []
    by_uid = {d.get("uid"): d for d in datasources}
    uids = set(by_uid)
    r.check(REQUIRED_DATASOURCE_UIDS <= uids <= REQUIRED_DATASOURCE_UIDS | OPTIONAL_DATASOURCE_UIDS,
            f"grafana: datasource uids are {sorted(REQUIRED_DATASOURCE_UIDS)} (+ optional {sorted(OPTIONAL_DATASOURCE_UIDS)})",
            f"got {sorted(map(str, uids))}")
    r.check(len(uids) == len(datasources), "grafana: datasource uids are unique")
    defaults = [d.get("uid") for d in datasources if d.get("isDefault")]
    r.check(defaults == ["prometheus"], "grafana: Prometheus is the (only) default datasource", f"defaults {defaults}")
    expected_type = {"prometheus": "prometheus", "loki": "loki", "tempo": "tempo", "alertmanager": "alertmanager"}
    for uid, d in by_uid.items():
        if uid in expected_type:
            r.check(d.get("type") == expected_type[uid], f"grafana: datasource {uid} has type {expected_type[uid]}",
                    f"type {d.get('type')}")
        url = d.get("url", "")
        try:
            u = urlsplit(url)
            host, port = u.hostname, u.port
        except ValueError:
            host, port = None, None
        ports = st.listen_ports(host) if host in st.services else set()
        r.check(host in st.services and port in ports, f"grafana: datasource {uid} url {url} is a compose service port",
                f"{host} listens on {sorted(ports)}" if host in st.services else f"{host} is not a compose service")

    def uid_ok(u, what):
        r.check(u in uids, f"grafana: {what} -> datasource {u} exists")

    prom = by_uid.get("prometheus", {})
    dests = dig(prom, "jsonData", "exemplarTraceIdDestinations", default=[]) or []
    r.check(bool(dests), "grafana: Prometheus exemplars link to traces (exemplarTraceIdDestinations)")
    label = dig(st.tempo() or {}, "overrides", "defaults", "metrics_generator", "trace_id_label_name", default="traceID")
    for dest in dests:
        if dest.get("datasourceUid"):
            uid_ok(dest["datasourceUid"], "prometheus exemplarTraceIdDestinations")
        r.check(dest.get("name") == label, f"grafana: exemplar label {dest.get('name')!r} matches Tempo's trace_id_label_name",
                f"Tempo writes exemplars with label {label!r}")
    tempo = by_uid.get("tempo", {})
    ttl = dig(tempo, "jsonData", "tracesToLogsV2")
    if r.check(isinstance(ttl, dict), "grafana: Tempo links traces to logs (tracesToLogsV2)"):
        uid_ok(ttl.get("datasourceUid"), "tempo tracesToLogsV2")
        q = str(ttl.get("query", ""))
        r.check(not ttl.get("customQuery") or "trace_id" in q, "grafana: trace-to-logs query filters on trace_id", q)
    sm = dig(tempo, "jsonData", "serviceMap", "datasourceUid")
    if r.check(sm is not None, "grafana: Tempo service map uses a datasource"):
        uid_ok(sm, "tempo serviceMap")
    r.check(dig(tempo, "jsonData", "nodeGraph", "enabled") is True, "grafana: Tempo node graph is enabled")
    loki = by_uid.get("loki", {})
    fields = dig(loki, "jsonData", "derivedFields", default=[]) or []
    trace_fields = [f for f in fields if f.get("datasourceUid") == "tempo"]
    r.check(bool(trace_fields), "grafana: Loki derived field links trace_id to Tempo")
    for f in fields:
        if f.get("datasourceUid"):
            uid_ok(f["datasourceUid"], f"loki derivedField {f.get('name')}")

    # Dashboards provider.
    db_path = os.path.join(prov_dir, "dashboards", "dashboards.yaml")
    if not r.check(os.path.isfile(db_path), f"grafana: {st.rel(db_path)} exists"):
        return
    try:
        providers = (load_yaml(db_path) or {}).get("providers") or []
    except yaml.YAMLError as e:
        r.check(False, "grafana: dashboards.yaml parses", str(e).replace("\n", " "))
        return
    dash_target = st.mount_target("grafana", "./observability/grafana/dashboards")
    r.check(dash_target is not None, "grafana: observability/grafana/dashboards is mounted into the container")
    moq = [p for p in providers if p.get("name") == "moq"]
    if r.check(bool(moq), "grafana: dashboard provider `moq` exists"):
        p = moq[0]
        r.check(p.get("type", "file") == "file", "grafana: provider moq is a file provider")
        r.check(p.get("folder") == "MoQ", "grafana: provider moq puts dashboards in folder MoQ")
        r.check(p.get("allowUiUpdates") is False, "grafana: provider moq has allowUiUpdates: false")
        r.check(p.get("disableDeletion") is True, "grafana: provider moq has disableDeletion: true")
        path = dig(p, "options", "path")
        r.check(dash_target is not None and str(path).rstrip("/") == dash_target.rstrip("/"),
                "grafana: provider path equals the dashboards mount target", f"path {path}, mounted at {dash_target}")

    # Dashboards: parse, unique uids, datasource references exist.
    dash_dir = os.path.join(st.root, "observability/grafana/dashboards")
    files = sorted(glob.glob(os.path.join(dash_dir, "*.json")))
    r.check(bool(files), "grafana: observability/grafana/dashboards has dashboards")
    seen_uids = {}
    names = {d.get("name"): d.get("uid") for d in datasources}
    for f in files:
        rel = st.rel(f)
        try:
            with open(f, encoding="utf-8") as fh:
                dash = json.load(fh)
        except (OSError, ValueError) as e:
            r.check(False, f"grafana: {rel} parses", str(e))
            continue
        r.check(True, f"grafana: {rel} parses")
        if isinstance(dash, dict) and isinstance(dash.get("dashboard"), dict):
            dash = dash["dashboard"]
        uid = dash.get("uid") if isinstance(dash, dict) else None
        if r.check(bool(uid), f"grafana: {rel} has a uid"):
            r.check(uid not in seen_uids, f"grafana: dashboard uid {uid} is unique", f"also in {seen_uids.get(uid)}")
            seen_uids[uid] = rel
        bad = set()
        for ref in datasource_refs(dash):
            if isinstance(ref, dict):
                u, t = ref.get("uid"), ref.get("type")
                if u is None or str(u).startswith("$") or u in BUILTIN_DATASOURCES or t in ("datasource", "grafana"):
                    continue
                if u not in uids:
                    bad.add(f"uid {u}")
                elif t and by_uid[u].get("type") != t:
                    bad.add(f"uid {u} typed {t} (provisioned as {by_uid[u].get('type')})")
            elif isinstance(ref, str):
                if ref.startswith("$") or ref in BUILTIN_DATASOURCES or ref in uids or ref in names:
                    continue
                bad.add(ref)
        r.check(not bad, f"grafana: {rel} references only provisioned datasources", ", ".join(sorted(bad)))


def datasource_refs(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "datasource" and (isinstance(v, (dict, str))):
                yield v
            if isinstance(v, (dict, list)):
                yield from datasource_refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from datasource_refs(v)
