"""The compose model (services, mounts, ports, the config file each service loads) and the
checks of docker-compose.yml itself."""

import os
import re

import yaml

from .alloy_syntax import AlloyFile
from .util import as_args, as_env, dig, flag_value, interpolate, load_yaml, port_of

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


def is_relay(name, service):
    """Whether a compose service runs moq-relay: the `relay` service, or any service using the
    relay image (`moq-relay:<tag>`, e.g. the nodes of the `cluster` profile)."""
    image = interpolate(str((service or {}).get("image") or ""))
    return name == "relay" or image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0] == "moq-relay"


def relay_services(services):
    """Names of the compose services that run moq-relay, in file order."""
    return [name for name, svc in services.items() if is_relay(name, svc)]


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
        elif is_relay(name, svc):
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

    def checked_config(self, name, path, load):
        """The YAML config `name` read by `load` (cached under `name`), after checking that `path`
        exists and parses to a mapping; None when either check fails (the failure is reported)."""
        if not self.r.check(os.path.isfile(path), f"{name} config {self.rel(path)} exists"):
            return None
        cfg = load()
        if not self.r.check(isinstance(cfg, dict), f"{self.rel(path)} parses", self.configs.get(f"{name}:error", "")):
            return None
        return cfg

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
    return True
