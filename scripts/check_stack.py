#!/usr/bin/env python3
"""Static consistency checks for the Docker observability stack (no Docker needed).

Grafana, Loki, Tempo and Alloy cannot run here, so this reads docker-compose.yml and every file it
mounts and checks that they agree with each other: images pinned, mounted files present, healthchecks
behind `service_healthy`, unique host ports, scrape targets / exporter endpoints / webhook URLs /
datasource URLs pointing at the port the target service really listens on, Alloy's pipeline wiring,
tail sampling and CORS, Loki structured metadata, Grafana datasource uids used by the dashboards,
and a runbook for every alert.

Prints one line per check (`ok ...` or `FAIL ...`), then `N checks, M failed`; exits 1 on any failure.

    python3 scripts/check_stack.py [--root DIR] [--quiet]
"""

import argparse
import fnmatch
import glob
import json
import os
import re
import sys
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "check_stack.py needs PyYAML: install it with `pip install pyyaml` "
        "or `apt-get install python3-yaml`\n"
    )
    sys.exit(2)


# Ports a service listens on when its configuration does not say otherwise.
DEFAULT_PORTS = {
    "grafana": {3000},
    "prometheus": {9090},
    "alertmanager": {9093},
    "loki": {3100},
    "tempo": {3200},
    "alloy": {12345},
    "alert-sink": {8080},
    "relay": {4443, 9101},
}

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

REQUIRED_DATASOURCE_UIDS = {"prometheus", "loki", "tempo"}
OPTIONAL_DATASOURCE_UIDS = {"alertmanager"}
# Datasource references in dashboards that are not provisioned datasources.
BUILTIN_DATASOURCES = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana", "dashboard"}


class Report:
    def __init__(self, quiet=False):
        self.quiet = quiet
        self.total = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        self.total += 1
        if ok:
            if not self.quiet:
                print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        return ok


# --------------------------------------------------------------------------------------------
# Small helpers


def interpolate(value):
    """Resolve compose-style ${VAR}, ${VAR:-default}, ${VAR-default} and $VAR in a string."""
    if not isinstance(value, str):
        return value

    def repl(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        env = os.environ.get(name)
        if op == ":-":
            return env if env else (default or "")
        if op == "-":
            return env if env is not None else (default or "")
        return env or ""

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, value)


def as_env(environment):
    """Compose `environment` (list or mapping) as a dict of strings."""
    out = {}
    if isinstance(environment, dict):
        for k, v in environment.items():
            out[str(k)] = "" if v is None else interpolate(str(v))
    elif isinstance(environment, list):
        for item in environment:
            k, _, v = str(item).partition("=")
            out[k] = interpolate(v)
    return out


def as_args(command):
    if command is None:
        return []
    if isinstance(command, str):
        return interpolate(command).split()
    return [interpolate(str(a)) for a in command]


def flag_value(args, *names):
    """Value of `--name=value` / `--name value` (also single-dash) in an argument list."""
    for i, a in enumerate(args):
        for n in names:
            if a.startswith(n + "="):
                return a[len(n) + 1:]
            if a == n and i + 1 < len(args):
                return args[i + 1]
    return None


def port_of(addr):
    """Port of 'host:port', ':port', '[v6]:port' or a URL; None when absent."""
    if addr is None:
        return None
    addr = str(addr)
    if "://" in addr:
        try:
            return urlsplit(addr).port
        except ValueError:
            return None
    m = re.search(r":(\d+)$", addr)
    return int(m.group(1)) if m else None


def host_port(target):
    """Split 'host:port' (or a URL) into (host, port)."""
    target = str(target)
    if "://" in target:
        u = urlsplit(target)
        return u.hostname, u.port
    m = re.match(r"^\[?([^\]]*?)\]?:(\d+)$", target)
    if m:
        return m.group(1), int(m.group(2))
    return target, None


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def dig(obj, *keys, default=None):
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return default
    return obj


# --------------------------------------------------------------------------------------------
# Compose model


