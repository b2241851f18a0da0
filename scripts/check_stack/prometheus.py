"""Prometheus: the flags compose runs it with, alerting, rule files and scrape targets."""

import fnmatch
import glob
import os

import yaml

from .compose import Mount, parse_mounts
from .util import as_args, dig, host_port, interpolate, load_yaml

REQUIRED_JOBS = {
    # job -> (host, port) it must scrape; None: the target must be a compose service.
    "moq-relay": ("host.docker.internal", 9101),
    "moq-client": ("host.docker.internal", 9102),
    "prometheus": None,
    "alloy": None,
    "alertmanager": None,
    "tempo": None,
    "loki": None,
}


def check_prometheus_flags(st):
    """The command-line flags and host mapping the rest of the stack relies on."""
    r = st.r
    pargs = as_args(st.services.get("prometheus", {}).get("command"))
    for flag, why in (
        ("--web.enable-otlp-receiver", "Alloy exports metrics to /api/v1/otlp"),
        ("--web.enable-remote-write-receiver", "Tempo's metrics-generator remote-writes"),
        ("--enable-feature=exemplar-storage", "exemplars from Tempo span metrics"),
    ):
        present = flag in pargs or (flag.startswith("--enable-feature=") and any(
            a.startswith("--enable-feature=") and flag.split("=", 1)[1] in a.split("=", 1)[1].split(",") for a in pargs))
        r.check(present, f"prometheus: runs with {flag}", why)
    hosts = [interpolate(str(h)) for h in st.services.get("prometheus", {}).get("extra_hosts") or []]
    r.check(any(h.replace("=", ":").startswith("host.docker.internal:") for h in hosts),
            "prometheus: maps host.docker.internal (extra_hosts host-gateway)")


def check_prometheus(st):
    r = st.r
    cfg = st.checked_config("prometheus", st.prometheus_path(), st.prometheus)
    if cfg is None:
        return

    # Alerting wiring.
    targets = []
    for am in dig(cfg, "alerting", "alertmanagers", default=[]) or []:
        for sc in am.get("static_configs") or []:
            targets += sc.get("targets") or []
    r.check(bool(targets), "prometheus: alerting.alertmanagers targets are not empty")
    am_ports = st.listen_ports("alertmanager")
    for t in targets:
        host, port = host_port(t)
        r.check(host == "alertmanager" and port in am_ports, f"prometheus: alertmanager target {t} is the alertmanager service",
                f"alertmanager listens on {sorted(am_ports)}")

    # Rule files: each pattern matches a file mounted into the container.
    rule_files = cfg.get("rule_files") or []
    r.check(bool(rule_files), "prometheus: rule_files is set")
    mounts = [m for m in parse_mounts(st.services.get("prometheus", {})) if m.kind == "bind"]
    for pattern in rule_files:
        matched = [m for m in mounts if fnmatch.fnmatch(m.target, pattern)]
        # A mounted directory can also provide the files.
        for m in mounts:
            d = m.target.rstrip("/")
            if pattern.startswith(d + "/") and os.path.isdir(st.host_path(m.source)):
                for f in glob.glob(os.path.join(st.host_path(m.source), pattern[len(d) + 1:])):
                    matched.append(Mount(f, os.path.join(d, os.path.relpath(f, st.host_path(m.source))), "bind", True))
        if r.check(bool(matched), f"prometheus: rule_files {pattern} matches a file mounted into the container"):
            for m in matched:
                src = st.host_path(m.source)
                ok = os.path.isfile(src)
                if ok:
                    try:
                        doc = load_yaml(src)
                        ok = isinstance(doc, dict) and isinstance(doc.get("groups"), list)
                        detail = "no `groups` list"
                    except yaml.YAMLError as e:
                        ok, detail = False, str(e).replace("\n", " ")
                else:
                    detail = "missing"
                r.check(ok, f"prometheus: rule file {st.rel(src)} exists and has rule groups", detail)

    # Scrape jobs.
    jobs = {}
    for sc in cfg.get("scrape_configs") or []:
        jobs[sc.get("job_name")] = sc
    for job, expect in REQUIRED_JOBS.items():
        if not r.check(job in jobs, f"prometheus: scrape job {job} exists"):
            continue
        sc = jobs[job]
        tgts = [t for s in sc.get("static_configs") or [] for t in s.get("targets") or []]
        if expect is not None:
            r.check((f"{expect[0]}:{expect[1]}") in tgts, f"prometheus: job {job} scrapes {expect[0]}:{expect[1]}",
                    f"targets {tgts}")
        else:
            svc_hosts = {host_port(t)[0] for t in tgts}
            r.check(bool(svc_hosts & ({job, "localhost", "127.0.0.1"})), f"prometheus: job {job} scrapes the {job} service",
                    f"targets {tgts}")
    for name, sc in jobs.items():
        for key in ("relabel_configs", "metric_relabel_configs"):
            for rc in sc.get(key) or []:
                r.check(rc.get("target_label") != "job", f"prometheus: job {name} {key} does not rewrite `job`")
        for s in sc.get("static_configs") or []:
            r.check("job" not in (s.get("labels") or {}), f"prometheus: job {name} static labels do not override `job`")
    # Every host:port target naming a compose service uses a port that service listens on.
    for name, sc in jobs.items():
        for s in sc.get("static_configs") or []:
            for t in s.get("targets") or []:
                host, port = host_port(t)
                if host in ("localhost", "127.0.0.1"):
                    host = "prometheus"
                if host in st.services:
                    ports = st.listen_ports(host)
                    r.check(port in ports, f"prometheus: job {name} target {t} uses a port {host} listens on",
                            f"{host} listens on {sorted(ports)}")
                elif host != "host.docker.internal":
                    r.check(False, f"prometheus: job {name} target {t} is a compose service or host.docker.internal")
    # DNS service discovery by compose service name (A/AAAA records need a port): the name is a
    # service and the port one it listens on. A service in an inactive profile does not resolve,
    # which leaves the job without that target rather than with a target that is down.
    for name, sc in jobs.items():
        for d in sc.get("dns_sd_configs") or []:
            kind = str(d.get("type", "SRV")).upper()
            for n in d.get("names") or []:
                if not r.check(n in st.services, f"prometheus: job {name} DNS name {n} is a compose service"):
                    continue
                if kind in ("A", "AAAA"):
                    ports = st.listen_ports(n)
                    r.check(d.get("port") in ports, f"prometheus: job {name} DNS name {n} uses a port {n} listens on",
                            f"port {d.get('port')}, {n} listens on {sorted(ports)}")
