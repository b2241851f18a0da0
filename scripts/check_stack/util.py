"""Small helpers shared by the checks: compose interpolation, flags, addresses, YAML."""

import os
import re
from urllib.parse import urlsplit

import yaml


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


def url_is(url, host, port, path):
    """Whether `url` is exactly http://host:port/path (a trailing slash allowed)."""
    try:
        u = urlsplit(url)
        return u.scheme == "http" and u.hostname == host and u.port == port and u.path.rstrip("/") == path
    except ValueError:
        return False


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
