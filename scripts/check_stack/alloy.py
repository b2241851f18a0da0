"""Alloy: config syntax, trace_id never a Loki label, the OTLP receiver, tail sampling, and
the pipeline wiring from the receiver to Tempo, Loki and Prometheus."""

import json
import os
import re

from .alloy_syntax import AlloyError, Ref, tokenize
from .compose import parse_ports
from .util import dig, host_port, port_of, url_is


def check_alloy(st):
    r = st.r
    path = st.alloy_path()
    if not r.check(os.path.isfile(path), f"alloy config {st.rel(path)} exists"):
        return
    text = open(path, encoding="utf-8").read()
    # Brace balance outside strings and comments.
    try:
        toks = tokenize(text)
        opens = sum(1 for t in toks if t[0] == "op" and t[1] == "{")
        closes = sum(1 for t in toks if t[0] == "op" and t[1] == "}")
        r.check(opens == closes, "alloy: braces are balanced", f"{opens} '{{' vs {closes} '}}'")
    except AlloyError as e:
        r.check(False, "alloy: tokenizes", str(e))
        return
    alloy = st.alloy()
    if not r.check(alloy is not None, "alloy: config parses (blocks and attributes)", st.configs.get("alloy:error", "")):
        return
    comps = alloy.components()
    r.check(len(comps) == len(alloy.root.blocks), "alloy: component labels are unique")

    # Logs never promote trace_id to a Loki label.
    names = [b.name for b in alloy.all_blocks()]
    r.check("loki.process" not in names, "alloy: no loki.process stage (trace_id must stay structured metadata)")
    label_blocks = [b for b in alloy.all_blocks() if b.name in ("stage.labels", "stage.label_keep")]
    bad = [b for b in label_blocks if re.search(r"trace_?id|traceid", json.dumps(b.attrs), re.I)]
    r.check(not bad, "alloy: no stage.labels promotes trace_id to a Loki label")
    r.check(not re.search(r"loki\.(attribute|resource)\.labels[^\n]*trace", text, re.I),
            "alloy: no loki.*.labels hint promotes trace_id")
    r.check("otelcol.exporter.loki" not in names, "alloy: logs use Loki's native OTLP endpoint, not otelcol.exporter.loki")

    # Receiver: ports and CORS.
    receivers = alloy.find("otelcol.receiver.otlp")
    if r.check(bool(receivers), "alloy: has an otelcol.receiver.otlp"):
        rec = receivers[0]
        grpc, http = rec.child("grpc"), rec.child("http")
        r.check(grpc is not None and (port_of(grpc.attr("endpoint")) or 4317) == 4317, "alloy: OTLP gRPC receiver on 4317")
        r.check(http is not None and (port_of(http.attr("endpoint")) or 4318) == 4318, "alloy: OTLP HTTP receiver on 4318")
        for b, p in ((grpc, 4317), (http, 4318)):
            if b is not None:
                ep = str(b.attr("endpoint") or "0.0.0.0")
                r.check(not ep.startswith(("127.", "localhost")), f"alloy: receiver :{p} listens beyond loopback (container)",
                        f"endpoint {ep}")
        cors = http.child("cors") if http is not None else None
        origins = cors.attr("allowed_origins") if cors is not None else None
        r.check(cors is not None and isinstance(origins, list) and bool(origins),
                "alloy: HTTP receiver has a CORS block with allowed_origins")
        if isinstance(origins, list):
            r.check("*" not in origins, "alloy: CORS allowed_origins is not a bare '*'")
        published = {p["target"] for p in parse_ports(st.services.get("alloy", {}))}
        r.check({4317, 4318} <= published, "alloy: compose publishes OTLP ports 4317 and 4318", f"published {sorted(published)}")

    # Tail sampling policies.
    ts = alloy.find("otelcol.processor.tail_sampling")
    if r.check(bool(ts), "alloy: has otelcol.processor.tail_sampling"):
        policies = [p for t in ts for p in t.children("policy")]
        types = {}
        for p in policies:
            types.setdefault(p.attr("type"), []).append(p)
        err = [p for p in types.get("status_code", []) if "ERROR" in (dig(p.child("status_code").attrs if p.child("status_code") else {}, "status_codes") or [])]
        r.check(bool(err), "alloy: tail sampling keeps traces with an ERROR status (status_code policy)")
        lat = [p for p in types.get("latency", []) if p.child("latency") is not None and p.child("latency").attr("threshold_ms") is not None]
        r.check(bool(lat), "alloy: tail sampling has a latency policy with threshold_ms")
        if lat:
            thr = lat[0].child("latency").attr("threshold_ms")
            r.check(isinstance(thr, (int, float)) and thr <= 1000, "alloy: latency policy keeps traces slower than <= 1 s",
                    f"threshold_ms = {thr}")
        prob = [p for p in types.get("probabilistic", []) if p.child("probabilistic") is not None]
        r.check(bool(prob), "alloy: tail sampling has a probabilistic policy")
        if prob:
            pct = prob[0].child("probabilistic").attr("sampling_percentage")
            r.check(isinstance(pct, (int, float)) and 0 < pct < 100, "alloy: probabilistic policy samples 0 < pct < 100",
                    f"sampling_percentage = {pct}")
        for p in policies:
            t = p.attr("type")
            r.check(bool(p.attr("name")) and (t in ("always_sample", "and", "composite", "not", "drop") or p.child(t) is not None),
                    f"alloy: tail sampling policy {p.attr('name')!r} has a name and a {t} block")

    # Wiring: every reference resolves, and each signal reaches the right exporter.
    def targets_of(block, signal):
        out = block.child("output")
        refs = out.attr(signal) if out is not None else None
        return refs if isinstance(refs, list) else []

    dangling = []
    for comp in comps.values():
        out = comp.child("output")
        for signal in ("metrics", "logs", "traces"):
            for ref in (out.attr(signal) if out is not None else None) or []:
                if not (isinstance(ref, Ref) and ref.endswith(".input") and ref[: -len(".input")] in comps):
                    dangling.append(f"{comp.id}.output.{signal} -> {ref}")
    r.check(not dangling, "alloy: every output reference names a defined component", "; ".join(dangling))

    def reach(signal):
        paths, stack = [], [(rec.id, [rec.id]) for rec in receivers]
        while stack:
            cid, path = stack.pop()
            comp = comps.get(cid)
            if comp is None or len(path) > 20:
                continue
            if comp.name.startswith("otelcol.exporter."):
                paths.append(path)
                continue
            for ref in targets_of(comp, signal):
                nid = str(ref)[: -len(".input")] if str(ref).endswith(".input") else str(ref)
                stack.append((nid, path + [nid]))
        return paths

    tempo_grpc = st.tempo_grpc_port()
    loki_port = next(iter(st.listen_ports("loki")), 3100)
    prom_port = next(iter(st.listen_ports("prometheus")), 9090)
    expect = {
        "traces": ("otelcol.exporter.otlp", lambda ep: host_port(ep) == ("tempo", tempo_grpc), f"tempo:{tempo_grpc}"),
        "logs": ("otelcol.exporter.otlphttp",
                 lambda ep: url_is(ep, "loki", loki_port, "/otlp"), f"http://loki:{loki_port}/otlp"),
        "metrics": ("otelcol.exporter.otlphttp",
                    lambda ep: url_is(ep, "prometheus", prom_port, "/api/v1/otlp"), f"http://prometheus:{prom_port}/api/v1/otlp"),
    }
    for signal, (kind, good, want) in expect.items():
        paths = reach(signal)
        ends = [comps[p[-1]] for p in paths]
        r.check(bool(ends), f"alloy: {signal} from the OTLP receiver reach an exporter")
        ok = [e for e in ends if e.name == kind and good(str((e.child("client").attr("endpoint") if e.child("client") else "") or ""))]
        got = sorted({f"{e.id} {(e.child('client').attr('endpoint') if e.child('client') else '?')}" for e in ends})
        r.check(bool(ok) and len(ok) == len(ends), f"alloy: {signal} are exported with {kind} to {want}", f"got {got}")
        if signal == "traces":
            r.check(all(any(comps[c].name == "otelcol.processor.tail_sampling" for c in p) for p in paths),
                    "alloy: traces pass through tail sampling before export")
        r.check(all(any(comps[c].name == "otelcol.processor.memory_limiter" for c in p) for p in paths) and bool(paths),
                f"alloy: {signal} pass through memory_limiter")
        r.check(all(any(comps[c].name == "otelcol.processor.batch" for c in p) for p in paths) and bool(paths),
                f"alloy: {signal} are batched")
    for e in alloy.find("otelcol.exporter.otlp"):
        tls = e.child("client").child("tls") if e.child("client") else None
        r.check(tls is not None and tls.attr("insecure") is True, f"alloy: {e.id} uses plaintext gRPC inside the compose network",
                "client { tls { insecure = true } } expected")
