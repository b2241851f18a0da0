"""Tempo: the OTLP receiver Alloy exports to and the metrics-generator's remote write."""

from .util import dig, url_is


def check_tempo(st):
    r = st.r
    cfg = st.checked_config("tempo", st.tempo_path(), st.tempo)
    if cfg is None:
        return
    grpc = st.tempo_grpc_port()
    r.check(grpc == 4317, "tempo: OTLP gRPC receiver on 4317", f"port {grpc}")
    ep = str(dig(cfg, "distributor", "receivers", "otlp", "protocols", "grpc", "endpoint", default="0.0.0.0:4317"))
    r.check(not ep.startswith(("127.", "localhost")), "tempo: OTLP gRPC receiver reachable from other containers", ep)
    r.check(3200 in st.listen_ports("tempo"), "tempo: HTTP listens on 3200")
    for rw in dig(cfg, "metrics_generator", "storage", "remote_write", default=[]) or []:
        url = rw.get("url", "")
        r.check(url_is(url, "prometheus", next(iter(st.listen_ports("prometheus")), 9090), "/api/v1/write"),
                f"tempo: metrics-generator remote_write {url} is Prometheus' remote-write receiver")
        r.check(rw.get("send_exemplars") is True, "tempo: metrics-generator sends exemplars")