class Mount:
    def __init__(self, source, target, kind, read_only):
        self.source = source  # host path (bind) or volume name
        self.target = target
        self.kind = kind  # "bind" or "volume"
        self.read_only = read_only


def parse_mounts(service):
    mounts = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = interpolate(v).split(":")
            if len(parts) == 1:
                mounts.append(Mount(None, parts[0], "volume", False))
                continue
            src, tgt = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else ""
            kind = "bind" if src.startswith((".", "/", "~")) else "volume"
            mounts.append(Mount(src, tgt, kind, "ro" in mode.split(",")))
        elif isinstance(v, dict):
            kind = v.get("type", "volume")
            mounts.append(
                Mount(interpolate(v.get("source")), interpolate(v.get("target")), kind, bool(v.get("read_only")))
            )
    return mounts


def parse_ports(service):
    """Published ports as dicts {host_ip, published, target, protocol}."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append(
                {
                    "host_ip": p.get("host_ip", ""),
                    "published": str(interpolate(str(p.get("published", "")))),
                    "target": int(p["target"]),
                    "protocol": p.get("protocol", "tcp"),
                }
            )
            continue
        s = interpolate(str(p))
        proto = "tcp"
        if "/" in s:
            s, proto = s.rsplit("/", 1)
        # [host_ip:][published:]target ; host_ip may be [v6]
        m = re.match(r"^(?:(\[[^\]]+\]|[^:\[\]]+):)??(?:([\d-]+):)?([\d-]+)$", s)
        if not m:
            out.append({"host_ip": "", "published": "?", "target": -1, "protocol": proto, "raw": str(p)})
            continue
        host_ip, published, target = m.group(1) or "", m.group(2) or "", m.group(3)
        out.append({"host_ip": host_ip, "published": published, "target": int(target.split("-")[0]), "protocol": proto})
    return out


class Stack:
    def __init__(self, root, report):
        self.root = root
        self.r = report
        self.compose_path = os.path.join(root, "docker-compose.yml")
        self.compose_dir = os.path.dirname(self.compose_path)
        self.services = {}
        self.configs = {}  # cache of parsed files

    # Paths ------------------------------------------------------------------------------------

    def host_path(self, src):
        return os.path.normpath(os.path.join(self.compose_dir, os.path.expanduser(src)))

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def mount_source(self, service, target):
        """Host path bind-mounted at `target` in `service` (exact file, or inside a mounted dir)."""
        best = None
        for m in parse_mounts(self.services.get(service, {})):
            if m.kind != "bind" or not m.target:
                continue
            t = m.target.rstrip("/")
            if target == t:
                return self.host_path(m.source)
            if target.startswith(t + "/") and (best is None or len(t) > len(best[0])):
                best = (t, os.path.join(self.host_path(m.source), target[len(t) + 1:]))
        return best[1] if best else None

    def mount_target(self, service, host_rel):
        """Container path where repo path `host_rel` is bind-mounted in `service`."""
        want = self.host_path(host_rel)
        for m in parse_mounts(self.services.get(service, {})):
            if m.kind == "bind" and self.host_path(m.source) == want:
                return m.target
        return None

    def config_file(self, service, container_path, fallback_rel):
        """Repo file the service reads at container_path (via its mounts), else the fallback."""
        src = self.mount_source(service, container_path) if container_path else None
        return src or os.path.join(self.root, fallback_rel)

    # Ports ------------------------------------------------------------------------------------

    def listen_ports(self, name):
        svc = self.services.get(name, {})
        args = as_args(svc.get("command"))
        env = as_env(svc.get("environment"))
        ports = set()
        if name == "prometheus":
            ports.add(port_of(flag_value(args, "--web.listen-address")) or 9090)
        elif name == "alertmanager":
            ports.add(port_of(flag_value(args, "--web.listen-address")) or 9093)
        elif name == "grafana":
            ports.add(int(env.get("GF_SERVER_HTTP_PORT") or 3000))
        elif name == "alert-sink":
            ports.add(port_of(flag_value(args, "--listen")) or 8080)
        elif name == "alloy":
            ports.add(port_of(flag_value(args, "--server.http.listen-addr")) or 12345)
            alloy = self.alloy()
            if alloy is None:  # unreadable config: assume the documented receiver defaults
                ports |= {4317, 4318}
            else:
                for blk in alloy.find("otelcol.receiver.otlp"):
                    for proto, default in (("grpc", 4317), ("http", 4318)):
                        sub = blk.child(proto)
                        if sub is not None:
                            ports.add(port_of(sub.attr("endpoint")) or default)
        elif name == "loki":
            cfg = self.loki()
            ports.add(int(dig(cfg, "server", "http_listen_port", default=3100) or 3100))
        elif name == "tempo":
            cfg = self.tempo()
            ports.add(int(dig(cfg, "server", "http_listen_port", default=3200) or 3200))
            ports |= self.tempo_otlp_ports()
        elif name == "relay":
            for var, default in (("MOQ_LISTEN", 4443), ("MOQ_OPS_LISTEN", 9101)):
                val = env.get(var)
                for part in (val.split(",") if val else [None]):
                    ports.add(port_of(part) or default)
        else:
            ports |= DEFAULT_PORTS.get(name, set())
        return {p for p in ports if p}

    def tempo_otlp_ports(self):
        protocols = dig(self.tempo(), "distributor", "receivers", "otlp", "protocols") or {}
        out = set()
        for proto, default in (("grpc", 4317), ("http", 4318)):
            if proto in protocols:
                out.add(port_of(dig(protocols, proto, "endpoint")) or default)
        return out

    def tempo_grpc_port(self):
        cfg = self.tempo()
        protocols = dig(cfg, "distributor", "receivers", "otlp", "protocols") or {}
        if "grpc" not in protocols:
            return None
        return port_of(dig(protocols, "grpc", "endpoint")) or 4317

    # Parsed configs -----------------------------------------------------------------------------

    def cached(self, key, loader):
        if key not in self.configs:
            try:
                self.configs[key] = loader()
            except Exception as e:  # reported by the corresponding parse check
                self.configs[key] = None
                self.configs[key + ":error"] = str(e)
        return self.configs[key]

    def flagged_config(self, service, flags, container_default, repo_default):
        """The config file a service loads: its `--config.file`-style flag, else its image default."""
        args = as_args(self.services.get(service, {}).get("command"))
        return self.config_file(service, flag_value(args, *flags) or container_default, repo_default)

    def prometheus_path(self):
        return self.flagged_config("prometheus", ["--config.file"], "/etc/prometheus/prometheus.yml",
                                   "observability/prometheus/prometheus.yml")

    def loki_path(self):
        return self.flagged_config("loki", ["-config.file", "--config.file"], None, "observability/loki/loki.yaml")

    def tempo_path(self):
        return self.flagged_config("tempo", ["-config.file", "--config.file"], None, "observability/tempo/tempo.yaml")

    def alertmanager_path(self):
        return self.flagged_config("alertmanager", ["--config.file"], "/etc/alertmanager/alertmanager.yml",
                                   "observability/alertmanager/alertmanager.yml")

    def prometheus(self):
        return self.cached("prometheus", lambda: load_yaml(self.prometheus_path()))

    def loki(self):
        return self.cached("loki", lambda: load_yaml(self.loki_path()))

    def tempo(self):
        return self.cached("tempo", lambda: load_yaml(self.tempo_path()))

    def alertmanager(self):
        return self.cached("alertmanager", lambda: load_yaml(self.alertmanager_path()))

    def alloy_path(self):
        args = as_args(self.services.get("alloy", {}).get("command"))
        positional = [a for a in args if not a.startswith("-") and a != "run" and a.endswith(".alloy")]
        return self.config_file("alloy", positional[0] if positional else None, "observability/alloy/config.alloy")

    def alloy(self):
        def load():
            with open(self.alloy_path(), encoding="utf-8") as f:
                return AlloyFile(f.read())

        return self.cached("alloy", load)


# --------------------------------------------------------------------------------------------
# A small reader for Alloy configuration syntax: blocks, attributes, literals and references.


class AlloyError(Exception):
    pass


class Ref(str):
    """An identifier expression such as otelcol.processor.batch.default.input."""


class Block:
    def __init__(self, name, label, line):
        self.name = name
        self.label = label
        self.line = line
        self.attrs = {}
        self.blocks = []

    @property
    def id(self):
        return f"{self.name}.{self.label}" if self.label is not None else self.name

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    def child(self, name):
        for b in self.blocks:
            if b.name == name:
                return b
        return None

    def children(self, name):
        return [b for b in self.blocks if b.name == name]

    def walk(self):
        yield self
        for b in self.blocks:
            yield from b.walk()


TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<lcomment>//[^\n]*)
  | (?P<bcomment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[{}\[\]()=,:+\-*/%^<>!?.])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text):
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            raise AlloyError(f"line {line}: unexpected character {text[pos]!r}")
        kind, val = m.lastgroup, m.group(0)
        if kind == "nl":
            tokens.append(("nl", val, line))
        elif kind == "bcomment":
            if "\n" in val:
                tokens.append(("nl", "\n", line))
        elif kind not in ("ws", "lcomment"):
            tokens.append((kind, val, line))
        line += val.count("\n")
        pos = m.end()
    tokens.append(("eof", "", line))
    return tokens


def unquote(tok):
    kind, val, _ = tok
    if kind == "raw":
        return val[1:-1]
    return json.loads(val) if val.startswith('"') else val


class AlloyFile:
    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.root = Block("<root>", None, 0)
        self._body(self.root, top=True)

    # parsing ----------------------------------------------------------------------------------

    def _peek(self, skip_nl=True):
        p = self.pos
        while skip_nl and self.tokens[p][0] == "nl":
            p += 1
        return self.tokens[p], p

    def _next(self, skip_nl=True):
        tok, p = self._peek(skip_nl)
        self.pos = p + 1
        return tok

    def _body(self, block, top=False):
        while True:
            tok = self._next()
            if tok[0] == "eof":
                if not top:
                    raise AlloyError(f"unclosed block {block.id} opened on line {block.line}")
                return
            if tok[1] == "}" and tok[0] == "op":
                if top:
                    raise AlloyError(f"line {tok[2]}: unmatched '}}'")
                return
            if tok[0] != "ident":
                raise AlloyError(f"line {tok[2]}: expected an attribute or block name, got {tok[1]!r}")
            nxt = self._next(skip_nl=False)
            if nxt[1] == "=" and nxt[0] == "op":
                if tok[1] in block.attrs:
                    raise AlloyError(f"line {tok[2]}: attribute {tok[1]} set twice in {block.id}")
                block.attrs[tok[1]] = self._expr()
            elif nxt[0] in ("string", "raw") or (nxt[0] == "op" and nxt[1] == "{"):
                label = None
                if nxt[0] in ("string", "raw"):
                    label = unquote(nxt)
                    brace = self._next(skip_nl=False)
                    if brace[1] != "{":
                        raise AlloyError(f"line {brace[2]}: expected '{{' after block label")
                child = Block(tok[1], label, tok[2])
                block.blocks.append(child)
                self._body(child)
            else:
                raise AlloyError(f"line {nxt[2]}: expected '=' or '{{' after {tok[1]!r}, got {nxt[1]!r}")

    def _expr(self):
        """Collect the tokens of one expression (up to a newline at bracket depth 0)."""
        toks, depth = [], 0
        while True:
            tok, p = self._peek(skip_nl=depth > 0)
            if tok[0] == "eof":
                break
            if depth == 0 and (tok[0] == "nl" or (tok[0] == "op" and tok[1] == "}")):
                break
            self.pos = p + 1
            if tok[0] == "op" and tok[1] in "[({":
                depth += 1
            elif tok[0] == "op" and tok[1] in "])}":
                depth -= 1
                if depth < 0:
                    raise AlloyError(f"line {tok[2]}: unbalanced {tok[1]!r}")
            toks.append(tok)
        if not toks:
            raise AlloyError(f"line {self.tokens[self.pos][2]}: attribute without a value")
        return self._value(toks)

    def _value(self, toks):
        if len(toks) == 1:
            kind, val, _ = toks[0]
            if kind in ("string", "raw"):
                return unquote(toks[0])
            if kind == "number":
                return float(val) if any(c in val for c in ".eE") else int(val)
            if kind == "ident":
                return {"true": True, "false": False, "null": None}.get(val, Ref(val))
        if toks[0][1] == "[" and toks[-1][1] == "]":
            items, cur, depth = [], [], 0
            for t in toks[1:-1]:
                if t[0] == "op" and t[1] in "[({":
                    depth += 1
                elif t[0] == "op" and t[1] in "])}":
                    depth -= 1
                if depth == 0 and t[0] == "op" and t[1] == ",":
                    if cur:
                        items.append(self._value(cur))
                    cur = []
                else:
                    cur.append(t)
            if cur:
                items.append(self._value(cur))
            return items
        return "".join(t[1] for t in toks)  # an expression we do not evaluate (function call, map, ...)

    # queries ----------------------------------------------------------------------------------

    def components(self):
        return {b.id: b for b in self.root.blocks}

    def find(self, name):
        return [b for b in self.root.blocks if b.name == name]

    def all_blocks(self):
        for b in self.root.blocks:
            yield from b.walk()


# --------------------------------------------------------------------------------------------
# Checks


def check_compose(st):
    r = st.r
    if not r.check(os.path.isfile(st.compose_path), "docker-compose.yml exists", st.compose_path):
        return False
    try:
        doc = load_yaml(st.compose_path)
    except yaml.YAMLError as e:
        r.check(False, "docker-compose.yml parses", str(e).replace("\n", " "))
        return False
    services = (doc or {}).get("services") if isinstance(doc, dict) else None
    if not r.check(isinstance(services, dict) and services, "docker-compose.yml parses and defines services"):
        return False
    st.services = services
    top_volumes = set((doc.get("volumes") or {}).keys())

    for name in ("grafana", "prometheus", "alertmanager", "loki", "tempo", "alloy", "alert-sink"):
        r.check(name in services, f"compose service {name} is defined")

    # Images pinned.
    for name, svc in services.items():
        image = svc.get("image")
        built = "build" in svc
        if image is None:
            r.check(built, f"{name}: has an image or a build", "neither image nor build")
            continue
        image = interpolate(str(image))
        ref = image.split("@", 1)[0]
        last = ref.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        if "@sha256:" in image:
            r.check(True, f"{name}: image {image} pinned by digest")
        elif tag is None:
            r.check(False, f"{name}: image {image} has an explicit tag", "no tag means :latest")
        elif tag == "latest":
            r.check(False, f"{name}: image {image} is not :latest", "pin an exact version")
        elif built:
            r.check(True, f"{name}: locally built image {image} has a non-latest tag")
        else:
            exact = re.search(r"\d+\.\d+(\.\d+)?", tag) is not None
            r.check(exact, f"{name}: image {image} pinned to an exact version", f"tag {tag!r} floats")

    # Restart policies and healthchecks.
    for name, svc in services.items():
        r.check(bool(svc.get("restart")) or bool(svc.get("deploy", {}).get("restart_policy")),
                f"{name}: has a restart policy")
        hc = svc.get("healthcheck")
        has_hc = isinstance(hc, dict) and not hc.get("disable") and bool(hc.get("test"))
        r.check(has_hc, f"{name}: defines a healthcheck")

    # Bind mounts exist; named volumes declared.
    for name, svc in services.items():
        for m in parse_mounts(svc):
            if m.kind == "bind":
                path = st.host_path(m.source)
                r.check(os.path.exists(path), f"{name}: bind mount {m.source} -> {m.target} exists",
                        f"{st.rel(path)} is missing")
                if m.source.startswith("./observability") or m.source.startswith("observability"):
                    r.check(m.read_only, f"{name}: config mount {m.source} is read-only")
            elif m.source:
                r.check(m.source in top_volumes, f"{name}: named volume {m.source} is declared")
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            ctx_path = st.host_path(ctx)
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            r.check(os.path.isfile(os.path.join(ctx_path, dockerfile)),
                    f"{name}: build {ctx}/{dockerfile} exists")

    # depends_on: targets exist, service_healthy only on services with a healthcheck.
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if not r.check(dep in services, f"{name}: depends_on {dep} exists"):
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond == "service_healthy":
                hc = services[dep].get("healthcheck")
                ok = isinstance(hc, dict) and not hc.get("disable") and bool(hc.get("test"))
                r.check(ok, f"{name}: depends_on {dep} (service_healthy) has a healthcheck")
            dep_profiles = set(services[dep].get("profiles") or [])
            own_profiles = set(svc.get("profiles") or [])
            if dep_profiles:
                r.check(bool(own_profiles & dep_profiles), f"{name}: depends_on {dep} is in the same profile",
                        f"{dep} only runs with profiles {sorted(dep_profiles)}")

    # Published ports: unique across services, and each maps to a port the service listens on.
    seen = {}
    for name, svc in services.items():
        listening = st.listen_ports(name)
        for p in parse_ports(svc):
            if p.get("raw"):
                r.check(False, f"{name}: port mapping {p['raw']!r} parses")
                continue
            key = (p["published"] or str(p["target"]), p["protocol"])
            where = f"{p['host_ip'] + ':' if p['host_ip'] else ''}{key[0]}/{key[1]}"
            if key in seen:
                r.check(False, f"{name}: host port {where} is unique", f"also published by {seen[key]}")
            else:
                seen[key] = name
                r.check(True, f"{name}: host port {where} is unique")
            r.check(p["target"] in listening, f"{name}: published container port {p['target']} is one it listens on",
                    f"listens on {sorted(listening)}")
    tempo_published = {p["target"] for p in parse_ports(services.get("tempo", {}))}
    r.check(not (tempo_published & st.tempo_otlp_ports()), "tempo: OTLP receiver ports are not published to the host",
            "Alloy owns host 4317/4318")

    # Grafana: anonymous access never Admin.
    env = as_env(services.get("grafana", {}).get("environment"))
    role = env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer")
    r.check(role.lower() != "admin", "grafana: anonymous role is not Admin", f"GF_AUTH_ANONYMOUS_ORG_ROLE={role}")
    ini = os.path.join(st.root, "observability/grafana/grafana.ini")
    if os.path.isfile(ini):
        text = open(ini, encoding="utf-8").read()
        m = re.search(r"^\s*\[auth\.anonymous\](.*?)(?=^\s*\[|\Z)", text, re.S | re.M)
        ini_role = re.search(r"^\s*org_role\s*=\s*(\S+)", m.group(1), re.M) if m else None
        r.check(not (ini_role and ini_role.group(1).lower() == "admin"), "grafana.ini: anonymous role is not Admin")

    # Prometheus flags the rest of the stack relies on.
    pargs = as_args(services.get("prometheus", {}).get("command"))
    for flag, why in (
        ("--web.enable-otlp-receiver", "Alloy exports metrics to /api/v1/otlp"),
        ("--web.enable-remote-write-receiver", "Tempo's metrics-generator remote-writes"),
        ("--enable-feature=exemplar-storage", "exemplars from Tempo span metrics"),
    ):
        present = flag in pargs or (flag.startswith("--enable-feature=") and any(
            a.startswith("--enable-feature=") and flag.split("=", 1)[1] in a.split("=", 1)[1].split(",") for a in pargs))
        r.check(present, f"prometheus: runs with {flag}", why)
    hosts = [interpolate(str(h)) for h in services.get("prometheus", {}).get("extra_hosts") or []]
    r.check(any(h.replace("=", ":").startswith("host.docker.internal:") for h in hosts),
            "prometheus: maps host.docker.internal (extra_hosts host-gateway)")
    return True


def check_prometheus(st):
    r = st.r
    path = st.prometheus_path()
    if not r.check(os.path.isfile(path), f"prometheus config {st.rel(path)} exists"):
        return
    cfg = st.prometheus()
    if not r.check(isinstance(cfg, dict), f"{st.rel(path)} parses", st.configs.get("prometheus:error", "")):
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
                 lambda ep: _url_is(ep, "loki", loki_port, "/otlp"), f"http://loki:{loki_port}/otlp"),
        "metrics": ("otelcol.exporter.otlphttp",
                    lambda ep: _url_is(ep, "prometheus", prom_port, "/api/v1/otlp"), f"http://prometheus:{prom_port}/api/v1/otlp"),
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


def _url_is(url, host, port, path):
    try:
        u = urlsplit(url)
        return u.scheme == "http" and u.hostname == host and u.port == port and u.path.rstrip("/") == path
    except ValueError:
        return False


def check_loki(st):
    r = st.r
    path = st.loki_path()
    if not r.check(os.path.isfile(path), f"loki config {st.rel(path)} exists"):
        return
    cfg = st.loki()
    if not r.check(isinstance(cfg, dict), f"{st.rel(path)} parses", st.configs.get("loki:error", "")):
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


def check_tempo(st):
    r = st.r
    path = st.tempo_path()
    if not r.check(os.path.isfile(path), f"tempo config {st.rel(path)} exists"):
        return
    cfg = st.tempo()
    if not r.check(isinstance(cfg, dict), f"{st.rel(path)} parses", st.configs.get("tempo:error", "")):
        return
    grpc = st.tempo_grpc_port()
    r.check(grpc == 4317, "tempo: OTLP gRPC receiver on 4317", f"port {grpc}")
    ep = str(dig(cfg, "distributor", "receivers", "otlp", "protocols", "grpc", "endpoint", default="0.0.0.0:4317"))
    r.check(not ep.startswith(("127.", "localhost")), "tempo: OTLP gRPC receiver reachable from other containers", ep)
    r.check(3200 in st.listen_ports("tempo"), "tempo: HTTP listens on 3200")
    for rw in dig(cfg, "metrics_generator", "storage", "remote_write", default=[]) or []:
        url = rw.get("url", "")
        r.check(_url_is(url, "prometheus", next(iter(st.listen_ports("prometheus")), 9090), "/api/v1/write"),
                f"tempo: metrics-generator remote_write {url} is Prometheus' remote-write receiver")
        r.check(rw.get("send_exemplars") is True, "tempo: metrics-generator sends exemplars")


def check_alertmanager(st):
    r = st.r
    path = st.alertmanager_path()
    if not r.check(os.path.isfile(path), f"alertmanager config {st.rel(path)} exists"):
        return
    cfg = st.alertmanager()
    if not r.check(isinstance(cfg, dict), f"{st.rel(path)} parses", st.configs.get("alertmanager:error", "")):
        return
    names = {rc.get("name") for rc in cfg.get("receivers") or []}
    r.check(dig(cfg, "route", "receiver") in names, "alertmanager: route has a defined default receiver")
    sink_ports = st.listen_ports("alert-sink")
    urls = [w.get("url") for rc in cfg.get("receivers") or [] for w in rc.get("webhook_configs") or []]
    r.check(bool(urls), "alertmanager: has webhook receivers")
    for url in urls:
        try:
            u = urlsplit(url or "")
            ok = u.hostname == "alert-sink" and u.port in sink_ports
        except ValueError:
            ok = False
        r.check(ok, f"alertmanager: webhook {url} targets the alert-sink service port", f"alert-sink listens on {sorted(sink_ports)}")


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="repository root (default: the parent of scripts/)")
    ap.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    args = ap.parse_args()

    report = Report(quiet=args.quiet)
    st = Stack(os.path.abspath(args.root), report)
    if check_compose(st):
        check_prometheus(st)
        check_alloy(st)
        check_loki(st)
        check_tempo(st)
        check_alertmanager(st)
        check_grafana(st)
    check_rules(st)
    print(f"{report.total} checks, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
