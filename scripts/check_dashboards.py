#!/usr/bin/env python3
"""Checks Grafana dashboard JSON files: structure always, PromQL against a live Prometheus on request.

Usage:
    check_dashboards.py [--prom URL] [--require-data] [--known-metrics]
                        [--datasource-uids prometheus,loki,tempo] FILES...

Static checks (always):
  * the file is valid JSON (a bare dashboard or the {"dashboard": ...} wrapper);
  * the dashboard has a uid and a title, both unique across the files given;
  * panel ids are unique within a dashboard (row panels' nested `panels` included);
  * every panel, target, template-variable and annotation datasource uid is in the allowed set
    (`-- Grafana --`, `-- Mixed --` and `-- Dashboard --` are always allowed);
  * every Prometheus target has a non-empty `expr`, every Loki target an `expr`;
  * no LogQL stream selector `{...}` matches on `trace_id` (it is structured metadata, never a label;
    filter it with a pipeline stage: `{service_name="moq-relay"} | trace_id="..."`);
  * every template variable an expr references (`$name`, `${name}`, `${name:fmt}`, `[[name]]`) is defined
    in `templating.list` or is a Grafana built-in.

With --prom URL, each Prometheus target expr and each Prometheus query variable is evaluated with
GET /api/v1/query after substituting Grafana built-ins ($__rate_interval -> 1m, $__interval -> 15s,
$__range -> 1h, $__interval_ms -> 15000, $__auto -> 1m) and template variables (their current value; `.*`
for All, empty or multi-value). `label_values(metric{...}, label)` evaluates `metric{...}`; other
Grafana-only variable functions are skipped.
  --require-data   an empty result is a failure
  --known-metrics  an expr naming a metric (moq_*, process_*, up) Prometheus has never seen is a failure,
                   unless a metric catalog given with --catalog defines it (the JSON `moq-relay
                   --list-metrics` and `moq metrics` print): a per-broadcast series appears only with
                   its broadcast's traffic. Such exprs pass with a note. A name no catalog defines is
                   always a failure when catalogs are given.

Output: one line per checked expr (`ok   <dashboard>/<panel>: N series`) or problem (`FAIL ...`), then
`N exprs checked, M failed`. Exit status: 0 all passed, 1 any failure, 2 usage error.
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

ALWAYS_ALLOWED_UIDS = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}

# Grafana's global and data-link variables: referenced as $name / ${name...} without a templating entry.
BUILTINS = {
    "__rate_interval", "__rate_interval_ms", "__interval", "__interval_ms", "__range", "__range_s",
    "__range_ms", "__auto", "__from", "__to", "__timeFilter", "__timezone", "__dashboard", "__org",
    "__user", "__name", "__value", "__data", "__field", "__series", "__url_time_range", "__all_variables",
    "__url", "__cell", "__trace", "__span", "__tags",
}

# Values the --prom mode substitutes for the time-dependent built-ins.
BUILTIN_VALUES = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__auto": "1m",
}

# $name, ${name}, ${name:fmt}, ${name.path}, [[name]], [[name:fmt]]. Names starting with a digit ($1) are
# regex back-references, not variables.
VAR_RE = re.compile(
    r"\$\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)(?:[.:][^}]*)?\}"
    r"|\[\[(?P<k>[A-Za-z_][A-Za-z0-9_]*)(?::[^\]]*)?\]\]"
    r"|\$(?P<p>[A-Za-z_][A-Za-z0-9_]*)"
)

METRIC_RE = re.compile(
    r"(?<![A-Za-z0-9_:.])(moq_[A-Za-z0-9_:]*|netplay_[A-Za-z0-9_:]*|process_[A-Za-z0-9_:]*|up)(?![A-Za-z0-9_:(])"
)
LABEL_VALUES_RE = re.compile(r"^\s*label_values\s*\((?P<args>.*)\)\s*$", re.S)
QUERY_RESULT_RE = re.compile(r"^\s*query_result\s*\((?P<args>.*)\)\s*$", re.S)
GRAFANA_FUNC_RE = re.compile(r"^\s*(label_names|metrics|label_values|query_result)\s*\(", re.S)


class Report:
    def __init__(self):
        self.checked = 0
        self.failed = 0

    def ok(self, where, what):
        print(f"ok   {where}: {what}")

    def fail(self, where, why):
        self.failed += 1
        print(f"FAIL {where}: {why}")


def strip_strings(text):
    """Replaces the contents of "...", '...' and `...` literals with spaces (delimiters kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            out.append(c)
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\" and c != "`" and j + 1 < n:
                    out.append("  ")
                    j += 2
                    continue
                out.append(" ")
                j += 1
            if j < n:
                out.append(c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def logql_stream_selectors(expr):
    """The `{...}` stream selectors of a LogQL expr (string literals blanked, so templates like
    line_format "{{.x}}" are not mistaken for selectors)."""
    bare = strip_strings(expr)
    return re.findall(r"\{([^{}]*)\}", bare)


def trace_id_in_stream_selector(expr):
    for sel in logql_stream_selectors(expr):
        if re.search(r"(?<![A-Za-z0-9_])trace_id\s*(=~|!~|!=|=)", sel):
            return True
    return False


def var_refs(text):
    names = []
    for m in VAR_RE.finditer(text or ""):
        names.append(m.group("b") or m.group("k") or m.group("p"))
    return names


def iter_panels(panels):
    for p in panels or []:
        if not isinstance(p, dict):
            continue
        yield p
        yield from iter_panels(p.get("panels"))


def ds_uid(ds):
    """(uid, type) of a datasource reference: a {"type", "uid"} object or a legacy name string."""
    if ds is None:
        return None, None
    if isinstance(ds, str):
        return ds, None
    if isinstance(ds, dict):
        return ds.get("uid"), ds.get("type")
    return str(ds), None


def ds_kind(uid, typ):
    if typ:
        return typ
    if uid in ("prometheus", "loki", "tempo"):
        return uid
    return None


def var_value(var):
    """The value --prom mode substitutes for a template variable."""
    cur = var.get("current") or {}
    value = cur.get("value")
    text = cur.get("text")
    all_value = var.get("allValue") or ".*"
    if isinstance(value, list):
        if len(value) == 1:
            value = value[0]
        elif not value:
            value = ""
        else:
            return ".*"
    if value in ("$__all",) or text in ("All", ["All"]):
        return all_value
    if value is None or value == "":
        if var.get("type") == "constant" and var.get("query"):
            return str(var["query"])
        return ".*"
    return str(value)


def substitute(expr, variables):
    def repl(m):
        name = m.group("b") or m.group("k") or m.group("p")
        if name in BUILTIN_VALUES:
            return BUILTIN_VALUES[name]
        if name in variables:
            return var_value(variables[name])
        return m.group(0)

    return VAR_RE.sub(repl, expr)


def split_top_level_comma(args):
    """Splits at the last comma that is outside braces, parentheses and strings."""
    bare = strip_strings(args)
    depth = 0
    last = -1
    for i, c in enumerate(bare):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "," and depth == 0:
            last = i
    if last < 0:
        return args, None
    return args[:last], args[last + 1:]


def variable_promql(query):
    """The PromQL a Prometheus query variable runs, or None when it is a Grafana-only function."""
    m = LABEL_VALUES_RE.match(query)
    if m:
        selector, label = split_top_level_comma(m.group("args"))
        if label is None:
            return None  # label_values(label): no metric to evaluate
        return selector.strip() or None
    m = QUERY_RESULT_RE.match(query)
    if m:
        return m.group("args").strip() or None
    if GRAFANA_FUNC_RE.match(query):
        return None
    return query.strip() or None


class Prometheus:
    def __init__(self, url, timeout=15.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._names = None

    def _get(self, path, params=None):
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                doc = json.loads(body)
            except ValueError:
                raise RuntimeError(f"HTTP {e.code}: {body[:200]!r}") from None
            raise RuntimeError(f"{doc.get('errorType', 'error')}: {doc.get('error', '')}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"cannot reach Prometheus at {self.url}: {e}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise RuntimeError(f"not JSON: {body[:200]!r}") from None
        if doc.get("status") != "success":
            raise RuntimeError(f"{doc.get('errorType', 'error')}: {doc.get('error', '')}")
        return doc.get("data")

    def query(self, expr):
        """Returns the number of series (or 1 for a scalar/string result)."""
        data = self._get("/api/v1/query", {"query": expr})
        kind = (data or {}).get("resultType")
        result = (data or {}).get("result")
        if kind in ("scalar", "string"):
            return 1
        return len(result or [])

    def metric_names(self):
        if self._names is None:
            self._names = set(self._get("/api/v1/label/__name__/values") or [])
        return self._names


class Dashboard:
    def __init__(self, path, doc):
        self.path = path
        self.doc = doc
        self.uid = doc.get("uid")
        self.title = doc.get("title")
        self.name = self.uid or os.path.basename(path)
        tl = (doc.get("templating") or {}).get("list") or []
        self.variables = {v.get("name"): v for v in tl if isinstance(v, dict) and v.get("name")}


def load(path, report):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except ValueError as e:
        report.fail(path, f"invalid JSON: {e}")
        return None
    if isinstance(doc, dict) and isinstance(doc.get("dashboard"), dict):
        doc = doc["dashboard"]
    if not isinstance(doc, dict):
        report.fail(path, "not a dashboard object")
        return None
    return Dashboard(path, doc)


def collect_exprs(dash, allowed, report):
    """Static checks of one dashboard. Returns [(where, kind, expr)] for the exprs to evaluate."""
    out = []
    name = dash.name
    if not dash.uid:
        report.fail(name, "dashboard has no uid")
    if not dash.title:
        report.fail(name, "dashboard has no title")

    def check_ds(where, ds):
        uid, _ = ds_uid(ds)
        if uid is None:
            return
        if uid in ALWAYS_ALLOWED_UIDS or uid in allowed:
            return
        report.fail(where, f"datasource uid {uid!r} not in allowed set {sorted(allowed)}")

    def check_refs(where, text):
        good = True
        for ref in dict.fromkeys(var_refs(text)):
            if ref not in dash.variables and ref not in BUILTINS:
                report.fail(where, f"references undefined template variable ${ref}")
                good = False
        return good

    # Template variables.
    for vname, var in dash.variables.items():
        where = f"{name}/variable {vname}"
        check_ds(where, var.get("datasource"))
        if var.get("type") != "query":
            continue
        uid, typ = ds_uid(var.get("datasource"))
        if ds_kind(uid, typ) != "prometheus":
            continue
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query") or ""
        q = q or var.get("definition") or ""
        report.checked += 1
        if not check_refs(where, q):
            continue
        promql = variable_promql(q)
        if promql is None:
            report.ok(where, "Grafana-only function, not evaluated")
            continue
        out.append((where, "prometheus-variable", promql))

    # Annotations.
    for ann in (dash.doc.get("annotations") or {}).get("list") or []:
        if isinstance(ann, dict):
            check_ds(f"{name}/annotation {ann.get('name', '?')}", ann.get("datasource"))

    # Panels.
    seen_ids = {}
    for panel in iter_panels(dash.doc.get("panels")):
        title = panel.get("title") or f"panel {panel.get('id')}"
        where = f"{name}/{title}"
        pid = panel.get("id")
        if pid is None:
            report.fail(where, "panel has no id")
        elif pid in seen_ids:
            report.fail(where, f"duplicate panel id {pid} (also {seen_ids[pid]!r})")
        else:
            seen_ids[pid] = title
        pds = panel.get("datasource")
        check_ds(where, pds)
        puid, ptype = ds_uid(pds)
        targets = panel.get("targets") or []
        for t in targets:
            if not isinstance(t, dict):
                continue
            ref = t.get("refId", "?")
            twhere = f"{where} [{ref}]" if len(targets) > 1 else where
            tds = t.get("datasource")
            check_ds(twhere, tds)
            tuid, ttype = ds_uid(tds)
            if tuid is None or tuid == "-- Mixed --":
                tuid, ttype = puid, ptype
            kind = ds_kind(tuid, ttype)
            if kind == "prometheus":
                expr = t.get("expr")
                report.checked += 1
                if not isinstance(expr, str) or not expr.strip():
                    report.fail(twhere, "Prometheus target without expr")
                    continue
                if check_refs(twhere, expr):
                    out.append((twhere, "prometheus", expr))
            elif kind == "loki":
                expr = t.get("expr")
                report.checked += 1
                if not isinstance(expr, str) or not expr.strip():
                    report.fail(twhere, "Loki target without expr")
                    continue
                if not check_refs(twhere, expr):
                    continue
                if trace_id_in_stream_selector(expr):
                    report.fail(twhere, "trace_id used as a Loki stream label; it is structured metadata: "
                                        "filter with a pipeline stage `| trace_id=\"...\"`")
                    continue
                report.ok(twhere, "LogQL static checks passed")
            elif kind == "tempo":
                q = t.get("query")
                if isinstance(q, str):
                    check_refs(twhere, q)
    return out


