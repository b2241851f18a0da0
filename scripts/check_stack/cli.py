"""Runs every check against a repository root and prints the summary."""

import argparse
import os

from .alertmanager import check_alertmanager
from .alloy import check_alloy
from .cluster import check_cluster
from .compose import Stack, check_compose
from .grafana import check_grafana, check_grafana_anonymous_access
from .loki import check_loki
from .prometheus import check_prometheus, check_prometheus_flags
from .report import Report
from .rules import check_rules
from .tempo import check_tempo

# The package lives in scripts/check_stack/, so the repository root is two levels up.
DEFAULT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(description=None, argv=None):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--root", default=DEFAULT_ROOT, help="repository root (default: the parent of scripts/)")
    ap.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    args = ap.parse_args(argv)

    report = Report(quiet=args.quiet)
    st = Stack(os.path.abspath(args.root), report)
    if check_compose(st):
        # These two read compose service settings, so they run with the compose checks, before
        # the checks of the files the services mount.
        check_grafana_anonymous_access(st)
        check_prometheus_flags(st)
        check_prometheus(st)
        check_cluster(st)
        check_alloy(st)
        check_loki(st)
        check_tempo(st)
        check_alertmanager(st)
        check_grafana(st)
    check_rules(st)
    print(f"{report.total} checks, {report.failed} failed")
    return 1 if report.failed else 0
