"""Alertmanager: the default receiver and webhooks to the alert-sink service."""

from urllib.parse import urlsplit

from .util import dig


def check_alertmanager(st):
    r = st.r
    cfg = st.checked_config("alertmanager", st.alertmanager_path(), st.alertmanager)
    if cfg is None:
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
