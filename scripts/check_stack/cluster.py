"""Relay services and the mesh between them (docs/CLUSTER.md): every relay service is scraped by
Prometheus's moq-relay job, each `MOQ_CLUSTER_CONNECT` URL names a relay service on a port it
listens on, the token and key files the nodes read are inside their mounts, the dialed relay can
verify a token, and node names are unique."""

from urllib.parse import parse_qs, urlsplit

from .compose import parse_mounts, parse_ports, relay_services
from .util import as_env, host_port, port_of

# Default ports of a peer URL, by scheme (config/cluster.rs).
PEER_SCHEMES = {"http": 80, "https": 443, "moqt": 443}


def relay_ports(env):
    """(QUIC/HTTP ports, ops ports) a relay service listens on, from its MOQ_* variables."""
    def ports(var, default):
        val = env.get(var)
        if val is not None and val.strip().lower() in ("off", "none"):
            return set()
        return {port_of(p) or default for p in (val.split(",") if val else [None])}

    return ports("MOQ_LISTEN", 4443), ports("MOQ_OPS_LISTEN", 9101)


def inside_mount(service, path):
    """Whether a container path lies within one of the service's mounts (bind or volume)."""
    for m in parse_mounts(service):
        t = (m.target or "").rstrip("/")
        if t and (path == t or path.startswith(t + "/")):
            return True
    return False


def scraped_targets(cfg):
    """(host, port) pairs the moq-relay job scrapes: static targets and DNS-SD names (A/AAAA)."""
    out = set()
    for sc in (cfg or {}).get("scrape_configs") or []:
        if sc.get("job_name") != "moq-relay":
            continue
        for s in sc.get("static_configs") or []:
            out |= {host_port(t) for t in s.get("targets") or []}
        for d in sc.get("dns_sd_configs") or []:
            if str(d.get("type", "SRV")).upper() in ("A", "AAAA"):
                out |= {(n, d.get("port")) for n in d.get("names") or []}
    return out


def check_cluster(st):
    r = st.r
    relays = relay_services(st.services)
    if not relays:
        return
    envs = {name: as_env(st.services[name].get("environment")) for name in relays}

    # Prometheus scrapes every relay's ops listener: by service name (static or DNS-SD), or through
    # the host port it publishes (host.docker.internal:PORT, like the `relay` service).
    scraped = scraped_targets(st.prometheus())
    for name in relays:
        _, ops = relay_ports(envs[name])
        if not ops:
            continue
        published = {p["published"] for p in parse_ports(st.services[name]) if p["target"] in ops and p["published"]}
        ok = any((name, p) in scraped for p in ops) or any(
            ("host.docker.internal", int(p)) in scraped for p in published if p.isdigit()
        )
        r.check(ok, f"prometheus: job moq-relay scrapes relay service {name}",
                f"add {name}:{min(ops)} (static or dns_sd_configs) to the moq-relay job")

    # Node names are unique.
    nodes = {}
    for name in relays:
        node = envs[name].get("MOQ_CLUSTER_NODE")
        if node:
            r.check(node not in nodes, f"{name}: cluster node name {node} is unique", f"also {nodes.get(node)}")
            nodes.setdefault(node, name)

    # Files the relays read: inside a mount.
    for name in relays:
        for var in ("MOQ_AUTH_KEY", "MOQ_CLUSTER_TOKEN", "MOQ_CLUSTER_CONNECT_API"):
            path = envs[name].get(var)
            if path and path.startswith("/"):
                r.check(inside_mount(st.services[name], path), f"{name}: {var} {path} is inside a mount",
                        "the container has no such file")

    # Peer URLs: a relay service, on its QUIC/HTTP port, started before the dialer, able to verify
    # the token presented.
    for name in relays:
        env = envs[name]
        urls = [u.strip() for u in (env.get("MOQ_CLUSTER_CONNECT") or "").split(",") if u.strip()]
        deps = st.services[name].get("depends_on") or {}
        for url in urls:
            shown = url.split("?", 1)[0]
            try:
                u = urlsplit(url)
                port = u.port or PEER_SCHEMES.get(u.scheme)
            except ValueError as e:
                r.check(False, f"{name}: peer URL {shown} parses", str(e))
                continue
            if not r.check(u.scheme in PEER_SCHEMES, f"{name}: peer URL {shown} uses http://, https:// or moqt://",
                           f"scheme {u.scheme!r}"):
                continue
            peer = u.hostname
            if not r.check(peer in relays, f"{name}: peer URL {shown} names a relay service",
                           f"relay services: {relays}"):
                continue
            quic, _ = relay_ports(envs[peer])
            r.check(port in quic, f"{name}: peer URL {shown} uses the port {peer} listens on for QUIC",
                    f"{peer} listens on {sorted(quic)} (MOQ_LISTEN), not {port}")
            r.check(peer in deps, f"{name}: depends_on its peer {peer}")
            if u.scheme == "https":
                names = [h.strip() for h in (envs[peer].get("MOQ_TLS_GENERATE") or "").split(",")]
                r.check(peer in names or bool(envs[peer].get("MOQ_TLS_CERT")),
                        f"{name}: {peer}'s certificate is valid for {peer} (https://)",
                        "add the service name to its MOQ_TLS_GENERATE, or dial http:// (fingerprint)")
            token = "jwt" in parse_qs(u.query) or bool(env.get("MOQ_CLUSTER_TOKEN"))
            if token:
                peer_env = envs[peer]
                r.check(bool(peer_env.get("MOQ_AUTH_KEY") or peer_env.get("MOQ_AUTH_URL")),
                        f"{name}: its peer {peer} can verify the token it presents",
                        f"{peer} has neither MOQ_AUTH_KEY nor MOQ_AUTH_URL: a token that fails is refused")