def known_metric_problems(expr, names):
    bare = strip_strings(expr)
    # Drop label matchers: `{job="x"}` bodies can hold label names, not metric names.
    bare = re.sub(r"\{[^{}]*\}", "{}", bare)
    unknown = []
    for m in METRIC_RE.finditer(bare):
        metric = m.group(1)
        # `by (up)` / `on (x)` label lists cannot name metrics; skip identifiers inside grouping parens.
        before = bare[:m.start()]
        if re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*$", before):
            continue
        if metric not in names and metric not in unknown:
            unknown.append(metric)
    return unknown


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalog_metrics(paths):
    """{name: kind} of every metric the catalog JSON files define."""
    defined = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for metric in json.load(f):
                defined[metric["name"]] = metric["kind"]
    return defined


def split_known(unknown, defined):
    """Splits metrics Prometheus has not seen into (defined by a catalog, defined nowhere); a
    histogram's _bucket/_sum/_count series are defined through their base."""
    ok, bad = [], []
    for m in unknown:
        known = m in defined
        for suffix in HISTOGRAM_SUFFIXES:
            if m.endswith(suffix) and defined.get(m[: -len(suffix)]) == "histogram":
                known = True
        (ok if known else bad).append(m)
    return ok, bad


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Check Grafana dashboard JSON (static checks; PromQL against a live Prometheus with --prom).")
    ap.add_argument("--prom", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--require-data", action="store_true", help="fail on an empty query result (needs --prom)")
    ap.add_argument("--known-metrics", action="store_true",
                    help="fail when an expr names a metric Prometheus has never seen (needs --prom)")
    ap.add_argument("--datasource-uids", default="prometheus,loki,tempo", metavar="UIDS",
                    help="comma-separated datasource uids panels may use (default: %(default)s)")
    ap.add_argument("--catalog", action="append", default=[], metavar="JSON",
                    help="metric catalog as `moq-relay --list-metrics` or `moq metrics` print it; its metrics "
                         "count as known for --known-metrics before Prometheus has seen them; repeatable")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per Prometheus request")
    ap.add_argument("files", nargs="+", metavar="FILES")
    args = ap.parse_args(argv)

    if (args.require_data or args.known_metrics) and not args.prom:
        ap.error("--require-data and --known-metrics need --prom URL")
    missing = [f for f in args.files if not os.path.isfile(f)]
    if missing:
        ap.error(f"no such file: {', '.join(missing)}")
    allowed = {u.strip() for u in args.datasource_uids.split(",") if u.strip()}
    if not allowed:
        ap.error("--datasource-uids is empty")

    report = Report()
    dashboards = []
    for path in args.files:
        d = load(path, report)
        if d is not None:
            dashboards.append(d)

    uids, titles = {}, {}
    for d in dashboards:
        if d.uid:
            if d.uid in uids:
                report.fail(d.path, f"dashboard uid {d.uid!r} also used by {uids[d.uid]}")
            uids.setdefault(d.uid, d.path)
        if d.title:
            if d.title in titles:
                report.fail(d.path, f"dashboard title {d.title!r} also used by {titles[d.title]}")
            titles.setdefault(d.title, d.path)

    bad_paths = [p for p in args.catalog if not os.path.isfile(p)]
    if bad_paths:
        ap.error(f"--catalog: no such file: {', '.join(bad_paths)}")
    declared = catalog_metrics(args.catalog)

    prom = Prometheus(args.prom, args.timeout) if args.prom else None
    names = None
    if prom and args.known_metrics:
        try:
            names = prom.metric_names()
        except RuntimeError as e:
            report.fail("--known-metrics", str(e))
            names = None

    for d in dashboards:
        for where, kind, expr in collect_exprs(d, allowed, report):
            if prom is None:
                report.ok(where, "static checks passed")
                continue
            q = substitute(expr, d.variables)
            try:
                n = prom.query(q)
            except RuntimeError as e:
                report.fail(where, f"{e}\n     expr: {q}")
                continue
            note = ""
            if declared:
                named = [m for m in known_metric_problems(q, set()) if m != "up"]
                _, undefined = split_known(named, declared)
                if undefined:
                    report.fail(where, f"metric(s) no catalog defines: {', '.join(undefined)}\n     expr: {q}")
                    continue
            if names is not None:
                unseen, unknown = split_known(known_metric_problems(q, names), declared)
                if unknown:
                    report.fail(where, f"unknown metric(s) {', '.join(unknown)}\n     expr: {q}")
                    continue
                if unseen:
                    note = f" (not yet seen by Prometheus, defined by a catalog: {', '.join(unseen)})"
            if n == 0 and args.require_data:
                report.fail(where, f"empty result{note}\n     expr: {q}")
                continue
            report.ok(where, f"{n} series{note}")

    print(f"{report.checked} exprs checked, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
